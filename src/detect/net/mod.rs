//! Gateway and link detector: the kernel's view (netlink) in, findings out.
//!
//! Pure: no I/O, time is an argument. The detector keeps the last reported state
//! in a [`Baseline`] keyed by interface name, so a full dump (at start, after lost
//! events, on the reconcile timer) and a single event are compared the same way.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use chrono::{DateTime, Utc};

use crate::alert::Finding;
use crate::config::Glob;
use crate::detect::arp::vrrp::VrrpView;

mod flaps;
mod gateway;
mod link;
mod paths;

use crate::kernel::{KernelView, Neighbour, Observation, RoutePath};
use crate::state::baseline::Baseline;
use gateway::gateways_of;
pub use gateway::{CONFIRM_WINDOW, GatewayProbe, UNREACHABLE_AFTER};
pub(crate) use paths::route_text;

/// Neighbour entries kept; beyond this, entries that are not gateways are ignored.
pub const MAX_NEIGHBOURS: usize = 65_536;
/// Addresses kept for `status`.
pub const MAX_ADDRESSES: usize = 4_096;

/// What the operator chose: which links matter.
#[derive(Clone, Debug)]
pub struct NetSettings {
    /// When non-empty, state alerts (down/up, MAC, promisc, MTU) only for these.
    pub interfaces: Vec<String>,
    /// Links matching these produce no alerts at all.
    pub ignore_links: Vec<Glob>,
    /// Links of these kinds (`IFLA_INFO_KIND`) produce no alerts either.
    pub ignore_link_kinds: Vec<String>,
    /// A suspect gateway MAC stable this long is adopted (`None`: never).
    pub adopt_after: Option<chrono::Duration>,
    /// Three downs of a link within this are `link_flapping`; the episode
    /// ends when the link has been up this long.
    pub flap_window: chrono::Duration,
    /// Confirm a gateway MAC learned at first sight with a probe whose
    /// answers the packet capture judges (off without capture: nobody would
    /// see a second MAC answer, and a change must then be reported as one).
    pub confirm_first_sight: bool,
    /// A gateway's move within its advertising VRRP group is a failover
    /// (`gateway_failover`), not a change (see [`crate::detect::arp::vrrp`]).
    pub vrrp_is_normal: bool,
}

impl Default for NetSettings {
    fn default() -> Self {
        NetSettings {
            interfaces: Vec::new(),
            ignore_links: Vec::new(),
            ignore_link_kinds: Vec::new(),
            adopt_after: None,
            flap_window: chrono::Duration::seconds(60),
            confirm_first_sight: true,
            vrrp_is_normal: true,
        }
    }
}

/// One comparison pass: when it happens, which source saw the change
/// (`netlink` or `startup`), whether it only records (the first dump without
/// a stored baseline), and where the findings go.
struct Pass<'o> {
    now: DateTime<Utc>,
    source: &'static str,
    quiet: bool,
    out: &'o mut Vec<Finding>,
}

/// Counters a user may want to see in `status` and logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub neighbours_dropped: u64,
    pub links_dropped: u64,
}

/// The netlink detector: gateways, routes and links compared with the baseline.
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
    /// Gateways whose entry went FAILED, since when (not yet unreachable).
    failing: HashMap<(u32, IpAddr), DateTime<Utc>>,
    /// Gateways whose MAC learned at first sight is being confirmed, until when.
    confirming: HashMap<(u32, IpAddr), DateTime<Utc>>,
    /// Gateways another MAC answered for while being confirmed.
    disputed: HashSet<(u32, IpAddr)>,
    /// Gateways the agent should probe now.
    probes: Vec<gateway::GatewayProbe>,
    /// Routers known from their advertisements before now (set by the agent):
    /// a default route to one of them is not a stranger's.
    known_routers: HashSet<IpAddr>,
    /// The VRRP groups advertising (set by the agent from the capture).
    vrrp: VrrpView,
    /// VRRP failovers per gateway (interface, address) since start (metrics).
    failovers: HashMap<(String, IpAddr), u64>,
    /// Recent carrier losses and flapping episodes per link.
    flaps: flaps::FlapTable,
    /// The last path of each watched destination (`route_diverted`).
    paths: HashMap<IpAddr, RoutePath>,
    dirty: bool,
    counters: NetCounters,
}

impl NetDetector {
    /// New settings (configuration reload); they apply from the next
    /// observation on, the baseline stays.
    pub fn set_settings(&mut self, settings: NetSettings) {
        self.settings = settings;
    }

    /// A detector that compares its first dump with `stored` (when there is one).
    pub fn new(settings: NetSettings, stored: Option<Baseline>) -> NetDetector {
        NetDetector {
            settings,
            view: KernelView::default(),
            loaded: stored.is_some(),
            baseline: stored.unwrap_or_default(),
            started: false,
            unreachable: HashSet::new(),
            failing: HashMap::new(),
            confirming: HashMap::new(),
            disputed: HashSet::new(),
            probes: Vec::new(),
            paths: HashMap::new(),
            flaps: flaps::FlapTable::new(),
            known_routers: HashSet::new(),
            vrrp: VrrpView::default(),
            failovers: HashMap::new(),
            dirty: false,
            counters: NetCounters::default(),
        }
    }

