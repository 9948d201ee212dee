//! VRRP groups seen on each segment, and the one question both paths ask
//! (a frame on the wire, the kernel's neighbour entry): is this change of a
//! gateway's MAC a failover within the gateway's own VRRP group?
//!
//! A group (segment, family, VRID) is what its advertisements (IP protocol
//! 112, RFC 3768/5798) say: the virtual addresses, and the routers that sent
//! them. A MAC belongs to the group when it is the group's virtual MAC
//! (00:00:5e:00:01:VRID, 00:00:5e:00:02:VRID for IPv6), the Ethernet source
//! of one of its advertisements (implementations without a virtual MAC, such
//! as keepalived's default, advertise from the router's own), or the MAC the
//! segment's ARP shows for the address a router advertised from (a router
//! that also answers from its own MAC: `arp_ignore`/`arp_announce` left at 0).
//! A gateway belongs to the group when the advertisements list its address,
//! or when the MAC it is trusted at is the group's virtual MAC (it already
//! used that group).
//!
//! A change is a failover only when the old and the new MAC both belong to
//! one group of the gateway that is advertising now, and only routers heard
//! recently make a MAC belong to it. A virtual MAC alone
//! proves nothing (anyone can send from 00:00:5e:00:01:07), nor do
//! advertisements that stopped: without current advertisements a change is
//! reported as one. Someone who forges the advertisements too is a VRRP
//! router of the group to this host (the real routers see a new master).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::alert::{Finding, Kind};
use crate::wire::{EtherAddr, VrrpFrame};

/// Groups remembered (segment, family, VRID); beyond this new ones are not stored.
pub const MAX_GROUPS: usize = 64;
/// Routers remembered per group (the least recently heard goes first).
const MAX_SPEAKERS: usize = 8;
/// Virtual addresses remembered per group.
const MAX_VIPS: usize = 16;
/// A group is advertising while its last advertisement is at most this many
/// of its intervals old, plus [`FRESH_SLACK_MS`]: a backup takes over after
/// three missed advertisements and the skew time (RFC 5798 6.1), so the old
/// master's last one is that old when the new master's first comes.
const FRESH_INTERVALS: i64 = 4;
const FRESH_SLACK_MS: i64 = 2000;
/// Routers heard within this many seconds still explain their MACs among a
/// gateway's recent claims (not a change: that needs a current router).
pub const RECENT_S: i64 = 600;

#[derive(Clone, Debug)]
struct Group {
    vips: Vec<IpAddr>,
    /// Routers heard: their address, the Ethernet source they advertised
    /// from, and when.
    speakers: Vec<(IpAddr, EtherAddr, DateTime<Utc>)>,
    last: DateTime<Utc>,
    interval_ms: i64,
}

impl Group {
    /// An advertisement heard at `heard` still counts at `now`.
    fn current(&self, heard: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        (now - heard).num_milliseconds() <= self.interval_ms * FRESH_INTERVALS + FRESH_SLACK_MS
    }
}

/// The VRRP groups heard per segment (a pure table, fed with frames).
#[derive(Clone, Debug, Default)]
pub struct VrrpTable {
    groups: BTreeMap<(String, bool, u8), Group>,
    /// Advertisements not stored because the table was full.
    pub dropped: u64,
}

