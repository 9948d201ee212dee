//! The agent: wires the sources, the detectors and the sinks together, and
//! handles start, signals, reload and stop.
//!
//! - `mod.rs`: [`run`] — the loop that waits for the next event and hands it
//!   to one small method of [`Agent`];
//! - `outputs.rs`: the emit pipeline every finding goes through;
//! - `reload.rs`: [`ReloadPlan`], what a SIGHUP changes (pure);
//! - `setup.rs`: logging, state_dir, journal, spool and receivers, timers;
//! - `packets.rs`, `inbound.rs`, `tls.rs`, `ct.rs`: the glue between a source's events, its
//!   detector and its state files.

pub mod ct;
pub mod inbound;
pub mod packets;
pub mod publish;
pub mod tls;

mod outputs;
mod reload;
pub(crate) mod setup;
mod sighup;

pub use reload::{Rebuild, ReloadPlan};
pub use setup::init_logging;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use chrono::Utc;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

use crate::config::{Config, ConfigSource};
use crate::detect::caa::CaaWatch;
use crate::detect::correlate::Correlator;
use crate::detect::lifecycle;
use crate::detect::merge::SameChange;
use crate::detect::net::{MAX_NEIGHBOURS, NetCounters, NetDetector};
use crate::detect::tls::ProbeReport;
use crate::kernel::Observation;
use crate::sink::metrics::{self, Metrics};
use crate::sink::notify::Notifier;
use crate::sink::webhook::{Outbox, WebhookSink, receiver_id};
use crate::source::caa::CaaReport;
use crate::source::capture::{self, CaptureControl, CaptureEvent, CaptureSettings};
use crate::source::ct::CtEvent;
use crate::source::netlink::{self, SourceEvent};
use crate::source::{Feed, tls_scheduler};
use crate::state::baseline;
use ct::CtWatch;
use inbound::InboundWatch;
use outputs::Outputs;
use packets::PacketWatch;
use publish::PublishWatch;
use setup::*;
use tls::TlsWatch;

/// How long queued webhook deliveries may take once a stop was asked for.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often the capture's kernel counters are read (and logged when frames were dropped).
const CAPTURE_STATS_EVERY: Duration = Duration::from_secs(10);
/// How often alerts waiting in memory are offered to the spool again.
const SPOOL_RETRY_EVERY: Duration = Duration::from_secs(2);
/// How often a changed station table is written to state_dir.
const STATE_SAVE_EVERY: Duration = Duration::from_secs(30);
/// How often the listening sockets are read (the inbound ports follow them).
const LISTENERS_EVERY: Duration = Duration::from_secs(10);
/// How often `[publish]` looks at the certificate files (a renewal is
/// published within this).
const PUBLISH_EVERY: Duration = Duration::from_secs(2);

