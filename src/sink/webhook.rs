//! Webhook sink: each receiver gets its own task and in-memory queue, so one
//! slow or dead receiver never delays another. Alerts are delivered in order,
//! retried with capped exponential backoff and jitter, and dropped only when a
//! receiver rejects one permanently (4xx other than 408/429) or the queue is full.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::alert::Alert;
use crate::config::{WebhookConfig, WebhookFormat};
use crate::sink::format;

pub const BACKOFF_START: Duration = Duration::from_secs(1);
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// Handle to one receiver's delivery task.
pub struct WebhookSink {
    pub url: String,
    min_severity: crate::alert::Severity,
    tx: mpsc::UnboundedSender<Arc<Alert>>,
    task: tokio::task::JoinHandle<()>,
}

/// How one attempt ended.
enum Outcome {
    Delivered,
    /// Try again, no sooner than this (from `Retry-After`) if given.
    Retry(Option<Duration>, String),
    Rejected(String),
}

impl WebhookSink {
    /// Starts the delivery task. `key` is the decoded signing secret, if any.
    pub fn start(config: WebhookConfig, key: Option<Vec<u8>>) -> anyhow::Result<WebhookSink> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout.0)
            .connect_timeout(config.timeout.0)
            .user_agent(concat!("netsentry/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let url = config.url.0.to_string();
        let min_severity = config.min_severity;
        let task = tokio::spawn(deliver(client, config, key, rx));
        Ok(WebhookSink {
            url,
            min_severity,
            tx,
            task,
        })
    }

    /// Queues an alert at or above this receiver's `min_severity` (non-blocking).
    pub fn send(&self, alert: Arc<Alert>) {
        if alert.severity >= self.min_severity {
            let _ = self.tx.send(alert);
        }
    }

    /// Stops taking alerts and waits up to `grace` for the queue to drain.
    pub async fn finish(self, grace: Duration) -> bool {
        drop(self.tx);
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

async fn deliver(
    client: reqwest::Client,
    config: WebhookConfig,
    key: Option<Vec<u8>>,
    mut rx: mpsc::UnboundedReceiver<Arc<Alert>>,
) {
    let mut queue: VecDeque<Arc<Alert>> = VecDeque::new();
    let mut dropped: u64 = 0;
    let mut attempt: u32 = 0;
    let mut retry_at: Option<Instant> = None;
    let mut open = true;
    let url = config.url.0.clone();
    loop {
        // Take in whatever has arrived, bounded by the queue size.
        while let Ok(alert) = rx.try_recv() {
            enqueue(&mut queue, alert, config.queue_size, &mut dropped, &url);
        }
        if queue.is_empty() {
            if !open {
                return;
            }
            match rx.recv().await {
                Some(alert) => enqueue(&mut queue, alert, config.queue_size, &mut dropped, &url),
                None => return,
            }
            continue;
        }
        if let Some(at) = retry_at {
            // Wait for the retry time, still accepting new alerts meanwhile.
            tokio::select! {
                _ = tokio::time::sleep_until(at) => retry_at = None,
                alert = rx.recv(), if open => match alert {
                    Some(alert) => enqueue(&mut queue, alert, config.queue_size, &mut dropped, &url),
                    None => open = false,
                },
            }
            continue;
        }
        let Some(alert) = queue.front().cloned() else {
            continue;
        };
        match attempt_once(&client, &config, key.as_deref(), &alert).await {
            Outcome::Delivered => {
                queue.pop_front();
                if attempt > 0 {
                    tracing::info!(receiver = %url, "webhook delivery works again after {attempt} failed attempts");
                }
                if dropped > 0 {
                    tracing::warn!(receiver = %url, dropped, "alerts were dropped while this receiver was unreachable (queue full)");
                    dropped = 0;
                }
                attempt = 0;
            }
            Outcome::Rejected(why) => {
                queue.pop_front();
                attempt = 0;
                tracing::error!(receiver = %url, alert_id = %alert.id, "receiver rejected the alert, not retrying: {why}");
            }
            Outcome::Retry(after, why) => {
                attempt += 1;
                let wait = after
                    .unwrap_or_else(|| jitter(backoff(attempt)))
                    .min(BACKOFF_CAP);
                if attempt == 1 || attempt.is_power_of_two() {
                    tracing::warn!(receiver = %url, pending = queue.len(), "webhook delivery failed ({why}); retry {attempt} in {:.1} s", wait.as_secs_f64());
                }
                retry_at = Some(Instant::now() + wait);
            }
        }
    }
}

fn enqueue(
    queue: &mut VecDeque<Arc<Alert>>,
    alert: Arc<Alert>,
    cap: usize,
    dropped: &mut u64,
    url: &reqwest::Url,
) {
    if queue.len() >= cap {
        queue.pop_front();
        *dropped += 1;
        if *dropped == 1 {
            tracing::warn!(receiver = %url, "webhook queue full ({cap} alerts): dropping the oldest");
        }
    }
    queue.push_back(alert);
}

async fn attempt_once(
    client: &reqwest::Client,
    config: &WebhookConfig,
    key: Option<&[u8]>,
    alert: &Alert,
) -> Outcome {
    let body = format::body(alert, config.format, config.resolve_after.0);
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
        Err(e) => return Outcome::Retry(None, describe(&e)),
    };
    let status = response.status();
    if status.is_success() {
        return Outcome::Delivered;
    }
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text: String = response
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    let why = format!("HTTP {status}: {}", text.trim());
    if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
        Outcome::Rejected(why)
    } else {
        Outcome::Retry(retry_after, why)
    }
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
