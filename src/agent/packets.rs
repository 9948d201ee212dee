//! Wiring of the packet detector: what it needs from the rest of the agent
//! (gateways, subnets, watched interfaces) and its state on disk. Shared by the
//! live agent and `netsentry replay`.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::alert::{Finding, Kind};
use crate::config::{Config, GatewaySpec};
use crate::detect::arp::{ArpDetector, ArpSettings};
use crate::detect::net::NetDetector;
use crate::detect::stations::StationTable;
use crate::kernel::{Family, Mac};
use crate::state::{self, baseline::Baseline};
use crate::wire::EtherAddr;

/// Kinds limited per window under `[arp] alerts_per_kind`.
pub const STATION_KINDS: &[Kind] = &[
    Kind::ArpNewStation,
    Kind::ArpMacChanged,
    Kind::ArpFlipFlop,
    Kind::ArpReusedMac,
    Kind::ArpEthernetMismatch,
    Kind::ArpBogon,
    Kind::ArpBadMac,
];

/// The packet detector's settings from `[arp]`.
pub fn settings(config: &Config) -> ArpSettings {
    ArpSettings {
        max_stations: config.arp.max_stations,
        storm_pps: config.arp.storm_pps,
        conflict_window: config.arp.conflict_window.0,
        vrrp_is_normal: config.arp.vrrp_is_normal,
    }
}

/// The MAC the baseline knows for a gateway address, on whichever interface.
fn known_mac(baseline: Option<&Baseline>, ip: &IpAddr) -> Option<Mac> {
    baseline?
        .gateways
        .iter()
        .find(|g| g.ip == *ip)
        .map(|g| g.mac.clone())
}

/// The gateways to guard: `primary` (the default routes' next hops, or in a
/// replay the baseline's gateways) and the `extra` addresses of `[arp] gateways`
/// with the MAC the baseline knows for them. One list for the agent and replay.
pub fn merge_gateways(
    mut primary: Vec<(IpAddr, Option<Mac>)>,
    extra: &[GatewaySpec],
    baseline: Option<&Baseline>,
) -> Vec<(IpAddr, Option<Mac>)> {
    for g in extra {
        match primary.iter_mut().find(|(ip, _)| *ip == g.ip) {
            // The MAC the operator gave wins over what was learned.
            Some(known) if g.mac.is_some() => known.1 = g.mac.clone(),
            Some(_) => {}
            None => primary.push((g.ip, g.mac.clone().or_else(|| known_mac(baseline, &g.ip)))),
        }
    }
    primary
}

/// The packet detector with its live inputs.
pub struct PacketWatch {
    pub detector: ArpDetector,
    capture_interfaces: Vec<String>,
    extra_gateways: Vec<GatewaySpec>,
    gateways: Vec<(IpAddr, Option<Mac>)>,
    subnets: HashMap<String, Vec<(IpAddr, u8)>>,
    own_addresses: HashSet<IpAddr>,
    own_macs: HashSet<EtherAddr>,
    /// The first view was taken (gateways after it are new ones).
    synced: bool,
    watched: Vec<String>,
    /// Watched interfaces by index, for the frames (which carry only the index).
    by_index: HashMap<u32, String>,
    /// The indexes last told to the capture (for the VRRP groups it joins).
    told: Vec<u32>,
}

impl PacketWatch {
    /// A detector with the station table and routers stored in `state_dir`.
    pub fn load(config: &Config) -> PacketWatch {
        let mut detector = ArpDetector::new(settings(config));
        let dir = &config.agent.state_dir;
        if let Some(text) = state::read_text(dir, state::STATIONS_FILE) {
            let (table, bad) = StationTable::from_text(&text, config.arp.max_stations);
            if bad > 0 {
                tracing::warn!(
                    "{}: {bad} unreadable lines skipped",
                    dir.join(state::STATIONS_FILE).display()
                );
            }
            detector.set_stations(table);
        }
        if let Some(text) = state::read_text(dir, state::ROUTERS_FILE) {
            detector.load_routers(&text);
        }
        PacketWatch {
            detector,
            capture_interfaces: config.arp.interfaces.iter().map(|i| i.0.clone()).collect(),
            extra_gateways: config.arp.gateways.clone(),
            gateways: Vec::new(),
            subnets: HashMap::new(),
            own_addresses: HashSet::new(),
            own_macs: HashSet::new(),
            synced: false,
            watched: Vec::new(),
            by_index: HashMap::new(),
            told: Vec::new(),
        }
    }

