//! Setting up what the agent runs with: logging, `state_dir`, the journal, the
//! spool and its receivers, timers, and the background feeds (CT, CAA). Small
//! functions the run loop and a reload share.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;

use crate::agent::ct::CtWatch;
use crate::agent::packets::{PacketWatch, STATION_KINDS};
use crate::config::{Config, JournaldMode};
use crate::detect::caa::CaaRules;
use crate::detect::coalesce::Coalescer;
use crate::detect::net::{NetDetector, NetSettings};
use crate::sink::format;
use crate::sink::journald::{self, JournaldSink};
use crate::sink::metrics::{self, GatewayInfo, Metrics};
use crate::sink::spool::Spool;
use crate::sink::webhook::{Outbox, WebhookSink};
use crate::source::caa::CaaReport;
use crate::source::ct::CtEvent;
use crate::source::{self, Feed};
use crate::state;

/// Sets up logging: journald when it is there (or asked for), else stderr.
pub fn init_logging(config: &Config) {
    use tracing_subscriber::prelude::*;
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("NETSENTRY_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("netsentry={}", config.log.level.as_str()))
        });
    let journal = match use_journald(config.log.journald) {
        // One mapping for logs and alerts: an informational log line is
        // PRIORITY 6 like an info alert (tracing-journald's default is 5).
        true => tracing_journald::layer().ok().map(|l| {
            l.with_syslog_identifier("netsentry".into())
                .with_priority_mappings(tracing_journald::PriorityMappings {
                    error: tracing_journald::Priority::Error,
                    warn: tracing_journald::Priority::Warning,
                    info: tracing_journald::Priority::Informational,
                    debug: tracing_journald::Priority::Debug,
                    trace: tracing_journald::Priority::Debug,
                })
        }),
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
                    // Colours only for a terminal, not for a file or a pipe.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_target(false),
            )
            .try_init();
    }
}

pub fn use_journald(mode: JournaldMode) -> bool {
    match mode {
        JournaldMode::Off => false,
        JournaldMode::On => true,
        JournaldMode::Auto => Path::new(journald::SOCKET_PATH).exists(),
    }
}

