//! ARP and IPv6 neighbour-discovery detector: a frame and its time in, findings out.
//!
//! Live capture and `netsentry replay` both feed this, so they report the same
//! things for the same frames. The station checks follow arpwatch (new station,
//! changed, flip-flop, reused, ethernet mismatch, bogon, bad MAC); the gateway
//! checks are what a server needs: who claims to be our gateway, and how many do.

use std::collections::{BTreeSet, HashMap, HashSet};

use rustc_hash::FxHashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::alert::{Finding, Kind};

mod own;
mod ra;
mod redirect;
pub mod vrrp;

use crate::detect::stations::{Sighting, StationTable, same_name};
use crate::kernel::{Mac, in_subnet};
use crate::wire::{self, ArpFrame, EtherAddr, Frame, FrameError, NdpFrame, NdpMessage};
use own::OwnAddresses;

/// Distinct senders counted per interface and second for `arp_storm`.
const MAX_STORM_SENDERS: usize = 1024;
/// Interfaces with storm accounting.
const MAX_STORM_INTERFACES: usize = 64;
/// MACs remembered per gateway for conflict detection.
const MAX_CLAIMERS: usize = 16;
/// Routers remembered (beyond this, a new router is reported but not stored).
pub const MAX_ROUTERS: usize = 1024;

/// What the packet detector is told by the configuration.
#[derive(Clone, Debug)]
pub struct ArpSettings {
    pub max_stations: usize,
    /// ARP + NDP frames per second on one interface above which `arp_storm` fires.
    pub storm_pps: u32,
    /// Two MACs claiming a gateway within this time: `arp_gateway_conflict`.
    pub conflict_window: Duration,
    /// A gateway moving within its advertising VRRP group is a failover
    /// (`gateway_failover`), not an attack (see [`vrrp`]).
    pub vrrp_is_normal: bool,
}

impl Default for ArpSettings {
    fn default() -> Self {
        ArpSettings {
            max_stations: 65_536,
            storm_pps: 1000,
            conflict_window: Duration::from_secs(60),
            vrrp_is_normal: true,
        }
    }
}

/// What the packet detector saw (for `status`, metrics and replay).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ArpCounters {
    pub frames: u64,
    pub arp: u64,
    pub ndp: u64,
    /// Truncated or malformed ARP/NDP frames (counted and ignored).
    pub malformed: u64,
    /// Frames of other protocols (only in replay; live capture filters them in the kernel).
    pub other: u64,
    pub stations_evicted: u64,
    /// IPv4 ICMP redirects.
    pub redirects: u64,
    /// Frames of another VLAN than the interface's own (an 802.1Q tag on a
    /// trunk): another segment, with its own gateways and stations — not
    /// judged against this host's (counted and ignored).
    pub other_vlan: u64,
    /// VRRP advertisements (what makes a gateway's failover one).
    pub vrrp: u64,
    /// VRRP advertisements of groups beyond the table's cap (not stored).
    pub vrrp_dropped: u64,
}

/// What is known about one gateway on the wire.
#[derive(Clone, Debug, Default)]
struct GatewayWire {
    /// The MAC the host believes (netlink baseline), or the first one seen.
    reference: Option<EtherAddr>,
    /// The MAC that claimed it last.
    last_claim: Option<EtherAddr>,
    /// Recent claimers and when they were last seen.
    claimers: Vec<(EtherAddr, DateTime<Utc>)>,
    /// The set last reported as a conflict, and when.
    conflict_reported: Option<(BTreeSet<EtherAddr>, DateTime<Utc>)>,
    /// When it became a gateway (`None`: before the detector started).
    since: Option<DateTime<Utc>>,
    /// Its MAC was learned at first sight and is being confirmed: another
    /// MAC answering now is a conflict (reported once), not a change.
    confirming: bool,
}

/// A gateway that became one this recently is no proof that its router
/// advertisement is known: the kernel makes a router it has just accepted an
/// advertisement from a gateway, and netlink may tell before the frame is seen.
const NEW_GATEWAY_GRACE_S: i64 = 10;

struct StormWindow {
    second: i64,
    count: u32,
    senders: FxHashMap<EtherAddr, u32>,
}

/// The ARP and neighbour discovery detector: frames in, findings out (pure).
pub struct ArpDetector {
    settings: ArpSettings,
    stations: StationTable,
    gateways: FxHashMap<IpAddr, GatewayWire>,
    routers: HashSet<(String, Ipv6Addr)>,
    /// When routers first seen by this run advertised first (those loaded
    /// from `routers.tsv` are established).
    routers_since: HashMap<Ipv6Addr, DateTime<Utc>>,
    routers_dirty: bool,
    /// Gateways being confirmed that another MAC answered for (taken by the agent).
    conflicted: Vec<IpAddr>,
    /// Gateways being confirmed whose learned MAC answered first.
    confirmed: Vec<IpAddr>,
    /// What each router advertised last, and from which MAC (`ndp_router_changed`).
    advertised: HashMap<(String, Ipv6Addr), (wire::RaInfo, EtherAddr)>,
    subnets: Vec<(String, Vec<(IpAddr, u8)>)>,
    /// This host's own addresses and link MACs: a frame from another MAC that
    /// claims one of the addresses is `arp_own_address_claimed`.
    own: OwnAddresses,
    /// Per interface; a handful of them, so a list beats hashing the name per frame.
    storms: Vec<(String, StormWindow)>,
    /// The VRRP groups heard (a gateway's failover within its group is no attack).
    vrrp: vrrp::VrrpTable,
    counters: ArpCounters,
}

/// The VRRP groups advertising at `now`, with the routers' own MACs as the
/// station table shows them.
fn view_of(table: &vrrp::VrrpTable, stations: &StationTable, now: DateTime<Utc>) -> vrrp::VrrpView {
    table.view(now, |segment, ip| match ip {
        IpAddr::V4(v4) => stations.get(segment, v4).map(|s| s.mac),
        IpAddr::V6(_) => None,
    })
}

/// 00:00:5e:00:01:xx (VRRP for IPv4, CARP) and 00:00:5e:00:02:xx (VRRP for IPv6).
pub fn is_vrrp_mac(mac: &EtherAddr) -> bool {
    mac.is_vrrp()
}

fn is_bad_mac(mac: &EtherAddr) -> bool {
    mac.is_bad()
}

impl ArpDetector {
    /// A detector with an empty station table.
    pub fn new(settings: ArpSettings) -> ArpDetector {
        ArpDetector {
            stations: StationTable::new(settings.max_stations),
            settings,
            gateways: FxHashMap::default(),
            routers: HashSet::new(),
            routers_since: HashMap::new(),
            routers_dirty: false,
            advertised: HashMap::new(),
            conflicted: Vec::new(),
            confirmed: Vec::new(),
            subnets: Vec::new(),
            own: OwnAddresses::default(),
            storms: Vec::new(),
            vrrp: vrrp::VrrpTable::default(),
            counters: ArpCounters::default(),
        }
    }