    /// The VRRP groups advertising now (see
    /// [`crate::detect::arp::ArpDetector::vrrp_view`]).
    pub fn set_vrrp(&mut self, view: VrrpView) {
        self.vrrp = view;
    }

    /// VRRP failovers that moved the MAC held for a gateway, since start.
    pub fn failovers(&self, interface: &str, ip: IpAddr) -> u64 {
        self.failovers
            .get(&(interface.to_string(), ip))
            .copied()
            .unwrap_or(0)
    }

    /// Routers known from their advertisements (see [`crate::detect::arp::ArpDetector::established_routers`]).
    pub fn set_known_routers(&mut self, routers: HashSet<IpAddr>) {
        self.known_routers = routers;
    }

    /// The kernel's view as the detector holds it.
    pub fn view(&self) -> &KernelView {
        &self.view
    }

    /// What was last reported (saved to `state_dir/baseline.json`).
    pub fn baseline(&self) -> &Baseline {
        &self.baseline
    }

    /// Entries not tracked because a table was full.
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

    /// When [`NetDetector::tick`] has something to do: a flapping link's
    /// quiet period over, a failed gateway entry to judge.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        let failing = self
            .failing
            .values()
            .map(|t| *t + UNREACHABLE_AFTER)
            .chain(self.confirming.values().copied())
            .min();
        match (self.next_flap_deadline(), failing) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The timed decisions that are due: ended flapping episodes,
    /// unreachable gateways.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Finding> {
        let mut out = self.end_flap_episodes(now);
        out.extend(self.judge_failing(now));
        self.end_confirmations(now);
        out
    }

    /// The interfaces whose frames are judged when `[arp] interfaces` is
    /// empty: the watched ones and every other link with an address that is
    /// not ignored (a backend NIC with no default route is poisoned as easily).
    pub fn capture_interfaces(&self) -> Vec<String> {
        let mut names: BTreeSet<String> = self.watched_interfaces().into_iter().collect();
        for a in &self.view.addresses {
            if let Some(l) = self.view.links.get(&a.ifindex)
                && !l.loopback
                && !self.is_ignored(l)
            {
                names.insert(l.name.clone());
            }
        }
        names.into_iter().collect()
    }

    /// Applies one observation and returns what it reveals.
    pub fn observe(&mut self, obs: Observation, now: DateTime<Utc>) -> Vec<Finding> {
        let mut out = Vec::new();
        match obs {
            Observation::Snapshot(view) => self.apply_snapshot(view, now, &mut out),
            _ if !self.started => self.apply_quietly(obs),
            obs => {
                let mut pass = Pass {
                    now,
                    source: "netlink",
                    quiet: false,
                    out: &mut out,
                };
                self.apply_event(obs, &mut pass);
            }
        }
        out
    }

    /// One event after the first dump, compared at once.
    fn apply_event(&mut self, obs: Observation, pass: &mut Pass<'_>) {
        match obs {
            Observation::Snapshot(_) => {}
            Observation::Link(link) => {
                if let Some(old) = self.view.links.get(&link.index)
                    && old.name != link.name
                {
                    let old_name = old.name.clone();
                    self.update_link(&old_name, None, pass);
                }
                let record = self.record_of(&link);
                let name = link.name.clone();
                self.view.links.insert(link.index, link);
                self.update_link(&name, record, pass);
            }
            Observation::LinkRemoved { index, name } => {
                let name = self
                    .view
                    .links
                    .remove(&index)
                    .map(|l| l.name)
                    .unwrap_or(name);
                self.update_link(&name, None, pass);
            }
            Observation::Neighbour(n) => {
                let key = (n.ifindex, n.ip);
                if self.store_neighbour(n) {
                    for (family, ifindex, ip) in self.gateways() {
                        if (ifindex, ip) == key {
                            self.check_gateway(family, ifindex, ip, pass);
                        }
                    }
                }
            }
            Observation::NeighbourRemoved { ifindex, ip } => {
                self.view.neighbours.remove(&(ifindex, ip));
            }
            Observation::Route(route) => {
                self.view.routes.insert(route.key, route.nexthops);
                self.update_gateways(pass);
            }
            Observation::RouteRemoved(key) => {
                if self.view.routes.remove(&key).is_some() {
                    self.update_gateways(pass);
                }
            }
            Observation::Address(a) => {
                if !self.view.addresses.contains(&a) && self.view.addresses.len() < MAX_ADDRESSES {
                    self.view.addresses.push(a);
                }
            }
            Observation::AddressRemoved(a) => self.view.addresses.retain(|x| *x != a),
            Observation::Paths(lookups) => self.check_paths(lookups, pass),
        }
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
            Observation::Paths(lookups) => {
                let mut out = Vec::new();
                let mut pass = Pass {
                    now: chrono::DateTime::UNIX_EPOCH,
                    source: "netlink",
                    quiet: true,
                    out: &mut out,
                };
                self.check_paths(lookups, &mut pass);
            }
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
        let mut pass = Pass {
            now,
            source,
            quiet,
            out,
        };
        for name in names {
            let record = self
                .view
                .link_by_name(&name)
                .and_then(|l| self.record_of(l));
            self.update_link(&name, record, &mut pass);
        }
        self.update_gateways(&mut pass);
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
}

#[cfg(test)]
mod tests;