/// Runs the agent until SIGTERM or SIGINT. SIGHUP reloads the configuration
/// from `source`: a valid one takes effect (baseline, spool and stations are
/// kept), an invalid one is reported (`config_rejected`) and the running one stays.
pub async fn run(config: Config, source: ConfigSource) -> anyhow::Result<()> {
    let mut agent = Agent::start(config, source).await?;
    let mut signals = Signals::new()?;
    // The arms only hand the event to one method each; see `Agent`.
    let stop = loop {
        let coalesce_wait = agent
            .out
            .coalescer
            .next_deadline()
            .map(|d| d.saturating_sub(agent.out.clock.elapsed()));
        let net_wait = agent
            .detector
            .next_deadline()
            .map(|d| (d - Utc::now()).to_std().unwrap_or(Duration::ZERO));
        let a = &mut agent;
        tokio::select! {
            event = a.netlink.recv() => if let Some(stop) = a.on_netlink(event) { break stop },
            event = a.capture.recv(), if a.capture_on => a.on_capture(event),
            _ = a.timers.inbound_window.tick(), if a.inbound_on() => a.close_inbound_window(),
            _ = a.timers.listeners.tick(), if a.inbound_on() => a.refresh_inbound_ports(),
            _ = a.timers.publish.tick(), if a.publish.is_some() => a.publish_tick(),
            report = next(&mut a.tls_checks), if a.tls_checks.is_some() => a.on_tls(report),
            round = next(&mut a.tlsa_feed), if a.tlsa_feed.is_some() => a.on_tlsa(round),
            event = next(&mut a.ct_feed), if a.ct_feed.is_some() => a.on_ct(event),
            report = next(&mut a.caa_feed), if a.caa_feed.is_some() => a.on_caa(report),
            _ = a.timers.save.tick() => a.save_state(),
            _ = a.timers.spool_retry.tick(), if a.out.outbox.as_ref().is_some_and(|o| o.backlog() > 0) => a.out.retry_spool(),
            _ = a.timers.metrics.tick(), if a.config.metrics.enabled() => a.publish_metrics(),
            _ = a.timers.watchdog.tick(), if a.notifier.watchdog_every().is_some() => a.notifier.notify("WATCHDOG=1"),
            _ = a.timers.refresh.tick(), if refresh_every(&a.config).is_some() => a.out.refresh_conditions(Utc::now()),
            _ = a.timers.heartbeat.tick(), if a.config.heartbeat_every().is_some() => a.heartbeat(),
            _ = tokio::time::sleep(coalesce_wait.unwrap_or(Duration::ZERO)), if coalesce_wait.is_some() => a.flush_coalescer(),
            _ = tokio::time::sleep(net_wait.unwrap_or(Duration::ZERO)), if net_wait.is_some() => a.net_tick(),
            _ = signals.term.recv() => break Stop::signal("SIGTERM"),
            _ = signals.int.recv() => break Stop::signal("SIGINT"),
            _ = signals.hup.recv() => a.reload().await,
        }
        agent.after_event();
    };
    agent.stop(stop).await
}

/// The next item of a feed that may not be running (the arm's condition
/// makes sure it is).
async fn next<T>(feed: &mut Option<Feed<T>>) -> Option<T> {
    feed.as_mut()?.rx.recv().await
}

/// The signals the agent answers.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// Why the loop ended: the reason logged and sent in `agent_stopping`, and a
/// failure (exit 2) when a source died.
struct Stop {
    reason: String,
    failure: Option<String>,
}

impl Stop {
    fn signal(name: &str) -> Stop {
        Stop {
            reason: name.to_string(),
            failure: None,
        }
    }

    fn failed(reason: String, failure: String) -> Stop {
        Stop {
            reason,
            failure: Some(failure),
        }
    }
}

/// The loop's timers (each can be re-made by a reload).
struct Timers {
    save: tokio::time::Interval,
    /// While alerts wait in memory for the spool (a full disk).
    spool_retry: tokio::time::Interval,
    refresh: tokio::time::Interval,
    heartbeat: tokio::time::Interval,
    metrics: tokio::time::Interval,
    watchdog: tokio::time::Interval,
    /// The end of each `[inbound] window`.
    inbound_window: tokio::time::Interval,
    listeners: tokio::time::Interval,
    publish: tokio::time::Interval,
}

impl Timers {
    fn new(config: &Config, notifier: &Notifier) -> Timers {
        Timers {
            save: timer(Some(STATE_SAVE_EVERY)),
            spool_retry: timer(Some(SPOOL_RETRY_EVERY)),
            refresh: timer(refresh_every(config)),
            heartbeat: timer(config.heartbeat_every()),
            metrics: timer(Some(config.metrics.interval.0)),
            watchdog: timer(notifier.watchdog_every()),
            inbound_window: timer(Some(config.inbound.window.0)),
            listeners: timer(Some(LISTENERS_EVERY)),
            publish: timer(Some(PUBLISH_EVERY)),
        }
    }
}