    /// The VRRP groups advertising at `now` (also what the netlink detector
    /// judges a gateway's new MAC with: one classification for both paths).
    pub fn vrrp_view(&self, now: DateTime<Utc>) -> vrrp::VrrpView {
        view_of(&self.vrrp, &self.stations, now)
    }

    /// The counters so far.
    pub fn counters(&self) -> ArpCounters {
        ArpCounters {
            stations_evicted: self.stations.evicted(),
            vrrp_dropped: self.vrrp.dropped,
            ..self.counters.clone()
        }
    }

    /// The station table (saved to `state_dir/stations.tsv`).
    pub fn stations(&self) -> &StationTable {
        &self.stations
    }

    /// Replaces the station table (loaded from `state_dir`).
    pub fn set_stations(&mut self, table: StationTable) {
        self.stations = table;
    }

    /// True (once) when stations or routers changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        let stations = self.stations.take_dirty();
        std::mem::take(&mut self.routers_dirty) || stations
    }

    /// Routers that advertised before `now` minus the grace in which the
    /// kernel may have made one a gateway from the very advertisement that
    /// introduced it: a default route to one of these is no stranger.
    pub fn established_routers(&self, now: DateTime<Utc>) -> HashSet<IpAddr> {
        self.routers
            .iter()
            .map(|(_, ip)| *ip)
            .filter(|ip| {
                self.routers_since
                    .get(ip)
                    .is_none_or(|t| (now - *t).num_seconds() >= NEW_GATEWAY_GRACE_S)
            })
            .map(IpAddr::V6)
            .collect()
    }

    /// The routers seen, as text lines `interface ip` (persisted with the stations).
    pub fn routers_text(&self) -> String {
        let mut rows: Vec<String> = self
            .routers
            .iter()
            .map(|(i, ip)| format!("{i}\t{ip}\n"))
            .collect();
        rows.sort();
        rows.concat()
    }

    /// Restores the routers saved in `state_dir/routers.tsv`.
    pub fn load_routers(&mut self, text: &str) {
        for line in text.lines() {
            let mut f = line.split('\t');
            if let (Some(iface), Some(Ok(ip))) = (f.next(), f.next().map(str::parse::<Ipv6Addr>))
                && self.routers.len() < MAX_ROUTERS
            {
                self.routers.insert((iface.to_string(), ip));
            }
        }
    }

    /// Sets the gateways and the MAC each is trusted at (`None`: keep the one
    /// known, or learn it from the first frame). The trusted MAC comes from the
    /// baseline, which never takes a change as it happens (it stays "suspect"
    /// until adopted or accepted), so a frame that moved the kernel's entry
    /// cannot move the reference it is judged against.
    pub fn set_gateways(&mut self, gateways: &[(IpAddr, Option<Mac>)]) {
        self.set_gateways_at(gateways, None);
    }

    /// [`ArpDetector::set_gateways`], saying when: gateways not known before
    /// are new since `now` (`None`: established, e.g. at start or in a replay).
    pub fn set_gateways_at(
        &mut self,
        gateways: &[(IpAddr, Option<Mac>)],
        now: Option<DateTime<Utc>>,
    ) {
        let mut next = FxHashMap::default();
        for (ip, mac) in gateways {
            let mut g = self.gateways.remove(ip).unwrap_or_else(|| GatewayWire {
                since: now,
                ..Default::default()
            });
            if let Some(mac) = mac.as_ref().and_then(EtherAddr::from_mac) {
                g.reference = Some(mac);
            }
            next.insert(*ip, g);
        }
        self.gateways = next;
    }

    /// Gateways being confirmed that another MAC answered for, since the last call.
    pub fn take_conflicted(&mut self) -> Vec<IpAddr> {
        std::mem::take(&mut self.conflicted)
    }

    /// Gateways being confirmed whose learned MAC answered first, since the last call.
    pub fn take_confirmed(&mut self) -> Vec<IpAddr> {
        std::mem::take(&mut self.confirmed)
    }

    /// The gateways whose MAC (learned at first sight) is being confirmed.
    pub fn set_confirming(&mut self, ips: &[IpAddr]) {
        for (ip, g) in self.gateways.iter_mut() {
            g.confirming = ips.contains(ip);
        }
    }

    /// The addresses of each interface, for `arp_bogon`.
    pub fn set_subnets(&mut self, subnets: HashMap<String, Vec<(IpAddr, u8)>>) {
        self.subnets = subnets.into_iter().collect();
        self.subnets.sort();
    }

    /// Looks at one Ethernet frame received on `interface` at `now`.
    pub fn observe(&mut self, interface: &str, bytes: &[u8], now: DateTime<Utc>) -> Vec<Finding> {
        self.counters.frames += 1;
        let mut out = Vec::new();
        let frame = match wire::parse(bytes) {
            Ok(f) => f,
            Err(FrameError::NotNeighbourTraffic) => {
                self.counters.other += 1;
                return out;
            }
            Err(_) => {
                self.counters.malformed += 1;
                return out;
            }
        };
        let (eth_src, vlan) = match &frame {
            Frame::Arp(a) => (a.eth_src, a.vlan),
            Frame::Ndp(n) => (n.eth_src, n.vlan),
            Frame::Redirect(r) => (r.eth_src, r.vlan),
            Frame::Vrrp(v) => {
                // Not neighbour traffic (no storm counting): what the
                // gateway failovers are judged with. A tagged one is
                // another segment's group (`eth0.42`).
                self.counters.vrrp += 1;
                let segment = match v.vlan {
                    Some(id) => format!("{interface}.{id}"),
                    None => interface.to_string(),
                };
                self.vrrp.observe(&segment, v, now);
                return out;
            }
        };
        let second = now.timestamp();
        if let Some(id) = vlan {
            // Tagged on this interface: another segment (a VLAN sub-interface
            // of this host gets its own untagged copy). Its stations are kept
            // apart (`eth0.42`); its gateways and addresses are not ours, so
            // no claim there is judged against them.
            self.counters.other_vlan += 1;
            let segment = format!("{interface}.{id}");
            self.count_for_storm(&segment, &eth_src, now, second, &mut out);
            if let Frame::Arp(a) = frame {
                self.observe_arp(&segment, a, false, now, second, &mut out);
            }
            return out;
        }
        self.count_for_storm(interface, &eth_src, now, second, &mut out);
        match frame {
            Frame::Arp(a) => {
                self.counters.arp += 1;
                self.observe_arp(interface, a, true, now, second, &mut out);
            }
            Frame::Ndp(n) => {
                self.counters.ndp += 1;
                self.observe_ndp(interface, n, now, &mut out);
            }
            Frame::Redirect(r) => {
                self.counters.redirects += 1;
                self.observe_redirect4(interface, &r, now, &mut out);
            }
            Frame::Vrrp(_) => {}
        }
        out
    }

    fn count_for_storm(
        &mut self,
        interface: &str,
        sender: &EtherAddr,
        now: DateTime<Utc>,
        second: i64,
        out: &mut Vec<Finding>,
    ) {
        let limit = self.settings.storm_pps;
        let at = match self
            .storms
            .iter()
            .position(|(name, _)| same_name(name, interface))
        {
            Some(at) => at,
            // A crafted capture with thousands of interfaces gets no storm checks
            // beyond the first ones, rather than a long search per frame.
            None if self.storms.len() >= MAX_STORM_INTERFACES => return,
            None => {
                let fresh = StormWindow {
                    second,
                    count: 0,
                    senders: FxHashMap::default(),
                };
                self.storms.push((interface.to_string(), fresh));
                self.storms.len() - 1
            }
        };
        let w = &mut self.storms[at].1;
        if w.second != second {
            if w.count > limit {
                let (top, top_count) = w
                    .senders
                    .iter()
                    .max_by_key(|(_, c)| **c)
                    .map(|(m, c)| (m.to_string(), *c))
                    .unwrap_or_default();
                out.push(Finding::new(
                    Kind::ArpStorm,
                    now,
                    format!("{} ARP/NDP frames per second on {interface} (limit {limit}); top sender {top} ({top_count})", w.count),
                    json!({"interface": interface, "packets_per_s": w.count, "top_sender": top}),
                ));
            }
            w.second = second;
            w.count = 0;
            w.senders.clear();
        }
        w.count = w.count.saturating_add(1);
        // Senders are only counted once the rate is over the limit: normal
        // traffic costs no hashing, and the top sender of a storm still stands out.
        if w.count > limit
            && (w.senders.len() < MAX_STORM_SENDERS || w.senders.contains_key(sender))
        {
            *w.senders.entry(*sender).or_insert(0) += 1;
        }
    }

    /// One ARP frame: bad sender MAC, ethernet mismatch, bogon, gateway claims
    /// and conflicts, then the station table. (~85 lines: the checks run in
    /// this order and each may end the frame's handling.)
    /// One ARP frame; `ours`: the segment of this host's own addresses and
    /// gateways (not another VLAN seen tagged on a trunk).
    fn observe_arp(
        &mut self,
        interface: &str,
        a: ArpFrame,
        ours: bool,
        now: DateTime<Utc>,
        second: i64,
        out: &mut Vec<Finding>,
    ) {
        let ip = a.sender_ip;
        if ip.is_unspecified() {
            // Address probes (RFC 5227) claim nothing.
            return;
        }
        if a.eth_src != a.sender_mac && !is_bad_mac(&a.sender_mac) {
            out.push(Finding::new(
                Kind::ArpEthernetMismatch,
                now,
                format!("ARP on {interface} for {ip}: sender MAC {} differs from the Ethernet source {}", a.sender_mac, a.eth_src),
                json!({"interface": interface, "ip": ip.to_string(), "eth_src": a.eth_src.to_string(),
                       "arp_sender_mac": a.sender_mac.to_string(), "family": "inet"}),
            ));
        }
        if is_bad_mac(&a.sender_mac) {
            out.push(Finding::new(
                Kind::ArpBadMac,
                now,
                format!("ARP on {interface} claims {ip} for the non-unicast MAC {}", a.sender_mac),
                json!({"interface": interface, "ip": ip.to_string(), "mac": a.sender_mac.to_string()}),
            ));
            return;
        }
        if ours && self.observe_own_claim(interface, IpAddr::V4(ip), &a.sender_mac, "arp", now, out)
        {
            return;
        }
        let is_gateway = ours && self.gateways.contains_key(&IpAddr::V4(ip));
        if is_gateway {
            self.observe_gateway_claim(interface, IpAddr::V4(ip), &a.sender_mac, "arp", now, out);
        }
        if let Some(nets) = self
            .subnets
            .iter()
            .find(|(name, _)| same_name(name, interface))
            .map(|(_, n)| n)
            && nets.iter().any(|(n, _)| n.is_ipv4())
            && !nets.iter().any(|(n, p)| in_subnet(IpAddr::V4(ip), *n, *p))
        {
            out.push(Finding::new(
                Kind::ArpBogon,
                now,
                format!("ARP on {interface} from {ip} ({}), which is in none of the interface's subnets", a.sender_mac),
                json!({"interface": interface, "ip": ip.to_string(), "mac": a.sender_mac.to_string()}),
            ));
            return;
        }
        let sighting = self.stations.observe(interface, ip, &a.sender_mac, second);
        if is_gateway || sighting == Sighting::Same {
            // Nothing new, or the gateway checks above said it better.
            return;
        }
        let new = a.sender_mac.to_string();
        let vrrp = is_vrrp_mac(&a.sender_mac);
        let note = if vrrp { " (VRRP/CARP virtual MAC)" } else { "" };
        let (kind, old, what) = match sighting {
            Sighting::Same => return,
            Sighting::New => {
                out.push(Finding::new(
                    Kind::ArpNewStation,
                    now,
                    format!("new station {ip} at {new} on {interface}{note}"),
                    json!({"interface": interface, "ip": ip.to_string(), "mac": new}),
                ));
                return;
            }
            Sighting::Changed { old } => (Kind::ArpMacChanged, old, "moved to"),
            Sighting::FlipFlop { old } => (Kind::ArpFlipFlop, old, "flipped back to"),
            Sighting::Reused { old } => (Kind::ArpReusedMac, old, "went back to an old MAC,"),
        };
        let mut details = json!({"interface": interface, "ip": ip.to_string(), "old_mac": old.to_string(), "new_mac": new});
        if vrrp || is_vrrp_mac(&old) {
            details["vrrp"] = json!(true);
        }
        out.push(Finding::new(
            kind,
            now,
            format!("{ip} on {interface} {what} {new} (was {old}){note}"),
            details,
        ));
    }

    /// A frame says `mac` is `ip`, one of our gateways. Reported when the MAC is
    /// neither the known one nor the one that claimed it last (so a poisoner
    /// repeating itself is one alert, and each switch between claimants is one).
    fn observe_gateway_claim(
        &mut self,
        interface: &str,
        ip: IpAddr,
        mac: &EtherAddr,
        source: &str,
        now: DateTime<Utc>,
        out: &mut Vec<Finding>,
    ) {
        let window = chrono::Duration::from_std(self.settings.conflict_window)
            .unwrap_or(chrono::Duration::MAX);
        // The VRRP groups advertising now (empty unless some are, or when
        // `vrrp_is_normal` is off): the same classification as netlink's.
        // Built only when a claim needs it (a change or a conflict), not for
        // every claim of a flood.
        let use_vrrp = self.settings.vrrp_is_normal && !self.vrrp.is_empty();
        let built = std::cell::OnceCell::new();
        let (table, stations) = (&self.vrrp, &self.stations);
        let view = || {
            built.get_or_init(|| match use_vrrp {
                true => view_of(table, stations, now),
                false => vrrp::VrrpView::default(),
            })
        };
        let Some(g) = self.gateways.get_mut(&ip) else {
            return;
        };
        if g.confirming
            && let Some(reference) = g.reference
            && reference != *mac
            && view().failover(interface, ip, reference, *mac).is_some()
        {
            // Two routers of the gateway's VRRP group answer (one from the
            // virtual MAC, one from its own): what was learned is the group's.
            g.confirming = false;
            g.last_claim = Some(*mac);
            if self.confirmed.len() < MAX_ROUTERS {
                self.confirmed.push(ip);
            }
            return;
        }
        if g.confirming && g.reference == Some(*mac) {
            // The learned MAC answered first: confirmed.
            g.confirming = false;
            if self.confirmed.len() < MAX_ROUTERS {
                self.confirmed.push(ip);
            }
        }
        if g.confirming
            && let Some(reference) = g.reference
            && reference != *mac
        {
            // Two MACs answer for a gateway whose MAC was only learned:
            // which one is the gateway nobody can say from here.
            let macs: BTreeSet<EtherAddr> = [reference, *mac].into();
            if g.conflict_reported.as_ref().map(|(m, _)| m) != Some(&macs) {
                g.conflict_reported = Some((macs.clone(), now));
                if self.conflicted.len() < MAX_ROUTERS {
                    self.conflicted.push(ip);
                }
                let list: Vec<String> = macs.iter().map(|m| m.to_string()).collect();
                out.push(Finding::new(
                    Kind::ArpGatewayConflict,
                    now,
                    format!(
                        "{} MACs answer for default gateway {ip} on {interface}, whose MAC was learned at first sight ({reference}) and is not confirmed: {}",
                        list.len(),
                        list.join(", ")
                    ),
                    json!({"interface": interface, "ip": ip.to_string(), "macs": list,
                           "unconfirmed": true, "learned_mac": reference.to_string()}),
                ));
            }
            return;
        }
        let Some(reference) = g.reference else {
            // Replay without a baseline: the first claim is the reference.
            g.reference = Some(*mac);
            g.last_claim = Some(*mac);
            g.claimers.push((*mac, now));
            return;
        };
        let changed = *mac != reference && g.last_claim.as_ref() != Some(mac);
        // Two MACs really answer when the claims switch *back* to a MAC that
        // claimed within the window: A, B, A. A gateway that changed its MAC
        // once (A, then only B) is a change, not a conflict.
        let switched_back = g.last_claim.is_some_and(|last| last != *mac)
            && g.claimers
                .iter()
                .any(|(m, t)| m == mac && now - *t < window);
        g.last_claim = Some(*mac);
        if changed {
            if let Some(group) = view().failover(interface, ip, reference, *mac) {
                out.push(vrrp::failover_finding(
                    group,
                    (interface, ip),
                    (reference, *mac),
                    source,
                    now,
                ));
            } else {
                out.push(Finding::new(
                    Kind::GatewayMacChanged,
                    now,
                    format!("a frame on {interface} claims default gateway {ip} is at {mac} (known at {reference}; seen in {})", source.to_uppercase()),
                    json!({"interface": interface, "ip": ip.to_string(), "old_mac": reference.to_string(),
                           "new_mac": mac.to_string(), "source": source, "sources": [source]}),
                ));
            }
        }
        // Who else claimed it recently?
        g.claimers.retain(|(m, t)| m != mac && now - *t < window);
        g.claimers.push((*mac, now));
        if g.claimers.len() > MAX_CLAIMERS {
            g.claimers.remove(0);
        }
        let macs: BTreeSet<EtherAddr> = g.claimers.iter().map(|(m, _)| *m).collect();
        // Routers of the gateway's VRRP group answering in turn (a router
        // with `arp_announce` 0 answers from its own MAC as well) is no conflict.
        if !switched_back
            || macs.len() < 2
            || view().answering_in_turn(
                interface,
                ip,
                reference,
                &macs.iter().copied().collect::<Vec<_>>(),
            )
        {
            return;
        }
        let fresh = match &g.conflict_reported {
            Some((set, at)) => *set != macs || now - *at >= window,
            None => true,
        };
        if fresh {
            g.conflict_reported = Some((macs.clone(), now));
            let list: Vec<String> = macs.iter().map(|m| m.to_string()).collect();
            out.push(Finding::new(
                Kind::ArpGatewayConflict,
                now,
                format!(
                    "{} MACs answer for default gateway {ip} on {interface}: {}",
                    list.len(),
                    list.join(", ")
                ),
                json!({"interface": interface, "ip": ip.to_string(), "macs": list}),
            ));
        }
    }

    /// One neighbour discovery message: rogue routers, NA claims of a gateway
    /// or of our own address, solicitations from our addresses, redirects.
    /// (~85 lines: one arm per message type, each short.)
    fn observe_ndp(
        &mut self,
        interface: &str,
        n: NdpFrame,
        now: DateTime<Utc>,
        out: &mut Vec<Finding>,
    ) {
        match n.message {
            NdpMessage::RouterAdvertisement {
                source_mac, info, ..
            } => {
                let mac = source_mac.unwrap_or(n.eth_src);
                let gateway_mac = self
                    .gateways
                    .get(&IpAddr::V6(n.ip_src))
                    .and_then(|g| g.reference);
                self.observe_ra_contents(interface, (n.ip_src, mac), info, gateway_mac, now, out);
                let key = (interface.to_string(), n.ip_src);
                // A gateway is proof only when it was one before this
                // advertisement could have made it one.
                let established = |g: &GatewayWire| {
                    g.since
                        .is_none_or(|t| (now - t).num_seconds() >= NEW_GATEWAY_GRACE_S)
                };
                let known = self.routers.contains(&key)
                    || self
                        .gateways
                        .get(&IpAddr::V6(n.ip_src))
                        .is_some_and(established)
                    || self
                        .gateways
                        .values()
                        .any(|g| established(g) && g.reference.as_ref() == Some(&mac));
                if !known {
                    out.push(Finding::new(
                        Kind::NdpRouterNew,
                        now,
                        format!("router advertisement on {interface} from {} ({mac}), a router not seen before", n.ip_src),
                        json!({"interface": interface, "router_ip": n.ip_src.to_string(), "mac": mac.to_string()}),
                    ));
                    if self.routers.len() < MAX_ROUTERS {
                        self.routers.insert(key);
                        self.routers_since.insert(n.ip_src, now);
                        self.routers_dirty = true;
                    }
                }
            }
            NdpMessage::NeighbourAdvertisement {
                target,
                override_flag,
                target_mac: Some(tmac),
                ..
            } => {
                if tmac != n.eth_src {
                    out.push(Finding::new(
                        Kind::ArpEthernetMismatch,
                        now,
                        format!("neighbour advertisement on {interface} for {target}: target MAC {tmac} differs from the Ethernet source {}", n.eth_src),
                        json!({"interface": interface, "ip": target.to_string(), "eth_src": n.eth_src.to_string(),
                               "arp_sender_mac": tmac.to_string(), "family": "inet6"}),
                    ));
                }
                if !is_bad_mac(&tmac)
                    && self.observe_own_claim(interface, IpAddr::V6(target), &tmac, "ndp", now, out)
                {
                    return;
                }
                // Without the override flag the kernel does not take it over
                // a known entry, but a gateway address from another MAC is a
                // spoof either way.
                let _ = override_flag;
                if !is_bad_mac(&tmac) {
                    self.observe_gateway_claim(
                        interface,
                        IpAddr::V6(target),
                        &tmac,
                        "ndp",
                        now,
                        out,
                    );
                }
            }
            NdpMessage::Redirect {
                target,
                destination,
            } => self.observe_redirect(interface, &n, target, destination, now, out),
            NdpMessage::NeighbourSolicitation { source_mac, .. } if !n.ip_src.is_unspecified() => {
                // A solicitation from one of our addresses teaches the target
                // that address's MAC (RFC 4861 7.2.3).
                // So does one from a gateway's address: a solicitation whose
                // source link-layer option names another MAC than the
                // gateway's is a claim of the gateway.
                let mac = source_mac.unwrap_or(n.eth_src);
                let ip = IpAddr::V6(n.ip_src);
                if !is_bad_mac(&mac)
                    && !self.observe_own_claim(interface, ip, &mac, "ndp", now, out)
                    && source_mac.is_some()
                {
                    self.observe_gateway_claim(interface, ip, &mac, "ndp", now, out);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::build;
    use chrono::TimeZone;
    use std::net::Ipv4Addr;

    const GW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const EVIL: [u8; 6] = [2, 0xde, 0xad, 0xbe, 0xef, 1];

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_800_000_000_000 + ms).unwrap()
    }
    fn mac(b: [u8; 6]) -> Mac {
        Mac(b.to_vec())
    }
    fn detector() -> ArpDetector {
        let mut d = ArpDetector::new(ArpSettings::default());
        d.set_gateways(&[(IpAddr::V4(GW), Some(mac(GW_MAC)))]);
        d.set_subnets(HashMap::from([(
            "eth0".to_string(),
            vec![("192.0.2.10".parse().unwrap(), 24)],
        )]));
        d
    }
    fn kinds(f: &[Finding]) -> Vec<Kind> {
        f.iter().map(|f| f.kind).collect()
    }
    fn reply(src: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
        build::arp(
            src,
            [2, 0, 0, 0, 0, 0x10],
            true,
            src,
            ip,
            [2, 0, 0, 0, 0, 0x10],
            Ipv4Addr::new(192, 0, 2, 10),
        )
    }

    /// A redirect to another router we know (a second gateway) is a warning;
    /// to an unknown first hop, critical.
    #[test]
    fn redirects() {
        let mut d = detector();
        let other: Ipv6Addr = "fe80::2".parse().unwrap();
        d.set_gateways(&[
            (IpAddr::V4(GW), Some(mac(GW_MAC))),
            (IpAddr::V6(other), Some(mac([2, 0, 0, 0, 0, 2]))),
        ]);
        let frame = |target: Ipv6Addr| {
            let mut body = vec![137, 0, 0, 0, 0, 0, 0, 0];
            body.extend_from_slice(&target.octets());
            body.extend_from_slice(&"2001:db8:99::5".parse::<Ipv6Addr>().unwrap().octets());
            build::icmpv6(
                GW_MAC,
                [2, 0, 0, 0, 0, 0x10],
                "fe80::1".parse().unwrap(),
                "fe80::10".parse().unwrap(),
                &body,
            )
        };
        let f = d.observe("eth0", &frame(other), t(0));
        assert_eq!(kinds(&f), [Kind::NdpRedirect]);
        assert_eq!(f[0].severity, None, "the kind's warning");
        let f = d.observe("eth0", &frame("fe80::66".parse().unwrap()), t(1));
        assert_eq!(f[0].severity, Some(crate::alert::Severity::Critical));
        assert_eq!(f[0].details["known_router"], false);
    }

    /// Our address claimed: by our second NIC (ARP flux: benign), by the
    /// virtual MAC of a group advertising it (a failover: benign), by a
    /// virtual MAC nobody advertises or another MAC (critical, once per
    /// claimer, again for a new claimer).
    #[test]
    fn own_address_claims() {
        let mut d = detector();
        let ours = Ipv4Addr::new(192, 0, 2, 10);
        let (nic, second_nic) = ([2, 0, 0, 0, 0, 0x10], [2, 0, 0, 0, 0, 0x11]);
        d.set_own(
            HashSet::from([IpAddr::V4(ours)]),
            HashSet::from([EtherAddr(nic), EtherAddr(second_nic)]),
        );
        assert!(d.observe("eth0", &reply(second_nic, ours), t(0)).is_empty());
        let vrrp = [0, 0, 0x5e, 0, 1, 7];
        let f = d.observe("eth0", &reply(vrrp, ours), t(1));
        assert_eq!(kinds(&f), [Kind::ArpOwnAddressClaimed]);
        let group8 = [0, 0, 0x5e, 0, 1, 8];
        let advert = build::vrrp4(group8, Ipv4Addr::new(192, 0, 2, 11), 2, 8, 100, &[ours]);
        assert!(d.observe("eth0", &advert, t(1)).is_empty());
        assert!(d.observe("eth0", &reply(group8, ours), t(1)).is_empty());
        let f = d.observe("eth0", &reply(EVIL, ours), t(2));
        assert_eq!(kinds(&f), [Kind::ArpOwnAddressClaimed]);
        assert_eq!(f[0].details["mac"], "02:de:ad:be:ef:01");
        assert!(d.observe("eth0", &reply(EVIL, ours), t(3)).is_empty());
        let other = [2, 0xde, 0xad, 0xbe, 0xef, 2];
        assert_eq!(
            kinds(&d.observe("eth0", &reply(other, ours), t(4))),
            [Kind::ArpOwnAddressClaimed]
        );
        // No longer ours (the address moved away): a station like any other.
        d.set_own(HashSet::new(), HashSet::from([EtherAddr(nic)]));
        assert_eq!(
            kinds(&d.observe("eth0", &reply(EVIL, ours), t(5))),
            [Kind::ArpNewStation]
        );
    }

    #[test]
    fn stations_new_changed_flip_flop_reused() {
        let mut d = detector();
        let ip = Ipv4Addr::new(192, 0, 2, 50);
        let a = [2, 0, 0, 0, 0, 0xa];
        let b = [2, 0, 0, 0, 0, 0xb];
        let c = [2, 0, 0, 0, 0, 0xc];
        assert_eq!(
            kinds(&d.observe("eth0", &reply(a, ip), t(0))),
            vec![Kind::ArpNewStation]
        );
        assert!(d.observe("eth0", &reply(a, ip), t(1)).is_empty());
        let f = d.observe("eth0", &reply(b, ip), t(2));
        assert_eq!(kinds(&f), vec![Kind::ArpMacChanged]);
        assert_eq!(f[0].detail_str("old_mac"), Some("02:00:00:00:00:0a"));
        assert_eq!(
            kinds(&d.observe("eth0", &reply(a, ip), t(3))),
            vec![Kind::ArpFlipFlop]
        );
        assert_eq!(
            kinds(&d.observe("eth0", &reply(c, ip), t(4))),
            vec![Kind::ArpMacChanged]
        );
        assert_eq!(
            kinds(&d.observe("eth0", &reply(b, ip), t(5))),
            vec![Kind::ArpReusedMac]
        );
    }

    #[test]
    fn mismatch_bad_mac_bogon_and_probes() {
        let mut d = detector();
        let ip = Ipv4Addr::new(192, 0, 2, 60);
        let f = build::arp(
            [2, 0, 0, 0, 0, 0x77],
            [0xff; 6],
            false,
            [2, 0, 0, 0, 0, 0x66],
            ip,
            [0; 6],
            GW,
        );
        let f = d.observe("eth0", &f, t(0));
        assert_eq!(
            kinds(&f),
            vec![Kind::ArpEthernetMismatch, Kind::ArpNewStation]
        );
        assert_eq!(f[0].detail_str("eth_src"), Some("02:00:00:00:00:77"));
        assert_eq!(f[0].detail_str("arp_sender_mac"), Some("02:00:00:00:00:66"));
        let f = build::arp(
            [2, 0, 0, 0, 0, 0x77],
            [0xff; 6],
            false,
            [0xff; 6],
            ip,
            [0; 6],
            GW,
        );
        assert!(kinds(&d.observe("eth0", &f, t(1))).contains(&Kind::ArpBadMac));
        let f = d.observe(
            "eth0",
            &reply([2, 0, 0, 0, 0, 0x55], Ipv4Addr::new(203, 0, 113, 5)),
            t(2),
        );
        assert_eq!(kinds(&f), vec![Kind::ArpBogon]);
        // No subnets known for an interface: no bogon verdict.
        assert_eq!(
            kinds(&d.observe(
                "eth9",
                &reply([2, 0, 0, 0, 0, 0x55], Ipv4Addr::new(203, 0, 113, 5)),
                t(3)
            )),
            vec![Kind::ArpNewStation]
        );
        // An address probe (sender 0.0.0.0) claims nothing.
        let probe = build::arp(
            [2, 0, 0, 0, 0, 0x44],
            [0xff; 6],
            false,
            [2, 0, 0, 0, 0, 0x44],
            Ipv4Addr::UNSPECIFIED,
            [0; 6],
            ip,
        );
        assert!(d.observe("eth0", &probe, t(4)).is_empty());
    }

    #[test]
    fn gateway_spoof_is_reported_once_per_transition_and_conflict_once() {
        let mut d = detector();
        assert!(
            d.observe("eth0", &reply(GW_MAC, GW), t(0)).is_empty(),
            "the real gateway is quiet"
        );
        // One MAC change: one alert, no conflict (only one MAC answers now).
        let f = d.observe("eth0", &reply(EVIL, GW), t(1000));
        assert_eq!(kinds(&f), vec![Kind::GatewayMacChanged]);
        assert_eq!(f[0].detail_str("source"), Some("arp"));
        assert_eq!(f[0].detail_str("old_mac"), Some("02:00:00:00:00:01"));
        assert_eq!(f[0].detail_str("new_mac"), Some("02:de:ad:be:ef:01"));
        // The poisoner repeats every second: nothing new.
        for s in 2..10 {
            assert!(d.observe("eth0", &reply(EVIL, GW), t(s * 1000)).is_empty());
        }
        // The real gateway answers too: now two MACs really answer.
        let f = d.observe("eth0", &reply(GW_MAC, GW), t(10_000));
        assert_eq!(kinds(&f), vec![Kind::ArpGatewayConflict]);
        assert_eq!(
            f[0].details["macs"],
            json!(["02:00:00:00:00:01", "02:de:ad:be:ef:01"])
        );
        // The poisoner again: a new transition, the same conflict (not repeated).
        assert_eq!(
            kinds(&d.observe("eth0", &reply(EVIL, GW), t(11_000))),
            vec![Kind::GatewayMacChanged]
        );
    }

    #[test]
    fn a_mac_trusted_by_hand_becomes_the_reference() {
        let mut d = detector();
        let f = d.observe("eth0", &reply(EVIL, GW), t(0));
        assert_eq!(kinds(&f), vec![Kind::GatewayMacChanged]);
        assert_eq!(f[0].detail_str("old_mac"), Some("02:00:00:00:00:01"));
        // The operator accepted the new router (`netsentry baseline accept`).
        d.set_gateways(&[(IpAddr::V4(GW), Some(mac(EVIL)))]);
        assert!(d.observe("eth0", &reply(EVIL, GW), t(1_000)).is_empty());
        let f = d.observe("eth0", &reply(GW_MAC, GW), t(120_000));
        assert_eq!(kinds(&f), vec![Kind::GatewayMacChanged]);
        assert_eq!(f[0].detail_str("new_mac"), Some("02:00:00:00:00:01"));
    }

    #[test]
    fn request_based_poisoning_and_gratuitous_claims_count() {
        let mut d = detector();
        // A request from the attacker with the gateway's IP as sender (kernel may update its cache).
        let req = build::arp(
            EVIL,
            [0xff; 6],
            false,
            EVIL,
            GW,
            [0; 6],
            Ipv4Addr::new(192, 0, 2, 10),
        );
        assert_eq!(
            kinds(&d.observe("eth0", &req, t(0))),
            vec![Kind::GatewayMacChanged]
        );
    }

    const VMAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x07];
    const R1: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const R2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
    const R2_MAC: [u8; 6] = [2, 0, 0, 0, 0, 3];

    /// Group 7 advertising GW from its virtual MAC, sent by R1, whose own
    /// MAC (GW_MAC: it answers from it too) the segment's ARP shows.
    fn vrrp_segment(d: &mut ArpDetector, at: i64) {
        assert!(d.observe("eth0", &reply(GW_MAC, R1), t(at)).len() <= 1);
        let advert = build::vrrp4(VMAC, R1, 2, 7, 200, &[GW]);
        assert!(d.observe("eth0", &advert, t(at)).is_empty());
    }

    #[test]
    fn a_virtual_mac_alone_is_no_failover() {
        // Nobody advertises group 7: an attacker answering from its virtual
        // MAC (or from group 9's) is what it looks like.
        let mut d = detector();
        let f = d.observe("eth0", &reply(VMAC, GW), t(0));
        assert_eq!(kinds(&f), vec![Kind::GatewayMacChanged]);
        let mut d = detector();
        vrrp_segment(&mut d, 0);
        let f = d.observe("eth0", &reply([0, 0, 0x5e, 0, 1, 9], GW), t(10));
        assert_eq!(kinds(&f), vec![Kind::GatewayMacChanged]);
        // And answering in turn with the gateway is a conflict, not
        // suppressed because one of the MACs looks like VRRP.
        assert!(d.observe("eth0", &reply(GW_MAC, GW), t(20)).is_empty());
        let f = d.observe("eth0", &reply([0, 0, 0x5e, 0, 1, 9], GW), t(30));
        assert!(kinds(&f).contains(&Kind::ArpGatewayConflict), "{f:?}");
    }

    #[test]
    fn a_failover_within_the_advertising_group_is_information() {
        let mut d = detector();
        vrrp_segment(&mut d, 0);
        let f = d.observe("eth0", &reply(VMAC, GW), t(500));
        assert_eq!(kinds(&f), vec![Kind::GatewayFailover]);
        assert_eq!(f[0].kind.severity(), crate::alert::Severity::Info);
        assert_eq!(f[0].details["vrid"], 7);
        assert_eq!(f[0].details["routers"], json!(["192.0.2.2"]));
        // Answering in turn from its own MAC and the virtual one (arp_announce
        // 0): no conflict.
        for i in 1..6 {
            let from = if i % 2 == 0 { VMAC } else { GW_MAC };
            let f = d.observe("eth0", &reply(from, GW), t(500 + i * 100));
            assert!(
                kinds(&f).iter().all(|k| *k == Kind::GatewayFailover),
                "{f:?}"
            );
        }
        // An attacker's MAC while the group advertises is an attack.
        let f = d.observe("eth0", &reply(EVIL, GW), t(2_000));
        assert_eq!(kinds(&f), vec![Kind::GatewayMacChanged]);
        let f = d.observe("eth0", &reply(GW_MAC, GW), t(2_100));
        // Back to the gateway's MAC: the attacker's and the group's answer in turn.
        assert_eq!(kinds(&f), vec![Kind::ArpGatewayConflict]);
        // Off: every change is one.
        let mut strict = ArpDetector::new(ArpSettings {
            vrrp_is_normal: false,
            ..Default::default()
        });
        strict.set_gateways(&[(IpAddr::V4(GW), Some(mac(GW_MAC)))]);
        vrrp_segment(&mut strict, 0);
        assert_eq!(
            kinds(&strict.observe("eth0", &reply(VMAC, GW), t(500))),
            vec![Kind::GatewayMacChanged]
        );
    }

    #[test]
    fn routers_advertising_from_their_own_macs_fail_over_between_them() {
        // keepalived without a virtual MAC: R1 (GW_MAC) is master, R2 takes
        // over after three missed advertisements.
        let mut d = detector();
        d.observe("eth0", &build::vrrp4(GW_MAC, R1, 3, 7, 200, &[GW]), t(0));
        d.observe(
            "eth0",
            &build::vrrp4(R2_MAC, R2, 3, 7, 100, &[GW]),
            t(3_600),
        );
        let f = d.observe("eth0", &build::gratuitous_arp(R2_MAC, GW), t(3_601));
        assert_eq!(kinds(&f), vec![Kind::GatewayFailover]);
        // R2 was heard only from now on: a stale group proves nothing.
        let mut d = detector();
        d.observe("eth0", &build::vrrp4(R2_MAC, R2, 3, 7, 100, &[GW]), t(0));
        let f = d.observe("eth0", &build::gratuitous_arp(R2_MAC, GW), t(60_000));
        assert_eq!(kinds(&f), vec![Kind::GatewayMacChanged]);
    }

    #[test]
    fn a_router_answering_from_two_group_macs_at_first_sight_is_confirmed() {
        let mut d = detector();
        vrrp_segment(&mut d, 0);
        d.set_confirming(&[IpAddr::V4(GW)]);
        let f = d.observe("eth0", &reply(VMAC, GW), t(100));
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(d.take_confirmed(), vec![IpAddr::V4(GW)]);
        assert!(d.take_conflicted().is_empty());
        // An attacker's answer during a confirmation stays a conflict.
        let mut d = detector();
        vrrp_segment(&mut d, 0);
        d.set_confirming(&[IpAddr::V4(GW)]);
        let f = d.observe("eth0", &reply(EVIL, GW), t(100));
        assert_eq!(kinds(&f), vec![Kind::ArpGatewayConflict]);
    }

    #[test]
    fn replay_learns_the_gateway_from_the_first_claim() {
        let mut d = ArpDetector::new(ArpSettings::default());
        d.set_gateways(&[(IpAddr::V4(GW), None)]);
        assert!(d.observe("pcap", &reply(GW_MAC, GW), t(0)).is_empty());
        assert_eq!(
            kinds(&d.observe("pcap", &reply(EVIL, GW), t(1)))[0],
            Kind::GatewayMacChanged
        );
    }

    #[test]
    fn ndp_rogue_router_spoofed_gateway_na_and_mismatch() {
        let mut d = ArpDetector::new(ArpSettings::default());
        let gw6: Ipv6Addr = "fe80::1".parse().unwrap();
        d.set_gateways(&[(IpAddr::V6(gw6), Some(mac(GW_MAC)))]);
        let all: Ipv6Addr = "ff02::1".parse().unwrap();
        let mcast = [0x33, 0x33, 0, 0, 0, 1];
        // The known router's RA: nothing.
        let ra = build::icmpv6(GW_MAC, mcast, gw6, all, &build::ra_body(GW_MAC, 1800));
        assert!(d.observe("eth0", &ra, t(0)).is_empty());
        // A rogue router: reported once.
        let rogue: Ipv6Addr = "fe80::66".parse().unwrap();
        let ra = build::icmpv6(EVIL, mcast, rogue, all, &build::ra_body(EVIL, 1800));
        let f = d.observe("eth0", &ra, t(1));
        assert_eq!(kinds(&f), vec![Kind::NdpRouterNew]);
        assert_eq!(f[0].detail_str("router_ip"), Some("fe80::66"));
        assert!(d.observe("eth0", &ra, t(2)).is_empty());
        assert!(d.take_dirty());
        // A spoofed NA with override for the gateway.
        let na = build::icmpv6(
            EVIL,
            mcast,
            rogue,
            all,
            &build::na_body(gw6, true, false, true, EVIL),
        );
        let f = d.observe("eth0", &na, t(3));
        assert_eq!(kinds(&f), vec![Kind::GatewayMacChanged]);
        assert_eq!(f[0].detail_str("source"), Some("ndp"));
        // Without override the kernel does not move a known entry, but it
        // takes it for an incomplete one: a claim of the gateway all the same.
        let mut d2 = ArpDetector::new(ArpSettings::default());
        d2.set_gateways(&[(IpAddr::V6(gw6), Some(mac(GW_MAC)))]);
        let na = build::icmpv6(
            EVIL,
            mcast,
            rogue,
            all,
            &build::na_body(gw6, true, true, false, EVIL),
        );
        assert_eq!(
            kinds(&d2.observe("eth0", &na, t(0))),
            vec![Kind::GatewayMacChanged]
        );
        // TLLA that is not the sender's Ethernet address.
        let na = build::icmpv6(
            GW_MAC,
            mcast,
            gw6,
            all,
            &build::na_body(gw6, true, false, false, EVIL),
        );
        let f = d2.observe("eth0", &na, t(1));
        assert_eq!(kinds(&f), vec![Kind::ArpEthernetMismatch]);
        assert_eq!(f[0].detail_str("family"), Some("inet6"));
    }

    #[test]
    fn storm_once_per_second_with_top_sender() {
        let mut d = ArpDetector::new(ArpSettings {
            storm_pps: 100,
            ..Default::default()
        });
        let mut found = Vec::new();
        for i in 0..300u32 {
            let ip = Ipv4Addr::from(0xC0000200 + (i % 200));
            let src = if i % 3 == 0 {
                EVIL
            } else {
                [2, 0, 0, 1, (i >> 8) as u8, i as u8]
            };
            found.extend(d.observe("eth0", &reply(src, ip), t(i as i64)));
        }
        // The second ends with the next frame.
        found.extend(d.observe("eth0", &reply(EVIL, GW), t(1500)));
        let storms: Vec<_> = found.iter().filter(|f| f.kind == Kind::ArpStorm).collect();
        assert_eq!(storms.len(), 1);
        assert_eq!(storms[0].details["packets_per_s"], 300);
        assert_eq!(
            storms[0].detail_str("top_sender"),
            Some("02:de:ad:be:ef:01")
        );
    }

    #[test]
    fn garbage_is_counted() {
        let mut d = detector();
        for junk in [&[][..], &[0u8; 10], &[0xffu8; 60]] {
            assert!(d.observe("eth0", junk, t(0)).is_empty());
        }
        let mut tcp = reply(GW_MAC, GW);
        tcp[12] = 0x08;
        tcp[13] = 0x00;
        d.observe("eth0", &tcp, t(0));
        let c = d.counters();
        assert_eq!(c.frames, 4);
        assert_eq!(c.malformed, 2);
        assert_eq!(c.other, 2);
    }

    #[test]
    fn subnet_matching() {
        assert!(in_subnet(
            "192.0.2.77".parse().unwrap(),
            "192.0.2.10".parse().unwrap(),
            24
        ));
        assert!(!in_subnet(
            "192.0.3.1".parse().unwrap(),
            "192.0.2.10".parse().unwrap(),
            24
        ));
        assert!(in_subnet(
            "10.1.2.3".parse().unwrap(),
            "192.0.2.10".parse().unwrap(),
            0
        ));
        assert!(in_subnet(
            "2001:db8::5".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
            64
        ));
        assert!(!in_subnet(
            "2001:db8::5".parse().unwrap(),
            "192.0.2.10".parse().unwrap(),
            24
        ));
    }
}