    /// Takes the gateways (and their MACs) and the interface subnets from the
    /// netlink side; cheap when nothing changed.
    pub fn sync(&mut self, net: &NetDetector) {
        let view = net.view();
        let mut gateways = Vec::new();
        for family in [Family::Inet, Family::Inet6] {
            for (ip, ifindex) in view.default_nexthops(family) {
                let mac = net
                    .baseline()
                    .gateway_mac(family, &view.link_name(ifindex), &ip)
                    .cloned();
                gateways.push((ip, mac));
            }
        }
        let gateways = merge_gateways(gateways, &self.extra_gateways, Some(net.baseline()));
        if gateways != self.gateways {
            // Those of the first view are established; later ones are new.
            let since = self.synced.then(chrono::Utc::now);
            self.detector.set_gateways_at(&gateways, since);
            self.gateways = gateways;
        }
        self.detector.set_confirming(&net.confirming());
        let mut subnets: HashMap<String, Vec<(IpAddr, u8)>> = HashMap::new();
        for a in &view.addresses {
            subnets
                .entry(view.link_name(a.ifindex))
                .or_default()
                .push((a.ip, a.prefix_len));
        }
        let own_addresses: HashSet<IpAddr> = view.addresses.iter().map(|a| a.ip).collect();
        let own_macs: HashSet<EtherAddr> = view
            .links
            .values()
            .filter_map(|l| l.mac.as_ref().and_then(EtherAddr::from_mac))
            .collect();
        if (&own_addresses, &own_macs) != (&self.own_addresses, &self.own_macs) {
            self.detector
                .set_own(own_addresses.clone(), own_macs.clone());
            (self.own_addresses, self.own_macs) = (own_addresses, own_macs);
        }
        if subnets != self.subnets {
            self.detector.set_subnets(subnets.clone());
            self.subnets = subnets;
        }
        self.watched = if self.capture_interfaces.is_empty() {
            net.capture_interfaces()
        } else {
            self.capture_interfaces.clone()
        };
        self.by_index = view
            .links
            .values()
            .filter(|l| self.watched.contains(&l.name))
            .map(|l| (l.index, l.name.clone()))
            .collect();
        self.synced = net.is_ready();
    }

    /// The watched interfaces' indexes, when they changed since the last call.
    pub fn take_new_indexes(&mut self) -> Option<Vec<u32>> {
        let mut now: Vec<u32> = self.by_index.keys().copied().collect();
        now.sort_unstable();
        (now != self.told).then(|| {
            self.told = now.clone();
            now
        })
    }

    /// The name of a watched interface, or `None` for frames to ignore.
    pub fn interface_of(&self, ifindex: u32) -> Option<&str> {
        self.by_index.get(&ifindex).map(String::as_str)
    }

    /// The interfaces frames are taken from.
    pub fn watched(&self) -> &[String] {
        &self.watched
    }

    /// One frame captured on `interface` through the detector.
    pub fn observe(&mut self, interface: &str, frame: &[u8], time: DateTime<Utc>) -> Vec<Finding> {
        self.detector.observe(interface, frame, time)
    }

    /// Saves stations and routers when they changed.
    pub fn save(&mut self, state_dir: &Path) {
        if !self.detector.take_dirty() {
            return;
        }
        let stations = self.detector.stations().to_text();
        let routers = self.detector.routers_text();
        for (name, text) in [
            (state::STATIONS_FILE, stations),
            (state::ROUTERS_FILE, routers),
        ] {
            if let Err(e) = state::write_text(state_dir, name, &text) {
                tracing::error!("{e}");
            }
        }
    }
}
