//! The agent against the real kernel: namespaces, a veth link, real ARP/NDP
//! frames, the real binary and a real HTTP receiver.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn gratuitous_arp_with_a_new_mac_is_gateway_mac_changed() {
    let Some(r) = start_agent("") else { return };
    send_gratuitous_arp(
        &r.lab.gw,
        "eth0",
        GW_IP.parse().unwrap(),
        mac_bytes("02:de:ad:be:ef:01"),
    );
    let got = r.receiver.wait_for("gateway_mac_changed", WAIT, |b| {
        b["kind"] == "gateway_mac_changed"
    });
    let a = &got.body;
    assert_eq!(a["severity"], "critical");
    assert_eq!(a["host"], "testhost");
    assert_eq!(a["id"].as_str().unwrap().len(), 26);
    assert_eq!(
        got.headers.get("netsentry-alert-id"),
        a["id"].as_str().map(str::to_string).as_ref()
    );
    assert!(chrono::DateTime::parse_from_rfc3339(a["time"].as_str().unwrap()).is_ok());
    // The kernel's entry and the frame on the wire race; whichever is first
    // is the alert (`source`), the other is folded into it.
    let mut details = a["details"].clone();
    let source = details["source"].as_str().unwrap().to_string();
    assert!(source == "netlink" || source == "arp", "{details}");
    assert_eq!(details["sources"], json!([source]));
    details
        .as_object_mut()
        .unwrap()
        .retain(|k, _| !k.starts_with("source"));
    assert_eq!(
        details,
        json!({"interface": "eth0", "ip": "192.0.2.1", "old_mac": GW_MAC, "new_mac": "02:de:ad:be:ef:01"})
    );
    let summary = match source.as_str() {
        "netlink" => {
            "default gateway 192.0.2.1 on eth0 is now at 02:de:ad:be:ef:01 (was 02:00:00:00:00:01)"
        }
        _ => {
            "a frame on eth0 claims default gateway 192.0.2.1 is at 02:de:ad:be:ef:01 (known at 02:00:00:00:00:01; seen in ARP)"
        }
    };
    assert_eq!(a["summary"], summary);
    assert_eq!(got.path, "/hook");
    // Both saw it; one alert.
    let other = if source == "arp" { "netlink" } else { "arp" };
    r.agent.wait_for_log(&format!("also seen by {other}"), 1);
    assert_eq!(r.receiver.count_kind("gateway_mac_changed"), 1);
}

#[test]
fn route_replace_is_gateway_changed() {
    let Some(r) = start_agent("") else { return };
    ip(&r.lab.host, "route replace default via 192.0.2.2");
    let got = r
        .receiver
        .wait_for("gateway_changed", WAIT, |b| b["kind"] == "gateway_changed");
    // A router this host never used nor heard advertise: critical.
    assert_eq!(got.body["severity"], "critical");
    let d = got.body["details"].clone();
    assert_eq!(d["unknown_router"], "192.0.2.2");
    assert_eq!(d["family"], "inet");
    assert_eq!(d["old"], json!({"ip": "192.0.2.1", "interface": "eth0"}));
    assert_eq!(d["new"], json!({"ip": "192.0.2.2", "interface": "eth0"}));
    ip(&r.lab.host, "route del default");
    let d = r
        .receiver
        .wait_kind("gateway_changed", WAIT, |d| d["new"].is_null());
    assert_eq!(d["old"], json!({"ip": "192.0.2.2", "interface": "eth0"}));
}

#[test]
fn carrier_loss_and_return_is_link_down_then_up_with_duration() {
    let Some(r) = start_agent("") else { return };
    ip(&r.lab.lan, "link set phost down");
    let d = r.receiver.wait_kind("link_down", WAIT, |_| true);
    assert_eq!(d, json!({"interface": "eth0", "reason": "carrier"}));
    std::thread::sleep(Duration::from_millis(1500));
    ip(&r.lab.lan, "link set phost up");
    let d = r.receiver.wait_kind("link_up", WAIT, |_| true);
    assert_eq!(d["interface"], "eth0");
    let ms = d["down_ms"].as_i64().expect("down_ms is a number");
    assert!((1000..6000).contains(&ms), "down_ms = {ms}");
    // The host's own admin down is reported as such.
    ip(&r.lab.host, "link set eth0 down");
    r.receiver
        .wait_kind("link_down", WAIT, |d| d["reason"] == "admin");
}