#[cfg(test)]
mod ra_tests {
    use super::*;
    use crate::wire::build;
    use chrono::TimeZone;

    const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const EVIL: [u8; 6] = [2, 0xde, 0xad, 0xbe, 0xef, 1];

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    /// An RA body with options: a prefix, an RDNSS server, an MTU.
    fn ra(src: [u8; 6], prefix: &str, dns: &str, mtu: u32) -> Vec<u8> {
        let body = build::ra_body_with(
            src,
            1800,
            prefix.parse().unwrap(),
            dns.parse().unwrap(),
            mtu,
        );
        let gw6: Ipv6Addr = "fe80::1".parse().unwrap();
        build::icmpv6(
            src,
            [0x33, 0x33, 0, 0, 0, 1],
            gw6,
            "ff02::1".parse().unwrap(),
            &body,
        )
    }

    fn detector() -> ArpDetector {
        let mut d = ArpDetector::new(ArpSettings::default());
        d.set_gateways(&[(
            IpAddr::V6("fe80::1".parse().unwrap()),
            Some(Mac(GW_MAC.to_vec())),
        )]);
        d
    }

    #[test]
    fn the_gateways_own_advertisement_with_a_rogue_prefix_and_dns_is_reported() {
        let mut d = detector();
        let normal = ra(GW_MAC, "2001:db8:1::", "2001:db8:1::53", 1500);
        // The router re-advertises the same thing every few minutes: quiet.
        for s in 0..5 {
            assert!(d.observe("eth0", &normal, t(s * 200)).is_empty());
        }
        let rogue = ra(GW_MAC, "2001:db8:bad::", "2001:db8:bad::53", 1500);
        let f = d.observe("eth0", &rogue, t(1_000));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, Kind::NdpRouterChanged);
        assert_eq!(f[0].severity, None, "same MAC: a warning");
        let changes: Vec<&str> = f[0].details["changes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c.as_str())
            .collect();
        assert!(
            changes.contains(&"prefix 2001:db8:bad::/64 on-link autonomous added"),
            "{changes:?}"
        );
        assert!(
            changes.contains(&"prefix 2001:db8:1::/64 on-link autonomous withdrawn"),
            "{changes:?}"
        );
        assert!(
            changes.contains(&"RDNSS 2001:db8:bad::53 added"),
            "{changes:?}"
        );
        assert_eq!(f[0].details["after"]["rdnss"][0], "2001:db8:bad::53");
    }

