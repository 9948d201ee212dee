//! Wiring of the inbound-path detector: which ports the capture passes SYNs
//! for (the kernel's listening sockets, or `[inbound] ports`), which SYNs
//! count (to one of our addresses, from outside our subnets and
//! `ignore_sources`), the window timer, and the state in `state_dir`.
//! Shared by the live agent and `netsentry replay`.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::alert::Finding;
use crate::config::{Cidr, Config, InboundConfig};
use crate::detect::inbound::{InboundDetector, InboundSettings, PortKey, counts_as_remote};
use crate::detect::net::NetDetector;
use crate::kernel::in_subnet;
use crate::source::capture::MAX_SYN_PORTS;
use crate::source::listeners;
use crate::state;
use crate::wire::syn::{Syn, hop_distance};

/// SYNs seen and why some were not counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InboundCounters {
    /// Tallied by the detector.
    pub counted: u64,
    /// From loopback, link-local, our own subnets or `ignore_sources`.
    pub local: u64,
    /// Not addressed to one of our addresses (forwarded traffic), or to a
    /// port no longer watched.
    pub not_ours: u64,
}

/// The inbound-path detector with its live inputs.
pub struct InboundWatch {
    pub detector: InboundDetector,
    settings: InboundConfig,
    /// Our addresses (a SYN must be addressed to one).
    own: HashSet<IpAddr>,
    /// A replay: SYNs to any address count, to any port unless
    /// `[inbound] ports` names some.
    replay: bool,
    subnets: Vec<(IpAddr, u8)>,
    /// The ports watched now.
    ports: Vec<u16>,
    pub counters: InboundCounters,
    /// SYNs counted per port and family since start (the metric).
    pub per_port: BTreeMap<PortKey, u64>,
    /// Median hop distance of each port's last judged window (the metric).
    pub last_median: BTreeMap<PortKey, u8>,
    /// Listening sockets could not be read (said once).
    listeners_failing: bool,
    /// More ports listen than the filter can pass (said once).
    said_too_many: bool,
    dirty: bool,
}

impl InboundWatch {
    /// A detector with the baselines stored in `state_dir`.
    pub fn load(config: &Config) -> InboundWatch {
        let mut watch = InboundWatch::new(&config.inbound, false);
        let dir = &config.agent.state_dir;
        if let Some(text) = state::read_text(dir, state::INBOUND_FILE) {
            let (saved, bad) = InboundDetector::from_json(&text);
            if bad > 0 {
                tracing::warn!(
                    "{}: {bad} unreadable entries skipped (their ports learn again)",
                    dir.join(state::INBOUND_FILE).display()
                );
            }
            watch.detector.restore(saved);
        }
        watch
    }

    /// A detector with no history (`replay`: for a capture file).
    pub fn new(settings: &InboundConfig, replay: bool) -> InboundWatch {
        InboundWatch {
            detector: InboundDetector::new(InboundSettings {
                min_samples: settings.min_samples,
                share: settings.share,
            }),
            settings: settings.clone(),
            own: HashSet::new(),
            replay,
            subnets: Vec::new(),
            ports: Vec::new(),
            counters: InboundCounters::default(),
            per_port: BTreeMap::new(),
            last_median: BTreeMap::new(),
            listeners_failing: false,
            said_too_many: false,
            dirty: false,
        }
    }

    /// Takes our addresses and subnets from the netlink side.
    pub fn sync(&mut self, net: &NetDetector) {
        let view = net.view();
        self.own = view.addresses.iter().map(|a| a.ip).collect();
        self.subnets = view
            .addresses
            .iter()
            .map(|a| (a.ip, a.prefix_len))
            .collect();
    }

