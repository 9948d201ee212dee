//! Webhook sink: every alert is first appended to the spool (on disk, fsynced);
//! each receiver has its own task and cursor into the spool, so one slow or dead
//! receiver never delays another, nothing is lost across outages, restarts or
//! `kill -9` (at-least-once; the alert id is stable across retries), and
//! alerts arrive in order. Retries back off exponentially with jitter (capped),
//! honour `Retry-After`; a 4xx other than 408/429 rejects that alert for good.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::Digest;
use tokio::sync::watch;

use crate::alert::Alert;
use crate::config::{WebhookConfig, WebhookFormat};
use crate::sink::format;
use crate::sink::spool::{Position, Spool, SpoolError};

/// The first retry's delay.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// The longest delay between retries.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// Alerts read from the spool at once by a receiver task.
const READ_BATCH: usize = 64;

/// Alerts kept in memory while they cannot be written to the spool (a full
/// disk); beyond this the oldest are dropped and counted.
pub const MAX_BACKLOG: usize = 10_000;

/// Undelivered alerts an append had to drop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// The oldest in the spool, to stay under `max_spool_bytes`.
    pub cap: u64,
    /// The oldest waiting in memory while the spool could not be written.
    pub memory: u64,
}

/// Alerts waiting in memory for the spool to take them.
#[derive(Default)]
struct Backlog {
    bodies: std::collections::VecDeque<String>,
    /// Dropped since the last successful append (oldest first, over [`MAX_BACKLOG`]).
    dropped: u64,
}

/// The spool shared by the agent (which appends) and the receiver tasks (which read).
pub struct Outbox {
    spool: Mutex<Spool>,
    end: watch::Sender<Position>,
    /// Cursor of each receiver, for collecting delivered segments.
    cursors: Mutex<std::collections::HashMap<String, Position>>,
    /// What could not be spooled yet, in order, ahead of anything newer.
    backlog: Mutex<Backlog>,
    /// Per receiver: failed attempts and the last delivery (unix time), for the metrics.
    health: Mutex<std::collections::HashMap<String, DeliveryHealth>>,
}

/// One receiver's delivery figures since the agent started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveryHealth {
    /// Attempts that failed (retried or rejected).
    pub errors: u64,
    /// When an alert was last delivered (unix time).
    pub last_success: Option<i64>,
}

impl Outbox {
    /// The outbox over an opened spool.
    pub fn new(spool: Spool) -> Arc<Outbox> {
        let end = spool.end();
        Arc::new(Outbox {
            spool: Mutex::new(spool),
            end: watch::channel(end).0,
            cursors: Mutex::default(),
            backlog: Mutex::default(),
            health: Mutex::default(),
        })
    }

    /// A receiver's delivery figures (zero before its first attempt).
    pub fn health(&self, receiver: &str) -> DeliveryHealth {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(receiver)
            .copied()
            .unwrap_or_default()
    }