#[test]
fn promisc_mtu_mac_and_links_coming_and_going() {
    let Some(r) = start_agent("") else { return };
    let (lab, rx) = (&r.lab, &r.receiver);
    ip(&lab.host, "link set eth0 promisc on");
    rx.wait_kind("link_promisc", WAIT, |d| {
        d["enabled"] == true && d["interface"] == "eth0"
    });
    ip(&lab.host, "link set eth0 promisc off");
    rx.wait_kind("link_promisc", WAIT, |d| d["enabled"] == false);
    ip(&lab.host, "link set eth0 mtu 1400");
    let d = rx.wait_kind("link_mtu_changed", WAIT, |_| true);
    assert_eq!(
        d,
        json!({"interface": "eth0", "old_mtu": 1500, "new_mtu": 1400})
    );
    let old_mac = ip(&lab.host, "-br link show eth0")
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    ip(&lab.host, "link set eth0 address 02:00:00:00:00:aa");
    let d = rx.wait_kind("link_mac_changed", WAIT, |_| true);
    assert_eq!(
        d,
        json!({"interface": "eth0", "old_mac": old_mac, "new_mac": "02:00:00:00:00:aa"})
    );
    // An ignored link (veth*) says nothing; a bridge does.
    ip(&lab.host, "link add veth-t1 type veth peer name veth-t2");
    ip(
        &lab.host,
        "link add testbr0 address 02:00:00:00:00:b0 type bridge",
    );
    let d = rx.wait_kind("link_added", WAIT, |_| true);
    assert_eq!(
        d,
        json!({"interface": "testbr0", "link_kind": "bridge", "mac": "02:00:00:00:00:b0"})
    );
    ip(&lab.host, "link add ifb7 type ifb");
    rx.wait_kind("link_added", WAIT, |d| {
        d["interface"] == "ifb7" && d["link_kind"] == "ifb"
    });
    ip(&lab.host, "link del testbr0");
    rx.wait_kind("link_removed", WAIT, |d| d["interface"] == "testbr0");
    ip(&lab.host, "link del veth-t1");
    ip(&lab.host, "link del ifb7");
    rx.wait_kind("link_removed", WAIT, |d| d["interface"] == "ifb7");
    let all = rx.all();
    assert!(
        !all.iter().any(|x| x.body["details"]["interface"]
            .as_str()
            .is_some_and(|i| i.starts_with("veth"))),
        "ignored links must stay silent"
    );
}

