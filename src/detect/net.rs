//! Gateway and link detector: the kernel's view (netlink) in, findings out.
//!
//! Pure: no I/O, time is an argument. The detector keeps the last reported state
//! in a [`Baseline`] keyed by interface name, so a full dump (at start, after lost
//! events, on the reconcile timer) and a single event are compared the same way.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::alert::{Finding, Kind};
use crate::config::Glob;
use crate::kernel::{Family, KernelView, Link, Neighbour, NeighbourState, Observation};
use crate::state::baseline::{Baseline, LinkRecord, MAX_LINKS, NextHopRecord};

/// Neighbour entries kept; beyond this, entries that are not gateways are ignored.
pub const MAX_NEIGHBOURS: usize = 65_536;
/// Addresses kept for `status`.
pub const MAX_ADDRESSES: usize = 4_096;

/// What the operator chose: which links matter.
#[derive(Clone, Debug, Default)]
pub struct NetSettings {
    /// When non-empty, state alerts (down/up, MAC, promisc, MTU) only for these.
    pub interfaces: Vec<String>,
    /// Links matching these produce no alerts at all.
    pub ignore_links: Vec<Glob>,
}

/// Counters a user may want to see in `status` and logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub neighbours_dropped: u64,
    pub links_dropped: u64,
}

pub struct NetDetector {
    settings: NetSettings,
    view: KernelView,
    baseline: Baseline,
    /// A stored baseline was loaded: the first dump is compared with it (`source = "startup"`).
    loaded: bool,
    /// The first dump has been applied.
    started: bool,
    /// Gateways whose neighbour entry is FAILED (alerted once per episode).
    unreachable: HashSet<(u32, IpAddr)>,
    dirty: bool,
    counters: NetCounters,
}

impl NetDetector {
    /// New settings (configuration reload); they apply from the next
    /// observation on, the baseline stays.
    pub fn set_settings(&mut self, settings: NetSettings) {
        self.settings = settings;
    }

    pub fn new(settings: NetSettings, stored: Option<Baseline>) -> NetDetector {
        NetDetector {
            settings,
            view: KernelView::default(),
            loaded: stored.is_some(),
            baseline: stored.unwrap_or_default(),
            started: false,
            unreachable: HashSet::new(),
            dirty: false,
            counters: NetCounters::default(),
        }
    }

    pub fn view(&self) -> &KernelView {
        &self.view
    }

    pub fn baseline(&self) -> &Baseline {
        &self.baseline
    }

    pub fn counters(&self) -> &NetCounters {
        &self.counters
    }

    /// True once the first full dump has been applied (the baseline is ready).
    pub fn is_ready(&self) -> bool {
        self.started
    }

    /// True (once) when the baseline changed since the last call: time to save it.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// The interfaces whose gateways and state are watched: the configured ones,
    /// else those carrying a default route.
    pub fn watched_interfaces(&self) -> Vec<String> {
        if !self.settings.interfaces.is_empty() {
            return self.settings.interfaces.clone();
        }
        let names: BTreeSet<String> = self
            .baseline
            .default_routes
            .values()
            .flatten()
            .map(|h| h.interface.clone())
            .collect();
        names.into_iter().collect()
    }

    /// Applies one observation and returns what it reveals.
    pub fn observe(&mut self, obs: Observation, now: DateTime<Utc>) -> Vec<Finding> {
        let mut out = Vec::new();
        match obs {
            Observation::Snapshot(view) => self.apply_snapshot(view, now, &mut out),
            _ if !self.started => self.apply_quietly(obs),
            Observation::Link(link) => {
                if let Some(old) = self.view.links.get(&link.index)
                    && old.name != link.name
                {
                    let old_name = old.name.clone();
                    self.update_link(&old_name, None, now, false, &mut out);
                }
                let record = self.record_of(&link);
                let name = link.name.clone();
                self.view.links.insert(link.index, link);
                self.update_link(&name, record, now, false, &mut out);
            }
            Observation::LinkRemoved { index, name } => {
                let name = self
                    .view
                    .links
                    .remove(&index)
                    .map(|l| l.name)
                    .unwrap_or(name);
                self.update_link(&name, None, now, false, &mut out);
            }
            Observation::Neighbour(n) => {
                let key = (n.ifindex, n.ip);
                if self.store_neighbour(n) {
                    for (family, ifindex, ip) in self.gateways() {
                        if (ifindex, ip) == key {
                            self.check_gateway(
                                family, ifindex, ip, now, "netlink", false, &mut out,
                            );
                        }
                    }
                }
            }
            Observation::NeighbourRemoved { ifindex, ip } => {
                self.view.neighbours.remove(&(ifindex, ip));
            }
            Observation::Route(route) => {
                self.view.routes.insert(route.key, route.nexthops);
                self.update_gateways(now, "netlink", false, &mut out);
            }
            Observation::RouteRemoved(key) => {
                if self.view.routes.remove(&key).is_some() {
                    self.update_gateways(now, "netlink", false, &mut out);
                }
            }
            Observation::Address(a) => {
                if !self.view.addresses.contains(&a) && self.view.addresses.len() < MAX_ADDRESSES {
                    self.view.addresses.push(a);
                }
            }
            Observation::AddressRemoved(a) => self.view.addresses.retain(|x| *x != a),
        }
        out
    }