impl VrrpTable {
    /// No group heard.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// One advertisement heard on `segment` at `now`.
    pub fn observe(&mut self, segment: &str, v: &VrrpFrame, now: DateTime<Utc>) {
        let key = (segment.to_string(), v.ip_src.is_ipv6(), v.vrid);
        if !self.groups.contains_key(&key) && self.groups.len() >= MAX_GROUPS {
            self.dropped += 1;
            return;
        }
        let g = self.groups.entry(key).or_insert_with(|| Group {
            vips: Vec::new(),
            speakers: Vec::new(),
            last: now,
            interval_ms: 1000,
        });
        g.last = now;
        // A zero interval is not valid; read as the default second.
        g.interval_ms = match v.interval_cs {
            0 => 1000,
            cs => i64::from(cs) * 10,
        };
        // Priority 0: the master resigns; it is still a router of the group.
        if v.priority != 0 {
            g.vips = v.addresses.iter().take(MAX_VIPS).copied().collect();
        }
        g.speakers
            .retain(|(ip, mac, _)| (*ip, *mac) != (v.ip_src, v.eth_src));
        if g.speakers.len() >= MAX_SPEAKERS
            && let Some(oldest) = g
                .speakers
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.2)
                .map(|(i, _)| i)
        {
            g.speakers.remove(oldest);
        }
        g.speakers.push((v.ip_src, v.eth_src, now));
    }

    /// What the groups say at `now`, with the MACs of the routers' own
    /// addresses as the segment's ARP shows them (`station`).
    pub fn view(
        &self,
        now: DateTime<Utc>,
        station: impl Fn(&str, IpAddr) -> Option<EtherAddr>,
    ) -> VrrpView {
        let groups = self
            .groups
            .iter()
            .filter(|(_, g)| g.current(g.last, now))
            .map(|((segment, v6, vrid), g)| {
                // Only routers advertising now (or until the failover): one
                // forged advertisement long ago makes nobody a member.
                let macs = |heard: &dyn Fn(DateTime<Utc>) -> bool| {
                    let mut out: BTreeSet<EtherAddr> = [EtherAddr::vrrp(*v6, *vrid)].into();
                    for (ip, mac, _) in g.speakers.iter().filter(|s| heard(s.2)) {
                        out.insert(*mac);
                        out.extend(station(segment, *ip));
                    }
                    out
                };
                GroupView {
                    segment: segment.clone(),
                    vrid: *vrid,
                    v6: *v6,
                    vips: g.vips.clone(),
                    routers: g.speakers.iter().map(|s| s.0).collect(),
                    members: macs(&|heard| g.current(heard, now)),
                    recent_members: macs(&|heard| (now - heard).num_seconds() <= RECENT_S),
                }
            })
            .collect();
        VrrpView { groups }
    }
}

/// One advertising group, as [`VrrpView::failover`] needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupView {
    pub segment: String,
    pub vrid: u8,
    pub v6: bool,
    pub vips: Vec<IpAddr>,
    /// The routers heard advertising (their own addresses).
    pub routers: Vec<IpAddr>,
    /// The MACs that belong to the group now.
    pub members: BTreeSet<EtherAddr>,
    /// Those of routers heard within [`RECENT_S`]: after a failover the old
    /// master's answers are still among a gateway's recent claims.
    pub recent_members: BTreeSet<EtherAddr>,
}

/// The groups advertising at one moment: handed to the netlink detector, so
/// that both paths classify a change the same way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VrrpView {
    pub groups: Vec<GroupView>,
}

impl VrrpView {
    /// The group of `gateway` (on `segment`, trusted at `trusted`) that
    /// advertises now and has each of `macs` (`recent`: among the routers
    /// heard within [`RECENT_S`], else among the current ones).
    fn group_of(
        &self,
        (segment, gateway, trusted): (&str, IpAddr, EtherAddr),
        macs: &[EtherAddr],
        recent: bool,
    ) -> Option<&GroupView> {
        self.groups.iter().find(|g| {
            let members = if recent {
                &g.recent_members
            } else {
                &g.members
            };
            crate::detect::stations::same_name(&g.segment, segment)
                && (g.vips.contains(&gateway) || trusted == EtherAddr::vrrp(g.v6, g.vrid))
                && members.contains(&trusted)
                && macs.iter().all(|m| members.contains(m))
        })
    }

    /// Every MAC that claimed `gateway` lately (`macs`) is one of its
    /// group's recent routers: answering in turn is no conflict.
    pub fn answering_in_turn(
        &self,
        segment: &str,
        gateway: IpAddr,
        trusted: EtherAddr,
        macs: &[EtherAddr],
    ) -> bool {
        self.group_of((segment, gateway, trusted), macs, true)
            .is_some()
    }

