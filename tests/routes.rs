//! Where traffic goes (`route_diverted`): routes beyond the default route,
//! policy rules, ICMP redirects and routes the kernel flushes silently, in
//! namespaces with the real kernel; and routine routing churn stays quiet.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);
/// Watched besides the built-in destinations.
const PEER: &str = "203.0.113.5";
const REDIRECTED: &str = "203.0.113.7";

/// An agent watching `PEER` and `REDIRECTED` (and the built-in halves).
fn running() -> Option<Running> {
    let (lab, receiver, config) = prepare("")?;
    append_config(
        &config,
        // An on-link resolver: the host's own /etc/resolv.conf stays out of it.
        &format!(
            "\n[route]\nwatch_destinations = [\"{PEER}\", \"{REDIRECTED}\", \"198.51.100.20\"]\n\n[tls]\nnameservers = [\"192.0.2.53\"]\n"
        ),
    );
    let agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", WAIT, |_| true);
    // The first lookups are the baseline.
    std::thread::sleep(Duration::from_millis(500));
    Some(Running {
        lab,
        receiver,
        agent,
    })
}

fn diverted(r: &Running, pred: impl Fn(&Value) -> bool) -> Value {
    r.receiver.wait_kind("route_diverted", WAIT, pred)
}

fn destinations(d: &Value) -> Vec<String> {
    d["destinations"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// `0.0.0.0/1` + `128.0.0.0/1` via the attacker: the default route is never
/// touched, and every destination moves. Then a rule sending one prefix to
/// another table, then a host route: each is named.
#[test]
fn diversions_that_leave_the_default_route_alone_are_reported() {
    let Some(r) = running() else { return };
    let host = r.lab.host.clone();
    ip(&host, "route add 0.0.0.0/1 via 192.0.2.66");
    let low = diverted(&r, |d| {
        d["route"].as_str().unwrap_or("").starts_with("0.0.0.0/1")
    });
    assert_eq!(low["cause"], "route");
    assert_eq!(low["new_next_hop"]["ip"], "192.0.2.66");
    assert_eq!(low["old_next_hop"]["ip"], GW_IP);
    assert_eq!(low["known_router"], false);
    assert_eq!(destinations(&low), vec!["64.0.0.1"]);
    // `status` shows where the destination goes now, and why.
    let config = r.lab.path("netsentry.toml");
    let (code, out, _) = netsentry_in(&host, &["status", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("  64.0.0.1 via 192.0.2.66 (0.0.0.0/1 via 192.0.2.66 dev eth0 table main)"),
        "{out}"
    );
    assert!(
        out.contains("  160.0.0.1 via 192.0.2.1 (0.0.0.0/0 via 192.0.2.1 dev eth0 table main)"),
        "{out}"
    );
    ip(&host, "route add 128.0.0.0/1 via 192.0.2.66");
    let high = diverted(&r, |d| {
        d["route"].as_str().unwrap_or("").starts_with("128.0.0.0/1")
    });
    let mut got = destinations(&high);
    got.sort();
    assert_eq!(got, vec!["160.0.0.1", "198.51.100.20", PEER, REDIRECTED]);
    let alert = r
        .receiver
        .wait_for("route_diverted", WAIT, |b| b["kind"] == "route_diverted");
    assert_eq!(alert.body["severity"], "critical", "{}", alert.body);
    assert!(
        alert.body["summary"]
            .as_str()
            .unwrap()
            .contains("not a known router"),
        "{}",
        alert.body
    );
    // The default route itself never changed.
    assert_eq!(r.receiver.count_kind("gateway_changed"), 0);
    ip(&host, "route del 0.0.0.0/1 via 192.0.2.66");
    ip(&host, "route del 128.0.0.0/1 via 192.0.2.66");

    // A rule: one prefix looked up in table 100, whose default is the attacker.
    ip(&host, "route add default via 192.0.2.66 table 100");
    ip(&host, "rule add to 203.0.113.0/24 lookup 100 priority 100");
    let rule = diverted(&r, |d| d["cause"] == "rule");
    assert_eq!(rule["table"], "100");
    assert_eq!(rule["rule"], "100: from all to 203.0.113.0/24 lookup 100");
    let mut got = destinations(&rule);
    got.sort();
    assert_eq!(got, vec![PEER, REDIRECTED]);
    ip(&host, "rule del to 203.0.113.0/24 lookup 100 priority 100");

    // One host route.
    let before = r.receiver.count_kind("route_diverted");
    std::thread::sleep(Duration::from_millis(500));
    ip(&host, &format!("route add {PEER}/32 via 192.0.2.66"));
    let one = diverted(&r, |d| {
        d["route"]
            .as_str()
            .unwrap_or("")
            .starts_with(&format!("{PEER}/32"))
    });
    assert_eq!(destinations(&one), vec![PEER]);
    assert_eq!(
        one["route"],
        format!("{PEER}/32 via 192.0.2.66 dev eth0 table main")
    );
    // Back to the default route: no new alert for that, and nothing else moved.
    ip(&host, &format!("route del {PEER}/32"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(r.receiver.count_kind("route_diverted"), before + 1);
}

/// A spoofed ICMP host redirect "from the gateway" that the host's kernel
/// takes (a route exception, no netlink event): found by the periodic lookup
/// and named as a redirect.
#[test]
fn an_icmp_redirect_the_kernel_applied_is_a_diversion() {
    let Some(r) = running() else { return };
    // The kernel applies a redirect only to a first hop it can already reach.
    r.lab.resolve_gateway("192.0.2.66");
    let host = mac_bytes(&r.lab.host_mac());
    // Type 5 code 1 (host), new first hop 192.0.2.66; the quoted packet: an
    // echo reply from the host to REDIRECTED (one the kernel sent itself: it
    // needs no socket to match).
    let mut icmp = vec![5, 1, 0, 0, 192, 0, 2, 66];
    let mut inner = vec![
        0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 192, 0, 2, 10, 203, 0, 113, 7,
    ];
    set_ipv4_header_checksum(&mut inner);
    icmp.extend(inner);
    icmp.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 1]);
    let sum = netsentry::wire::build::checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let f = ipv4_frame(
        host,
        mac_bytes(MITM_MAC),
        1,
        ([192, 0, 2, 1], [192, 0, 2, 10]),
        &icmp,
    );
    send_frames(&r.lab.mitm, "eth0", vec![f]);
    // The kernel's own view: a redirected route exception.
    let deadline = Instant::now() + WAIT;
    while !ip(&r.lab.host, &format!("route get {REDIRECTED}")).contains("via 192.0.2.66") {
        assert!(
            Instant::now() < deadline,
            "the kernel did not take the redirect"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let d = diverted(&r, |d| d["cause"] == "redirect");
    assert_eq!(destinations(&d), vec![REDIRECTED]);
    assert_eq!(d["redirected_from"], GW_IP);
    assert_eq!(d["new_next_hop"]["ip"], "192.0.2.66");
}

/// Removing the host's IPv4 address flushes its default route without an
/// `RTM_DELROUTE`: seen within seconds, not at the 5-minute reconcile.
#[test]
fn a_default_route_flushed_with_its_address_is_seen_at_once() {
    let Some(r) = running() else { return };
    let start = Instant::now();
    ip(&r.lab.host, "addr del 192.0.2.10/24 dev eth0");
    let d = r
        .receiver
        .wait_kind("gateway_changed", WAIT, |d| d["family"] == "inet");
    assert!(d["new"].is_null(), "{d}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

/// What hosts do all day: container networks with their own rules and
/// tables (for their sources, not ours), routes to other prefixes, specific
/// routes through the same gateway, the default route replaced by itself.
/// No warning, no critical.
#[test]
fn routine_routing_churn_is_quiet() {
    let Some(r) = running() else { return };
    let host = r.lab.host.clone();
    for round in 0..3 {
        ip(&host, "link add docker0 type bridge");
        ip(&host, "addr add 198.18.0.1/16 dev docker0");
        ip(&host, "link set docker0 up");
        // Policy routing for the containers' sources (VPN split tunnels and
        // CNIs do the same): the host's own traffic is not affected.
        ip(&host, "route add default via 192.0.2.66 table 200");
        ip(&host, "rule add from 198.18.0.0/16 lookup 200 priority 200");
        // A specific route through the gateway we already use.
        ip(&host, "route add 198.51.100.0/24 via 192.0.2.1");
        ip(&host, &format!("route replace default via {GW_IP}"));
        std::thread::sleep(Duration::from_secs(1));
        ip(&host, "rule del from 198.18.0.0/16 lookup 200 priority 200");
        ip(&host, "route del default table 200");
        ip(&host, "route del 198.51.100.0/24");
        ip(&host, "link del docker0");
        eprintln!("round {round} done");
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(3));
    let loud = r.receiver.loud();
    assert!(loud.is_empty(), "{loud:#?}");
}