    /// Events that arrive before the first dump only update the view.
    fn apply_quietly(&mut self, obs: Observation) {
        match obs {
            Observation::Link(l) => {
                self.view.links.insert(l.index, l);
            }
            Observation::LinkRemoved { index, .. } => {
                self.view.links.remove(&index);
            }
            Observation::Neighbour(n) => {
                self.store_neighbour(n);
            }
            Observation::NeighbourRemoved { ifindex, ip } => {
                self.view.neighbours.remove(&(ifindex, ip));
            }
            Observation::Route(r) => {
                self.view.routes.insert(r.key, r.nexthops);
            }
            Observation::RouteRemoved(k) => {
                self.view.routes.remove(&k);
            }
            Observation::Address(a) => self.view.addresses.push(a),
            Observation::AddressRemoved(a) => self.view.addresses.retain(|x| *x != a),
            Observation::Snapshot(_) => {}
        }
    }

    fn apply_snapshot(&mut self, mut view: KernelView, now: DateTime<Utc>, out: &mut Vec<Finding>) {
        // The first dump without a stored baseline only records; with one, it is
        // compared against what was known when the agent last ran.
        let quiet = !self.started && !self.loaded;
        let source = if self.started { "netlink" } else { "startup" };
        if view.neighbours.len() > MAX_NEIGHBOURS {
            let gateways: HashSet<(u32, IpAddr)> = gateways_of(&view)
                .into_iter()
                .map(|(_, i, ip)| (i, ip))
                .collect();
            let before = view.neighbours.len();
            let mut kept = 0usize;
            view.neighbours.retain(|k, _| {
                let keep = gateways.contains(k)
                    || kept < MAX_NEIGHBOURS - gateways.len().min(MAX_NEIGHBOURS);
                kept += keep as usize;
                keep
            });
            self.counters.neighbours_dropped += (before - view.neighbours.len()) as u64;
        }
        view.addresses.truncate(MAX_ADDRESSES);
        self.view = view;
        let mut names: BTreeSet<String> = self.baseline.links.keys().cloned().collect();
        names.extend(
            self.view
                .links
                .values()
                .filter(|l| !l.loopback)
                .map(|l| l.name.clone()),
        );
        for name in names {
            let record = self
                .view
                .link_by_name(&name)
                .and_then(|l| self.record_of(l));
            self.update_link(&name, record, now, quiet, out);
        }
        self.update_gateways(now, source, quiet, out);
        self.started = true;
    }

    fn store_neighbour(&mut self, n: Neighbour) -> bool {
        let key = (n.ifindex, n.ip);
        if self.view.neighbours.len() >= MAX_NEIGHBOURS
            && !self.view.neighbours.contains_key(&key)
            && !self.gateways().iter().any(|(_, i, ip)| (*i, *ip) == key)
        {
            self.counters.neighbours_dropped += 1;
            return false;
        }
        self.view.neighbours.insert(key, n);
        true
    }

    fn is_ignored(&self, name: &str) -> bool {
        self.settings.ignore_links.iter().any(|g| g.matches(name))
    }

    fn wants_state_alerts(&self, name: &str) -> bool {
        self.settings.interfaces.is_empty() || self.settings.interfaces.iter().any(|i| i == name)
    }

    /// The record for a link, or `None` for links the operator ignores.
    fn record_of(&self, link: &Link) -> Option<LinkRecord> {
        if link.loopback || self.is_ignored(&link.name) {
            return None;
        }
        Some(LinkRecord {
            kind: link.kind.clone(),
            mac: link.mac.clone(),
            mtu: link.mtu,
            admin_up: link.admin_up,
            carrier: link.carrier,
            promisc: link.promisc,
            down_since: None,
            carrier_downs: link.carrier_downs,
        })
    }

