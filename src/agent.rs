//! The agent: wires the netlink source, the detectors and the sinks together,
//! and handles start, signals and stop.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use std::collections::HashMap;

use crate::alert::{Alert, Delivery, Finding};
use crate::baseline;
use crate::config::{Config, JournaldMode};
use crate::ctwatch::{CaaWatch, CtWatch};
use crate::detect::caa::CaaRules;
use crate::detect::coalesce::Coalescer;
use crate::detect::correlate::Correlator;
use crate::detect::lifecycle;
use crate::detect::net::{NetDetector, NetSettings};
use crate::kernel::Observation;
use crate::packet::{PacketWatch, STATION_KINDS};
use crate::sink::journald::{self, JournaldSink};
use crate::sink::metrics::{self, GatewayInfo, Metrics};
use crate::sink::notify::Notifier;
use crate::sink::spool::Spool;
use crate::sink::webhook::{Outbox, WebhookSink};
use crate::sink::{console_line, format};
use crate::source::caa::CaaReport;
use crate::source::capture::{self, CaptureEvent};
use crate::source::ct::CtEvent;
use crate::source::netlink::{self, SourceEvent};
use crate::source::{self, Feed};
use crate::tlscheck::{self, TlsWatch};

/// How long queued webhook deliveries may take once a stop was asked for.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often the capture's kernel counters are read (and logged when frames were dropped).
const CAPTURE_STATS_EVERY: Duration = Duration::from_secs(10);
/// How often a changed station table is written to state_dir.
const STATE_SAVE_EVERY: Duration = Duration::from_secs(30);

/// Sets up logging: journald when it is there (or asked for), else stderr.
pub fn init_logging(config: &Config) {
    use tracing_subscriber::prelude::*;
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("NETSENTRY_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("netsentry={}", config.log.level.as_str()))
        });
    let journal = match use_journald(config.log.journald) {
        true => tracing_journald::layer()
            .ok()
            .map(|l| l.with_syslog_identifier("netsentry".into())),
        false => None,
    };
    let registry = tracing_subscriber::registry().with(filter);
    if let Some(journal) = journal {
        let _ = registry.with(journal).try_init();
    } else {
        let _ = registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false),
            )
            .try_init();
    }
}

fn use_journald(mode: JournaldMode) -> bool {
    match mode {
        JournaldMode::Off => false,
        JournaldMode::On => true,
        JournaldMode::Auto => Path::new(journald::SOCKET_PATH).exists(),
    }
}

/// Conditions remembered for Alertmanager (beyond this, the oldest are forgotten).
const MAX_CONDITIONS: usize = 1024;

/// Where alerts go, and the coalescing in front of them.
struct Outputs {
    host: String,
    journal: Option<JournaldSink>,
    outbox: Option<Arc<Outbox>>,
    coalescer: Coalescer,
    /// Conditions that hold (e.g. an unreachable gateway), by identity: kept
    /// alive in Alertmanager by `refresh_conditions`, resolved when they clear.
    conditions: HashMap<String, Arc<Alert>>,
    /// Sees every alert sent; may add an `interception_suspected`.
    correlator: Correlator,
    metrics: Metrics,
}