/// Everything the running agent holds.
struct Agent {
    config: Config,
    source: ConfigSource,
    state_dir: PathBuf,
    notifier: Notifier,
    outbox: Option<Arc<Outbox>>,
    webhooks: Vec<WebhookSink>,
    out: Outputs,
    detector: NetDetector,
    baseline_loaded: bool,
    baseline_problem: Option<String>,
    /// The baseline in memory is not (exactly) on disk: written after the
    /// next event or at the state timer.
    baseline_unsaved: bool,
    /// Writing the baseline fails (said once, and once when it works again).
    baseline_failing: bool,
    netlink: mpsc::Receiver<SourceEvent>,
    /// `[route]`: the destinations whose path the netlink thread watches.
    route_destinations: Arc<Mutex<Vec<std::net::IpAddr>>>,
    capture: mpsc::Receiver<CaptureEvent>,
    capture_on: bool,
    /// Tells the capture thread which ports to pass SYNs for.
    capture_control: Option<std::sync::mpsc::Sender<CaptureControl>>,
    reported_drops: u64,
    packets: PacketWatch,
    inbound: InboundWatch,
    publish: Option<PublishWatch>,
    /// `[publish] tlsa_names`: the TLSA records, looked up now and then.
    tlsa_feed: Option<Feed<crate::source::dane::TlsaRound>>,
    tls: TlsWatch,
    tls_checks: Option<Feed<Vec<ProbeReport>>>,
    ct: CtWatch,
    ct_feed: Option<Feed<CtEvent>>,
    caa: CaaWatch,
    caa_feed: Option<Feed<CaaReport>>,
    metrics_page: Arc<Mutex<String>>,
    timers: Timers,
    started: tokio::time::Instant,
    reported_counters: NetCounters,
}

impl Agent {
    /// Opens state, spool and receivers, then starts every source.
    async fn start(config: Config, source: ConfigSource) -> anyhow::Result<Agent> {
        let notifier = Notifier::from_env();
        let state_dir = config.agent.state_dir.clone();
        prepare_state_dir(&state_dir)?;
        let outbox = match config.webhooks.is_empty() {
            true => None,
            false => Some(open_outbox(&state_dir, config.agent.max_spool_bytes)?),
        };
        let webhooks = match &outbox {
            Some(o) => start_webhooks(&config, read_secrets(&config)?, o)?,
            None => Vec::new(),
        };
        let (mut stored, baseline_problem) = match baseline::load(&state_dir) {
            Ok(b) => (b, None),
            Err(e) => {
                tracing::warn!("{e}");
                (None, Some(e.to_string()))
            }
        };
        let baseline_loaded = stored.is_some();
        let pending = stored
            .as_mut()
            .map(|b| std::mem::take(&mut b.pending))
            .unwrap_or_default();
        let mut out = Outputs {
            host: config.host_id(),
            journal: open_journal(config.log.journald),
            outbox: outbox.clone(),
            conditions: HashMap::new(),
            correlator: Correlator::new(config.correlation.window.0),
            same_change: SameChange::new(config.arp.conflict_window.0),
            coalescer: new_coalescer(&config),
            metrics: Metrics {
                start_time: Utc::now().timestamp(),
                ..Default::default()
            },
            clock: std::time::Instant::now(),
        };
        out.correlator.set_served_names(served_names(&config));
        out.correlator.set_ct_window(config.correlation.ct_window.0);
        let detector = NetDetector::new(net_settings(&config), stored);
        let threads = start_threads(&config)?;
        let metrics_page = Arc::new(Mutex::new(String::new()));
        if !config.metrics.listen.is_empty() {
            metrics::serve(&config.metrics.listen, metrics_page.clone()).await?;
        }
        let ct = CtWatch::load(&config);
        let mut agent = Agent {
            timers: Timers::new(&config, &notifier),
            reported_counters: detector.counters().clone(),
            packets: PacketWatch::load(&config),
            inbound: InboundWatch::load(&config),
            publish: PublishWatch::load(&config),
            tlsa_feed: PublishWatch::tlsa_feed(&config),
            tls: TlsWatch::load(&config),
            tls_checks: tls_scheduler::start(&config),
            ct_feed: start_ct(&config, &ct),
            ct,
            caa: CaaWatch::default(),
            caa_feed: start_caa(&config),
            source,
            state_dir,
            notifier,
            outbox,
            webhooks,
            out,
            detector,
            baseline_loaded,
            baseline_problem,
            baseline_unsaved: false,
            baseline_failing: false,
            netlink: threads.netlink,
            capture: threads.capture,
            capture_on: threads.capture_on,
            capture_control: threads.control,
            route_destinations: threads.destinations,
            reported_drops: 0,
            metrics_page,
            started: tokio::time::Instant::now(),
            config,
        };
        agent.recover_pending(pending);
        agent.refresh_inbound_ports();
        Ok(agent)
    }