    fn note(&self, receiver: &str, delivered: bool) {
        let mut all = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let h = all.entry(receiver.to_string()).or_default();
        match delivered {
            true => h.last_success = Some(chrono::Utc::now().timestamp()),
            false => h.errors += 1,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Spool> {
        self.spool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes alerts durable (one fsync) and wakes the receivers.
    /// Returns how many older alerts were dropped to make room: by the size
    /// cap, or from the in-memory backlog while the disk was full.
    ///
    /// When the spool cannot take them (a full disk), the alerts wait in
    /// memory (at most [`MAX_BACKLOG`]), in order, and go first at the next
    /// append or [`Outbox::retry_backlog`]; the error is returned.
    pub fn append(&self, alerts: &[Arc<Alert>]) -> Result<Dropped, SpoolError> {
        let mut backlog = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
        backlog.bodies.extend(alerts.iter().map(|a| a.to_json()));
        let over = backlog.bodies.len().saturating_sub(MAX_BACKLOG);
        backlog.bodies.drain(..over);
        backlog.dropped += over as u64;
        if backlog.bodies.is_empty() {
            return Ok(Dropped::default());
        }
        let refs: Vec<&[u8]> = backlog.bodies.iter().map(|b| b.as_bytes()).collect();
        let mut spool = self.lock();
        let end = spool.append(&refs)?;
        let dropped = Dropped {
            cap: spool.take_dropped(),
            memory: std::mem::take(&mut backlog.dropped),
        };
        backlog.bodies.clear();
        drop(spool);
        self.end.send_replace(end);
        Ok(dropped)
    }

    /// Which of `ids` are in the newest two segments of the spool (where
    /// alerts written just before a crash are).
    pub fn spooled_ids(&self, ids: &[&str]) -> std::collections::HashSet<String> {
        #[derive(serde::Deserialize)]
        struct Id {
            id: String,
        }
        let wanted: std::collections::HashSet<&str> = ids.iter().copied().collect();
        let spool = self.lock();
        let mut found = std::collections::HashSet::new();
        for (bytes, _) in spool.read(spool.recent(2), usize::MAX).unwrap_or_default() {
            if let Ok(r) = serde_json::from_slice::<Id>(&bytes)
                && wanted.contains(r.id.as_str())
            {
                found.insert(r.id);
            }
        }
        found
    }

    /// Alerts waiting in memory for the spool.
    pub fn backlog(&self) -> usize {
        self.backlog
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .bodies
            .len()
    }

    /// Tries again to spool what waits in memory.
    pub fn retry_backlog(&self) -> Result<Dropped, SpoolError> {
        self.append(&[])
    }

    /// Alerts in the spool not yet delivered to `receiver` (from memory).
    pub fn pending(&self, receiver: &str) -> u64 {
        let cursor = self
            .cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(receiver)
            .copied();
        let spool = self.lock();
        spool.count_after(cursor.unwrap_or_else(|| spool.start()))
    }

    fn read(&self, from: Position) -> Result<Vec<(Vec<u8>, Position)>, SpoolError> {
        self.lock().read(from, READ_BATCH)
    }

    /// Writes what `netsentry status` shows about a receiver (best effort).
    fn save_status(&self, receiver: &str, status: &ReceiverStatus) {
        let dir = self.lock().dir().to_path_buf();
        let text = serde_json::to_string(status).unwrap_or_default();
        let path = dir.join(format!("{receiver}.status"));
        let tmp = path.with_extension("status-tmp");
        if let Err(e) = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &path)) {
            tracing::debug!("cannot write {}: {e}", path.display());
        }
    }

    /// Keeps a permanently rejected alert, with the receiver's answer, in
    /// `spool/<receiver>.rejected.jsonl` (one JSON object per line).
    fn move_aside(&self, receiver: &str, alert: &Alert, answer: &str) {
        let path = self.lock().dir().join(format!("{receiver}.rejected.jsonl"));
        let line = serde_json::json!({
            "rejected_at": crate::alert::format_time(&chrono::Utc::now()),
            "answer": answer,
            "alert": alert,
        });
        if let Err(e) = append_capped(&path, &line.to_string(), MAX_REJECTED_BYTES) {
            tracing::warn!("cannot keep the rejected alert in {}: {e}", path.display());
        }
    }

    fn start_cursor(&self, receiver: &str, name: &str) -> Position {
        let spool = self.lock();
        let Some(saved) = spool.load_cursor(receiver) else {
            return spool.start();
        };
        let (cursor, problem) = spool.checked_cursor(saved);
        if let Some(why) = problem {
            tracing::warn!(receiver = %name, "{why}");
        }
        cursor
    }

    fn save_cursor(&self, receiver: &str, pos: Position) {
        let mut spool = self.lock();
        if let Err(e) = spool.save_cursor(receiver, pos) {
            tracing::warn!("{e}");
        }
        let mut cursors = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        cursors.insert(receiver.to_string(), pos);
        // Segments every receiver has passed are done with.
        let all: Vec<Position> = cursors.values().copied().collect();
        spool.collect(&all);
    }
}

/// Bytes of `<receiver>.rejected.jsonl` before it is rotated to `.1` (one
/// older generation is kept: at most twice this per receiver).
pub const MAX_REJECTED_BYTES: u64 = 1 << 20;

/// Appends `line` to `path`; a file already at `cap` bytes is first moved to
/// `path.1` (replacing the one before).
fn append_capped(path: &std::path::Path, line: &str, cap: u64) -> std::io::Result<()> {
    use std::io::Write;
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= cap) {
        let mut older = path.as_os_str().to_owned();
        older.push(".1");
        std::fs::rename(path, older)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(f, "{line}")
}

/// A receiver's delivery state, as `netsentry status` shows it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ReceiverStatus {
    pub url: String,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

/// A stable name for a receiver's cursor: its format and URL, hashed.
pub fn receiver_id(config: &WebhookConfig) -> String {
    let digest = sha2::Sha256::digest(format!("{:?} {}", config.format, config.url.0).as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Handle to one receiver's delivery task.
pub struct WebhookSink {
    pub url: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// How one attempt ended.
enum Outcome {
    /// A 2xx, with its status code.
    Delivered(u16),
    /// Try again, no sooner than this (from `Retry-After`) if given.
    Retry(Option<Duration>, String),
    Rejected(String),
}

impl WebhookSink {
    /// Starts the delivery task. `key` is the decoded signing secret, if any.
    /// Every receiver must be registered before the first one delivers, so that
    /// no segment is collected before all have passed it.
    pub fn start(
        config: WebhookConfig,
        key: Option<Vec<u8>>,
        outbox: Arc<Outbox>,
    ) -> anyhow::Result<WebhookSink> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout.0)
            .connect_timeout(config.timeout.0)
            // A redirect is not a delivery: a 302 would turn the POST into a
            // GET that "succeeds", a 307 would post the alert elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("netsentry/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let id = receiver_id(&config);
        let cursor = outbox.start_cursor(&id, &config.display_name());
        outbox
            .cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), cursor);
        let (stop, stop_rx) = watch::channel(false);
        let url = config.display_name();
        let task = tokio::spawn(deliver(client, config, key, outbox, id, cursor, stop_rx));
        Ok(WebhookSink { url, stop, task })
    }