impl Outputs {
    fn emit(&mut self, findings: Vec<Finding>) {
        let mut alerts = Vec::new();
        let mut records = Vec::new();
        let mut queue: std::collections::VecDeque<Finding> = findings.into();
        while let Some(finding) = queue.pop_front() {
            if finding.clears {
                let key = format::identity(finding.kind, &finding.details);
                if let Some(original) = self.conditions.remove(&key) {
                    tracing::info!("{} (clears alert {})", finding.summary, original.id);
                    let mut resolve = (*original).clone();
                    resolve.delivery = Delivery::Resolve { at: finding.time };
                    records.push(Arc::new(resolve));
                }
                continue;
            }
            for admitted in self.coalescer.admit(finding) {
                let alert = Arc::new(Alert::from_finding(admitted, &self.host));
                if alert.kind.is_condition() {
                    if self.conditions.len() >= MAX_CONDITIONS
                        && let Some(oldest) = self
                            .conditions
                            .iter()
                            .min_by_key(|(_, a)| a.time)
                            .map(|(k, _)| k.clone())
                    {
                        self.conditions.remove(&oldest);
                    }
                    self.conditions
                        .insert(format::identity(alert.kind, &alert.details), alert.clone());
                }
                if let Some(suspicion) = self.correlator.observe(&alert) {
                    queue.push_back(suspicion);
                }
                self.metrics.count(&alert);
                records.push(alert.clone());
                alerts.push(alert);
            }
        }
        if records.is_empty() {
            return;
        }
        // On disk before anything else: the receivers read it from there.
        if let Some(outbox) = &self.outbox {
            match outbox.append(&records) {
                Ok(0) => {}
                Ok(dropped) => {
                    tracing::warn!(
                        "the spool is full (max_spool_bytes): {dropped} older undelivered alerts were dropped"
                    );
                    // Queued behind everything still spooled: receivers learn of
                    // the loss as soon as delivery works again.
                    let notice = Arc::new(Alert::from_finding(
                        lifecycle::spool_overflow(Utc::now(), dropped),
                        &self.host,
                    ));
                    if let Err(e) = outbox.append(std::slice::from_ref(&notice)) {
                        tracing::error!("{e}");
                    }
                    alerts.push(notice);
                }
                Err(e) => {
                    tracing::error!("alerts could not be spooled, webhooks will miss them: {e}")
                }
            }
        }
        for alert in &alerts {
            match &self.journal {
                Some(j) => {
                    if let Err(e) = j.send(alert) {
                        tracing::warn!(
                            "cannot write to the journal at {}: {e}",
                            j.path().display()
                        );
                        eprintln!("{}", console_line(alert));
                    }
                }
                None => eprintln!("{}", console_line(alert)),
            }
        }
    }

    /// Re-sends the conditions that still hold (Alertmanager receivers extend them).
    fn refresh_conditions(&mut self, now: chrono::DateTime<Utc>) {
        let (Some(outbox), false) = (&self.outbox, self.conditions.is_empty()) else {
            return;
        };
        let records: Vec<Arc<Alert>> = self
            .conditions
            .values()
            .map(|a| {
                let mut refresh = (**a).clone();
                refresh.delivery = Delivery::Refresh { at: now };
                Arc::new(refresh)
            })
            .collect();
        if let Err(e) = outbox.append(&records) {
            tracing::error!("{e}");
        }
    }
}

/// Creates `state_dir` (mode 0700) if needed and checks that it is usable.
fn prepare_state_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!("cannot create state_dir {}: run as root or set [agent] state_dir to a writable directory", dir.display())
    })?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("state_dir {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Reads a `whsec_` secret, refusing files that everyone can read.
fn read_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read webhook secret_file {}", path.display()))?;
    if meta.permissions().mode() & 0o004 != 0 {
        bail!(
            "webhook secret_file {} is readable by everyone: run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read webhook secret_file {}", path.display()))?;
    format::secret_key(&text).with_context(|| format!("webhook secret_file {}", path.display()))
}

fn open_journal(mode: JournaldMode) -> Option<JournaldSink> {
    if !use_journald(mode) {
        return None;
    }
    match JournaldSink::connect(Path::new(journald::SOCKET_PATH)) {
        Ok(j) => Some(j),
        Err(e) => {
            tracing::warn!("journald is not available ({e}); alerts go to stderr");
            None
        }
    }
}

/// Opens the spool under `state_dir` (recovering from a crash) as the outbox.
fn open_outbox(state_dir: &Path, max_bytes: u64) -> anyhow::Result<Arc<Outbox>> {
    let (spool, recovery) = Spool::open(&state_dir.join("spool"), max_bytes)?;
    if recovery.torn_bytes > 0 {
        tracing::warn!(
            "spool: a half-written entry ({} bytes) from a crash was cut off",
            recovery.torn_bytes
        );
    }
    if recovery.records > 0 {
        tracing::info!(
            "spool: {} alerts on disk from before; undelivered ones go out now",
            recovery.records
        );
    }
    Ok(Outbox::new(spool))
}

/// Reads every receiver's secret (so that a bad one fails before anything changes).
fn read_secrets(config: &Config) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
    config
        .webhooks
        .iter()
        .map(|hook| hook.secret_file.as_deref().map(read_secret).transpose())
        .collect()
}