    /// Netlink: observations, full dumps (the first one makes the baseline
    /// ready), or the end of the source (which stops the agent).
    fn on_netlink(&mut self, event: Option<SourceEvent>) -> Option<Stop> {
        match event {
            Some(SourceEvent::Observations(batch)) => {
                self.share_wire_view();
                let mut findings = Vec::new();
                for obs in batch {
                    tracing::trace!(?obs, "netlink");
                    findings.extend(self.detector.observe(obs, Utc::now()));
                }
                self.emit_netlink(findings);
                self.sync_packets();
            }
            Some(SourceEvent::Resynced { reason, view }) => self.on_resync(reason, view),
            Some(SourceEvent::Failed(why)) => {
                tracing::error!("{why}");
                return Some(Stop::failed(format!("netlink source failed: {why}"), why));
            }
            None => {
                let why = "netlink source stopped".to_string();
                return Some(Stop::failed(why.clone(), why));
            }
        }
        None
    }

    /// What the wire knows that the netlink detector judges with: routers
    /// heard advertising, VRRP groups. The frames the capture has already
    /// handed over go first: the advertisement that explains a change comes
    /// before the change, and the kernel's notice of it may overtake it
    /// between the two threads.
    fn share_wire_view(&mut self) {
        // Bounded: a flood must not keep netlink waiting.
        for _ in 0..64 {
            match self.capture_on.then(|| self.capture.try_recv()) {
                Some(Ok(event)) => self.on_capture(Some(event)),
                _ => break,
            }
        }
        let now = Utc::now();
        let routers = self.packets.detector.established_routers(now);
        self.detector.set_known_routers(routers);
        self.detector.set_vrrp(self.packets.detector.vrrp_view(now));
    }

    fn on_resync(&mut self, reason: &str, view: crate::kernel::KernelView) {
        let first = !self.detector.is_ready();
        match reason {
            "start" => {}
            "overrun" => tracing::warn!(
                "netlink: the kernel dropped events (receive buffer overrun); full dump after overrun, reconciling"
            ),
            _ => tracing::debug!("netlink: full dump after {reason}; reconciling"),
        }
        self.share_wire_view();
        let findings = self
            .detector
            .observe(Observation::Snapshot(view), Utc::now());
        self.sync_packets();
        if first {
            let watching = self.detector.watched_interfaces();
            let loaded = if self.baseline_loaded {
                "loaded"
            } else {
                "new"
            };
            tracing::info!(
                "baseline ready ({loaded}); watching {}",
                watching.join(", ")
            );
            self.out.emit(vec![lifecycle::agent_started(
                Utc::now(),
                self.baseline_loaded,
                &watching,
                self.baseline_problem.as_deref(),
            )]);
            self.notifier
                .notify(&format!("READY=1\nSTATUS=watching {}", watching.join(", ")));
            if self.config.metrics.enabled() {
                self.publish_metrics();
            }
        }
        self.emit_netlink(findings);
        self.apply_decisions();
    }

