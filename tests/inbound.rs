//! The inbound-path detector in the running agent: real SYNs from client
//! namespaces at different distances through a routing namespace, the
//! capture filter on the real kernel, listeners found over inet_diag, and the
//! alerts at a real receiver.
//!
//! Layout (`Lab::with_service`): the agent runs on `svc` (198.51.100.10),
//! behind the router `gw`; the clients `host` (initial TTL 50: 15 hops) and
//! `mitm` (initial TTL 120: 9 hops) are on the LAN behind `gw`. The
//! "interceptor" is the router itself connecting from many addresses
//! (203.0.113.1-12, standing in for the clients' own) with its own stack (TTL
//! 64, arriving 0 hops away), as the box in front of jabber.ru's server did.
//! A reverse proxy connects from the router's 203.0.113.100 alone.
//! (`tests/jabber_ru.rs` has the full replica with a transparent proxy.)

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::inbound::{Clients, Listeners, set_initial_ttl};
use common::*;

const WINDOW: &str = "[inbound]\nwindow = \"2s\"\nmin_samples = 10\n";

fn svc(port: u16) -> SocketAddr {
    format!("{SVC_IP}:{port}").parse().unwrap()
}

/// The lab with listeners on 22 and 5222 in `svc`, clients at two distances,
/// and the router able to connect from 203.0.113.1.
fn inbound_lab() -> Option<(Lab, Receiver, Listeners)> {
    if !have_root() {
        return None;
    }
    let lab = Lab::with_service();
    let listeners = Listeners::start(lab.svc(), &["0.0.0.0:22", "0.0.0.0:5222", "0.0.0.0:8443"]);
    set_initial_ttl(&lab.host, 50);
    set_initial_ttl(&lab.mitm, 120);
    ip(&lab.mitm, "route add default via 192.0.2.1");
    for n in (1..=INTERCEPTOR_ADDRESSES).chain([100]) {
        ip(&lab.gw, &format!("addr add 203.0.113.{n}/32 dev lo"));
    }
    ip(lab.svc(), "route add 203.0.113.0/24 via 198.51.100.1");
    let receiver = Receiver::start(lab.svc());
    Some((lab, receiver, listeners))
}

/// Internet clients of both ports, one connection per port every 40 ms each.
fn internet_clients(lab: &Lab, ports: &[u16]) -> Vec<Clients> {
    let targets: Vec<SocketAddr> = ports.iter().map(|p| svc(*p)).collect();
    [&lab.host, &lab.mitm]
        .into_iter()
        .map(|ns| Clients::start(ns, None, &targets, Duration::from_millis(40)))
        .collect()
}

/// Addresses the interceptor connects from (the clients' many addresses).
const INTERCEPTOR_ADDRESSES: u8 = 12;

/// The box in front: connects to 5222 with its own stack, from many addresses.
fn interceptor(lab: &Lab) -> Vec<Clients> {
    (1..=INTERCEPTOR_ADDRESSES)
        .map(|n| {
            Clients::start(
                &lab.gw,
                Some(format!("203.0.113.{n}").parse().unwrap()),
                &[svc(5222)],
                Duration::from_millis(100),
            )
        })
        .collect()
}

/// A reverse proxy in front of 8443: connects from its own one address.
fn reverse_proxy(lab: &Lab) -> Clients {
    Clients::start(
        &lab.gw,
        Some("203.0.113.100".parse().unwrap()),
        &[svc(8443)],
        Duration::from_millis(10),
    )
}

fn start(lab: &Lab, receiver: &Receiver, name: &str) -> Agent {
    let config = lab.path("netsentry.toml");
    if !config.exists() {
        write_config(lab, receiver, &format!("\n{WINDOW}"));
    }
    let agent = Agent::start(lab.svc(), &config, &lab.path(name));
    receiver.wait_kind("agent_started", Duration::from_secs(10), |_| true);
    agent.wait_for_log("watching the SYNs to TCP ports 22, 5222, 8443", 1);
    agent
}

/// The first alert of `kind` (the whole alert).
fn first(receiver: &Receiver, kind: &str, secs: u64) -> serde_json::Value {
    receiver
        .wait_for(kind, Duration::from_secs(secs), |b| b["kind"] == kind)
        .body
}