/// Starts one delivery task per receiver, reading from `outbox`.
fn start_webhooks(
    config: &Config,
    secrets: Vec<Option<Vec<u8>>>,
    outbox: &Arc<Outbox>,
) -> anyhow::Result<Vec<WebhookSink>> {
    let mut sinks = Vec::new();
    for (hook, key) in config.webhooks.iter().zip(secrets) {
        if hook.url.is_cleartext_remote() {
            tracing::warn!(
                "webhook {} is plain http to another host: alerts can be read and altered on the way",
                hook.url.0
            );
        }
        sinks.push(WebhookSink::start(hook.clone(), key, outbox.clone())?);
    }
    Ok(sinks)
}

/// Stops delivery tasks, giving each `grace` to finish what it is sending.
async fn stop_webhooks(sinks: Vec<WebhookSink>, grace: Duration) {
    let pending: Vec<_> = sinks
        .into_iter()
        .map(|w| {
            tokio::spawn(async move {
                let url = w.url.clone();
                if !w.finish(grace).await {
                    tracing::info!(receiver = %url, "stopped with alerts still undelivered (they wait in the spool)");
                }
            })
        })
        .collect();
    for p in pending {
        let _ = p.await;
    }
}

fn net_settings(config: &Config) -> NetSettings {
    NetSettings {
        interfaces: config
            .agent
            .interfaces
            .iter()
            .map(|i| i.0.clone())
            .collect(),
        ignore_links: config.agent.ignore_links.clone(),
    }
}

fn new_coalescer(config: &Config) -> Coalescer {
    Coalescer::new(config.agent.coalesce_burst, config.agent.coalesce_window.0)
        .with_kind_limit(STATION_KINDS, config.arp.alerts_per_kind)
}

/// A timer that ticks every `every` (first tick after one period); `None`: never.
fn timer(every: Option<Duration>) -> tokio::time::Interval {
    let period = every
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(3600));
    let mut t = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// Alertmanager receivers get the conditions that hold re-sent at half their
/// resolve_after, so that Alertmanager does not resolve them on its own.
fn refresh_every(config: &Config) -> Option<Duration> {
    config
        .webhooks
        .iter()
        .filter(|w| w.format == crate::config::WebhookFormat::Alertmanager)
        .map(|w| w.resolve_after.0 / 2)
        .min()
        .filter(|d| !d.is_zero())
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// Where the configuration came from, for SIGHUP: a file, or the built-in
/// defaults (then a reload reads the default file if it appeared).
#[derive(Clone, Debug)]
pub enum ConfigSource {
    File(std::path::PathBuf),
    Defaults,
}

impl ConfigSource {
    fn load(&self) -> Result<Config, crate::config::ConfigError> {
        match self {
            ConfigSource::File(p) => Config::load(p),
            ConfigSource::Defaults => {
                let p = Path::new(crate::config::DEFAULT_PATH);
                if p.exists() {
                    Config::load(p)
                } else {
                    Ok(Config::default())
                }
            }
        }
    }

    fn name(&self) -> String {
        match self {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::Defaults => crate::config::DEFAULT_PATH.to_string(),
        }
    }
}

/// Settings that only take effect at a restart (threads and files opened at start).
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |differs: bool, key: &'static str| {
        if differs {
            keys.push(key);
        }
    };
    check(
        old.agent.state_dir != new.agent.state_dir,
        "agent.state_dir",
    );
    check(
        old.agent.netlink_receive_buffer != new.agent.netlink_receive_buffer,
        "agent.netlink_receive_buffer",
    );
    check(
        old.agent.reconcile_interval != new.agent.reconcile_interval,
        "agent.reconcile_interval",
    );
    check(
        old.agent.max_spool_bytes != new.agent.max_spool_bytes,
        "agent.max_spool_bytes",
    );
    check(old.arp.enabled != new.arp.enabled, "arp.enabled");
    check(
        old.arp.receive_buffer != new.arp.receive_buffer,
        "arp.receive_buffer",
    );
    check(old.log != new.log, "log");
    check(old.metrics.listen != new.metrics.listen, "metrics.listen");
    keys
}

/// The sections that differ.
fn changed_sections(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.agent != new.agent {
        out.push("agent");
    }
    if old.log != new.log {
        out.push("log");
    }
    if old.webhooks != new.webhooks {
        out.push("webhook");
    }
    if old.arp != new.arp {
        out.push("arp");
    }
    if old.tls != new.tls {
        out.push("tls");
    }
    if old.correlation != new.correlation {
        out.push("correlation");
    }
    if old.metrics != new.metrics {
        out.push("metrics");
    }
    if old.ct != new.ct {
        out.push("ct");
    }
    if old.caa != new.caa {
        out.push("caa");
    }
    out
}