    /// Alerts about changes the baseline records: the baseline is written
    /// first, with the alerts in it (`pending`), then they are spooled, then
    /// the baseline is written again without them (after the event). A kill
    /// between the two leaves either the alerts in the spool or, in the
    /// baseline, alerts the next start spools under the same ids: never a
    /// change lost, never one reported again under a new id.
    fn emit_netlink(&mut self, findings: Vec<crate::alert::Finding>) {
        // A gateway whose entry failed is asked directly (CAP_NET_RAW): a
        // live one answers and its entry recovers before it is judged.
        for probe in self.detector.take_probes() {
            let view = self.detector.view();
            if let Err(e) = crate::source::neighbour_probe::send(view, probe.ifindex, probe.ip) {
                tracing::warn!(
                    "cannot probe gateway {} on {}: {e}",
                    probe.ip,
                    view.link_name(probe.ifindex)
                );
            }
        }
        let batch = self.out.admit(findings);
        if !batch.records.is_empty() && self.detector.take_dirty() {
            self.save_baseline(&batch.records);
            // The copy without the alerts follows after the event.
            self.baseline_unsaved = true;
        }
        self.out.deliver(batch);
    }

    /// Alerts a killed agent had written with the baseline: those that did
    /// not reach the spool are spooled and printed now, under their ids.
    fn recover_pending(&mut self, pending: Vec<crate::alert::Alert>) {
        if pending.is_empty() {
            return;
        }
        // Written again without them after the first event.
        self.baseline_unsaved = true;
        let ids: Vec<&str> = pending.iter().map(|a| a.id.as_str()).collect();
        let spooled = match &self.outbox {
            Some(outbox) => outbox.spooled_ids(&ids),
            None => Default::default(),
        };
        let missing: Vec<Arc<crate::alert::Alert>> = pending
            .into_iter()
            .filter(|a| !spooled.contains(&a.id))
            .map(Arc::new)
            .collect();
        if missing.is_empty() {
            return;
        }
        tracing::info!(
            "{} alerts written with the baseline by an agent that stopped before spooling them are spooled now",
            missing.len()
        );
        self.out.deliver(outputs::Batch {
            records: missing.clone(),
            alerts: missing,
        });
    }