    /// Asks the task to deliver what is spooled and stop; waits up to `grace`.
    /// What is not delivered by then stays in the spool for the next start.
    pub async fn finish(self, grace: Duration) -> bool {
        let _ = self.stop.send(true);
        let mut task = self.task;
        match tokio::time::timeout(grace, &mut task).await {
            Ok(_) => true,
            Err(_) => {
                task.abort();
                false
            }
        }
    }
}

/// The delay before retry number `attempt` (1-based): 1 s, 2 s, 4 s, ... capped.
pub fn backoff(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    BACKOFF_START.saturating_mul(1 << exp).min(BACKOFF_CAP)
}

/// Spreads retries of many agents: a factor between 0.8 and 1.2.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.8 + 0.4 * (nanos % 1000) as f64 / 1000.0;
    d.mul_f64(factor)
}

/// One receiver's delivery task: its client, settings and how it goes.
struct Receiver {
    client: reqwest::Client,
    config: WebhookConfig,
    key: Option<Vec<u8>>,
    outbox: Arc<Outbox>,
    id: String,
    /// How logs name the receiver (never the whole URL: it may hold a token).
    name: String,
    /// Failed attempts in a row (for the backoff and the log).
    failures: u32,
    status: ReceiverStatus,
    /// A success not yet written to the status file, and when it was last written.
    unsaved: bool,
    saved_at: std::time::Instant,
}

/// Whether the task goes on after an alert.
enum Next {
    Continue,
    Stop,
}