    /// Compares the last reported state of link `name` with its new state.
    fn update_link(
        &mut self,
        name: &str,
        new: Option<LinkRecord>,
        now: DateTime<Utc>,
        quiet: bool,
        out: &mut Vec<Finding>,
    ) {
        let old = self.baseline.links.get(name).cloned();
        match (old, new) {
            (None, None) => {}
            (None, Some(mut new)) => {
                if self.baseline.links.len() >= MAX_LINKS {
                    self.counters.links_dropped += 1;
                    return;
                }
                if !quiet {
                    let kind = new.kind.clone().unwrap_or_else(|| "device".into());
                    let mac = new.mac.as_ref().map(|m| m.to_string());
                    out.push(Finding::new(
                        Kind::LinkAdded,
                        now,
                        format!(
                            "new link {name} ({kind}{})",
                            mac.as_ref().map(|m| format!(", {m}")).unwrap_or_default()
                        ),
                        json!({"interface": name, "link_kind": kind, "mac": mac}),
                    ));
                }
                if !new.is_up() {
                    new.down_since = Some(now);
                }
                self.baseline.links.insert(name.to_string(), new);
                self.dirty = true;
            }
            (Some(_), None) => {
                if !quiet {
                    out.push(Finding::new(
                        Kind::LinkRemoved,
                        now,
                        format!("link {name} was removed"),
                        json!({"interface": name}),
                    ));
                }
                self.baseline.links.remove(name);
                self.dirty = true;
            }
            (Some(old), Some(mut new)) => {
                new.down_since = old.down_since;
                let alerts = !quiet && self.wants_state_alerts(name);
                let unseen_flaps = match (old.carrier_downs, new.carrier_downs) {
                    (Some(before), Some(now_count)) if now_count > before => now_count - before,
                    _ => 0,
                };
                if old.is_up() && new.is_up() && unseen_flaps > 0 {
                    // Down and up again between two notifications (or while the
                    // agent was stopped): the counter is all that shows it.
                    if alerts {
                        let times = if unseen_flaps == 1 {
                            String::new()
                        } else {
                            format!(" {unseen_flaps} times")
                        };
                        out.push(Finding::new(
                            Kind::LinkDown,
                            now,
                            format!("link {name} lost carrier{times} and got it back before it could be timed"),
                            json!({"interface": name, "reason": "carrier", "flaps": unseen_flaps}),
                        ));
                        out.push(Finding::new(
                            Kind::LinkUp,
                            now,
                            format!("link {name} is up again (short carrier loss{times})"),
                            json!({"interface": name, "down_ms": null, "flaps": unseen_flaps}),
                        ));
                    }
                } else if old.is_up() && !new.is_up() {
                    new.down_since = Some(now);
                    let reason = if new.admin_up { "carrier" } else { "admin" };
                    let why = if reason == "carrier" {
                        "carrier lost"
                    } else {
                        "set down"
                    };
                    if alerts {
                        out.push(Finding::new(
                            Kind::LinkDown,
                            now,
                            format!("link {name} is down ({why})"),
                            json!({"interface": name, "reason": reason}),
                        ));
                    }
                } else if !old.is_up() && new.is_up() {
                    let down_ms = old.down_since.map(|t| (now - t).num_milliseconds().max(0));
                    new.down_since = None;
                    if alerts {
                        let after = down_ms
                            .map(|ms| format!(" after {:.1} s", ms as f64 / 1000.0))
                            .unwrap_or_default();
                        out.push(Finding::new(
                            Kind::LinkUp,
                            now,
                            format!("link {name} is up again{after}"),
                            json!({"interface": name, "down_ms": down_ms}),
                        ));
                    }
                }
                if alerts && old.mac != new.mac {
                    let show = |m: &Option<crate::kernel::Mac>| m.as_ref().map(|m| m.to_string());
                    out.push(Finding::new(
                        Kind::LinkMacChanged,
                        now,
                        format!(
                            "link {name} changed its MAC address to {} (was {})",
                            show(&new.mac).unwrap_or_else(|| "none".into()),
                            show(&old.mac).unwrap_or_else(|| "none".into())
                        ),
                        json!({"interface": name, "old_mac": show(&old.mac), "new_mac": show(&new.mac)}),
                    ));
                }
                if alerts && old.promisc != new.promisc {
                    let what = if new.promisc { "entered" } else { "left" };
                    out.push(Finding::new(
                        Kind::LinkPromisc,
                        now,
                        format!("link {name} {what} promiscuous mode"),
                        json!({"interface": name, "enabled": new.promisc}),
                    ));
                }
                if alerts && old.mtu != new.mtu {
                    out.push(Finding::new(
                        Kind::LinkMtuChanged,
                        now,
                        format!("link {name} MTU changed from {} to {}", old.mtu, new.mtu),
                        json!({"interface": name, "old_mtu": old.mtu, "new_mtu": new.mtu}),
                    ));
                }
                if old != new {
                    self.baseline.links.insert(name.to_string(), new);
                    self.dirty = true;
                }
            }
        }
    }

    /// The gateways of the current default routes: (family, ifindex, ip).
    fn gateways(&self) -> Vec<(Family, u32, IpAddr)> {
        gateways_of(&self.view)
    }