    /// The operator's `netsentry baseline accept|forget` decisions waiting in
    /// `state_dir`: applied after each full dump (start, reconcile) and at SIGHUP.
    pub(super) fn apply_decisions(&mut self) {
        let decisions = match baseline::take_decisions(&self.state_dir) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("{e}; the decisions in it are dropped, run the command again");
                return;
            }
        };
        for decision in decisions {
            tracing::info!("baseline: applying the decision to {decision}");
            let findings = self.detector.apply_decision(&decision, Utc::now());
            self.out.emit(findings);
        }
        self.sync_packets();
    }

    /// The packet detectors take the gateways, addresses and subnets the
    /// netlink side knows.
    fn sync_packets(&mut self) {
        self.packets.sync(&self.detector);
        self.inbound.sync(&self.detector);
        // The capture joins the VRRP groups on the watched interfaces (a
        // NIC's multicast filter drops groups nobody joined).
        if self.config.arp.enabled
            && self.config.arp.vrrp_is_normal
            && let Some(indexes) = self.packets.take_new_indexes()
            && let Some(control) = &self.capture_control
        {
            let _ = control.send(CaptureControl::Interfaces(indexes));
        }
    }

    fn inbound_on(&self) -> bool {
        self.config.inbound.enabled && self.capture_on
    }

    /// The listening ports, read again: the capture passes the SYNs to them.
    fn refresh_inbound_ports(&mut self) {
        if !self.inbound_on() {
            return;
        }
        if let Some(ports) = self.inbound.refresh_ports()
            && let Some(control) = &self.capture_control
        {
            let _ = control.send(CaptureControl::SynPorts(ports));
        }
    }

    /// `[publish]`: a new manifest when the certificates changed.
    fn publish_tick(&mut self) {
        if let Some(p) = &mut self.publish {
            let findings = p.tick(Utc::now());
            self.out.emit(findings);
        }
    }

    /// A round of TLSA lookups for `[publish]` (`dane_stale`).
    fn on_tlsa(&mut self, round: Option<crate::source::dane::TlsaRound>) {
        match (round, &mut self.publish) {
            (Some(round), Some(p)) => {
                let findings = p.observe_tlsa(round, Utc::now());
                self.out.emit(findings);
            }
            (Some(_), None) => {}
            (None, _) => self.tlsa_feed = None,
        }
    }

    /// The end of an inbound window: each busy port is judged.
    fn close_inbound_window(&mut self) {
        let findings = self.inbound.close_window(Utc::now());
        self.out.emit(findings);
        // `netsentry status` sees each window's figures.
        self.inbound.save(&self.state_dir);
    }

    /// Captured frames, the capture's counters, or its end (the agent goes on).
    fn on_capture(&mut self, event: Option<CaptureEvent>) {
        match event {
            Some(CaptureEvent::Frames(frames)) => {
                for frame in frames {
                    if let Some(syn) = crate::wire::syn::parse(&frame.data) {
                        if self.inbound_on() {
                            self.inbound.observe(&syn, frame.time);
                        }
                        continue;
                    }
                    if !self.config.arp.enabled {
                        continue;
                    }
                    let Some(name) = self.packets.interface_of(frame.ifindex) else {
                        continue;
                    };
                    let name = name.to_string();
                    let findings = self.packets.observe(&name, &frame.data, frame.time);
                    if !findings.is_empty() {
                        self.out.emit(findings);
                    }
                }
                // A gateway learned at first sight that another MAC answered
                // for stays unconfirmed in the baseline.
                for ip in self.packets.detector.take_conflicted() {
                    self.detector.confirmation_failed(ip);
                }
                for ip in self.packets.detector.take_confirmed() {
                    tracing::info!(
                        "default gateway {ip}: the MAC learned at first sight answered the agent's probe first; confirmed"
                    );
                    self.detector.confirmation_done(ip);
                }
            }
            Some(CaptureEvent::Stats {
                packets,
                drops,
                syns,
                syn_drops,
                syn_keep,
            }) => {
                if drops > self.reported_drops {
                    tracing::warn!(
                        "packet capture: the kernel dropped {} frames (of {packets} so far): the agent could not keep up",
                        drops - self.reported_drops
                    );
                    self.reported_drops = drops;
                }
                self.out.metrics.capture_packets = packets;
                self.out.metrics.capture_drops = drops;
                self.out.metrics.capture_syns = syns;
                self.out.metrics.syn_sampling = f64::from(syn_keep) / 65536.0;
                write_capture_stats(
                    &self.state_dir,
                    (packets, drops),
                    (syns, syn_drops, syn_keep),
                    &self.packets,
                );
            }
            Some(CaptureEvent::Failed(why)) => {
                tracing::warn!("{why}");
                self.capture_on = false;
            }
            None => self.capture_on = false,
        }
    }

    fn on_tls(&mut self, round: Option<Vec<ProbeReport>>) {
        match round {
            Some(reports) => {
                let findings = self.tls.observe_round(&reports);
                self.out.emit(findings);
            }
            None => self.tls_checks = None,
        }
    }

    fn on_ct(&mut self, event: Option<CtEvent>) {
        match event {
            Some(event) => {
                let findings = self.ct.observe(event, &mut self.tls.history);
                self.out.emit(findings);
                // After the alerts are spooled: a crash before this repeats the page.
                self.ct.save();
            }
            None => self.ct_feed = None,
        }
    }

    fn on_caa(&mut self, report: Option<CaaReport>) {
        let Some(report) = report else {
            self.caa_feed = None;
            return;
        };
        let found = match &report.found {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(
                    "CAA audit of {}: {e}; trying again next round",
                    report.domain
                );
                return;
            }
        };
        let outcome = self.caa.observe(
            &report.domain,
            found
                .as_ref()
                .map(|(owner, r)| (owner.as_str(), r.as_slice())),
            caa_rules(&self.config),
            Utc::now(),
        );
        if outcome.fixed {
            tracing::info!("CAA policy of {} is fine now", report.domain);
        }
        self.out.emit(outcome.findings);
    }

    /// Writes the baseline; a failure (a full disk) is said once and the
    /// write is tried again after the next event or at the state timer.
    fn save_baseline(&mut self, pending: &[Arc<crate::alert::Alert>]) {
        match baseline::save_with_pending(&self.state_dir, self.detector.baseline(), pending) {
            Ok(()) => {
                if std::mem::take(&mut self.baseline_failing) {
                    tracing::info!("the baseline is written again");
                }
                self.baseline_unsaved = false;
            }
            Err(e) => {
                if !std::mem::replace(&mut self.baseline_failing, true) {
                    tracing::error!("{e}; trying again");
                }
                self.baseline_unsaved = true;
            }
        }
    }

    fn save_state(&mut self) {
        if self.baseline_unsaved {
            self.save_baseline(&[]);
        }
        self.packets.save(&self.state_dir);
        self.inbound.save(&self.state_dir);
        self.tls.save();
    }

    /// Refreshes the metrics from memory (no file is read) and writes them out.
    fn publish_metrics(&mut self) {
        let m = &mut self.out.metrics;
        m.gateways = gateway_info(&self.detector);
        m.tls = self.tls.metrics();
        m.inbound = self
            .inbound
            .per_port
            .iter()
            .map(|(k, n)| metrics::InboundInfo {
                port: k.port,
                family: k.family,
                syns: *n,
                median_hops: self.inbound.last_median.get(k).copied(),
            })
            .collect();
        m.spool_pending = match &self.outbox {
            Some(outbox) => self
                .config
                .webhooks
                .iter()
                .map(|hook| (hook.display_name(), outbox.pending(&receiver_id(hook))))
                .collect(),
            None => Vec::new(),
        };
        m.delivery = match &self.outbox {
            Some(outbox) => self
                .config
                .webhooks
                .iter()
                .map(|hook| (hook.display_name(), outbox.health(&receiver_id(hook))))
                .collect(),
            None => Vec::new(),
        };
        m.stations = self.packets.detector.stations().per_interface();
        publish_metrics(&self.config, &self.out.metrics, &self.metrics_page);
    }

    fn heartbeat(&mut self) {
        self.out.emit(vec![lifecycle::agent_heartbeat(
            Utc::now(),
            self.started.elapsed().as_secs(),
            self.config.heartbeat_every().unwrap_or_default().as_secs(),
        )]);
    }

    /// The netlink detector's timed decisions (a flapping link's episode
    /// over, a failed gateway entry still failed).
    fn net_tick(&mut self) {
        let findings = self.detector.tick(Utc::now());
        self.emit_netlink(findings);
        self.sync_packets();
    }

    fn flush_coalescer(&mut self) {
        let summaries = self
            .out
            .coalescer
            .flush(Utc::now(), self.out.clock.elapsed());
        self.out.emit(summaries);
    }

    /// After every event: the baseline saved when it changed; full tables said
    /// at the first drop, then each time the count doubles (no log flood).
    fn after_event(&mut self) {
        if self.detector.take_dirty() || self.baseline_unsaved {
            self.save_baseline(&[]);
        }
        let counters = self.detector.counters();
        let said = &self.reported_counters;
        let grew = |now: u64, said: u64| now > 0 && now >= said.saturating_mul(2).max(1);
        if grew(counters.neighbours_dropped, said.neighbours_dropped)
            || grew(counters.links_dropped, said.links_dropped)
        {
            tracing::warn!(
                neighbours_dropped = counters.neighbours_dropped,
                links_dropped = counters.links_dropped,
                "tables full: neighbour entries beyond {MAX_NEIGHBOURS} (gateways always kept) or links beyond {} are not tracked",
                baseline::MAX_LINKS
            );
            self.reported_counters = counters.clone();
        }
    }

    /// Summaries and `agent_stopping` out, state saved, receivers given their grace.
    async fn stop(mut self, stop: Stop) -> anyhow::Result<()> {
        let reason = stop.reason;
        tracing::info!("stopping: {reason}");
        self.notifier
            .notify(&format!("STOPPING=1\nSTATUS=stopping ({reason})"));
        let mut last = self.out.coalescer.close_all(Utc::now());
        last.push(lifecycle::agent_stopping(Utc::now(), &reason));
        self.out.emit(last);
        if self.detector.is_ready()
            && let Err(e) = baseline::save(&self.state_dir, self.detector.baseline())
        {
            tracing::error!("{e}");
        }
        self.packets.save(&self.state_dir);
        self.inbound.save(&self.state_dir);
        self.tls.save();
        self.ct.save();
        // A stopped agent has no metrics: node_exporter must not serve the
        // last ones (an old gateway MAC) as if they were current.
        let textfile = &self.config.metrics.textfile;
        if !textfile.as_os_str().is_empty()
            && let Err(e) = std::fs::remove_file(textfile)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(
                "cannot remove the metrics textfile {}: {e}",
                textfile.display()
            );
        }
        stop_webhooks(self.webhooks, STOP_GRACE).await;
        match stop.failure {
            Some(why) => bail!(why),
            None => Ok(()),
        }
    }
}

