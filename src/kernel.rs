//! The kernel's view of the network, as the netlink source reports it: links,
//! neighbour entries, default routes and addresses. Plain data, no I/O.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::alert::format_mac;

/// Address family of a route or gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Inet,
    Inet6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::Inet
        } else {
            Family::Inet6
        }
    }
    /// `inet` or `inet6`.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Inet6 => "inet6",
        }
    }
}

/// A link (network interface) as `RTM_NEWLINK` describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` (`bridge`, `veth`, `ifb`, ...); `None` for physical NICs.
    pub kind: Option<String>,
    pub mac: Option<Mac>,
    pub mtu: u32,
    /// IFF_UP: administratively up.
    pub admin_up: bool,
    /// IFF_LOWER_UP: carrier present.
    pub carrier: bool,
    /// IFF_PROMISC set by a user, or a packet socket holding it in promiscuous mode.
    pub promisc: bool,
    pub loopback: bool,
    /// IFLA_CARRIER_DOWN_COUNT: carrier losses since boot. The kernel may fold a
    /// short flap into one notification (linkwatch batches them for up to 1 s);
    /// this counter still shows it.
    pub carrier_downs: Option<u32>,
    /// IFLA_LINK: the lower device of a stacked link (macvlan, ipvlan, vlan),
    /// or a veth's peer (whose index may be in another namespace).
    pub parent: Option<u32>,
}

/// Kinds that sit on a lower device and see (and can send) its traffic: a
/// way to sniff and spoof from the host.
pub const STACKED_KINDS: &[&str] = &["macvlan", "macvtap", "ipvlan", "ipvtap", "vlan"];

impl KernelView {
    /// Whether the operator's patterns hide `link`: its name matches one of
    /// `names` or its kind one of `kinds` — but never when it is stacked on a
    /// link that is itself watched (a macvlan named `br-4f3a9c` on the
    /// uplink is no container plumbing).
    pub fn is_ignored(&self, link: &Link, names: &[crate::config::Glob], kinds: &[String]) -> bool {
        let hidden = |l: &Link| {
            names.iter().any(|g| g.matches(&l.name))
                || l.kind
                    .as_ref()
                    .is_some_and(|k| kinds.iter().any(|x| x == k))
        };
        let stacked_on_watched = link
            .kind
            .as_deref()
            .is_some_and(|k| STACKED_KINDS.contains(&k))
            && link
                .parent
                .and_then(|p| self.links.get(&p))
                .is_some_and(|lower| {
                    lower.index != link.index && !lower.loopback && !hidden(lower)
                });
        !stacked_on_watched && hidden(link)
    }
}

/// A hardware address; printed lowercase with colons.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub Vec<u8>);

impl Mac {
    /// `None` for an absent or all-zero address (the kernel reports zeros for "none").
    pub fn from_bytes(bytes: &[u8]) -> Option<Mac> {
        if bytes.is_empty() || bytes.iter().all(|b| *b == 0) {
            None
        } else {
            Some(Mac(bytes.to_vec()))
        }
    }
    /// Parses `aa:bb:cc:dd:ee:ff` (case free).
    pub fn parse(text: &str) -> Option<Mac> {
        let bytes: Option<Vec<u8>> = text
            .split(':')
            .map(|p| u8::from_str_radix(p, 16).ok())
            .collect();
        bytes.filter(|b| !b.is_empty() && b.len() <= 32).map(Mac)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_mac(&self.0))
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Mac::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("bad MAC address {text:?}")))
    }
}

/// Neighbour cache states (`NUD_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NeighbourState {
    Incomplete,
    Reachable,
    Stale,
    Delay,
    Probe,
    Failed,
    Noarp,
    Permanent,
    None,
}

impl NeighbourState {
    /// States in which the entry's link-layer address is the kernel's current belief.
    pub fn has_valid_address(self) -> bool {
        matches!(
            self,
            NeighbourState::Reachable
                | NeighbourState::Stale
                | NeighbourState::Delay
                | NeighbourState::Probe
                | NeighbourState::Permanent
                | NeighbourState::Noarp
        )
    }
    /// The state as `ip neigh` shows it (`REACHABLE`, `STALE`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            NeighbourState::Incomplete => "incomplete",
            NeighbourState::Reachable => "reachable",
            NeighbourState::Stale => "stale",
            NeighbourState::Delay => "delay",
            NeighbourState::Probe => "probe",
            NeighbourState::Failed => "failed",
            NeighbourState::Noarp => "noarp",
            NeighbourState::Permanent => "permanent",
            NeighbourState::None => "none",
        }
    }
}