    fn update_gateways(
        &mut self,
        now: DateTime<Utc>,
        source: &str,
        quiet: bool,
        out: &mut Vec<Finding>,
    ) {
        for family in [Family::Inet, Family::Inet6] {
            let new: Vec<NextHopRecord> = self
                .view
                .default_routes(family)
                .flat_map(|(_, hops)| hops.iter())
                .map(|h| NextHopRecord {
                    ip: h.gateway,
                    interface: self.view.link_name(h.ifindex),
                })
                .collect();
            let old = self
                .baseline
                .default_routes
                .get(&family)
                .cloned()
                .unwrap_or_default();
            if new == old {
                continue;
            }
            if !quiet {
                out.push(gateway_changed(family, &old, &new, now));
            }
            if new.is_empty() {
                self.baseline.default_routes.remove(&family);
            } else {
                self.baseline.default_routes.insert(family, new);
            }
            self.dirty = true;
        }
        for (family, ifindex, ip) in self.gateways() {
            self.check_gateway(family, ifindex, ip, now, source, quiet, out);
        }
    }

    /// Compares a gateway's neighbour entry with the MAC it was known at.
    #[allow(clippy::too_many_arguments)]
    fn check_gateway(
        &mut self,
        family: Family,
        ifindex: u32,
        ip: IpAddr,
        now: DateTime<Utc>,
        source: &str,
        quiet: bool,
        out: &mut Vec<Finding>,
    ) {
        let Some(entry) = self.view.neighbours.get(&(ifindex, ip)) else {
            return;
        };
        let interface = self.view.link_name(ifindex);
        if entry.state == NeighbourState::Failed {
            if self.unreachable.insert((ifindex, ip)) && !quiet {
                out.push(Finding::new(
                    Kind::GatewayUnreachable,
                    now,
                    format!("default gateway {ip} on {interface} does not answer (neighbour entry failed)"),
                    json!({"interface": interface, "ip": ip.to_string(), "state": entry.state.as_str()}),
                ));
            }
            return;
        }
        if !entry.state.has_valid_address() {
            return;
        }
        if self.unreachable.remove(&(ifindex, ip)) && !quiet {
            out.push(Finding::cleared(
                Kind::GatewayUnreachable,
                now,
                format!("default gateway {ip} on {interface} answers again"),
                json!({"interface": interface, "ip": ip.to_string()}),
            ));
        }
        let Some(mac) = entry.mac.clone() else { return };
        match self.baseline.gateway_mac(family, &interface, &ip) {
            Some(known) if *known == mac => return,
            Some(known) if !quiet => {
                out.push(Finding::new(
                    Kind::GatewayMacChanged,
                    now,
                    format!("default gateway {ip} on {interface} is now at {mac} (was {known})"),
                    json!({"interface": interface, "ip": ip.to_string(), "old_mac": known.to_string(),
                           "new_mac": mac.to_string(), "source": source}),
                ));
            }
            // First sight of this gateway (or a quiet first start): learn it.
            _ => {}
        }
        self.baseline
            .set_gateway_mac(family, &interface, ip, mac, now);
        self.dirty = true;
    }
}

fn gateways_of(view: &KernelView) -> Vec<(Family, u32, IpAddr)> {
    [Family::Inet, Family::Inet6]
        .into_iter()
        .flat_map(|f| {
            view.default_nexthops(f)
                .into_iter()
                .map(move |(ip, ifindex)| (f, ifindex, ip))
        })
        .collect()
}

fn hop_json(hop: Option<&NextHopRecord>) -> Value {
    match hop {
        Some(h) => json!({"ip": h.ip.map(|ip| ip.to_string()), "interface": h.interface}),
        None => Value::Null,
    }
}

fn hop_text(hop: &NextHopRecord) -> String {
    match hop.ip {
        Some(ip) => format!("{ip} on {}", hop.interface),
        None => format!("dev {}", hop.interface),
    }
}