/// The source threads and their channels.
struct Threads {
    netlink: mpsc::Receiver<SourceEvent>,
    /// The destinations the netlink thread looks up (replaced at a reload).
    destinations: Arc<Mutex<Vec<std::net::IpAddr>>>,
    capture: mpsc::Receiver<CaptureEvent>,
    capture_on: bool,
    control: Option<std::sync::mpsc::Sender<CaptureControl>>,
}

/// Starts the netlink thread and, when `[arp]` or `[inbound]` is enabled, the
/// capture thread (blocking sockets, each on its own thread). Without capture
/// the agent goes on.
fn start_threads(config: &Config) -> anyhow::Result<Threads> {
    let (tx, rx) = mpsc::channel::<SourceEvent>(1024);
    let destinations = Arc::new(Mutex::new(setup::route_destinations(config)));
    let settings = netlink::NetlinkSettings {
        reconcile: config.agent.reconcile_interval.0,
        receive_buffer: config.agent.netlink_receive_buffer,
        destinations: destinations.clone(),
    };
    std::thread::Builder::new()
        .name("netlink".into())
        .spawn(move || netlink::run(tx, settings))?;
    let (cap_tx, cap_rx) = mpsc::channel::<CaptureEvent>(64);
    let capture_on = config.arp.enabled || config.inbound.enabled;
    let mut control = None;
    if capture_on {
        let settings = CaptureSettings {
            stats_every: CAPTURE_STATS_EVERY,
            receive_buffer: config.arp.receive_buffer,
            max_syn_rate: config.inbound.max_syn_rate,
        };
        let (control_tx, control_rx) = std::sync::mpsc::channel();
        control = Some(control_tx);
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || capture::run(cap_tx, control_rx, settings))?;
    } else {
        drop(cap_tx);
        tracing::info!("packet capture is off ([arp] and [inbound] enabled = false)");
    }
    Ok(Threads {
        netlink: rx,
        destinations,
        capture: cap_rx,
        capture_on,
        control,
    })
}