/// Runs the agent until SIGTERM or SIGINT. SIGHUP reloads the configuration
/// from `source`: a valid one takes effect (baseline, spool and stations are
/// kept), an invalid one is reported (`config_rejected`) and the running one stays.
pub async fn run(mut config: Config, source: ConfigSource) -> anyhow::Result<()> {
    let notifier = Notifier::from_env();
    let state_dir = config.agent.state_dir.clone();
    prepare_state_dir(&state_dir)?;
    let mut outbox = if config.webhooks.is_empty() {
        None
    } else {
        Some(open_outbox(&state_dir, config.agent.max_spool_bytes)?)
    };
    let mut webhooks = match &outbox {
        Some(o) => start_webhooks(&config, read_secrets(&config)?, o)?,
        None => Vec::new(),
    };
    let (stored, baseline_problem) = match baseline::load(&state_dir) {
        Ok(b) => (b, None),
        Err(e) => {
            tracing::warn!("{e}");
            (None, Some(e.to_string()))
        }
    };
    let baseline_loaded = stored.is_some();
    let mut out = Outputs {
        host: config.host_id(),
        journal: open_journal(config.log.journald),
        outbox: outbox.clone(),
        conditions: HashMap::new(),
        correlator: Correlator::new(config.correlation.window.0),
        coalescer: new_coalescer(&config),
        metrics: Metrics {
            start_time: Utc::now().timestamp(),
            ..Default::default()
        },
    };
    let mut detector = NetDetector::new(net_settings(&config), stored);

    let (tx, mut rx) = mpsc::channel::<SourceEvent>(1024);
    let reconcile = config.agent.reconcile_interval.0;
    let receive_buffer = config.agent.netlink_receive_buffer;
    std::thread::Builder::new()
        .name("netlink".into())
        .spawn(move || netlink::run(tx, reconcile, receive_buffer))?;

    // Packet capture: a blocking thread, like netlink. Without it the agent goes on.
    let mut packets = PacketWatch::load(&config);
    let (cap_tx, mut cap_rx) = mpsc::channel::<CaptureEvent>(64);
    let mut capture_on = config.arp.enabled;
    let capture_buffer = config.arp.receive_buffer;
    if capture_on {
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || capture::run(cap_tx, CAPTURE_STATS_EVERY, capture_buffer))?;
    } else {
        drop(cap_tx);
        tracing::info!("packet capture is off ([arp] enabled = false)");
    }
    // TLS checks: a scheduler task; reports come back on a channel.
    let mut tls = TlsWatch::load(&config);
    let mut tls_checks = tlscheck::start_scheduler(&config);
    out.correlator.set_served_names(served_names(&config));

    // CT monitoring and the CAA audit: background tasks, when domains are configured.
    let mut ct = CtWatch::load(&config);
    let mut ct_feed = start_ct(&config, &ct);
    let mut caa = CaaWatch::default();
    let mut caa_feed = start_caa(&config);

    // Metrics: a textfile and/or an HTTP endpoint, when configured.
    let metrics_page = Arc::new(std::sync::Mutex::new(String::new()));
    if !config.metrics.listen.is_empty() {
        metrics::serve(&config.metrics.listen, metrics_page.clone()).await?;
    }

    let mut reported_drops = 0u64;
    let mut save_tick = timer(Some(STATE_SAVE_EVERY));
    let mut refresh_tick = timer(refresh_every(&config));
    let mut heartbeat = timer(nonzero(config.agent.heartbeat_interval.0));
    let mut metrics_tick = timer(Some(config.metrics.interval.0));
    let mut watchdog = timer(notifier.watchdog_every());
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let started = tokio::time::Instant::now();
    let mut failure = None;
    let mut reported_counters = detector.counters().clone();

    let reason = loop {
        let coalesce_wait = out
            .coalescer
            .next_deadline()
            .map(|d| (d - Utc::now()).to_std().unwrap_or(Duration::ZERO));
        tokio::select! {
            event = rx.recv() => match event {
                Some(SourceEvent::Observations(batch)) => {
                    for obs in batch {
                        tracing::trace!(?obs, "netlink");
                        let findings = detector.observe(obs, Utc::now());
                        out.emit(findings);
                    }
                    packets.sync(&detector);
                }
                Some(SourceEvent::Resynced { reason, view }) => {
                    let first = !detector.is_ready();
                    match reason {
                        "start" => {}
                        "overrun" => tracing::warn!("netlink: the kernel dropped events (receive buffer overrun); full dump after overrun, reconciling"),
                        _ => tracing::debug!("netlink: full dump after {reason}; reconciling"),
                    }
                    let findings = detector.observe(Observation::Snapshot(view), Utc::now());
                    packets.sync(&detector);
                    if first {
                        let watching = detector.watched_interfaces();
                        tracing::info!("baseline ready ({}); watching {}", if baseline_loaded { "loaded" } else { "new" }, watching.join(", "));
                        out.emit(vec![lifecycle::agent_started(Utc::now(), baseline_loaded, &watching, baseline_problem.as_deref())]);
                        notifier.notify(&format!("READY=1\nSTATUS=watching {}", watching.join(", ")));
                        if config.metrics.enabled() {
                            out.metrics.gateways = gateway_info(&detector);
                            publish_metrics(&config, &out.metrics, &metrics_page);
                        }
                    }
                    out.emit(findings);
                }
                Some(SourceEvent::Failed(why)) => {
                    tracing::error!("{why}");
                    failure = Some(why.clone());
                    break format!("netlink source failed: {why}");
                }
                None => {
                    failure = Some("netlink source stopped".into());
                    break "netlink source stopped".to_string();
                }
            },
            event = cap_rx.recv(), if capture_on => match event {
                Some(CaptureEvent::Frames(frames)) => {
                    for frame in frames {
                        let Some(name) = packets.interface_of(frame.ifindex) else { continue };
                        let name = name.to_string();
                        let findings = packets.observe(&name, &frame.data, frame.time);
                        if !findings.is_empty() {
                            out.emit(findings);
                        }
                    }
                }
                Some(CaptureEvent::Stats { packets: seen, drops }) => {
                    if drops > reported_drops {
                        tracing::warn!("packet capture: the kernel dropped {} frames (of {seen} so far): the agent could not keep up", drops - reported_drops);
                        reported_drops = drops;
                    }
                    out.metrics.capture_packets = seen;
                    out.metrics.capture_drops = drops;
                    write_capture_stats(&state_dir, seen, drops, &packets);
                }
                Some(CaptureEvent::Failed(why)) => {
                    tracing::warn!("{why}");
                    capture_on = false;
                }
                None => capture_on = false,
            },
            report = async { tls_checks.as_mut()?.rx.recv().await }, if tls_checks.is_some() => match report {
                Some(report) => {
                    let findings = tls.observe(&report);
                    out.emit(findings);
                }
                None => tls_checks = None,
            },
            event = async { ct_feed.as_mut()?.rx.recv().await }, if ct_feed.is_some() => match event {
                Some(event) => {
                    let findings = ct.observe(event, &mut tls.history);
                    out.emit(findings);
                    // After the alerts are spooled: a crash before this repeats the page.
                    ct.save();
                }
                None => ct_feed = None,
            },
            report = async { caa_feed.as_mut()?.rx.recv().await }, if caa_feed.is_some() => match report {
                Some(report) => {
                    let findings = caa.observe(report, caa_rules(&config));
                    out.emit(findings);
                }
                None => caa_feed = None,
            },
            _ = save_tick.tick() => {
                packets.save(&state_dir);
                tls.save();
            }
            _ = metrics_tick.tick(), if config.metrics.enabled() => {
                out.metrics.gateways = gateway_info(&detector);
                out.metrics.tls = tls.metrics();
                out.metrics.spool_pending = crate::status::receivers(&config).into_iter().map(|r| (r.url, r.pending)).collect();
                publish_metrics(&config, &out.metrics, &metrics_page);
            }
            _ = watchdog.tick(), if notifier.watchdog_every().is_some() => notifier.notify("WATCHDOG=1"),
            _ = refresh_tick.tick(), if refresh_every(&config).is_some() => out.refresh_conditions(Utc::now()),
            _ = sigterm.recv() => break "SIGTERM".to_string(),
            _ = sigint.recv() => break "SIGINT".to_string(),
            _ = sighup.recv() => {
                notifier.notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
                let file = source.name();
                match source.load() {
                    Err(e) => {
                        tracing::error!("SIGHUP: {e}; the running configuration stays");
                        out.emit(vec![lifecycle::config_rejected(Utc::now(), &file, &e.to_string())]);
                    }
                    Ok(new) => {
                        // Everything that can fail is done before anything changes.
                        let prepared = read_secrets(&new).and_then(|secrets| {
                            let outbox = match (&outbox, new.webhooks.is_empty()) {
                                (Some(o), _) => Some(o.clone()),
                                (None, true) => None,
                                (None, false) => Some(open_outbox(&state_dir, config.agent.max_spool_bytes)?),
                            };
                            Ok((secrets, outbox))
                        });
                        match prepared {
                            Err(e) => {
                                tracing::error!("SIGHUP: {e:#}; the running configuration stays");
                                out.emit(vec![lifecycle::config_rejected(Utc::now(), &file, &format!("{e:#}"))]);
                            }
                            Ok((secrets, new_outbox)) => {
                                let changed = changed_sections(&config, &new);
                                let restart = needs_restart(&config, &new);
                                if new.webhooks != config.webhooks {
                                    stop_webhooks(std::mem::take(&mut webhooks), Duration::from_millis(500)).await;
                                    outbox = new_outbox;
                                    out.outbox = outbox.clone();
                                    if let Some(o) = &outbox {
                                        match start_webhooks(&new, secrets, o) {
                                            Ok(w) => webhooks = w,
                                            Err(e) => tracing::error!("{e:#}"),
                                        }
                                    }
                                    refresh_tick = timer(refresh_every(&new));
                                }
                                if new.agent.coalesce_burst != config.agent.coalesce_burst
                                    || new.agent.coalesce_window != config.agent.coalesce_window
                                    || new.arp.alerts_per_kind != config.arp.alerts_per_kind
                                {
                                    let summaries = out.coalescer.close_all(Utc::now());
                                    out.emit(summaries);
                                    out.coalescer = new_coalescer(&new);
                                }
                                out.host = new.host_id();
                                out.correlator.set_window(new.correlation.window.0);
                                detector.set_settings(net_settings(&new));
                                if new.arp != config.arp || new.agent.interfaces != config.agent.interfaces {
                                    packets.save(&state_dir);
                                    packets = PacketWatch::load(&new);
                                    packets.sync(&detector);
                                }
                                if new.tls != config.tls {
                                    tls.save();
                                    tls = TlsWatch::load(&new);
                                    tls_checks = tlscheck::start_scheduler(&new);
                                    out.correlator.set_served_names(served_names(&new));
                                }
                                if new.ct != config.ct || new.tls != config.tls {
                                    ct.save();
                                    ct = CtWatch::load(&new);
                                    ct_feed = start_ct(&new, &ct);
                                }
                                if new.caa != config.caa {
                                    caa_feed = start_caa(&new);
                                }
                                if new.agent.heartbeat_interval != config.agent.heartbeat_interval {
                                    heartbeat = timer(nonzero(new.agent.heartbeat_interval.0));
                                }
                                if new.metrics.interval != config.metrics.interval {
                                    metrics_tick = timer(Some(new.metrics.interval.0));
                                }
                                for key in &restart {
                                    tracing::warn!("SIGHUP: {key} changed; it takes effect at the next restart");
                                }
                                tracing::info!("SIGHUP: configuration {file} reloaded (changed: {})", if changed.is_empty() { "nothing".to_string() } else { changed.join(", ") });
                                out.emit(vec![lifecycle::config_reloaded(Utc::now(), &file, &changed, &restart)]);
                                config = new;
                            }
                        }
                    }
                }
                notifier.notify("READY=1");
            }
            _ = heartbeat.tick(), if !config.agent.heartbeat_interval.0.is_zero() => {
                out.emit(vec![lifecycle::agent_heartbeat(Utc::now(), started.elapsed().as_secs(), config.agent.heartbeat_interval.0.as_secs())]);
            }
            _ = tokio::time::sleep(coalesce_wait.unwrap_or(Duration::ZERO)), if coalesce_wait.is_some() => {
                let summaries = out.coalescer.flush(Utc::now());
                out.emit(summaries);
            }
        }
        if detector.take_dirty()
            && let Err(e) = baseline::save(&state_dir, detector.baseline())
        {
            tracing::error!("{e}");
        }
        // Said at the first drop, then each time the count doubles: no log flood.
        let counters = detector.counters();
        let grew = |now: u64, said: u64| now > 0 && now >= said.saturating_mul(2).max(1);
        if grew(
            counters.neighbours_dropped,
            reported_counters.neighbours_dropped,
        ) || grew(counters.links_dropped, reported_counters.links_dropped)
        {
            tracing::warn!(
                neighbours_dropped = counters.neighbours_dropped,
                links_dropped = counters.links_dropped,
                "tables full: neighbour entries beyond {} (gateways always kept) or links beyond {} are not tracked",
                crate::detect::net::MAX_NEIGHBOURS,
                crate::baseline::MAX_LINKS
            );
            reported_counters = counters.clone();
        }
    };

    tracing::info!("stopping: {reason}");
    notifier.notify(&format!("STOPPING=1\nSTATUS=stopping ({reason})"));
    let mut last = out.coalescer.close_all(Utc::now());
    last.push(lifecycle::agent_stopping(Utc::now(), &reason));
    out.emit(last);
    if detector.is_ready()
        && let Err(e) = baseline::save(&state_dir, detector.baseline())
    {
        tracing::error!("{e}");
    }
    packets.save(&state_dir);
    tls.save();
    ct.save();
    stop_webhooks(webhooks, STOP_GRACE).await;
    match failure {
        Some(why) => bail!(why),
        None => Ok(()),
    }
}

