//! The netlink detector's tests: kernel views in, findings out.

use super::*;
use crate::alert::Kind;
use crate::config::Glob;
use crate::kernel::{DefaultRoute, Family, Link, Mac, NeighbourState, NextHop, RouteKey};

use chrono::TimeZone;
use serde_json::{Value, json};
use std::net::IpAddr;

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
        parent: None,
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
        hop: None,
    }
}
fn route(gw: &str, ifindex: u32) -> DefaultRoute {
    let ip = v4(gw);
    let mut key = key(Family::of(&ip));
    if key.family == Family::Inet6 {
        key.hop = Some((Some(ip), ifindex));
    }
    DefaultRoute {
        key,
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
    // The gateway learned at first sight is probed and answers from its MAC.
    assert_eq!(d.take_probes().len(), 1);
    d.confirmation_done(v4("192.0.2.1"));
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
    // Reported once; the trusted MAC stays, the new one is a suspect.
    let g = d.baseline().gateway(Family::Inet, "eth0", &v4("192.0.2.1"));
    assert_eq!(g.map(|g| &g.mac), Some(&mac(1)));
    assert_eq!(
        g.and_then(|g| g.suspect.as_ref()).map(|s| &s.mac),
        Some(&mac(0x99))
    );
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
    // Back to the trusted MAC: the spoof ended, nothing to report, no suspect.
    assert!(f.is_empty(), "{f:?}");
    let g = d.baseline().gateway(Family::Inet, "eth0", &v4("192.0.2.1"));
    assert_eq!(g.and_then(|g| g.suspect.as_ref()), None);
    // A spoof again is reported again.
    let f = d.observe(
        Observation::Neighbour(neigh(
            2,
            "192.0.2.1",
            Some(mac(0x99)),
            NeighbourState::Stale,
        )),
        t(50),
    );
    assert_eq!(kinds(&f), vec![Kind::GatewayMacChanged]);
}

fn gateway_at(d: &mut NetDetector, m: Mac, at: DateTime<Utc>) -> Vec<Finding> {
    d.observe(
        Observation::Neighbour(neigh(2, "192.0.2.1", Some(m), NeighbourState::Reachable)),
        at,
    )
}

#[test]
fn a_changed_gateway_mac_is_suspect_until_stable_then_adopted() {
    let day = chrono::Duration::days(1);
    let mut d = started(NetSettings {
        adopt_after: Some(day),
        ..Default::default()
    });
    let t0 = t(1_000);
    assert_eq!(
        kinds(&gateway_at(&mut d, mac(0x99), t0)),
        vec![Kind::GatewayMacChanged]
    );
    // Re-dumps and events while it stays: no repeat, not trusted yet.
    d.observe(Observation::Snapshot(d.view().clone()), t0 + day / 2);
    assert!(gateway_at(&mut d, mac(0x99), t0 + day / 2).is_empty());
    assert_eq!(
        d.baseline()
            .gateway_mac(Family::Inet, "eth0", &v4("192.0.2.1")),
        Some(&mac(1))
    );
    // Stable for a day: adopted, said once.
    let f = gateway_at(&mut d, mac(0x99), t0 + day);
    assert_eq!(kinds(&f), vec![Kind::GatewayMacTrusted]);
    assert_eq!(f[0].detail_str("how"), Some("adopted"));
    assert_eq!(f[0].detail_str("old_mac"), Some("02:00:00:00:00:01"));
    let g = d
        .baseline()
        .gateway(Family::Inet, "eth0", &v4("192.0.2.1"))
        .unwrap();
    assert_eq!(
        (&g.mac, g.how.as_deref(), &g.suspect),
        (&mac(0x99), Some("adopted"), &None)
    );
    assert!(gateway_at(&mut d, mac(0x99), t0 + day * 2).is_empty());
    // The old MAC now is a change like any other.
    assert_eq!(
        kinds(&gateway_at(&mut d, mac(1), t0 + day * 3)),
        vec![Kind::GatewayMacChanged]
    );
}

#[test]
fn a_suspect_that_comes_and_goes_is_never_adopted() {
    let day = chrono::Duration::days(1);
    let mut d = started(NetSettings {
        adopt_after: Some(day),
        ..Default::default()
    });
    let t0 = t(1_000);
    gateway_at(&mut d, mac(0x99), t0);
    gateway_at(&mut d, mac(1), t0 + day / 2);
    // Back again: a new report, and the clock starts again.
    assert_eq!(
        kinds(&gateway_at(&mut d, mac(0x99), t0 + day)),
        vec![Kind::GatewayMacChanged]
    );
    assert!(gateway_at(&mut d, mac(0x99), t0 + day + day / 2).is_empty());
    // Never adopted when adopt_after is off.
    let mut never = started(NetSettings::default());
    gateway_at(&mut never, mac(0x99), t0);
    assert!(gateway_at(&mut never, mac(0x99), t0 + day * 365).is_empty());
    assert_eq!(
        never
            .baseline()
            .gateway_mac(Family::Inet, "eth0", &v4("192.0.2.1")),
        Some(&mac(1))
    );
}

#[test]
fn operator_decisions_accept_and_forget() {
    use crate::state::baseline::Decision;
    let mut d = started(NetSettings::default());
    gateway_at(&mut d, mac(0x99), t(1_000));
    d.take_dirty();
    let accept = Decision::Accept {
        ip: v4("192.0.2.1"),
        mac: mac(0x99),
        at: t(2_000),
    };
    let f = d.apply_decision(&accept, t(3_000));
    assert_eq!(kinds(&f), vec![Kind::GatewayMacTrusted]);
    assert_eq!(f[0].detail_str("how"), Some("accepted"));
    assert!(d.take_dirty());
    assert!(gateway_at(&mut d, mac(0x99), t(4_000)).is_empty());
    // Applied twice (the file is read again after a crash): nothing more.
    assert!(d.apply_decision(&accept, t(5_000)).is_empty());
    assert!(!d.take_dirty());
    // Forgotten: learned again quietly at the next sighting.
    let forget = Decision::Forget {
        ip: v4("192.0.2.1"),
        at: t(6_000),
    };
    assert!(d.apply_decision(&forget, t(6_000)).is_empty());
    assert!(d.take_dirty());
    assert_eq!(d.baseline().gateways.len(), 0);
    assert!(gateway_at(&mut d, mac(0x42), t(7_000)).is_empty());
    let g = d
        .baseline()
        .gateway(Family::Inet, "eth0", &v4("192.0.2.1"))
        .unwrap();
    assert_eq!(
        (&g.mac, g.how.as_deref()),
        (&mac(0x42), Some("learned (netlink), unconfirmed"))
    );
    // Confirmed once the window passes without another MAC.
    d.tick(t(8_000));
    let g = d
        .baseline()
        .gateway(Family::Inet, "eth0", &v4("192.0.2.1"))
        .unwrap();
    assert_eq!(g.how.as_deref(), Some("learned (netlink), confirmed"));
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
    // FAILED is not yet unreachable: the gateway is probed first.
    assert!(d.observe(failed(), t(1_000)).is_empty());
    assert_eq!(
        d.take_probes(),
        vec![GatewayProbe {
            ifindex: 2,
            ip: v4("192.0.2.1")
        }]
    );
    assert_eq!(d.next_deadline(), Some(t(4_000)));
    assert!(d.tick(t(3_999)).is_empty());
    let f = d.tick(t(4_000));
    assert_eq!(kinds(&f), vec![Kind::GatewayUnreachable]);
    assert_eq!(f[0].detail_str("state"), Some("failed"));
    assert!(
        d.observe(
            Observation::Neighbour(neigh(2, "192.0.2.1", None, NeighbourState::Incomplete)),
            t(5_000)
        )
        .is_empty()
    );
    assert!(d.observe(failed(), t(6_000)).is_empty());
    assert!(d.take_probes().is_empty(), "one episode, one probe");
    assert!(d.tick(t(20_000)).is_empty());
    let back = Observation::Neighbour(neigh(
        2,
        "192.0.2.1",
        Some(mac(1)),
        NeighbourState::Reachable,
    ));
    let f = d.observe(back, t(21_000));
    assert_eq!(kinds(&f), vec![Kind::GatewayUnreachable]);
    assert!(f[0].clears, "answering again clears the condition");
    d.observe(failed(), t(22_000));
    assert_eq!(kinds(&d.tick(t(25_000))), vec![Kind::GatewayUnreachable]);
}

/// `ip neigh flush`: the entry is FAILED for a moment, then resolved again
/// (by traffic, or by the agent's probe): nothing to report.
#[test]
fn a_flushed_gateway_entry_that_resolves_again_is_quiet() {
    let mut d = started(NetSettings::default());
    let f = d.observe(
        Observation::Neighbour(neigh(2, "192.0.2.1", None, NeighbourState::Failed)),
        t(1_000),
    );
    assert!(f.is_empty());
    assert_eq!(d.take_probes().len(), 1);
    let back = neigh(2, "192.0.2.1", Some(mac(1)), NeighbourState::Stale);
    assert!(d.observe(Observation::Neighbour(back), t(1_200)).is_empty());
    assert_eq!(d.next_deadline(), None);
    assert!(d.tick(t(10_000)).is_empty());
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
        // Past the first-sight confirmation of the new gateway.
        t(2_000),
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
        // Past the first-sight confirmation of the new next hop.
        t(3_000),
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
    // link_down is a condition: up again ends it.
    assert_eq!(kinds(&f), vec![Kind::LinkUp, Kind::LinkDown]);
    assert!(!f[0].clears && f[1].clears);
    assert_eq!(f[1].detail_str("interface"), Some("eth0"));
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
    assert_eq!(
        kinds(&f),
        vec![Kind::LinkDown, Kind::LinkUp, Kind::LinkDown]
    );
    assert!(f[2].clears, "the flap's link_down ends at once");
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
        ..Default::default()
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
    assert_eq!(
        kinds(&f),
        vec![Kind::LinkRemoved, Kind::LinkDown, Kind::LinkAdded]
    );
    assert!(f[1].clears, "a removed link is not down any more");
    assert_eq!(
        kinds(&d.observe(
            Observation::LinkRemoved {
                index: 7,
                name: "uplink2".into()
            },
            t(3)
        )),
        vec![Kind::LinkRemoved, Kind::LinkDown]
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
        ..Default::default()
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

fn path(dest: &str, gw: &str, table: u32, prefix: (&str, u8)) -> crate::kernel::PathLookup {
    crate::kernel::PathLookup {
        destination: v4(dest),
        path: Ok(RoutePath {
            gateway: Some(v4(gw)),
            ifindex: 2,
            table,
            prefix: Some((v4(prefix.0), prefix.1)),
            redirected_from: None,
            rule: None,
        }),
    }
}

#[test]
fn a_path_moved_by_a_more_specific_route_is_diverted_critical_for_a_stranger() {
    let mut d = started(NetSettings::default());
    let normal = || path("64.0.0.1", "192.0.2.1", 254, ("0.0.0.0", 0));
    assert!(
        d.observe(Observation::Paths(vec![normal()]), t(1))
            .is_empty()
    );
    // Through a router this host never used: critical.
    let f = d.observe(
        Observation::Paths(vec![path("64.0.0.1", "192.0.2.66", 254, ("0.0.0.0", 1))]),
        t(2),
    );
    assert_eq!(kinds(&f), vec![Kind::RouteDiverted]);
    assert_eq!(f[0].severity, Some(crate::alert::Severity::Critical));
    assert_eq!(f[0].details["cause"], "route");
    assert_eq!(f[0].details["old_next_hop"]["ip"], "192.0.2.1");
    // Back through the default route: quiet (that is the gateway detector's).
    assert!(
        d.observe(Observation::Paths(vec![normal()]), t(3))
            .is_empty()
    );
    // Through the known gateway by another route: nothing moved.
    let same = path("64.0.0.1", "192.0.2.1", 254, ("64.0.0.0", 8));
    assert!(d.observe(Observation::Paths(vec![same]), t(4)).is_empty());
}

#[test]
fn a_lost_route_that_comes_back_the_same_way_is_quiet_and_a_known_router_is_a_warning() {
    let mut d = started(NetSettings::default());
    let p = path("203.0.113.5", "192.0.2.1", 254, ("0.0.0.0", 0));
    d.observe(Observation::Paths(vec![p.clone()]), t(1));
    let gone = crate::kernel::PathLookup {
        destination: v4("203.0.113.5"),
        path: Err("Network is unreachable".into()),
    };
    assert!(d.observe(Observation::Paths(vec![gone]), t(2)).is_empty());
    assert!(d.observe(Observation::Paths(vec![p]), t(3)).is_empty());
    // A rule sends it to table 100 whose default is the gateway's twin on
    // another address this host already trusts (a gateway it knows a MAC for).
    let mut other = path("203.0.113.5", "192.0.2.1", 100, ("0.0.0.0", 0));
    if let Ok(p) = other.path.as_mut() {
        p.ifindex = 3;
        p.rule = Some("100: from all to 203.0.113.0/24 lookup 100".into());
    }
    let f = d.observe(Observation::Paths(vec![other]), t(4));
    assert_eq!(kinds(&f), vec![Kind::RouteDiverted]);
    assert_eq!(f[0].severity, None, "a known router: the kind's warning");
    assert_eq!(f[0].details["cause"], "rule");
    assert_eq!(f[0].details["table"], "100");
}

#[test]
fn paths_before_the_first_dump_only_record() {
    let mut d = NetDetector::new(NetSettings::default(), None);
    let p = path("64.0.0.1", "192.0.2.1", 254, ("0.0.0.0", 0));
    assert!(d.observe(Observation::Paths(vec![p]), t(0)).is_empty());
    d.observe(Observation::Snapshot(lan()), t(1));
    let moved = path("64.0.0.1", "192.0.2.66", 254, ("0.0.0.0", 1));
    assert_eq!(
        kinds(&d.observe(Observation::Paths(vec![moved]), t(2))),
        vec![Kind::RouteDiverted]
    );
}

/// Down at `down_ms`, up at `up_ms`: the findings of both.
fn flap(d: &mut NetDetector, down_ms: i64, up_ms: i64) -> Vec<Finding> {
    let mut l = link(2, "eth0");
    l.carrier = false;
    let mut f = d.observe(Observation::Link(l.clone()), t(down_ms));
    l.carrier = true;
    f.extend(d.observe(Observation::Link(l), t(up_ms)));
    f
}

#[test]
fn five_flaps_in_twenty_seconds_are_one_episode_with_every_time() {
    let mut d = started(NetSettings::default());
    let up = vec![Kind::LinkDown, Kind::LinkUp, Kind::LinkDown];
    assert_eq!(kinds(&flap(&mut d, 0, 1_000)), up);
    assert_eq!(kinds(&flap(&mut d, 5_000, 6_000)), up);
    // The third loss within a minute: the episode, at once, with the times.
    let f = flap(&mut d, 10_000, 11_000);
    assert_eq!(kinds(&f), vec![Kind::LinkFlapping]);
    assert_eq!(f[0].details["flaps"], 3);
    assert_eq!(f[0].details["times"].as_array().unwrap().len(), 3);
    assert_eq!(f[0].details["times"][0]["down_ms"], 1_000);
    assert_eq!(f[0].summary, "link eth0 is flapping: 3 downs within 10 s");
    // Folded into the episode, nothing lost.
    assert!(flap(&mut d, 15_000, 16_000).is_empty());
    assert!(flap(&mut d, 20_000, 21_000).is_empty());
    assert_eq!(d.next_flap_deadline(), Some(t(81_000)));
    assert!(d.end_flap_episodes(t(80_000)).is_empty());
    let f = d.end_flap_episodes(t(81_000));
    assert_eq!(kinds(&f), vec![Kind::LinkFlapping, Kind::LinkUp]);
    assert!(f[0].clears);
    assert_eq!(f[1].details["flaps"], 5);
    let times = f[1].details["times"].as_array().unwrap().clone();
    assert_eq!(times.len(), 5);
    assert_eq!(times[0]["down"], crate::alert::format_time(&t(0)));
    assert_eq!(times[4]["down"], crate::alert::format_time(&t(20_000)));
    assert!(times.iter().all(|x| x["down_ms"] == 1_000), "{times:?}");
    assert_eq!(d.next_flap_deadline(), None);
    // The next loss is an ordinary one again.
    assert_eq!(kinds(&flap(&mut d, 200_000, 201_000)), up);
}

#[test]
fn occasional_flaps_are_not_flapping() {
    let mut d = started(NetSettings::default());
    // Three losses, but never three within a minute.
    for start in [0, 40_000, 80_000, 130_000] {
        let f = flap(&mut d, start, start + 500);
        assert_eq!(
            kinds(&f),
            vec![Kind::LinkDown, Kind::LinkUp, Kind::LinkDown],
            "at {start}"
        );
    }
    assert_eq!(d.next_flap_deadline(), None);
}

#[test]
fn a_flapping_link_that_stays_down_ends_its_episode_as_down() {
    let mut d = started(NetSettings::default());
    flap(&mut d, 0, 100);
    flap(&mut d, 1_000, 1_100);
    let mut l = link(2, "eth0");
    l.carrier = false;
    let f = d.observe(Observation::Link(l.clone()), t(2_000));
    assert_eq!(kinds(&f), vec![Kind::LinkFlapping]);
    let f = d.end_flap_episodes(t(62_000));
    assert_eq!(kinds(&f), vec![Kind::LinkFlapping, Kind::LinkDown]);
    assert!(f[0].clears && !f[1].clears);
    // Its return is an ordinary, timed link_up.
    l.carrier = true;
    let f = d.observe(Observation::Link(l), t(70_000));
    assert_eq!(kinds(&f), vec![Kind::LinkUp, Kind::LinkDown]);
    assert_eq!(f[0].details["down_ms"], 68_000);
}

#[test]
fn a_macvlan_on_the_uplink_is_watched_whatever_its_name() {
    let mut d = started(NetSettings {
        ignore_links: vec![
            Glob("br-*".into()),
            Glob("cali*".into()),
            Glob("docker*".into()),
        ],
        ignore_link_kinds: vec!["vxlan".into()],
        ..Default::default()
    });
    let stacked = |index: u32, name: &str, kind: &str, parent: u32| {
        let mut l = link(index, name);
        l.kind = Some(kind.into());
        l.parent = Some(parent);
        l
    };
    // A macvlan named like a Docker bridge, on eth0: reported, with its lower device.
    let f = d.observe(
        Observation::Link(stacked(7, "br-4f3a9c", "macvlan", 2)),
        t(1),
    );
    assert_eq!(kinds(&f), vec![Kind::LinkAdded]);
    assert_eq!(f[0].details["lower"], "eth0");
    assert_eq!(f[0].details["link_kind"], "macvlan");
    assert!(
        f[0].summary.contains("(macvlan on eth0"),
        "{}",
        f[0].summary
    );
    // A CNI's veth, a VXLAN by kind, a macvlan on an ignored bridge: quiet.
    assert!(
        d.observe(Observation::Link(stacked(8, "cali12ab", "veth", 99)), t(2))
            .is_empty()
    );
    assert!(
        d.observe(Observation::Link(stacked(9, "flannel.1", "vxlan", 0)), t(3))
            .is_empty()
    );
    let mut bridge = link(10, "docker0");
    bridge.kind = Some("bridge".into());
    assert!(d.observe(Observation::Link(bridge), t(4)).is_empty());
    assert!(
        d.observe(Observation::Link(stacked(11, "br-x", "macvlan", 10)), t(5))
            .is_empty()
    );
}

#[test]
fn a_default_route_to_a_stranger_is_critical_to_a_known_router_a_warning() {
    let mut d = started(NetSettings::default());
    // The gateway was learned at start (its MAC is in the baseline).
    let f = d.observe(Observation::Route(route("192.0.2.66", 2)), t(1));
    assert_eq!(kinds(&f), vec![Kind::GatewayChanged]);
    assert_eq!(f[0].severity, Some(crate::alert::Severity::Critical));
    assert_eq!(f[0].details["unknown_router"], "192.0.2.66");
    // Back to the gateway it knows: a warning.
    let f = d.observe(Observation::Route(route("192.0.2.1", 2)), t(2));
    assert_eq!(f[0].severity, None, "{f:?}");
    // A router known from its advertisements is no stranger either.
    d.set_known_routers(HashSet::from([v4("fe80::9")]));
    let f = d.observe(Observation::Route(route("fe80::9", 2)), t(3));
    assert_eq!(kinds(&f), vec![Kind::GatewayChanged]);
    assert_eq!(f[0].severity, None, "{f:?}");
}

#[test]
fn a_disputed_first_sight_gateway_stays_disputed_until_the_operator_decides() {
    let mut d = NetDetector::new(NetSettings::default(), None);
    d.observe(Observation::Snapshot(lan()), t(0));
    assert_eq!(d.take_probes().len(), 1);
    assert_eq!(d.confirming(), vec![v4("192.0.2.1")]);
    // Another MAC answered the probe (the wire said so).
    d.confirmation_failed(v4("192.0.2.1"));
    d.tick(t(5_000));
    // The kernel now holds the other MAC: not a change of the learned one.
    let f = gateway_at(&mut d, mac(0x99), t(6_000));
    assert!(f.is_empty(), "{f:?}");
    assert_eq!(d.confirming(), vec![v4("192.0.2.1")]);
    let how = |d: &NetDetector| {
        d.baseline()
            .gateway(Family::Inet, "eth0", &v4("192.0.2.1"))
            .and_then(|g| g.how.clone())
    };
    assert_eq!(how(&d).as_deref(), Some("learned (startup), unconfirmed"));
    // The operator accepts one: decided.
    let accept = crate::state::baseline::Decision::Accept {
        ip: v4("192.0.2.1"),
        mac: mac(0x99),
        at: t(7_000),
    };
    d.apply_decision(&accept, t(7_000));
    assert!(d.confirming().is_empty());
}

#[test]
fn without_capture_a_first_sight_gateway_is_not_held_for_confirmation() {
    let mut d = NetDetector::new(
        NetSettings {
            confirm_first_sight: false,
            ..Default::default()
        },
        None,
    );
    d.observe(Observation::Snapshot(lan()), t(0));
    assert!(d.take_probes().is_empty());
    // A spoof right after start is reported: no wire would report it otherwise.
    assert_eq!(
        kinds(&gateway_at(&mut d, mac(0x99), t(100))),
        vec![Kind::GatewayMacChanged]
    );
}

/// keepalived without a virtual MAC: 192.0.2.2 (the gateway's MAC now) and
/// 192.0.2.3 (mac 3) both advertise VRRP group 7 for 192.0.2.1, the second
/// after it took over. The wire's view of it, as the agent hands it over.
fn vrrp_failover_view(at: DateTime<Utc>) -> crate::detect::arp::vrrp::VrrpView {
    use crate::detect::arp::{ArpDetector, ArpSettings};
    use crate::wire::build;
    let mut wire = ArpDetector::new(ArpSettings::default());
    let vip = "192.0.2.1".parse().unwrap();
    for (m, ip, ms) in [(1, "192.0.2.2", 0), (3, "192.0.2.3", 3_600)] {
        let advert = build::vrrp4([2, 0, 0, 0, 0, m], ip.parse().unwrap(), 3, 7, 100, &[vip]);
        assert!(wire.observe("eth0", &advert, t(ms)).is_empty());
    }
    wire.vrrp_view(at)
}

#[test]
fn a_failover_within_the_advertising_vrrp_group_is_information_from_netlink_too() {
    // Without what the wire heard (no capture), a change is a change.
    let mut d = started(NetSettings::default());
    assert_eq!(
        kinds(&gateway_at(&mut d, mac(3), t(3_601))),
        vec![Kind::GatewayMacChanged]
    );
    let mut d = started(NetSettings::default());
    d.set_vrrp(vrrp_failover_view(t(3_600)));
    let f = gateway_at(&mut d, mac(3), t(3_601));
    assert_eq!(kinds(&f), vec![Kind::GatewayFailover]);
    assert_eq!(f[0].details["vrid"], 7);
    assert_eq!(f[0].detail_str("source"), Some("netlink"));
    // The new MAC is trusted now, and the baseline says why.
    let gw = d
        .baseline()
        .gateway(Family::Inet, "eth0", &v4("192.0.2.1"))
        .unwrap()
        .clone();
    assert_eq!(
        (gw.mac, gw.how.as_deref()),
        (mac(3), Some("VRRP failover (group 7)"))
    );
    assert!(gw.suspect.is_none());
    assert_eq!(d.failovers("eth0", v4("192.0.2.1")), 1);
    // And back.
    assert_eq!(
        kinds(&gateway_at(&mut d, mac(1), t(5_000))),
        vec![Kind::GatewayFailover]
    );
    // A MAC outside the group while it advertises is an attack.
    assert_eq!(
        kinds(&gateway_at(&mut d, mac(0x66), t(5_100))),
        vec![Kind::GatewayMacChanged]
    );
    // So is every change with `vrrp_is_normal = false`.
    let mut strict = started(NetSettings {
        vrrp_is_normal: false,
        ..Default::default()
    });
    strict.set_vrrp(vrrp_failover_view(t(3_600)));
    assert_eq!(
        kinds(&gateway_at(&mut strict, mac(3), t(3_601))),
        vec![Kind::GatewayMacChanged]
    );
}