    #[test]
    fn an_advertisement_from_the_gateways_address_and_another_mac_is_critical() {
        let mut d = detector();
        // Even as the first advertisement seen: the gateway's MAC is known.
        let f = d.observe(
            "eth0",
            &ra(EVIL, "2001:db8:bad::", "2001:db8:bad::53", 1280),
            t(0),
        );
        let changed: Vec<_> = f
            .iter()
            .filter(|f| f.kind == Kind::NdpRouterChanged)
            .collect();
        assert_eq!(changed.len(), 1, "{f:?}");
        assert_eq!(changed[0].severity, Some(crate::alert::Severity::Critical));
        assert_eq!(changed[0].details["known_mac"], "02:00:00:00:00:01");
    }

    #[test]
    fn a_solicitation_naming_another_mac_for_the_gateway_is_a_claim() {
        let mut d = detector();
        let gw6: Ipv6Addr = "fe80::1".parse().unwrap();
        let target: Ipv6Addr = "fe80::10".parse().unwrap();
        let mut body = vec![135, 0, 0, 0, 0, 0, 0, 0];
        body.extend_from_slice(&target.octets());
        body.extend_from_slice(&[1, 1]);
        body.extend_from_slice(&EVIL);
        let ns = build::icmpv6(EVIL, [0x33, 0x33, 0xff, 0, 0, 0x10], gw6, target, &body);
        let f = d.observe("eth0", &ns, t(0));
        assert_eq!(
            f.iter().map(|f| f.kind).collect::<Vec<_>>(),
            vec![Kind::GatewayMacChanged]
        );
    }
}