/// A neighbour (ARP / NDP) cache entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Neighbour {
    pub ifindex: u32,
    pub ip: IpAddr,
    pub mac: Option<Mac>,
    pub state: NeighbourState,
}

/// Identifies one default route: the kernel replaces a route with the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RouteKey {
    /// `inet` or `inet6`.
    pub family: Family,
    /// The routing table (the main table, 254, is the one followed).
    pub table: u32,
    /// The route's metric (priority).
    pub metric: u32,
    /// Type of service (IPv4).
    pub tos: u8,
    /// IPv6 only: the first next hop (gateway, interface). The kernel keeps an
    /// IPv6 route per next hop — a static default and two learned from router
    /// advertisements, all with metric 1024, are three routes, each guarded;
    /// an IPv4 route with the same table, metric and TOS replaces the old one.
    pub hop: Option<(Option<IpAddr>, u32)>,
}

/// One next hop of a default route (a route with several is multipath).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NextHop {
    /// `None` for a device route (`default dev ppp0`).
    pub gateway: Option<IpAddr>,
    pub ifindex: u32,
}

/// A default route (destination prefix length 0) in the main table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DefaultRoute {
    pub key: RouteKey,
    pub nexthops: Vec<NextHop>,
}

/// An address assigned to a link.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Address {
    pub ifindex: u32,
    pub ip: IpAddr,
    pub prefix_len: u8,
}

/// Where the kernel sends traffic for one destination, by its own lookup
/// (`RTM_GETROUTE`: no packet is sent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoutePath {
    /// The next hop; `None` when the destination is on the link itself.
    pub gateway: Option<IpAddr>,
    pub ifindex: u32,
    /// The table of the route that decided (254: main).
    pub table: u32,
    /// That route's destination prefix (`0.0.0.0/0` for a default route).
    pub prefix: Option<(IpAddr, u8)>,
    /// The route's own gateway, when a redirect (a route exception) replaced it.
    pub redirected_from: Option<IpAddr>,
    /// The policy rule that chose a table other than main, as `ip rule` shows it.
    pub rule: Option<String>,
}

/// One destination's lookup: the path, or why there is none (no route,
/// unreachable, blackhole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathLookup {
    pub destination: IpAddr,
    pub path: Result<RoutePath, String>,
}

/// Everything the netlink source reports, as of one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelView {
    pub links: BTreeMap<u32, Link>,
    pub neighbours: HashMap<(u32, IpAddr), Neighbour>,
    pub routes: BTreeMap<RouteKey, Vec<NextHop>>,
    pub addresses: Vec<Address>,
}

impl KernelView {
    /// The interface name of an index, or `if<N>` when the link is unknown.
    pub fn link_name(&self, index: u32) -> String {
        self.links
            .get(&index)
            .map(|l| l.name.clone())
            .unwrap_or_else(|| format!("if{index}"))
    }

    /// The link named `name`.
    pub fn link_by_name(&self, name: &str) -> Option<&Link> {
        self.links.values().find(|l| l.name == name)
    }

    /// Default next hops of one family, lowest metric first (the one the kernel uses).
    pub fn default_nexthops(&self, family: Family) -> Vec<(IpAddr, u32)> {
        self.default_routes(family)
            .flat_map(|(_, hops)| hops.iter())
            .filter_map(|h| h.gateway.map(|g| (g, h.ifindex)))
            .collect()
    }

    /// Default routes of one family in the order the kernel prefers them.
    pub fn default_routes(
        &self,
        family: Family,
    ) -> impl Iterator<Item = (&RouteKey, &Vec<NextHop>)> {
        let mut routes: Vec<_> = self
            .routes
            .iter()
            .filter(|(k, _)| k.family == family)
            .collect();
        routes.sort_by_key(|(k, _)| (k.metric, k.tos));
        routes.into_iter()
    }
}

/// One thing the netlink source saw. Events are idempotent upserts and removals;
/// `Snapshot` is a complete dump (at start, after lost events, and on a timer).
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    Link(Link),
    LinkRemoved {
        index: u32,
        name: String,
    },
    Neighbour(Neighbour),
    NeighbourRemoved {
        ifindex: u32,
        ip: IpAddr,
    },
    Route(DefaultRoute),
    RouteRemoved(RouteKey),
    Address(Address),
    AddressRemoved(Address),
    Snapshot(KernelView),
    /// The paths of the watched destinations, sent when one of them changed
    /// (and after every full dump).
    Paths(Vec<PathLookup>),
}

/// Whether `ip` is inside `net/prefix` (families must match).
pub fn in_subnet(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let bits = prefix.min(32) as u32;
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let bits = prefix.min(128) as u32;
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}