#[test]
fn a_change_made_while_stopped_is_reported_at_the_next_start() {
    let Some(mut r) = start_agent("") else { return };
    assert_eq!(r.agent.stop(), Some(0), "clean exit on SIGTERM");
    let stopping = r.receiver.wait_kind("agent_stopping", WAIT, |_| true);
    assert_eq!(stopping["reason"], "SIGTERM");
    let baseline =
        std::fs::read_to_string(r.lab.path("state/baseline.json")).expect("baseline written");
    assert!(baseline.contains(GW_MAC), "{baseline}");

    send_gratuitous_arp(
        &r.lab.gw,
        "eth0",
        GW_IP.parse().unwrap(),
        mac_bytes("02:de:ad:be:ef:02"),
    );
    // Wait until the kernel took it, then start again.
    for _ in 0..50 {
        if r.lab
            .ip(&r.lab.host, &["neigh", "show", GW_IP])
            .contains("02:de:ad:be:ef:02")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _agent = Agent::start(
        &r.lab.host,
        &r.lab.path("netsentry.toml"),
        &r.lab.path("agent2.log"),
    );
    let started = r
        .receiver
        .wait_kind("agent_started", WAIT, |d| d["baseline"] == "loaded");
    assert_eq!(started["watching"], json!(["eth0"]));
    let d = r.receiver.wait_kind("gateway_mac_changed", WAIT, |_| true);
    assert_eq!(
        d,
        json!({"interface": "eth0", "ip": "192.0.2.1", "old_mac": GW_MAC, "new_mac": "02:de:ad:be:ef:02", "source": "startup", "sources": ["startup"]})
    );
}

#[test]
fn a_corrupt_baseline_is_reported_and_replaced() {
    let Some((lab, receiver, config)) = prepare("") else {
        return;
    };
    std::fs::create_dir_all(lab.path("state")).unwrap();
    std::fs::write(lab.path("state/baseline.json"), b"{\"version\": 1, \"gatew").unwrap();
    let _agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    let d = receiver.wait_kind("agent_started", WAIT, |_| true);
    assert_eq!(d["baseline"], "new");
    assert!(
        d["baseline_problem"]
            .as_str()
            .unwrap()
            .contains("is corrupt"),
        "{d}"
    );
    // Replaced by a good one.
    let mut ok = false;
    for _ in 0..50 {
        let text = std::fs::read_to_string(lab.path("state/baseline.json")).unwrap_or_default();
        if serde_json::from_str::<Value>(&text).is_ok() {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok, "baseline.json was not replaced");
}

#[test]
fn ipv6_default_route_via_a_link_local_gateway_is_followed() {
    if !have_root() {
        return;
    }
    let lab = Lab::new();
    lab.ip(
        &lab.host,
        &[
            "-6", "route", "add", "default", "via", GW6_LL, "dev", "eth0",
        ],
    );
    lab.resolve_gateway(GW_IP);
    assert_eq!(lab.resolve_gateway(GW6_LL), GW_MAC);
    let receiver = Receiver::start(&lab.host);
    let config = write_config(&lab, &receiver, "");
    let _agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", WAIT, |_| true);
    let baseline = std::fs::read_to_string(lab.path("state/baseline.json")).unwrap_or_default();
    assert!(baseline.contains("fe80::1"), "{baseline}");

    let target: Ipv6Addr = GW6_LL.parse().unwrap();
    send_neighbour_advertisement(&lab.gw, "eth0", target, mac_bytes("02:de:ad:be:ef:06"));
    // The frame on the wire and the kernel's entry see the same change: one
    // alert from whichever was first, the other folded into it.
    let mut d = receiver.wait_kind("gateway_mac_changed", WAIT, |d| d["ip"] == GW6_LL);
    let source = d["source"].as_str().unwrap().to_string();
    assert!(source == "netlink" || source == "ndp", "{d}");
    assert_eq!(d["sources"], json!([source]));
    d.as_object_mut()
        .unwrap()
        .retain(|k, _| !k.starts_with("source"));
    assert_eq!(
        d,
        json!({"interface": "eth0", "ip": "fe80::1", "old_mac": GW_MAC, "new_mac": "02:de:ad:be:ef:06"})
    );
    _agent.wait_for_log("(already reported)", 1);
    assert_eq!(receiver.count_kind("gateway_mac_changed"), 1);
    ip(
        &lab.host,
        "-6 route replace default via 2001:db8:1::2 dev eth0",
    );
    let d = receiver.wait_kind("gateway_changed", WAIT, |d| d["family"] == "inet6");
    assert_eq!(d["old"], json!({"ip": "fe80::1", "interface": "eth0"}));
    assert_eq!(
        d["new"],
        json!({"ip": "2001:db8:1::2", "interface": "eth0"})
    );
    // The v4 side was untouched.
    assert_eq!(receiver.count_kind("gateway_changed"), 1);
}

#[test]
fn multipath_default_route_next_hops_are_all_followed() {
    let Some(r) = start_agent("") else { return };
    let (lab, rx) = (&r.lab, &r.receiver);
    ip(&lab.gw, "addr add 192.0.2.3/24 dev eth0");
    lab.resolve_gateway("192.0.2.3");
    ip(
        &lab.host,
        "route replace default nexthop via 192.0.2.1 nexthop via 192.0.2.3",
    );
    let d = rx.wait_kind("gateway_changed", WAIT, |_| true);
    assert_eq!(d["new_nexthops"].as_array().map(Vec::len), Some(2), "{d}");
    // Spoof the second next hop: it is watched like the first.
    send_gratuitous_arp(
        &lab.gw,
        "eth0",
        "192.0.2.3".parse::<Ipv4Addr>().unwrap(),
        mac_bytes("02:de:ad:be:ef:03"),
    );
    let d = rx.wait_kind("gateway_mac_changed", WAIT, |_| true);
    assert_eq!(d["ip"], "192.0.2.3");
    assert_eq!(d["new_mac"], "02:de:ad:be:ef:03");
}

#[test]
fn gateway_that_stops_answering_is_unreachable() {
    let Some(r) = start_agent("") else { return };
    // The gateway goes silent (its address is gone) and the host's entry fails.
    ip(&r.lab.gw, "addr del 192.0.2.1/24 dev eth0");
    r.lab
        .ip(&r.lab.host, &["neigh", "del", GW_IP, "dev", "eth0"]);
    let _ = std::panic::catch_unwind(|| r.lab.resolve_gateway(GW_IP));
    let d = r
        .receiver
        .wait_kind("gateway_unreachable", Duration::from_secs(15), |_| true);
    assert_eq!(
        d,
        json!({"interface": "eth0", "ip": "192.0.2.1", "state": "failed"})
    );
}

/// An administrator's `ip neigh flush`: the gateway's entry goes FAILED for
/// a moment and is deleted; the gateway answers the agent's probe. Not
/// unreachable — while a gateway that really went silent still is (the test
/// above).
#[test]
fn an_administrators_neigh_flush_is_not_unreachable() {
    let Some(r) = start_agent("") else { return };
    for _ in 0..3 {
        ip(&r.lab.host, "neigh flush dev eth0");
        r.lab.resolve_gateway(GW_IP);
        std::thread::sleep(Duration::from_secs(1));
        ip(&r.lab.host, "neigh flush dev eth0");
        std::thread::sleep(Duration::from_secs(2));
    }
    std::thread::sleep(Duration::from_secs(5));
    let loud = r.receiver.loud();
    assert!(loud.is_empty(), "{loud:#?}");
}

/// A macvlan on the uplink (how a process on the host sniffs and spoofs the
/// uplink's traffic) is reported even when its name matches `ignore_links`
/// (`br-*`); a Kubernetes node's CNI churn (Calico, Cilium, Flannel veths,
/// kube-ipvs0, vxlan.calico, tunl0) over several rounds is silent.
#[test]
fn links_are_ignored_by_name_and_kind_never_when_stacked_on_the_uplink() {
    let Some(r) = start_agent("") else { return };
    let host = r.lab.host.clone();
    for round in 0..3 {
        for (name, kind) in [
            ("cali4f2a91c3", "veth"),
            ("lxc7d1e", "veth"),
            ("cilium_host", "veth"),
            ("flannel.1", "vxlan id 1 dstport 8472"),
            ("vxlan.calico", "vxlan id 4096 dstport 4789"),
            ("kube-ipvs0", "bridge"),
            ("cni0", "bridge"),
        ] {
            // A pod's end of the pair lives in the pod's namespace.
            let peer = if kind == "veth" {
                format!(" peer name p{round}{} netns {}", &name[..3], r.lab.mitm)
            } else {
                String::new()
            };
            ip(&host, &format!("link add {name} type {kind}{peer}"));
            ip(&host, &format!("link set {name} up"));
        }
        std::thread::sleep(Duration::from_millis(500));
        for name in [
            "cali4f2a91c3",
            "lxc7d1e",
            "cilium_host",
            "flannel.1",
            "vxlan.calico",
            "kube-ipvs0",
            "cni0",
        ] {
            ip(&host, &format!("link del {name}"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(2));
    let loud = r.receiver.loud();
    assert!(loud.is_empty(), "{loud:#?}");

    ip(
        &host,
        "link add br-4f3a9c link eth0 type macvlan mode bridge",
    );
    let d = r
        .receiver
        .wait_kind("link_added", WAIT, |d| d["interface"] == "br-4f3a9c");
    assert_eq!(d["link_kind"], "macvlan");
    assert_eq!(d["lower"], "eth0");
}

/// Five 1 s flaps in 20 s: two ordinary downs, then one `link_flapping` at
/// the third (at once, with the times so far), then nothing until the link
/// has been quiet, then one `link_up` with all five times. No alert is held
/// back in `alerts_suppressed`.
#[test]
fn a_flapping_link_is_one_episode_with_every_flap_time() {
    let Some(r) = start_agent("link_flap_window = \"25s\"") else {
        return;
    };
    let mut third = None;
    for n in 0..5 {
        if n == 2 {
            third = Some(Instant::now());
        }
        ip(&r.lab.host, "link set eth0 down");
        std::thread::sleep(Duration::from_secs(1));
        ip(&r.lab.host, "link set eth0 up");
        if n == 2 {
            let d = r.receiver.wait_kind("link_flapping", WAIT, |_| true);
            assert_eq!(d["flaps"], 3, "{d}");
            assert_eq!(d["times"].as_array().unwrap().len(), 3, "{d}");
            let at = r
                .receiver
                .all()
                .into_iter()
                .find(|a| a.body["kind"] == "link_flapping")
                .unwrap()
                .at;
            assert!(
                at - third.unwrap() < Duration::from_secs(3),
                "prompt: {:?}",
                at - third.unwrap()
            );
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    let end = r
        .receiver
        .wait_kind("link_up", Duration::from_secs(40), |d| d["flaps"] == 5);
    let times = end["times"].as_array().unwrap();
    assert_eq!(times.len(), 5, "{end}");
    for t in times {
        let ms = t["down_ms"].as_i64().unwrap_or(0);
        assert!((900..2_500).contains(&ms), "{t}");
    }
    assert_eq!(r.receiver.count_kind("link_down"), 2);
    assert_eq!(r.receiver.count_kind("link_flapping"), 1);
    assert_eq!(r.receiver.count_kind("alerts_suppressed"), 0);
}

/// A static IPv6 default and two learned from router advertisements, all at
/// metric 1024: three routes, each gateway guarded. When the advertised ones
/// go away, the static gateway is still guarded, and a spoofed neighbour
/// advertisement moving it (taken by the kernel) is `gateway_mac_changed`.
#[test]
fn several_ipv6_default_routes_are_each_guarded() {
    use netsentry::wire::build;
    if !have_root() {
        return;
    }
    let lab = Lab::new();
    let static_gw = "2001:db8:1::1";
    ip(
        &lab.host,
        &format!("-6 route add default via {static_gw} dev eth0"),
    );
    assert_eq!(lab.resolve_gateway(static_gw), GW_MAC);
    ip(&lab.mitm, "addr add fe80::77/64 dev eth0 nodad");
    let receiver = Receiver::start(&lab.host);
    let config = write_config(&lab, &receiver, "");
    let agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", WAIT, |_| true);

    let mitm = mac_bytes(MITM_MAC);
    let all: Ipv6Addr = "ff02::1".parse().unwrap();
    let ra = |from: &str, lifetime: u16| {
        with_icmpv6_checksum(build::icmpv6(
            mitm,
            [0x33, 0x33, 0, 0, 0, 1],
            from.parse().unwrap(),
            all,
            &build::ra_body(mitm, lifetime),
        ))
    };
    send_frames(
        &lab.mitm,
        "eth0",
        vec![ra("fe80::66", 1800), ra("fe80::77", 1800)],
    );
    let deadline = std::time::Instant::now() + WAIT;
    while ip(&lab.host, "-6 route show default").lines().count() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the kernel did not take both advertisements: {}",
            ip(&lab.host, "-6 route show default")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // `status` sees the three routes the kernel has.
    let (code, out, err) = netsentry_in(
        &lab.host,
        &["status", "--json", "-c", config.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut gateways: Vec<String> = status["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["family"] == "inet6")
        .map(|g| g["ip"].as_str().unwrap().to_string())
        .collect();
    gateways.sort();
    assert_eq!(gateways, ["2001:db8:1::1", "fe80::66", "fe80::77"], "{out}");

    // The routers withdraw (lifetime 0): the static default stays.
    send_frames(
        &lab.mitm,
        "eth0",
        vec![ra("fe80::66", 0), ra("fe80::77", 0)],
    );
    while ip(&lab.host, "-6 route show default").lines().count() > 1 {
        assert!(std::time::Instant::now() < deadline + WAIT, "routes stayed");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    // A spoofed NA moves the static gateway; the kernel takes it.
    let target: Ipv6Addr = static_gw.parse().unwrap();
    let na = with_icmpv6_checksum(build::icmpv6(
        mitm,
        [0x33, 0x33, 0, 0, 0, 1],
        "fe80::66".parse().unwrap(),
        all,
        &build::na_body(target, true, false, true, mitm),
    ));
    send_frames(&lab.mitm, "eth0", vec![na]);
    let d = receiver.wait_kind("gateway_mac_changed", WAIT, |d| d["ip"] == static_gw);
    assert_eq!(d["new_mac"], MITM_MAC);
    assert_eq!(d["old_mac"], GW_MAC);
    drop(agent);
}

#[test]
fn a_spoofed_gateway_mac_stays_suspect_until_accepted_by_hand() {
    let Some(r) = start_agent("") else { return };
    let config = r.lab.path("netsentry.toml");
    let config = config.to_str().unwrap();
    let evil = "02:de:ad:be:ef:03";
    send_gratuitous_arp(&r.lab.gw, "eth0", GW_IP.parse().unwrap(), mac_bytes(evil));
    r.receiver.wait_kind("gateway_mac_changed", WAIT, |_| true);
    // The kernel took it; the baseline did not: it holds it as a suspect.
    let baseline_file = r.lab.path("state/baseline.json");
    let deadline = std::time::Instant::now() + WAIT;
    while !std::fs::read_to_string(&baseline_file)
        .unwrap_or_default()
        .contains("suspect")
    {
        assert!(std::time::Instant::now() < deadline, "no suspect saved");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        r.lab
            .ip(&r.lab.host, &["neigh", "show", GW_IP])
            .contains(evil)
    );
    let (code, out, err) = netsentry(&["baseline", "-c", config]);
    assert_eq!(code, 0, "{err}");
    let line = out.lines().find(|l| l.contains("192.0.2.1")).unwrap();
    assert!(line.contains(&format!("trusted {GW_MAC}")), "{out}");
    assert!(
        out.contains(&format!("SUSPECT: answers from {evil}")),
        "{out}"
    );
    // JSON for scripts.
    let (_, json_out, _) = netsentry(&["baseline", "show", "--json", "-c", config]);
    let doc: Value = serde_json::from_str(&json_out).unwrap();
    let g = doc["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["ip"] == GW_IP)
        .unwrap();
    assert_eq!(
        (&g["mac"], &g["suspect"]["mac"]),
        (&json!(GW_MAC), &json!(evil))
    );

    // Accepted by hand, applied by the running agent at SIGHUP.
    let (code, out, err) = netsentry(&["baseline", "accept", GW_IP, "-c", config]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("recorded: accept {evil} for {GW_IP}")),
        "{out}"
    );
    let (_, out, _) = netsentry(&["baseline", "-c", config]);
    assert!(
        out.contains("pending (not applied by the agent yet)"),
        "{out}"
    );
    unsafe { libc::kill(r.agent.pid(), libc::SIGHUP) };
    let d = r.receiver.wait_kind("gateway_mac_trusted", WAIT, |_| true);
    assert_eq!(
        d,
        json!({"interface": "eth0", "ip": GW_IP, "old_mac": GW_MAC, "new_mac": evil, "how": "accepted"})
    );
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, out, _) = netsentry(&["baseline", "-c", config]);
        if out.contains(&format!("trusted {evil}  accepted")) && !out.contains("SUSPECT") {
            assert!(!out.contains("pending"), "{out}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not applied:\n{out}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Nothing left to accept; unknown addresses are refused with a sentence.
    let (code, _, err) = netsentry(&["baseline", "accept", GW_IP, "-c", config]);
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!(
            "{GW_IP} has no suspect MAC: it is trusted at {evil}"
        )),
        "{err}"
    );
    let (code, _, err) = netsentry(&["baseline", "forget", "192.0.2.99", "-c", config]);
    assert_eq!(code, 2);
    assert!(err.contains("192.0.2.99 is not in the baseline"), "{err}");
    // The real router answering again is now the change.
    send_gratuitous_arp(&r.lab.gw, "eth0", GW_IP.parse().unwrap(), mac_bytes(GW_MAC));
    r.receiver
        .wait_kind("gateway_mac_changed", WAIT, |d| d["new_mac"] == GW_MAC);
}