/// The names our TLS targets serve (for correlating CT issuances).
fn served_names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = config
        .tls
        .targets
        .iter()
        .flat_map(|t| [t.server_name().to_string(), t.address.host.clone()])
        .collect();
    names.sort();
    names.dedup();
    names
}

fn start_ct(config: &Config, ct: &CtWatch) -> Option<Feed<CtEvent>> {
    if config.ct.domains.is_empty() {
        return None;
    }
    tracing::info!(
        "CT monitoring of {} through {} every {}",
        config.ct.domains.join(", "),
        config.ct.api_url,
        config.ct.interval
    );
    Some(Feed::new(source::ct::start(
        config.ct.clone(),
        ct.positions(),
    )))
}

fn start_caa(config: &Config) -> Option<Feed<CaaReport>> {
    if config.caa.domains.is_empty() {
        return None;
    }
    tracing::info!(
        "CAA audit of {} every {}",
        config.caa.domains.join(", "),
        config.caa.interval
    );
    Some(Feed::new(source::caa::start(config.caa.clone())))
}

fn caa_rules(config: &Config) -> CaaRules {
    CaaRules {
        require_accounturi: config.caa.require_accounturi,
        require_validationmethods: config.caa.require_validationmethods,
    }
}

/// CLOCK_MONOTONIC in microseconds (for sd_notify's RELOADING=1).
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// The gateways and their MACs as the baseline holds them.
fn gateway_info(detector: &NetDetector) -> Vec<GatewayInfo> {
    detector
        .baseline()
        .gateways
        .iter()
        .map(|g| GatewayInfo {
            interface: g.interface.clone(),
            family: g.family.as_str().to_string(),
            ip: g.ip.to_string(),
            mac: g.mac.to_string(),
        })
        .collect()
}