async fn deliver(
    client: reqwest::Client,
    config: WebhookConfig,
    key: Option<Vec<u8>>,
    outbox: Arc<Outbox>,
    id: String,
    mut cursor: Position,
    mut stop: watch::Receiver<bool>,
) {
    let mut end = outbox.end.subscribe();
    let mut r = Receiver {
        status: ReceiverStatus {
            url: config.url.redacted(),
            ..Default::default()
        },
        name: config.display_name(),
        client,
        config,
        key,
        outbox,
        id,
        failures: 0,
        unsaved: false,
        saved_at: std::time::Instant::now() - Duration::from_secs(60),
    };
    let mut read_failures = 0u32;
    loop {
        let batch = match r.outbox.read(cursor) {
            Ok(b) => {
                read_failures = 0;
                b
            }
            Err(e) => {
                // Not "nothing to send": try again soon, not at the next alert.
                read_failures += 1;
                let wait = backoff(read_failures).min(Duration::from_secs(30));
                if read_failures == 1 || read_failures.is_power_of_two() {
                    tracing::error!(receiver = %r.name, "cannot read the spool: {e}; trying again in {} s", wait.as_secs());
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
                if *stop.borrow() {
                    return;
                }
                continue;
            }
        };
        if batch.is_empty() {
            // Idle: make sure the last success is on disk.
            if r.unsaved {
                r.save_status();
            }
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                _ = end.changed() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        for (bytes, next) in batch {
            if let Next::Stop = r.deliver_entry(&bytes, &mut stop).await {
                return;
            }
            cursor = next;
            r.outbox.save_cursor(&r.id, cursor);
        }
    }
}

impl Receiver {
    fn save_status(&mut self) {
        self.outbox.save_status(&self.id, &self.status);
        (self.unsaved, self.saved_at) = (false, std::time::Instant::now());
    }

    /// One spool entry: skipped when it is not for this receiver, else sent
    /// until it is delivered or rejected (or the task is asked to stop).
    async fn deliver_entry(&mut self, bytes: &[u8], stop: &mut watch::Receiver<bool>) -> Next {
        let alert = match serde_json::from_slice::<Alert>(bytes) {
            Ok(alert) => alert,
            Err(e) => {
                tracing::warn!(receiver = %self.name, "skipping an unreadable spool entry: {e}");
                return Next::Continue;
            }
        };
        // Refreshes and resolutions of conditions are for Alertmanager only.
        if !alert.delivery.is_alert() && self.config.format != WebhookFormat::Alertmanager {
            return Next::Continue;
        }
        if alert.severity < self.config.min_severity {
            return Next::Continue;
        }
        loop {
            match attempt_once(&self.client, &self.config, self.key.as_deref(), &alert).await {
                Outcome::Delivered(_) => {
                    self.delivered();
                    return Next::Continue;
                }
                Outcome::Rejected(why) => {
                    self.rejected(&alert, &why);
                    return Next::Continue;
                }
                Outcome::Retry(after, why) => {
                    let wait = self.failed(after, why);
                    if *stop.borrow() {
                        // Stopping: what is not delivered waits in the spool.
                        return Next::Stop;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => return Next::Stop,
                    }
                }
            }
        }
    }

    fn delivered(&mut self) {
        self.outbox.note(&self.id, true);
        if self.failures > 0 {
            tracing::info!(receiver = %self.name, "webhook delivery works again after {} failed attempts", self.failures);
        }
        self.status.last_success = Some(crate::alert::format_time(&chrono::Utc::now()));
        self.unsaved = true;
        // Written on recovery at once, otherwise at most every 5 s while busy
        // (and when idle again).
        if self.failures > 0 || self.saved_at.elapsed() >= Duration::from_secs(5) {
            self.save_status();
        }
        self.failures = 0;
    }

    fn rejected(&mut self, alert: &Alert, why: &str) {
        self.outbox.note(&self.id, false);
        tracing::error!(receiver = %self.name, alert_id = %alert.id, "receiver rejected the alert, not retrying (kept in the spool's .rejected.jsonl): {why}");
        self.outbox.move_aside(&self.id, alert, why);
        self.status.last_error = Some(format!("rejected alert {}: {why}", alert.id));
        self.status.last_error_at = Some(crate::alert::format_time(&chrono::Utc::now()));
        self.save_status();
        self.failures = 0;
    }

    /// Counts a failed attempt (logged at the first and at powers of two);
    /// returns how long to wait before the next.
    fn failed(&mut self, after: Option<Duration>, why: String) -> Duration {
        self.outbox.note(&self.id, false);
        self.failures += 1;
        let wait = after
            .unwrap_or_else(|| jitter(backoff(self.failures)))
            .min(BACKOFF_CAP);
        if self.failures == 1 || self.failures.is_power_of_two() {
            tracing::warn!(receiver = %self.name, "webhook delivery failed ({why}); retry {} in {:.1} s", self.failures, wait.as_secs_f64());
            self.status.last_error = Some(why);
            self.status.last_error_at = Some(crate::alert::format_time(&chrono::Utc::now()));
            self.outbox.save_status(&self.id, &self.status);
            self.saved_at = std::time::Instant::now();
        }
        wait
    }
}

async fn attempt_once(
    client: &reqwest::Client,
    config: &WebhookConfig,
    key: Option<&[u8]>,
    alert: &Alert,
) -> Outcome {
    let body = format::body(
        alert,
        config.format,
        config.resolve_after.0,
        &config.runbook_base,
    );
    let mut request = client
        .post(config.url.0.clone())
        .header("content-type", "application/json");
    if let Some(key) = key {
        let ts = chrono::Utc::now().timestamp();
        request = request
            .header("webhook-id", &alert.id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", format::sign(key, &alert.id, ts, &body));
    }
    if config.format == WebhookFormat::Netsentry {
        request = request.header("netsentry-alert-id", &alert.id);
    }
    let response = match request.body(body).send().await {
        Ok(r) => r,
        // Without the URL: reqwest names it in its errors, token and all.
        Err(e) => return Outcome::Retry(None, describe(&e.without_url())),
    };
    let status = response.status();
    if status.is_success() {
        return Outcome::Delivered(status.as_u16());
    }
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    if status.is_redirection() {
        // Where to: scheme, host and port only (the rest may hold a token).
        let to = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .and_then(|l| config.url.0.join(l).ok())
            .map(|u| crate::config::WebhookUrl(u).redacted())
            .unwrap_or_else(|| "nowhere".into());
        return Outcome::Retry(
            None,
            format!(
                "redirect (HTTP {status}) to {to}: deliveries do not follow redirects; put the final URL in the configuration"
            ),
        );
    }
    let text = read_capped(response, MAX_ERROR_BODY).await;
    let why = format!("HTTP {status}: {}", text.trim());
    if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
        Outcome::Rejected(why)
    } else {
        Outcome::Retry(retry_after, why)
    }
}

/// `netsentry test-alert`: `alert` to one receiver now, once, without the
/// spool. `Ok("HTTP 200")`, or why it was not delivered.
pub async fn deliver_once(
    config: &WebhookConfig,
    key: Option<&[u8]>,
    alert: &Alert,
) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(config.timeout.0)
        .connect_timeout(config.timeout.0)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("netsentry/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| describe(&e.without_url()))?;
    match attempt_once(&client, config, key, alert).await {
        Outcome::Delivered(code) => Ok(format!("HTTP {code}")),
        Outcome::Retry(_, why) | Outcome::Rejected(why) => Err(why),
    }
}

/// Bytes of a receiver's error answer read (and 200 characters of it kept):
/// an answer that does not end is not read to its end.
const MAX_ERROR_BODY: usize = 4096;

/// The start of a response body as text, reading at most `cap` bytes.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> String {
    let mut body = Vec::new();
    while body.len() < cap {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(cap - body.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&body).chars().take(200).collect()
}

fn describe(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rejected_file_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.rejected.jsonl");
        let line = "x".repeat(99);
        for _ in 0..1000 {
            append_capped(&path, &line, 10_000).unwrap();
        }
        let now = std::fs::metadata(&path).unwrap().len();
        let older = std::fs::metadata(dir.path().join("r.rejected.jsonl.1"))
            .unwrap()
            .len();
        assert!(now <= 10_000 && older <= 10_000 + 100, "{now} {older}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn backoff_schedule_doubles_and_caps() {
        let secs: Vec<u64> = (1..=12).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
        for a in 1..10 {
            let j = jitter(backoff(a));
            assert!(j >= backoff(a).mul_f64(0.79) && j <= backoff(a).mul_f64(1.21));
        }
    }
}