fn gateway_changed(
    family: Family,
    old: &[NextHopRecord],
    new: &[NextHopRecord],
    now: DateTime<Utc>,
) -> Finding {
    let f = family.as_str();
    let summary = match (old.first(), new.first()) {
        (Some(o), Some(n)) if o == n => format!(
            "default {f} route next hops changed: now {} (was {})",
            new.iter().map(hop_text).collect::<Vec<_>>().join(", "),
            old.iter().map(hop_text).collect::<Vec<_>>().join(", ")
        ),
        (Some(o), Some(n)) => format!(
            "default {f} gateway changed to {} (was {})",
            hop_text(n),
            hop_text(o)
        ),
        (None, Some(n)) => format!("new default {f} gateway {}", hop_text(n)),
        (Some(o), None) => format!("default {f} route removed (was via {})", hop_text(o)),
        (None, None) => format!("default {f} route changed"),
    };
    let mut details =
        json!({"family": f, "old": hop_json(old.first()), "new": hop_json(new.first())});
    if old.len() > 1 || new.len() > 1 {
        details["old_nexthops"] = Value::Array(old.iter().map(|h| hop_json(Some(h))).collect());
        details["new_nexthops"] = Value::Array(new.iter().map(|h| hop_json(Some(h))).collect());
    }
    Finding::new(Kind::GatewayChanged, now, summary, details)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{DefaultRoute, Mac, NextHop, RouteKey};
    use chrono::TimeZone;

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_800_000_000_000 + ms).unwrap()
    }
    fn mac(last: u8) -> Mac {
        Mac(vec![0x02, 0, 0, 0, 0, last])
    }
    fn link(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.into(),
            kind: None,
            mac: Some(mac(index as u8 + 0x10)),
            mtu: 1500,
            admin_up: true,
            carrier: true,
            promisc: false,
            loopback: false,
            carrier_downs: Some(0),
        }
    }
    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn key(family: Family) -> RouteKey {
        RouteKey {
            family,
            table: 254,
            metric: 0,
            tos: 0,
        }
    }
    fn route(gw: &str, ifindex: u32) -> DefaultRoute {
        let ip = v4(gw);
        DefaultRoute {
            key: key(Family::of(&ip)),
            nexthops: vec![NextHop {
                gateway: Some(ip),
                ifindex,
            }],
        }
    }
    fn neigh(ifindex: u32, ip: &str, m: Option<Mac>, state: NeighbourState) -> Neighbour {
        Neighbour {
            ifindex,
            ip: v4(ip),
            mac: m,
            state,
        }
    }
    /// lo + eth0, default route via 192.0.2.1 at 02::01.
    fn lan() -> KernelView {
        let mut v = KernelView::default();
        let mut lo = link(1, "lo");
        lo.loopback = true;
        v.links.insert(1, lo);
        v.links.insert(2, link(2, "eth0"));
        let r = route("192.0.2.1", 2);
        v.routes.insert(r.key, r.nexthops);
        v.neighbours.insert(
            (2, v4("192.0.2.1")),
            neigh(2, "192.0.2.1", Some(mac(1)), NeighbourState::Reachable),
        );
        v
    }
    fn started(settings: NetSettings) -> NetDetector {
        let mut d = NetDetector::new(settings, None);
        assert!(
            d.observe(Observation::Snapshot(lan()), t(0)).is_empty(),
            "a first start without baseline is quiet"
        );
        assert!(d.is_ready());
        assert!(d.take_dirty());
        d
    }
    fn kinds(f: &[Finding]) -> Vec<Kind> {
        f.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn gateway_mac_change_from_netlink() {
        let mut d = started(NetSettings::default());
        assert_eq!(d.watched_interfaces(), vec!["eth0".to_string()]);
        // Same MAC again (a state change): nothing.
        let f = d.observe(
            Observation::Neighbour(neigh(2, "192.0.2.1", Some(mac(1)), NeighbourState::Stale)),
            t(10),
        );
        assert!(f.is_empty());
        let f = d.observe(
            Observation::Neighbour(neigh(
                2,
                "192.0.2.1",
                Some(mac(0x99)),
                NeighbourState::Stale,
            )),
            t(20),
        );
        assert_eq!(kinds(&f), vec![Kind::GatewayMacChanged]);
        assert_eq!(f[0].detail_str("old_mac"), Some("02:00:00:00:00:01"));
        assert_eq!(f[0].detail_str("new_mac"), Some("02:00:00:00:00:99"));
        assert_eq!(f[0].detail_str("source"), Some("netlink"));
        assert_eq!(f[0].detail_str("interface"), Some("eth0"));
        assert_eq!(f[0].detail_str("ip"), Some("192.0.2.1"));
        assert_eq!(f[0].time, t(20));
        // Reported once; and back to the old one is a change again.
        assert!(
            d.observe(
                Observation::Neighbour(neigh(
                    2,
                    "192.0.2.1",
                    Some(mac(0x99)),
                    NeighbourState::Reachable
                )),
                t(30)
            )
            .is_empty()
        );
        let f = d.observe(
            Observation::Neighbour(neigh(
                2,
                "192.0.2.1",
                Some(mac(1)),
                NeighbourState::Reachable,
            )),
            t(40),
        );
        assert_eq!(f[0].detail_str("new_mac"), Some("02:00:00:00:00:01"));
    }

    #[test]
    fn neighbours_that_are_not_gateways_do_not_alert() {
        let mut d = started(NetSettings::default());
        let f = d.observe(
            Observation::Neighbour(neigh(
                2,
                "192.0.2.50",
                Some(mac(5)),
                NeighbourState::Reachable,
            )),
            t(1),
        );
        assert!(f.is_empty());
        let f = d.observe(
            Observation::Neighbour(neigh(
                2,
                "192.0.2.50",
                Some(mac(6)),
                NeighbourState::Reachable,
            )),
            t(2),
        );
        assert!(f.is_empty());
        // An incomplete entry for the gateway carries no MAC: nothing.
        let f = d.observe(
            Observation::Neighbour(neigh(2, "192.0.2.1", None, NeighbourState::Incomplete)),
            t(3),
        );
        assert!(f.is_empty());
    }

    #[test]
    fn gateway_unreachable_once_per_episode() {
        let mut d = started(NetSettings::default());
        let failed = || Observation::Neighbour(neigh(2, "192.0.2.1", None, NeighbourState::Failed));
        let f = d.observe(failed(), t(1));
        assert_eq!(kinds(&f), vec![Kind::GatewayUnreachable]);
        assert_eq!(f[0].detail_str("state"), Some("failed"));
        assert!(
            d.observe(
                Observation::Neighbour(neigh(2, "192.0.2.1", None, NeighbourState::Incomplete)),
                t(2)
            )
            .is_empty()
        );
        assert!(d.observe(failed(), t(3)).is_empty());
        let back = Observation::Neighbour(neigh(
            2,
            "192.0.2.1",
            Some(mac(1)),
            NeighbourState::Reachable,
        ));
        let f = d.observe(back, t(4));
        assert_eq!(kinds(&f), vec![Kind::GatewayUnreachable]);
        assert!(f[0].clears, "answering again clears the condition");
        assert_eq!(
            kinds(&d.observe(failed(), t(5))),
            vec![Kind::GatewayUnreachable]
        );
    }

    #[test]
    fn gateway_changed_on_route_replace_and_removal() {
        let mut d = started(NetSettings::default());
        let f = d.observe(Observation::Route(route("192.0.2.2", 2)), t(1));
        assert_eq!(kinds(&f), vec![Kind::GatewayChanged]);
        assert_eq!(f[0].details["family"], "inet");
        assert_eq!(
            f[0].details["old"],
            json!({"ip": "192.0.2.1", "interface": "eth0"})
        );
        assert_eq!(
            f[0].details["new"],
            json!({"ip": "192.0.2.2", "interface": "eth0"})
        );
        // The same route again (idempotent event): nothing.
        assert!(
            d.observe(Observation::Route(route("192.0.2.2", 2)), t(2))
                .is_empty()
        );
        let f = d.observe(Observation::RouteRemoved(key(Family::Inet)), t(3));
        assert_eq!(f[0].details["new"], Value::Null);
        assert!(
            d.observe(Observation::RouteRemoved(key(Family::Inet)), t(4))
                .is_empty()
        );
    }

    #[test]
    fn new_gateway_mac_is_learned_not_alerted() {
        let mut d = started(NetSettings::default());
        d.observe(
            Observation::Neighbour(neigh(
                2,
                "192.0.2.2",
                Some(mac(2)),
                NeighbourState::Reachable,
            )),
            t(1),
        );
        let f = d.observe(Observation::Route(route("192.0.2.2", 2)), t(2));
        assert_eq!(kinds(&f), vec![Kind::GatewayChanged]);
        assert_eq!(
            d.baseline()
                .gateway_mac(Family::Inet, "eth0", &v4("192.0.2.2")),
            Some(&mac(2))
        );
    }

    #[test]
    fn multipath_and_ipv6_link_local_gateways() {
        let mut d = started(NetSettings::default());
        let gw6: IpAddr = "fe80::1".parse().unwrap();
        d.observe(
            Observation::Neighbour(Neighbour {
                ifindex: 2,
                ip: gw6,
                mac: Some(mac(6)),
                state: NeighbourState::Reachable,
            }),
            t(1),
        );
        let r6 = DefaultRoute {
            key: key(Family::Inet6),
            nexthops: vec![NextHop {
                gateway: Some(gw6),
                ifindex: 2,
            }],
        };
        let f = d.observe(Observation::Route(r6), t(2));
        assert_eq!(f[0].details["family"], "inet6");
        assert_eq!(
            f[0].details["new"],
            json!({"ip": "fe80::1", "interface": "eth0"})
        );
        let f = d.observe(
            Observation::Neighbour(Neighbour {
                ifindex: 2,
                ip: gw6,
                mac: Some(mac(7)),
                state: NeighbourState::Stale,
            }),
            t(3),
        );
        assert_eq!(kinds(&f), vec![Kind::GatewayMacChanged]);
        assert_eq!(f[0].detail_str("ip"), Some("fe80::1"));
        // A multipath v4 default: the second next hop is followed too.
        let mp = DefaultRoute {
            key: key(Family::Inet),
            nexthops: vec![
                NextHop {
                    gateway: Some(v4("192.0.2.1")),
                    ifindex: 2,
                },
                NextHop {
                    gateway: Some(v4("192.0.2.3")),
                    ifindex: 2,
                },
            ],
        };
        let f = d.observe(Observation::Route(mp), t(4));
        assert_eq!(kinds(&f), vec![Kind::GatewayChanged]);
        assert_eq!(f[0].details["new_nexthops"].as_array().unwrap().len(), 2);
        d.observe(
            Observation::Neighbour(neigh(
                2,
                "192.0.2.3",
                Some(mac(3)),
                NeighbourState::Reachable,
            )),
            t(5),
        );
        let f = d.observe(
            Observation::Neighbour(neigh(
                2,
                "192.0.2.3",
                Some(mac(0x33)),
                NeighbourState::Reachable,
            )),
            t(6),
        );
        assert_eq!(kinds(&f), vec![Kind::GatewayMacChanged]);
        assert_eq!(f[0].detail_str("ip"), Some("192.0.2.3"));
    }

    #[test]
    fn link_down_and_up_with_duration() {
        let mut d = started(NetSettings::default());
        let mut l = link(2, "eth0");
        l.carrier = false;
        let f = d.observe(Observation::Link(l.clone()), t(1_000));
        assert_eq!(kinds(&f), vec![Kind::LinkDown]);
        assert_eq!(f[0].detail_str("reason"), Some("carrier"));
        // Still down (another flag change): nothing.
        assert!(d.observe(Observation::Link(l.clone()), t(2_000)).is_empty());
        l.carrier = true;
        let f = d.observe(Observation::Link(l.clone()), t(20_500));
        assert_eq!(kinds(&f), vec![Kind::LinkUp]);
        assert_eq!(f[0].details["down_ms"], 19_500);
        assert_eq!(f[0].summary, "link eth0 is up again after 19.5 s");
        l.admin_up = false;
        let f = d.observe(Observation::Link(l), t(21_000));
        assert_eq!(f[0].detail_str("reason"), Some("admin"));
    }

    #[test]
    fn a_flap_folded_into_one_notification_is_still_reported() {
        let mut d = started(NetSettings::default());
        let mut l = link(2, "eth0");
        l.carrier_downs = Some(1);
        let f = d.observe(Observation::Link(l.clone()), t(1_000));
        assert_eq!(kinds(&f), vec![Kind::LinkDown, Kind::LinkUp]);
        assert_eq!(f[0].detail_str("reason"), Some("carrier"));
        assert_eq!(f[1].details["down_ms"], Value::Null);
        assert_eq!(f[1].details["flaps"], 1);
        // The same counter again: nothing new.
        assert!(d.observe(Observation::Link(l.clone()), t(2_000)).is_empty());
        // A seen flap moves the counter by one and is timed as usual.
        l.carrier = false;
        l.carrier_downs = Some(2);
        assert_eq!(
            kinds(&d.observe(Observation::Link(l.clone()), t(3_000))),
            vec![Kind::LinkDown]
        );
        l.carrier = true;
        let f = d.observe(Observation::Link(l.clone()), t(4_000));
        assert_eq!(f[0].details["down_ms"], 1000);
        // A reboot resets the counter: not a flap.
        l.carrier_downs = Some(0);
        assert!(d.observe(Observation::Link(l), t(5_000)).is_empty());
    }

    #[test]
    fn link_mac_promisc_mtu() {
        let mut d = started(NetSettings::default());
        let mut l = link(2, "eth0");
        l.promisc = true;
        let f = d.observe(Observation::Link(l.clone()), t(1));
        assert_eq!(kinds(&f), vec![Kind::LinkPromisc]);
        assert_eq!(f[0].details["enabled"], true);
        l.promisc = false;
        assert_eq!(
            d.observe(Observation::Link(l.clone()), t(2))[0].details["enabled"],
            false
        );
        l.mtu = 1400;
        let f = d.observe(Observation::Link(l.clone()), t(3));
        assert_eq!(kinds(&f), vec![Kind::LinkMtuChanged]);
        assert_eq!(
            (
                f[0].details["old_mtu"].as_u64(),
                f[0].details["new_mtu"].as_u64()
            ),
            (Some(1500), Some(1400))
        );
        l.mac = Some(mac(0xaa));
        let f = d.observe(Observation::Link(l.clone()), t(4));
        assert_eq!(kinds(&f), vec![Kind::LinkMacChanged]);
        assert_eq!(f[0].detail_str("old_mac"), Some("02:00:00:00:00:12"));
        assert_eq!(f[0].detail_str("new_mac"), Some("02:00:00:00:00:aa"));
    }

    #[test]
    fn links_added_removed_renamed_and_ignored() {
        let mut d = started(NetSettings {
            interfaces: vec![],
            ignore_links: vec![Glob("veth*".into())],
        });
        let mut dummy = link(7, "dummy0");
        dummy.kind = Some("dummy".into());
        let f = d.observe(Observation::Link(dummy.clone()), t(1));
        assert_eq!(kinds(&f), vec![Kind::LinkAdded]);
        assert_eq!(f[0].detail_str("link_kind"), Some("dummy"));
        assert_eq!(f[0].detail_str("mac"), Some("02:00:00:00:00:17"));
        // A rename is the old name going and a new one coming.
        dummy.name = "uplink2".into();
        let f = d.observe(Observation::Link(dummy), t(2));
        assert_eq!(kinds(&f), vec![Kind::LinkRemoved, Kind::LinkAdded]);
        assert_eq!(
            kinds(&d.observe(
                Observation::LinkRemoved {
                    index: 7,
                    name: "uplink2".into()
                },
                t(3)
            )),
            vec![Kind::LinkRemoved]
        );
        // Ignored links: silence in every direction.
        let mut v = link(8, "veth1234");
        assert!(d.observe(Observation::Link(v.clone()), t(4)).is_empty());
        v.carrier = false;
        assert!(d.observe(Observation::Link(v), t(5)).is_empty());
        assert!(
            d.observe(
                Observation::LinkRemoved {
                    index: 8,
                    name: "veth1234".into()
                },
                t(6)
            )
            .is_empty()
        );
    }

    #[test]
    fn configured_interfaces_limit_state_alerts() {
        let mut d = started(NetSettings {
            interfaces: vec!["eth1".into()],
            ignore_links: vec![],
        });
        let mut l = link(2, "eth0");
        l.carrier = false;
        assert!(d.observe(Observation::Link(l), t(1)).is_empty());
        assert_eq!(d.watched_interfaces(), vec!["eth1".to_string()]);
    }

    #[test]
    fn startup_compares_with_the_stored_baseline() {
        let mut first = started(NetSettings::default());
        let stored = first.baseline().clone();
        let mut d = NetDetector::new(NetSettings::default(), Some(stored.clone()));
        // Unchanged network: a quiet start.
        assert!(d.observe(Observation::Snapshot(lan()), t(5)).is_empty());
        // While stopped: gateway at a new MAC, MTU changed, a link added.
        let mut view = lan();
        view.neighbours.insert(
            (2, v4("192.0.2.1")),
            neigh(2, "192.0.2.1", Some(mac(0xee)), NeighbourState::Stale),
        );
        view.links.get_mut(&2).unwrap().mtu = 9000;
        view.links.insert(3, link(3, "eth1"));
        let mut d = NetDetector::new(NetSettings::default(), Some(stored));
        let f = d.observe(Observation::Snapshot(view.clone()), t(10));
        let mut k = kinds(&f);
        k.sort();
        assert_eq!(
            k,
            vec![
                Kind::GatewayMacChanged,
                Kind::LinkAdded,
                Kind::LinkMtuChanged
            ]
        );
        let mac_alert = f
            .iter()
            .find(|f| f.kind == Kind::GatewayMacChanged)
            .unwrap();
        assert_eq!(mac_alert.detail_str("source"), Some("startup"));
        assert_eq!(mac_alert.detail_str("new_mac"), Some("02:00:00:00:00:ee"));
        // A later reconcile with the same state finds nothing.
        assert!(d.observe(Observation::Snapshot(view), t(20)).is_empty());
        let _ = first.take_dirty();
    }

    #[test]
    fn reconcile_after_lost_events_reports_what_changed() {
        let mut d = started(NetSettings::default());
        let mut view = lan();
        view.links.get_mut(&2).unwrap().carrier = false;
        view.neighbours.insert(
            (2, v4("192.0.2.1")),
            neigh(2, "192.0.2.1", Some(mac(0x42)), NeighbourState::Stale),
        );
        let f = d.observe(Observation::Snapshot(view), t(100));
        let mut k = kinds(&f);
        k.sort();
        assert_eq!(k, vec![Kind::GatewayMacChanged, Kind::LinkDown]);
        let m = f
            .iter()
            .find(|f| f.kind == Kind::GatewayMacChanged)
            .unwrap();
        assert_eq!(m.detail_str("source"), Some("netlink"));
    }

    #[test]
    fn neighbour_table_is_capped_but_gateways_always_fit() {
        let mut d = started(NetSettings::default());
        for i in 0..(MAX_NEIGHBOURS as u32 + 100) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0xC612_0000 + i));
            d.observe(
                Observation::Neighbour(Neighbour {
                    ifindex: 2,
                    ip,
                    mac: Some(mac(9)),
                    state: NeighbourState::Stale,
                }),
                t(1),
            );
        }
        assert!(d.view().neighbours.len() <= MAX_NEIGHBOURS);
        assert!(d.counters().neighbours_dropped >= 100);
        let f = d.observe(
            Observation::Neighbour(neigh(
                2,
                "192.0.2.1",
                Some(mac(0x77)),
                NeighbourState::Stale,
            )),
            t(2),
        );
        assert_eq!(kinds(&f), vec![Kind::GatewayMacChanged]);
    }

    #[test]
    fn events_before_the_first_dump_are_quiet() {
        let mut d = NetDetector::new(NetSettings::default(), None);
        assert!(
            d.observe(Observation::Link(link(2, "eth0")), t(0))
                .is_empty()
        );
        assert!(!d.is_ready());
    }
}