#[test]
fn one_port_answered_from_right_in_front_is_inbound_path_changed_and_restored() {
    let Some((lab, receiver, _listeners)) = inbound_lab() else {
        return;
    };
    let mut agent = start(&lab, &receiver, "agent.log");
    let clients = internet_clients(&lab, &[22]);
    let xmpp_clients = internet_clients(&lab, &[5222]);
    // Three windows of normal clients: the baseline.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(receiver.count_kind("inbound_path_changed"), 0);
    // Every connection to 5222 now ends at the box in front, which connects
    // to the server itself.
    drop(xmpp_clients);
    let intercepting = interceptor(&lab);
    let alert = first(&receiver, "inbound_path_changed", 8);
    let d = &alert["details"];
    assert_eq!(d["port"], 5222, "{alert:#}");
    assert_eq!(d["reason"], "baseline", "{alert:#}");
    assert_eq!(d["family"], "inet");
    assert_eq!(d["now"]["hops"], 0);
    assert_eq!(d["now"]["ttl"], 64);
    assert_eq!(d["now"]["initial_ttl"], 64);
    assert!(d["before"]["p10_hops"].as_u64().unwrap() >= 9, "{alert:#}");
    assert_eq!(alert["severity"], "critical");
    let summary = alert["summary"].as_str().unwrap();
    assert!(
        summary.contains("connections to port 5222 (IPv4) arrive from 0 hops away (TTL 64)")
            && summary.contains("before, clients came from 9–15 hops"),
        "{summary}"
    );
    // One alert per episode, and nothing for port 22.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(receiver.count_kind("inbound_path_changed"), 1);
    // status shows the episode.
    let (code, out, err) = netsentry_in(
        lab.svc(),
        &["status", "-c", lab.path("netsentry.toml").to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(" 5222/IPv4 now:") && out.contains("PATH CHANGED since"),
        "{out}"
    );
    drop(intercepting);
    let xmpp_clients = internet_clients(&lab, &[5222]);
    let restored = receiver.wait_kind("inbound_path_restored", Duration::from_secs(8), |_| true);
    assert_eq!(restored["port"], 5222);

    // The baseline survives a restart: an interception running when the agent
    // starts again is judged against it (reason "baseline", not "siblings").
    agent.stop();
    drop(xmpp_clients);
    let _intercepting = interceptor(&lab);
    let first_id = alert["id"].clone();
    let _agent = start(&lab, &receiver, "agent2.log");
    let again = receiver
        .wait_for(
            "a second inbound_path_changed",
            // A new agent first reads the listeners, then judges whole
            // windows: under CI load this took longer than 10 s once.
            Duration::from_secs(25),
            |b| b["kind"] == "inbound_path_changed" && b["id"] != first_id,
        )
        .body;
    assert_eq!(again["details"]["reason"], "baseline", "{again:#}");
    assert_eq!(again["details"]["port"], 5222);
    drop(clients);
}

#[test]
fn installed_during_an_interception_the_other_ports_tell() {
    let Some((lab, receiver, _listeners)) = inbound_lab() else {
        return;
    };
    let _clients = internet_clients(&lab, &[22]);
    let _intercepting = interceptor(&lab);
    let _agent = start(&lab, &receiver, "agent.log");
    let alert = first(&receiver, "inbound_path_changed", 8);
    assert_eq!(alert["details"]["reason"], "siblings", "{alert:#}");
    assert_eq!(alert["details"]["port"], 5222);
    assert_eq!(alert["details"]["before"]["ports"], serde_json::json!([22]));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(receiver.count_kind("inbound_path_changed"), 1);
}

#[test]
fn normal_churn_never_alarms() {
    let Some((lab, receiver, _listeners)) = inbound_lab() else {
        return;
    };
    // A reverse proxy in front of 8443 from before the agent's start: a port
    // whose clients all come from 0 hops, with no baseline yet.
    let _proxy = reverse_proxy(&lab);
    let _agent = start(&lab, &receiver, "agent.log");
    // Clients on the server's own subnet (the router's address 198.51.100.1,
    // TTL 64, 0 hops) only on 5222: not counted. Internet clients on both.
    let _local = Clients::start(&lab.gw, None, &[svc(5222)], Duration::from_millis(5));
    let internet = internet_clients(&lab, &[22, 5222]);
    std::thread::sleep(Duration::from_secs(6));
    // The population shifts: the far clients leave, only the 15-hop ones stay;
    // a quiet port gets a few SYNs from right in front.
    drop(internet);
    let _near = Clients::start(
        &lab.host,
        None,
        &[svc(22), svc(5222)],
        Duration::from_millis(40),
    );
    let _few = Clients::start(
        &lab.gw,
        Some("203.0.113.100".parse().unwrap()),
        &[svc(22)],
        Duration::from_millis(700),
    );
    std::thread::sleep(Duration::from_secs(8));
    let alerts: Vec<String> = receiver
        .all()
        .iter()
        .map(|r| r.body["kind"].as_str().unwrap_or("").to_string())
        .filter(|k| k.starts_with("inbound"))
        .collect();
    assert!(alerts.is_empty(), "{alerts:?}");
    let status = std::fs::read_to_string(lab.path("state/inbound.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(v["not_counted_local"].as_u64().unwrap() > 100, "{v}");
}