/// Creates `state_dir` (mode 0700) if needed and checks that it is usable.
pub fn prepare_state_dir(dir: &Path) -> anyhow::Result<()> {
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
pub fn read_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read webhook secret_file {}", path.display()))?;
    if meta.permissions().mode() & 0o004 != 0 {
        bail!(
            "webhook secret_file {} is readable by everyone: run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let text = crate::files::read_regular_text(path)
        .with_context(|| format!("cannot read webhook secret_file {}", path.display()))?;
    format::secret_key(&text).with_context(|| format!("webhook secret_file {}", path.display()))
}

pub fn open_journal(mode: JournaldMode) -> Option<JournaldSink> {
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
pub fn open_outbox(state_dir: &Path, max_bytes: u64) -> anyhow::Result<Arc<Outbox>> {
    let dir = state_dir.join("spool");
    let (spool, recovery) = match Spool::open(&dir, max_bytes) {
        Ok(opened) => opened,
        Err(e) => {
            // A spool that cannot be opened (not a directory, unreadable
            // segment) must not keep the agent from starting: it is moved
            // aside for a human to look at, and a new one is made.
            let aside = state_dir.join(format!("spool.broken-{}", Utc::now().timestamp()));
            std::fs::rename(&dir, &aside).map_err(|r| {
                anyhow::anyhow!(
                    "{e}; moving it aside to {} failed too: {r}",
                    aside.display()
                )
            })?;
            tracing::error!(
                "{e}; it was moved to {} (its undelivered alerts are not sent) and a new spool is used",
                aside.display()
            );
            Spool::open(&dir, max_bytes)?
        }
    };
    if recovery.damaged_bytes > 0 {
        tracing::warn!(
            "spool: {} damaged bytes between valid entries were skipped",
            recovery.damaged_bytes
        );
    }
    if recovery.torn_bytes > 0 {
        tracing::warn!(
            "spool: a half-written entry ({} bytes, from a crash or a full disk) was cut off",
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
pub fn read_secrets(config: &Config) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
    config
        .webhooks
        .iter()
        .map(|hook| hook.secret_file.as_deref().map(read_secret).transpose())
        .collect()
}

/// Starts one delivery task per receiver, reading from `outbox`.
pub fn start_webhooks(
    config: &Config,
    secrets: Vec<Option<Vec<u8>>>,
    outbox: &Arc<Outbox>,
) -> anyhow::Result<Vec<WebhookSink>> {
    let mut sinks = Vec::new();
    for (hook, key) in config.webhooks.iter().zip(secrets) {
        if hook.url.is_cleartext_remote() {
            tracing::warn!(
                "webhook {} is plain http to another host: alerts can be read and altered on the way",
                hook.display_name()
            );
        }
        sinks.push(WebhookSink::start(hook.clone(), key, outbox.clone())?);
    }
    Ok(sinks)
}

/// Stops delivery tasks, giving each `grace` to finish what it is sending.
pub async fn stop_webhooks(sinks: Vec<WebhookSink>, grace: Duration) {
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

/// An address in each half of each family's space: a pair of routes that
/// splits the space (`0.0.0.0/1` + `128.0.0.0/1`) overrides the default route
/// without touching it. Looked up only; nothing is ever sent to them.
const HALVES: [&str; 4] = ["64.0.0.1", "160.0.0.1", "2000::1", "8000::1"];
/// Destinations looked up at most.
pub const MAX_DESTINATIONS: usize = 512;

/// The destinations whose path `[route]` watches: the halves, the TLS
/// targets' address literals, the DNS servers (`[tls] nameservers`, else
/// /etc/resolv.conf) and `[route] watch_destinations`; each once.
pub fn route_destinations(config: &Config) -> Vec<std::net::IpAddr> {
    use std::net::{IpAddr, SocketAddr};
    if !config.route.enabled {
        return Vec::new();
    }
    let mut out: Vec<IpAddr> = HALVES.iter().filter_map(|a| a.parse().ok()).collect();
    for t in &config.tls.targets {
        if let Some(ip) = t
            .address
            .as_ref()
            .and_then(|a| a.host.parse::<IpAddr>().ok())
        {
            out.push(ip);
        }
    }
    let resolvers: Vec<IpAddr> = if config.tls.nameservers.is_empty() {
        std::fs::read_to_string("/etc/resolv.conf")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("nameserver"))
            .filter_map(|ip| ip.trim().split('%').next()?.parse().ok())
            .collect()
    } else {
        config
            .tls
            .nameservers
            .iter()
            .filter_map(|n| {
                n.parse::<IpAddr>()
                    .ok()
                    .or_else(|| n.parse::<SocketAddr>().ok().map(|s| s.ip()))
            })
            .collect()
    };
    out.extend(resolvers.into_iter().filter(|ip| !ip.is_loopback()));
    out.extend(config.route.watch_destinations.iter().copied());
    let mut seen = std::collections::HashSet::new();
    out.retain(|ip| seen.insert(*ip));
    out.truncate(MAX_DESTINATIONS);
    out
}

pub fn net_settings(config: &Config) -> NetSettings {
    NetSettings {
        interfaces: config
            .agent
            .interfaces
            .iter()
            .map(|i| i.0.clone())
            .collect(),
        ignore_links: config.agent.ignore_links.clone(),
        ignore_link_kinds: config.agent.ignore_link_kinds.clone(),
        adopt_after: Some(config.agent.gateway_adopt_after.0)
            .filter(|d| !d.is_zero())
            .and_then(|d| chrono::Duration::from_std(d).ok()),
        flap_window: chrono::Duration::from_std(config.agent.link_flap_window.0)
            .unwrap_or(chrono::Duration::seconds(60)),
        confirm_first_sight: config.arp.enabled,
        vrrp_is_normal: config.arp.vrrp_is_normal,
    }
}

pub fn new_coalescer(config: &Config) -> Coalescer {
    Coalescer::new(config.agent.coalesce_burst, config.agent.coalesce_window.0)
        .with_kind_limit(STATION_KINDS, config.arp.alerts_per_kind)
}

/// A timer that ticks every `every` (first tick after one period); `None`: never.
pub fn timer(every: Option<Duration>) -> tokio::time::Interval {
    let period = every
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(3600));
    let mut t = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// Alertmanager receivers get the conditions that hold re-sent at half their
/// resolve_after, so that Alertmanager does not resolve them on its own.
pub fn refresh_every(config: &Config) -> Option<Duration> {
    config
        .webhooks
        .iter()
        .filter(|w| w.format == crate::config::WebhookFormat::Alertmanager)
        .map(|w| w.resolve_after.0 / 2)
        .min()
        .filter(|d| !d.is_zero())
}

/// The names our TLS targets serve (for correlating CT issuances).
pub fn served_names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = config
        .tls
        .targets
        .iter()
        .flat_map(|t| t.host_names())
        .collect();
    names.sort();
    names.dedup();
    names
}

pub fn start_ct(config: &Config, ct: &CtWatch) -> Option<Feed<CtEvent>> {
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
        &config.agent.state_dir,
    )))
}

pub fn start_caa(config: &Config) -> Option<Feed<CaaReport>> {
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

pub fn caa_rules(config: &Config) -> CaaRules {
    CaaRules {
        require_accounturi: config.caa.require_accounturi,
        require_validationmethods: config.caa.require_validationmethods,
    }
}

/// CLOCK_MONOTONIC in microseconds (for sd_notify's RELOADING=1).
pub fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
        .unwrap_or(0)
}

/// The gateways and their MACs as the baseline holds them.
pub fn gateway_info(detector: &NetDetector) -> Vec<GatewayInfo> {
    detector
        .baseline()
        .gateways
        .iter()
        .map(|g| GatewayInfo {
            interface: g.interface.clone(),
            family: g.family.as_str().to_string(),
            ip: g.ip.to_string(),
            mac: g.mac.to_string(),
            failovers: detector.failovers(&g.interface, g.ip),
        })
        .collect()
}

/// Renders the metrics to the textfile and the HTTP page.
pub fn publish_metrics(config: &Config, metrics: &Metrics, page: &std::sync::Mutex<String>) {
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
pub fn write_capture_stats(
    state_dir: &Path,
    (packets_seen, drops): (u64, u64),
    (syns, syn_drops, syn_keep): (u64, u64, u32),
    watch: &PacketWatch,
) {
    let c = watch.detector.counters();
    let groups: Vec<serde_json::Value> = watch
        .detector
        .vrrp_view(Utc::now())
        .groups
        .iter()
        .map(|g| {
            serde_json::json!({"interface": g.segment, "vrid": g.vrid,
                "family": if g.v6 { "inet6" } else { "inet" },
                "addresses": g.vips, "routers": g.routers})
        })
        .collect();
    let stats = serde_json::json!({
        "updated": crate::alert::format_time(&Utc::now()),
        "interfaces": watch.watched(),
        "kernel_packets": packets_seen,
        "kernel_drops": drops,
        "syns": syns,
        "syn_drops": syn_drops,
        "syn_sampling": f64::from(syn_keep) / 65536.0,
        "frames": c.frames,
        "arp": c.arp,
        "ndp": c.ndp,
        "malformed": c.malformed,
        "other_vlan": c.other_vlan,
        "vrrp": c.vrrp,
        "vrrp_dropped": c.vrrp_dropped,
        "vrrp_groups": groups,
        "stations": watch.detector.stations().len(),
        "stations_evicted": c.stations_evicted,
    });
    if let Err(e) = state::write_text(state_dir, state::CAPTURE_FILE, &stats.to_string()) {
        tracing::debug!("{e}");
    }
}