/// Renders the metrics to the textfile and the HTTP page.
fn publish_metrics(config: &Config, metrics: &Metrics, page: &std::sync::Mutex<String>) {
    let text = metrics.render();
    if !config.metrics.textfile.as_os_str().is_empty()
        && let Err(e) = metrics::write_textfile(&config.metrics.textfile, &text)
    {
        tracing::warn!(
            "cannot write the metrics textfile {}: {e}",
            config.metrics.textfile.display()
        );
    }
    if let Ok(mut p) = page.lock() {
        *p = text;
    }
}

/// What `netsentry status` shows about capture (the agent is another process).
fn write_capture_stats(state_dir: &Path, packets_seen: u64, drops: u64, watch: &PacketWatch) {
    let c = watch.detector.counters();
    let stats = serde_json::json!({
        "updated": crate::alert::format_time(&Utc::now()),
        "interfaces": watch.watched(),
        "kernel_packets": packets_seen,
        "kernel_drops": drops,
        "frames": c.frames,
        "arp": c.arp,
        "ndp": c.ndp,
        "malformed": c.malformed,
        "stations": watch.detector.stations().len(),
        "stations_evicted": c.stations_evicted,
    });
    if let Err(e) =
        baseline::write_state_text(state_dir, baseline::CAPTURE_FILE, &stats.to_string())
    {
        tracing::debug!("{e}");
    }
}