    /// The ports to watch now: `[inbound] ports`, or the TCP ports listening
    /// on a non-loopback address; minus `ignore_ports`, at most
    /// [`MAX_SYN_PORTS`] (the lowest). `Some` when they changed.
    pub fn refresh_ports(&mut self) -> Option<Vec<u16>> {
        let ignore = &self.settings.ignore_ports;
        let mut ports = if self.settings.ports.is_empty() {
            match listeners::listening() {
                Ok(l) => {
                    if std::mem::take(&mut self.listeners_failing) {
                        tracing::info!("inbound: the listening sockets can be read again");
                    }
                    listeners::outside_ports(&l, ignore)
                }
                Err(e) => {
                    if !std::mem::replace(&mut self.listeners_failing, true) {
                        tracing::warn!(
                            "inbound: the listening sockets cannot be read ({e}); watching the ports found before"
                        );
                    }
                    return None;
                }
            }
        } else {
            let mut p: Vec<u16> = self
                .settings
                .ports
                .iter()
                .copied()
                .filter(|p| !ignore.contains(p))
                .collect();
            p.sort_unstable();
            p.dedup();
            p
        };
        if ports.len() > MAX_SYN_PORTS {
            if !std::mem::replace(&mut self.said_too_many, true) {
                tracing::warn!(
                    "inbound: {} ports listen; the lowest {MAX_SYN_PORTS} are watched (name the important ones in [inbound] ports, or leave some out with ignore_ports)",
                    ports.len()
                );
            }
            ports.truncate(MAX_SYN_PORTS);
        }
        if ports == self.ports {
            return None;
        }
        tracing::info!(
            "inbound: watching the SYNs to TCP port{} {}",
            if ports.len() == 1 { "" } else { "s" },
            if ports.is_empty() {
                "(none)".to_string()
            } else {
                ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        self.ports = ports.clone();
        Some(ports)
    }

    /// The ports watched now.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Whether a SYN counts: addressed to us and a watched port, from a
    /// client elsewhere.
    fn counts(&mut self, syn: &Syn) -> bool {
        let to_us = self.replay || self.own.contains(&syn.dst);
        let watched = match self.replay && self.settings.ports.is_empty() {
            true => !self.settings.ignore_ports.contains(&syn.dst_port),
            false => self.ports.contains(&syn.dst_port),
        };
        if !to_us || !watched {
            self.counters.not_ours += 1;
            return false;
        }
        let local = !counts_as_remote(&syn.src)
            || self.own.contains(&syn.src)
            || self
                .subnets
                .iter()
                .any(|(net, prefix)| in_subnet(syn.src, *net, *prefix))
            || self
                .settings
                .ignore_sources
                .iter()
                .any(|c: &Cidr| c.contains(&syn.src));
        if local {
            self.counters.local += 1;
        }
        !local
    }

    /// One SYN through the detector (when it counts).
    pub fn observe(&mut self, syn: &Syn, time: DateTime<Utc>) {
        if !self.counts(syn) {
            return;
        }
        self.counters.counted += 1;
        *self
            .per_port
            .entry(PortKey {
                port: syn.dst_port,
                family: syn.version(),
            })
            .or_default() += 1;
        self.detector.observe(syn, time);
        self.dirty = true;
        tracing::trace!(
            src = %syn.src, port = syn.dst_port, ttl = syn.ttl, hops = hop_distance(syn.ttl),
            fingerprint = %syn.fingerprint(), "inbound SYN"
        );
    }

    /// Ends the window: judges each busy port.
    pub fn close_window(&mut self, now: DateTime<Utc>) -> Vec<Finding> {
        for (key, state) in self.detector.ports() {
            if state.window.samples > 0 {
                self.last_median.insert(*key, state.window.hops_at(0.5));
            }
        }
        self.dirty = true;
        self.detector.close_window(now)
    }

    /// Saves the baselines (and the current window, for `status`) when they
    /// changed.
    pub fn save(&mut self, state_dir: &Path) {
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        let mut value = self.detector.to_json();
        value["updated"] = serde_json::json!(crate::alert::format_time(&Utc::now()));
        value["watched_ports"] = serde_json::json!(self.ports);
        value["window_seconds"] = serde_json::json!(self.settings.window.0.as_secs());
        value["counted"] = serde_json::json!(self.counters.counted);
        value["not_counted_local"] = serde_json::json!(self.counters.local);
        if let Err(e) = state::write_text(state_dir, state::INBOUND_FILE, &value.to_string()) {
            tracing::error!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syn(src: &str, dst: &str, port: u16) -> Syn {
        Syn {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            src_port: 40000,
            dst_port: port,
            ttl: 50,
            df: true,
            ip_options: false,
            window: 64240,
            mss: Some(1460),
            wscale: Some(7),
            layout: "mss,sok,ts,nop,ws".into(),
            vlan: None,
        }
    }

    #[test]
    fn only_syns_from_elsewhere_to_us_count() {
        let config = Config::parse(
            "[inbound]\nports = [22, 5222]\nignore_sources = [\"198.51.100.0/24\"]\n",
            "t.toml",
        )
        .unwrap();
        let mut w = InboundWatch::new(&config.inbound, false);
        w.refresh_ports();
        w.own = ["192.0.2.10".parse().unwrap()].into_iter().collect();
        w.subnets = vec![("192.0.2.10".parse().unwrap(), 24)];
        let now = Utc::now();
        for (src, dst, port, counted) in [
            ("203.0.113.7", "192.0.2.10", 5222, true),
            ("203.0.113.7", "192.0.2.10", 443, false), // not watched
            ("203.0.113.7", "192.0.2.99", 22, false),  // forwarded, not ours
            ("192.0.2.50", "192.0.2.10", 22, false),   // our subnet
            ("198.51.100.9", "192.0.2.10", 22, false), // ignore_sources
            ("127.0.0.1", "192.0.2.10", 22, false),
        ] {
            let before = w.counters.counted;
            w.observe(&syn(src, dst, port), now);
            assert_eq!(
                w.counters.counted > before,
                counted,
                "{src} -> {dst}:{port}"
            );
        }
        assert_eq!(
            w.counters,
            InboundCounters {
                counted: 1,
                local: 3,
                not_ours: 2
            }
        );
    }

    #[test]
    fn pinned_ports_minus_ignored() {
        let config = Config::parse(
            "[inbound]\nports = [5222, 22, 5222, 8080]\nignore_ports = [8080]\n",
            "t.toml",
        )
        .unwrap();
        let mut w = InboundWatch::new(&config.inbound, false);
        assert_eq!(w.refresh_ports(), Some(vec![22, 5222]));
        assert_eq!(w.refresh_ports(), None);
    }
}