    /// A group advertising `address` on `segment` has `mac` among its MACs
    /// (a claim of one of this host's addresses by a peer router of its
    /// VRRP group).
    pub fn advertises(&self, segment: &str, address: IpAddr, mac: &EtherAddr) -> bool {
        self.groups.iter().any(|g| {
            crate::detect::stations::same_name(&g.segment, segment)
                && g.vips.contains(&address)
                && g.members.contains(mac)
        })
    }

    /// The group within which `gateway` moving from `old` to `new` is a
    /// failover, if there is one (see the module's documentation).
    pub fn failover(
        &self,
        segment: &str,
        gateway: IpAddr,
        old: EtherAddr,
        new: EtherAddr,
    ) -> Option<&GroupView> {
        self.group_of((segment, gateway, old), &[new], false)
    }
}

/// `gateway_failover`: `gateway` (on `interface`) moved from `old` to `new`
/// within `group`, as `source` (`arp`, `ndp`, `netlink`) saw it.
pub fn failover_finding(
    group: &GroupView,
    (interface, gateway): (&str, IpAddr),
    (old, new): (EtherAddr, EtherAddr),
    source: &str,
    now: DateTime<Utc>,
) -> Finding {
    let routers: Vec<String> = group.routers.iter().map(|r| r.to_string()).collect();
    Finding::new(
        Kind::GatewayFailover,
        now,
        format!(
            "default gateway {gateway} on {interface} failed over within VRRP group {}: now at {new} (was {old}; routers {})",
            group.vrid,
            routers.join(", ")
        ),
        json!({"interface": interface, "ip": gateway.to_string(), "old_mac": old.to_string(),
               "new_mac": new.to_string(), "vrid": group.vrid, "routers": routers,
               "source": source, "sources": [source]}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::net::Ipv4Addr;

    const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const R1: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    const R2: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3));
    const M1: EtherAddr = EtherAddr([2, 0, 0, 0, 0, 2]);
    const M2: EtherAddr = EtherAddr([2, 0, 0, 0, 0, 3]);
    const EVIL: EtherAddr = EtherAddr([2, 0xde, 0xad, 0xbe, 0xef, 1]);

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    fn advert(eth_src: EtherAddr, ip_src: IpAddr, vrid: u8) -> VrrpFrame {
        VrrpFrame {
            eth_src,
            vlan: None,
            ip_src,
            version: 2,
            vrid,
            priority: 100,
            interval_cs: 100,
            addresses: vec![VIP],
        }
    }

    fn no_stations(_: &str, _: IpAddr) -> Option<EtherAddr> {
        None
    }

    #[test]
    fn routers_advertising_from_their_own_macs_fail_over_between_them() {
        let mut table = VrrpTable::default();
        table.observe("eth0", &advert(M1, R1, 7), t(0));
        // The backup takes over after 3 missed advertisements and the skew.
        table.observe("eth0", &advert(M2, R2, 7), t(4));
        let view = table.view(t(4), no_stations);
        let g = view.failover("eth0", VIP, M1, M2).expect("a failover");
        assert_eq!((g.vrid, g.routers.clone()), (7, vec![R1, R2]));
        // Not for a MAC outside the group, nor for another gateway or segment.
        assert!(view.failover("eth0", VIP, M1, EVIL).is_none());
        assert!(view.failover("eth0", VIP, EVIL, M1).is_none());
        let other = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
        assert!(view.failover("eth0", other, M1, M2).is_none());
        assert!(view.failover("eth1", VIP, M1, M2).is_none());
    }

    #[test]
    fn a_virtual_mac_is_a_failover_only_for_its_advertising_group() {
        let vmac = EtherAddr::vrrp(false, 7);
        let mut table = VrrpTable::default();
        // Nothing heard: a virtual MAC proves nothing.
        assert!(
            table
                .view(t(0), no_stations)
                .failover("eth0", VIP, M1, vmac)
                .is_none()
        );
        table.observe("eth0", &advert(vmac, R1, 7), t(0));
        // R1's own MAC (it also answers from it) is known from its ARP.
        let stations = |_: &str, ip: IpAddr| (ip == R1).then_some(M1);
        let view = table.view(t(1), stations);
        assert!(view.failover("eth0", VIP, vmac, M1).is_some());
        assert!(view.failover("eth0", VIP, M1, vmac).is_some());
        // Another group's virtual MAC, and an attacker's.
        assert!(
            view.failover("eth0", VIP, vmac, EtherAddr::vrrp(false, 9))
                .is_none()
        );
        assert!(view.failover("eth0", VIP, vmac, EVIL).is_none());
        // Advertisements that stopped prove nothing either.
        assert!(
            table
                .view(t(60), stations)
                .failover("eth0", VIP, vmac, M1)
                .is_none()
        );
    }

    #[test]
    fn a_router_heard_once_long_ago_is_no_member_now() {
        let mut table = VrrpTable::default();
        // A forged advertisement from EVIL, then only R1 for a minute.
        table.observe(
            "eth0",
            &advert(EVIL, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 66)), 7),
            t(0),
        );
        for s in 1..=60 {
            table.observe("eth0", &advert(M1, R1, 7), t(s));
        }
        let view = table.view(t(60), no_stations);
        assert!(view.failover("eth0", VIP, M1, EVIL).is_none());
        // Among the recent claims it is still explained (a former master's
        // answers linger there after a failover): no conflict from it, but
        // its claim above is a change.
        assert!(view.answering_in_turn("eth0", VIP, M1, &[M1, EVIL]));
        assert!(
            !table
                .view(t(700), no_stations)
                .answering_in_turn("eth0", VIP, M1, &[M1, EVIL])
        );
        // A backup that just took over is current.
        table.observe("eth0", &advert(M2, R2, 7), t(64));
        assert!(
            table
                .view(t(64), no_stations)
                .failover("eth0", VIP, M1, M2)
                .is_some()
        );
    }

    #[test]
    fn a_gateway_trusted_at_the_virtual_mac_already_uses_the_group() {
        let vmac = EtherAddr::vrrp(false, 7);
        let mut table = VrrpTable::default();
        // An advertisement that lists only another address (more than the
        // 16 read, or another VIP of the same group).
        let mut a = advert(M2, R2, 7);
        a.addresses = vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100))];
        table.observe("eth0", &a, t(0));
        let view = table.view(t(0), no_stations);
        assert!(view.failover("eth0", VIP, vmac, M2).is_some());
        assert!(view.failover("eth0", VIP, M1, M2).is_none());
    }

    #[test]
    fn an_ipv6_group_is_its_own() {
        // VRRPv3 for IPv6: the first virtual address is link-local.
        let gw6: IpAddr = "fe80::1".parse().unwrap();
        let (r1, r2): (IpAddr, IpAddr) = ("fe80::2".parse().unwrap(), "fe80::3".parse().unwrap());
        let mut table = VrrpTable::default();
        for (mac, ip, s) in [(M1, r1, 0), (M2, r2, 4)] {
            let mut a = advert(mac, ip, 7);
            (a.version, a.addresses) = (3, vec![gw6]);
            table.observe("eth0", &a, t(s));
        }
        let view = table.view(t(4), no_stations);
        assert!(view.failover("eth0", gw6, M1, M2).is_some());
        // Its virtual MAC is 00:00:5e:00:02:07, not the IPv4 group's.
        assert!(
            view.failover("eth0", gw6, M1, EtherAddr::vrrp(true, 7))
                .is_some()
        );
        assert!(
            view.failover("eth0", gw6, M1, EtherAddr::vrrp(false, 7))
                .is_none()
        );
        // The IPv4 gateway is not in it.
        assert!(view.failover("eth0", VIP, M1, M2).is_none());
    }

    #[test]
    fn the_table_is_bounded() {
        let mut table = VrrpTable::default();
        for vrid in 1..=255u8 {
            for r in 0..20u8 {
                let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, r));
                table.observe(
                    "eth0",
                    &advert(EtherAddr([2, 0, 0, 0, vrid, r]), ip, vrid),
                    t(0),
                );
            }
        }
        assert_eq!(table.groups.len(), MAX_GROUPS);
        assert!(
            table
                .groups
                .values()
                .all(|g| g.speakers.len() <= MAX_SPEAKERS)
        );
        assert_eq!(table.dropped, (255 - MAX_GROUPS as u64) * 20);
    }
}
