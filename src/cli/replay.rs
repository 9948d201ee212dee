//! `netsentry replay`: the packet detectors over a pcap or pcapng file, with
//! packet timestamps as time and no rate limits (forensics wants every finding).

use std::io::Write;
use std::path::Path;

use crate::agent::inbound::InboundWatch;
use crate::agent::packets;
use crate::alert::{Alert, Finding};
use crate::config::{Config, GatewaySpec};
use crate::detect::arp::{ArpCounters, ArpDetector};
use crate::source::pcap::{PcapError, for_each_frame};

use super::CliError;

/// What a replay found.
#[derive(Debug, Default)]
pub struct ReplaySummary {
    pub counters: ArpCounters,
    pub alerts: u64,
    /// TCP SYNs (the inbound-path detector's input) and those it counted.
    pub syns: u64,
    pub syns_counted: u64,
    /// Frames on interfaces with another link type (skipped).
    pub skipped_link_type: u64,
}

/// Replays `path` and writes every alert to `out` (JSON lines with `json`).
pub fn replay(
    path: &Path,
    config: &Config,
    use_baseline: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<ReplaySummary, PcapError> {
    let stored = if use_baseline {
        crate::state::baseline::load(&config.agent.state_dir)
            .ok()
            .flatten()
    } else {
        None
    };
    // No routes in a capture: the baseline's gateways and `[arp] gateways`.
    let from_baseline = stored
        .iter()
        .flat_map(|b| &b.gateways)
        .map(|g| (g.ip, Some(g.mac.clone())))
        .collect();
    let gateways = packets::merge_gateways(from_baseline, &config.arp.gateways, stored.as_ref());
    let mut detector = ArpDetector::new(packets::settings(config));
    detector.set_gateways(&gateways);
    let host = config.host_id();
    let mut alerts = 0u64;
    let mut write_error = None;
    let mut emit = |findings: Vec<Finding>, out: &mut dyn Write| {
        for f in findings {
            alerts += 1;
            let a = Alert::from_finding(f, &host);
            let line = if json {
                a.to_json()
            } else {
                crate::sink::console_line(&a)
            };
            if let Err(e) = writeln!(out, "{line}")
                && write_error.is_none()
            {
                write_error = Some(e);
            }
        }
    };
    // SYNs to any port of any address (the capture has no listeners), or to
    // `[inbound] ports`; windows by the packets' time.
    let mut inbound = InboundWatch::new(&config.inbound, true);
    inbound.refresh_ports();
    let window =
        chrono::Duration::from_std(config.inbound.window.0).unwrap_or(chrono::Duration::MAX);
    let mut window_end = None;
    let mut syns = 0u64;
    // Progress on a terminal (never into a pipe or a file): a large capture
    // takes a while.
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let size_mib = std::fs::metadata(path).map(|m| m.len() >> 20).unwrap_or(0);
    let started = std::time::Instant::now();
    let mut shown = started;
    let mut frames = 0u64;
    let skipped = for_each_frame(path, |p| {
        frames += 1;
        if progress && frames.is_multiple_of(65_536) && shown.elapsed().as_secs() >= 1 {
            shown = std::time::Instant::now();
            eprint!(
                "\r{}: {frames} frames in {} s ({size_mib} MiB file)…",
                path.display(),
                started.elapsed().as_secs()
            );
        }
        if let Some(syn) = crate::wire::syn::parse(p.data) {
            syns += 1;
            if !config.inbound.enabled {
                return;
            }
            let end = window_end.get_or_insert(p.time + window);
            while p.time >= *end {
                let findings = inbound.close_window(*end);
                emit(findings, out);
                *end += window;
            }
            inbound.observe(&syn, p.time);
            return;
        }
        let findings = detector.observe(p.interface, p.data, p.time);
        if !findings.is_empty() {
            emit(findings, out);
        }
    })?;
    if progress && shown != started {
        // Clear the progress line before the summary.
        eprint!("\r\x1b[K");
    }
    // The last window, however short: min_samples keeps a stub from being judged.
    if let Some(end) = window_end {
        emit(inbound.close_window(end), out);
    }
    let _ = out.flush();
    if let Some(e) = write_error
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(PcapError::Io {
            file: "stdout".into(),
            source: e,
        });
    }
    Ok(ReplaySummary {
        counters: detector.counters(),
        alerts,
        syns,
        syns_counted: inbound.counters.counted,
        skipped_link_type: skipped,
    })
}

/// The `replay` verb: `-c` gives the `[arp]` settings, gateways and stored
/// baseline; without it, the defaults and no baseline. `--gateway IP=MAC`
/// adds or overrides gateways. A summary goes to stderr.
pub fn command(
    pcap: &Path,
    config: Option<&Path>,
    json: bool,
    gateways: Vec<GatewaySpec>,
) -> Result<u8, CliError> {
    let (mut config, with_config) = match config {
        Some(path) => (Config::load(path)?, true),
        None => (Config::default(), false),
    };
    for g in gateways {
        config.arp.gateways.retain(|known| known.ip != g.ip);
        config.arp.gateways.push(g);
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let s = replay(pcap, &config, with_config, json, &mut out)
        .map_err(|e| CliError::Plain(e.to_string()))?;
    let c = &s.counters;
    eprintln!(
        "{}: {} frames ({} ARP, {} NDP, {} TCP SYN, {} malformed, {} other{}); {} alerts",
        pcap.display(),
        c.frames + s.syns,
        c.arp,
        c.ndp,
        s.syns,
        c.malformed,
        c.other,
        if s.skipped_link_type > 0 {
            format!(", {} not Ethernet", s.skipped_link_type)
        } else {
            String::new()
        },
        s.alerts
    );
    Ok(0)
}
