//! Packet capture against real frames from an attacker namespace on the same
//! bridge: what arpwatch reports, plus what a server needs about its gateway.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use common::*;
use netsentry::wire::build;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);
const HOST_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

fn gw() -> Ipv4Addr {
    GW_IP.parse().unwrap()
}

/// An agent running with the capture on (and a short coalescing window).
fn running(extra: &str) -> Option<Running> {
    // start_agent waits until the gateway answered the first-sight probe.
    start_agent(&format!("coalesce_window = \"3s\"\n{extra}"))
}

fn mitm() -> [u8; 6] {
    mac_bytes(MITM_MAC)
}

#[test]
fn unsolicited_replies_claiming_the_gateway_every_second() {
    let Some(r) = running("") else { return };
    let host = mac_bytes(&r.lab.host_mac());
    for _ in 0..3 {
        let poison = build::arp(mitm(), host, true, mitm(), gw(), host, HOST_IP);
        send_frames(&r.lab.mitm, "eth0", vec![poison]);
        std::thread::sleep(Duration::from_secs(1));
    }
    let d = r
        .receiver
        .wait_kind("gateway_mac_changed", WAIT, |d| d["source"] == "arp");
    assert_eq!(
        d,
        json!({"interface": "eth0", "ip": "192.0.2.1", "old_mac": GW_MAC, "new_mac": MITM_MAC, "source": "arp", "sources": ["arp"]})
    );
    std::thread::sleep(Duration::from_millis(300));
    let from_wire = r
        .receiver
        .all()
        .iter()
        .filter(|x| x.body["kind"] == "gateway_mac_changed" && x.body["details"]["source"] == "arp")
        .count();
    assert_eq!(from_wire, 1, "a poisoner repeating itself is one alert");
}

#[test]
fn request_based_poisoning() {
    let Some(r) = running("") else { return };
    let poison = build::arp(mitm(), [0xff; 6], false, mitm(), gw(), [0; 6], HOST_IP);
    send_frames(&r.lab.mitm, "eth0", vec![poison]);
    let d = r
        .receiver
        .wait_kind("gateway_mac_changed", WAIT, |d| d["new_mac"] == MITM_MAC);
    // The kernel takes a request too: the frame and the neighbour entry race,
    // and whichever is first is the alert; the frame is seen either way.
    if d["source"] != "arp" {
        r.agent.wait_for_log("also seen by arp", 1);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        r.receiver.count_kind("gateway_mac_changed"),
        1,
        "one change, one alert"
    );
}

#[test]
fn a_gratuitous_arp_the_kernel_ignores_is_still_seen() {
    let Some(r) = running("") else { return };
    let peer_ip = Ipv4Addr::new(192, 0, 2, 20);
    let peer = [2, 0, 0, 0, 0, 0x20];
    // A neighbour announces itself; then the attacker claims its address.
    send_frames(
        &r.lab.mitm,
        "eth0",
        vec![build::gratuitous_arp(peer, peer_ip)],
    );
    let d = r
        .receiver
        .wait_kind("arp_new_station", WAIT, |d| d["ip"] == "192.0.2.20");
    assert_eq!(d["mac"], "02:00:00:00:00:20");
    send_frames(
        &r.lab.mitm,
        "eth0",
        vec![build::gratuitous_arp(mitm(), peer_ip)],
    );
    let d = r.receiver.wait_kind("arp_mac_changed", WAIT, |_| true);
    assert_eq!(
        d,
        json!({"interface": "eth0", "ip": "192.0.2.20", "old_mac": "02:00:00:00:00:20", "new_mac": MITM_MAC})
    );
    assert_eq!(
        ip(&r.lab.host, "neigh show 192.0.2.20").trim(),
        "",
        "the kernel ignored both frames"
    );
}

#[test]
fn two_macs_answering_for_the_gateway_is_a_conflict() {
    let Some(r) = running("") else { return };
    let host = mac_bytes(&r.lab.host_mac());
    send_frames(
        &r.lab.gw,
        "eth0",
        vec![build::gratuitous_arp(mac_bytes(GW_MAC), gw())],
    );
    send_frames(
        &r.lab.mitm,
        "eth0",
        vec![build::arp(mitm(), host, true, mitm(), gw(), host, HOST_IP)],
    );
    // A change so far, not a conflict: only the new MAC answers since.
    r.receiver
        .wait_kind("gateway_mac_changed", WAIT, |d| d["source"] == "arp");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(r.receiver.count_kind("arp_gateway_conflict"), 0);
    // The real gateway answers again: two MACs really answer.
    send_frames(
        &r.lab.gw,
        "eth0",
        vec![build::gratuitous_arp(mac_bytes(GW_MAC), gw())],
    );
    let d = r.receiver.wait_kind("arp_gateway_conflict", WAIT, |_| true);
    assert_eq!(
        d,
        json!({"interface": "eth0", "ip": "192.0.2.1", "macs": [GW_MAC, MITM_MAC]})
    );
    let got = r
        .receiver
        .wait_for("conflict", WAIT, |b| b["kind"] == "arp_gateway_conflict");
    assert_eq!(got.body["severity"], "critical");
}

#[test]
fn a_rogue_router_advertisement() {
    let Some(r) = running("") else { return };
    let all: Ipv6Addr = "ff02::1".parse().unwrap();
    let mcast = [0x33, 0x33, 0, 0, 0, 1];
    // The real gateway's RA is known (its MAC is the gateway's); the attacker's is not.
    let real = build::icmpv6(
        mac_bytes(GW_MAC),
        mcast,
        GW6_LL.parse().unwrap(),
        all,
        &build::ra_body(mac_bytes(GW_MAC), 1800),
    );
    let rogue_ip: Ipv6Addr = "fe80::66".parse().unwrap();
    let rogue = build::icmpv6(mitm(), mcast, rogue_ip, all, &build::ra_body(mitm(), 1800));
    send_frames(&r.lab.gw, "eth0", vec![real]);
    send_frames(&r.lab.mitm, "eth0", vec![rogue.clone(), rogue]);
    let d = r.receiver.wait_kind("ndp_router_new", WAIT, |_| true);
    assert_eq!(
        d,
        json!({"interface": "eth0", "router_ip": "fe80::66", "mac": MITM_MAC})
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(r.receiver.count_kind("ndp_router_new"), 1);
}

/// A lab whose host has an IPv6 default route via the gateway's link-local
/// address, and a running agent; `None` without root.
fn v6_gateway_agent() -> Option<(Lab, Receiver, Agent)> {
    if !have_root() {
        return None;
    }
    let lab = Lab::new();
    ip(&lab.host, "-6 route add default via fe80::1 dev eth0");
    lab.resolve_gateway(GW_IP);
    lab.resolve_gateway(GW6_LL);
    let receiver = Receiver::start(&lab.host);
    let config = write_config(&lab, &receiver, "");
    let agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", WAIT, |_| true);
    // Both gateways (v4 and v6) answered the first-sight probe.
    agent.wait_for_log(CONFIRMED, 2);
    Some((lab, receiver, agent))
}

/// The attacker's neighbour advertisement (override flag) for the v6 gateway,
/// with a zero ICMPv6 checksum.
fn spoofed_gateway_na() -> Vec<u8> {
    let target: Ipv6Addr = GW6_LL.parse().unwrap();
    build::icmpv6(
        mitm(),
        [0x33, 0x33, 0, 0, 0, 1],
        "fe80::66".parse().unwrap(),
        "ff02::1".parse().unwrap(),
        &build::na_body(target, true, false, true, mitm()),
    )
}

#[test]
fn a_spoofed_neighbour_advertisement_for_the_v6_gateway() {
    let Some((lab, receiver, _agent)) = v6_gateway_agent() else {
        return;
    };
    send_frames(&lab.mitm, "eth0", vec![spoofed_gateway_na()]);
    let d = receiver.wait_kind("gateway_mac_changed", WAIT, |d| d["source"] == "ndp");
    assert_eq!(
        d,
        json!({"interface": "eth0", "ip": "fe80::1", "old_mac": GW_MAC, "new_mac": MITM_MAC, "source": "ndp", "sources": ["ndp"]})
    );
}

/// 50,000 random ARP frames (random senders in the subnet, random MACs), one of
/// them a gateway spoof: bounded alerts, summaries, a storm, and the spoof at once.
#[test]
fn a_flood_with_a_gateway_spoof_inside() {
    let Some(r) = running("") else { return };
    let spoof_mac = [2, 0xde, 0xad, 0xbe, 0xef, 0x50];
    let host = mac_bytes(&r.lab.host_mac());
    let frames = flood_frames(50_000, spoof_mac, host);
    let t0 = Instant::now();
    send_frames(&r.lab.mitm, "eth0", frames);
    let sent = t0.elapsed();
    // The frame and the kernel's entry (it takes the spoof) race; either
    // reports it, once (the other sighting is folded in).
    let Some(got) = r
        .receiver
        .try_wait_for(WAIT, |b| b["kind"] == "gateway_mac_changed")
    else {
        panic!(
            "no spoof alert; {} alerts; agent log:\n{}",
            r.receiver.all().len(),
            r.agent.log_text()
        );
    };
    assert_eq!(got.body["details"]["new_mac"], "02:de:ad:be:ef:50");
    // Nearly every frame is a station alert of some kind; they are counted, not sent.
    let held_back = || -> u64 {
        r.receiver
            .all()
            .iter()
            .filter(|x| x.body["kind"] == "alerts_suppressed")
            .map(|x| x.body["details"]["count"].as_u64().unwrap_or(0))
            .sum()
    };
    let deadline = Instant::now() + WAIT;
    while held_back() < 40_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        held_back() >= 40_000,
        "held back: {}; log:\n{}",
        held_back(),
        r.agent.log_text()
    );
    r.receiver
        .wait_kind("arp_storm", WAIT, |d| d["interface"] == "eth0");
    let total = r.receiver.all().len();
    assert!(total < 200, "{total} alerts for a flood: not bounded");
    eprintln!(
        "flood: 50000 frames sent in {:.2} s; spoof reported {:.0} ms after the flood started; {total} alerts in all",
        sent.as_secs_f64(),
        got.at.duration_since(t0).as_secs_f64() * 1000.0
    );
}

/// The same frames, live and replayed, give the same packet alerts.
#[test]
fn live_capture_and_replay_agree() {
    let Some(r) = running("") else { return };
    let host = mac_bytes(&r.lab.host_mac());
    let s1 = Ipv4Addr::new(192, 0, 2, 31);
    let (a, b) = ([2, 0, 0, 0, 0x31, 0xa], [2, 0, 0, 0, 0x31, 0xb]);
    let frames = [
        build::gratuitous_arp(a, s1),
        build::gratuitous_arp(b, s1),
        build::gratuitous_arp(a, s1),
        build::arp(
            [2, 0, 0, 0, 0x32, 1],
            [0xff; 6],
            false,
            [2, 0, 0, 0, 0x32, 2],
            Ipv4Addr::new(192, 0, 2, 32),
            [0; 6],
            s1,
        ),
        build::arp(
            mitm(),
            [0xff; 6],
            false,
            [0xff; 6],
            Ipv4Addr::new(192, 0, 2, 33),
            [0; 6],
            s1,
        ),
        build::arp(mitm(), host, true, mitm(), gw(), host, HOST_IP),
        build::icmpv6(
            mitm(),
            [0x33, 0x33, 0, 0, 0, 1],
            "fe80::66".parse().unwrap(),
            "ff02::1".parse().unwrap(),
            &build::ra_body(mitm(), 600),
        ),
    ];
    let mut stamped = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        send_frames(&r.lab.mitm, "eth0", vec![f.clone()]);
        stamped.push((Duration::from_secs(1_800_000_000 + i as u64), f.clone()));
        std::thread::sleep(Duration::from_millis(50));
    }
    r.receiver.wait_kind("ndp_router_new", WAIT, |_| true);
    std::thread::sleep(Duration::from_millis(300));
    let packet_alert = |b: &Value| {
        let k = b["kind"].as_str().unwrap_or("");
        (k.starts_with("arp_")
            || k.starts_with("ndp_")
            || (k == "gateway_mac_changed" && b["details"]["source"] == "arp"))
            && k != "arp_storm"
    };
    let mut live: Vec<String> = r
        .receiver
        .all()
        .iter()
        .map(|x| &x.body)
        .filter(|b| packet_alert(b))
        .map(|b| format!("{} {}", b["kind"], b["details"]))
        .collect();

    let pcap = r.lab.path("same.pcapng");
    write_pcapng(&pcap, "eth0", &stamped);
    let config = r.lab.path("replay.toml");
    let text = std::fs::read_to_string(r.lab.path("netsentry.toml"))
        .unwrap()
        .replace("[log]", "[arp]\ngateways = [\"192.0.2.1\"]\n\n[log]");
    std::fs::write(&config, text).unwrap();
    let (code, out, err) = netsentry(&[
        "replay",
        pcap.to_str().unwrap(),
        "-c",
        config.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let mut replayed: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|b| packet_alert(b))
        .map(|b| format!("{} {}", b["kind"], b["details"]))
        .collect();
    live.sort();
    replayed.sort();
    assert_eq!(live, replayed);
    assert_eq!(live.len(), 8, "{live:#?}");
}

#[test]
fn big_tcp_traffic_never_reaches_the_agent() {
    let Some(r) = running("") else { return };
    // 20,000 UDP datagrams from the gateway to the host: frames the kernel filter drops.
    let sock = in_netns(&r.lab.gw, || {
        std::net::UdpSocket::bind("192.0.2.1:0").unwrap()
    });
    for _ in 0..20_000 {
        let _ = sock.send_to(&[0u8; 512], "192.0.2.10:9");
    }
    std::thread::sleep(Duration::from_secs(11));
    let stats: Value = serde_json::from_str(
        &std::fs::read_to_string(r.lab.path("state/capture.json")).expect("capture.json written"),
    )
    .unwrap();
    assert!(
        stats["kernel_packets"].as_u64().unwrap() < 100,
        "only ARP/NDP passes the filter: {stats}"
    );
    assert_eq!(stats["interfaces"], json!(["eth0"]));
    // `netsentry status` shows the same figures.
    let config = r.lab.path("netsentry.toml");
    let out = std::process::Command::new("nsenter")
        .args([
            &format!("--net=/run/netns/{}", r.lab.host),
            "--",
            &agent_binary(),
            "status",
            "-c",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("dropped by the kernel") && text.contains("on eth0"),
        "{text}"
    );
}

#[test]
fn stations_survive_a_restart_without_being_announced_again() {
    let Some(mut r) = running("") else { return };
    let (known, other) = (Ipv4Addr::new(192, 0, 2, 40), Ipv4Addr::new(192, 0, 2, 41));
    let mac = [2, 0, 0, 0, 0, 0x40];
    send_frames(&r.lab.mitm, "eth0", vec![build::gratuitous_arp(mac, known)]);
    r.receiver
        .wait_kind("arp_new_station", WAIT, |d| d["ip"] == "192.0.2.40");
    assert_eq!(r.agent.stop(), Some(0));
    let table = std::fs::read_to_string(r.lab.path("state/stations.tsv")).expect("stations.tsv");
    assert!(
        table.contains("eth0\t192.0.2.40\t02:00:00:00:00:40\t"),
        "{table}"
    );

    let _again = Agent::start(
        &r.lab.host,
        &r.lab.path("netsentry.toml"),
        &r.lab.path("agent2.log"),
    );
    r.receiver
        .wait_kind("agent_started", WAIT, |d| d["baseline"] == "loaded");
    std::thread::sleep(Duration::from_millis(200));
    send_frames(
        &r.lab.mitm,
        "eth0",
        vec![
            build::gratuitous_arp(mac, known),
            build::gratuitous_arp(mac, other),
        ],
    );
    r.receiver
        .wait_kind("arp_new_station", WAIT, |d| d["ip"] == "192.0.2.41");
    let announced = r
        .receiver
        .all()
        .iter()
        .filter(|x| x.body["kind"] == "arp_new_station" && x.body["details"]["ip"] == "192.0.2.40")
        .count();
    assert_eq!(
        announced, 1,
        "a known station is not announced again after a restart"
    );
}

/// Someone claims the host's own address (how an attacker poisons the
/// gateway's entry for us): a broadcast ARP reply from another MAC, and an
/// IPv6 neighbour advertisement for our global address. Ordinary ARP about us
/// (the gateway asking for our MAC) is not a claim.
#[test]
fn a_claim_of_our_own_address_is_critical() {
    let Some(r) = running("") else { return };
    let gw_mac = mac_bytes(GW_MAC);
    // The gateway asks who has our address: benign, every few minutes on a LAN.
    let ask = build::arp(gw_mac, [0xff; 6], false, gw_mac, gw(), [0; 6], HOST_IP);
    send_frames(&r.lab.gw, "eth0", vec![ask]);
    // The attacker says our address is at its MAC, three times.
    let claim = build::arp(mitm(), [0xff; 6], true, mitm(), HOST_IP, [0xff; 6], HOST_IP);
    send_frames(
        &r.lab.mitm,
        "eth0",
        vec![claim.clone(), claim.clone(), claim],
    );
    let d = r
        .receiver
        .wait_kind("arp_own_address_claimed", WAIT, |d| d["source"] == "arp");
    assert_eq!(
        d,
        json!({"interface": "eth0", "ip": "192.0.2.10", "mac": MITM_MAC, "source": "arp"})
    );
    let ours: Ipv6Addr = "2001:db8:1::10".parse().unwrap();
    let all: Ipv6Addr = "ff02::1".parse().unwrap();
    let na = build::icmpv6(
        mitm(),
        [0x33, 0x33, 0, 0, 0, 1],
        "fe80::66".parse().unwrap(),
        all,
        &build::na_body(ours, false, false, true, mitm()),
    );
    send_frames(&r.lab.mitm, "eth0", vec![na]);
    let d = r
        .receiver
        .wait_kind("arp_own_address_claimed", WAIT, |d| d["source"] == "ndp");
    assert_eq!(d["ip"], "2001:db8:1::10");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        r.receiver.count_kind("arp_own_address_claimed"),
        2,
        "once per claimer and address"
    );
    // Our address is no "new station" either.
    assert!(
        r.receiver
            .all()
            .iter()
            .all(|x| !(x.body["kind"] == "arp_new_station"
                && x.body["details"]["ip"] == "192.0.2.10")),
        "{:?}",
        r.receiver
            .all()
            .iter()
            .map(|x| x.body.to_string())
            .collect::<Vec<_>>()
    );
}

/// A real change of the gateway's MAC (a router replaced, announcing itself):
/// the frame and then the kernel's entry see it, and that is one alert naming
/// both sources — no second `gateway_mac_changed`, no conflict.
#[test]
fn one_gateway_mac_change_is_one_alert_with_every_source() {
    let Some(r) = running("") else { return };
    let new_mac = "02:00:00:00:00:02";
    ip(&r.lab.gw, &format!("link set eth0 address {new_mac}"));
    send_frames(
        &r.lab.gw,
        "eth0",
        vec![build::gratuitous_arp(mac_bytes(new_mac), gw())],
    );
    let d = r.receiver.wait_kind("gateway_mac_changed", WAIT, |_| true);
    assert_eq!(d["new_mac"], new_mac);
    // The kernel took it (the test's premise): its entry moved too.
    let deadline = Instant::now() + WAIT;
    while !ip(&r.lab.host, "neigh show 192.0.2.1").contains(new_mac) {
        assert!(Instant::now() < deadline, "the kernel kept the old MAC");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Whichever saw it first (the frame, or the kernel's entry) is the alert;
    // the other is folded into it.
    r.agent.wait_for_log("(already reported)", 1);
    assert_eq!(
        r.receiver.count_kind("gateway_mac_changed"),
        1,
        "one change, one alert"
    );
    assert_eq!(r.receiver.count_kind("arp_gateway_conflict"), 0);
    assert!(
        d["sources"] == json!(["arp"]) || d["sources"] == json!(["netlink"]),
        "{d}"
    );
}

/// A spoofed ICMPv6 redirect from the gateway's address: the kernel routes a
/// destination via the attacker, no gateway entry changes. `ndp_redirect`,
/// critical because the new first hop is no router we know.
#[test]
fn an_icmpv6_redirect_to_an_unknown_first_hop_is_critical() {
    let Some(r) = running("") else { return };
    ip(&r.lab.host, "-6 route add default via fe80::1 dev eth0");
    assert_eq!(r.lab.resolve_gateway("fe80::1"), GW_MAC);
    let destination: Ipv6Addr = "2001:db8:99::5".parse().unwrap();
    let target: Ipv6Addr = "fe80::66".parse().unwrap();
    let host_ll = ip(&r.lab.host, "-6 addr show dev eth0 scope link");
    let host_ll: Ipv6Addr = host_ll
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .expect("the host's link-local address");
    let mut body = vec![137, 0, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&target.octets());
    body.extend_from_slice(&destination.octets());
    body.extend_from_slice(&[2, 1]);
    body.extend_from_slice(&mitm());
    let host = mac_bytes(&r.lab.host_mac());
    let redirect = with_icmpv6_checksum(build::icmpv6(
        mitm(),
        host,
        "fe80::1".parse().unwrap(),
        host_ll,
        &body,
    ));
    send_frames(&r.lab.mitm, "eth0", vec![redirect]);
    let got = r
        .receiver
        .wait_for("ndp_redirect", WAIT, |b| b["kind"] == "ndp_redirect");
    assert_eq!(got.body["severity"], "critical");
    assert_eq!(
        got.body["details"],
        json!({"interface": "eth0", "router_ip": "fe80::1", "mac": MITM_MAC,
               "destination": "2001:db8:99::5", "target": "fe80::66", "known_router": false})
    );
    // What the kernel did with it: the attack worked, which is why it matters.
    let route = ip(&r.lab.host, "-6 route get 2001:db8:99::5");
    assert!(route.contains("via fe80::66"), "{route}");
}

/// Router advertisements the kernel accepts (it makes the router a default
/// gateway at once): still `ndp_router_new`, every time, whether netlink or
/// the frame is seen first.
#[test]
fn an_accepted_rogue_router_advertisement_is_always_ndp_router_new() {
    let Some(r) = running("") else { return };
    let all: Ipv6Addr = "ff02::1".parse().unwrap();
    for (n, router) in ["fe80::66", "fe80::77", "fe80::88"].iter().enumerate() {
        let ra = with_icmpv6_checksum(build::icmpv6(
            mitm(),
            [0x33, 0x33, 0, 0, 0, 1],
            router.parse().unwrap(),
            all,
            &build::ra_body(mitm(), 1800),
        ));
        send_frames(&r.lab.mitm, "eth0", vec![ra]);
        let deadline = Instant::now() + WAIT;
        while !ip(&r.lab.host, "-6 route show default").contains(router) {
            assert!(
                Instant::now() < deadline,
                "the kernel did not take {router}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        r.receiver
            .wait_kind("ndp_router_new", WAIT, |d| d["router_ip"] == *router);
        assert_eq!(r.receiver.count_kind("ndp_router_new"), n + 1);
        // The IPv6 default route moved to a router never seen before: a
        // full diversion, critical — whichever of netlink and the frame came first.
        let moved = r.receiver.wait_for("gateway_changed", WAIT, |b| {
            b["kind"] == "gateway_changed" && b["details"]["unknown_router"] == *router
        });
        assert_eq!(moved.body["severity"], "critical", "{}", moved.body);
    }
}

/// An IPv4 ICMP redirect claiming to come from the gateway, moving a
/// destination to the attacker: `icmp_redirect`, critical.
#[test]
fn an_ipv4_icmp_redirect_is_seen() {
    let Some(r) = running("") else { return };
    let host = mac_bytes(&r.lab.host_mac());
    let mut icmp = vec![5, 1, 0, 0, 192, 0, 2, 66];
    icmp.extend_from_slice(&[
        0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 10, 198, 51, 100, 99,
    ]);
    icmp.extend_from_slice(&[0; 8]);
    let f = ipv4_frame(host, mitm(), 1, ([192, 0, 2, 1], [192, 0, 2, 10]), &icmp);
    send_frames(&r.lab.mitm, "eth0", vec![f]);
    let got = r
        .receiver
        .wait_for("icmp_redirect", WAIT, |b| b["kind"] == "icmp_redirect");
    assert_eq!(got.body["severity"], "critical");
    assert_eq!(
        got.body["details"],
        json!({"interface": "eth0", "router_ip": "192.0.2.1", "mac": MITM_MAC,
               "destination": "198.51.100.99", "target": "192.0.2.66", "known_router": false})
    );
}

/// A frame's ICMPv6 message moved behind a destination-options header (PadN):
/// RFC 7113's RA-Guard evasion.
fn behind_destination_options(frame: Vec<u8>) -> Vec<u8> {
    let mut f = frame[..54].to_vec();
    f[20] = 60; // next header: destination options
    let len = u16::from_be_bytes([f[18], f[19]]) + 8;
    f[18..20].copy_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&[58, 0, 1, 4, 0, 0, 0, 0]); // ICMPv6 next; PadN of 4
    f.extend_from_slice(&frame[54..]);
    f
}

#[test]
fn an_advertisement_behind_an_extension_header_is_still_seen() {
    let Some((lab, receiver, _agent)) = v6_gateway_agent() else {
        return;
    };
    // The ICMPv6 checksum is left zero: the kernel drops the message, so only
    // the capture can see it (with a valid one the kernel takes it too, and
    // the capture's sighting may be folded into netlink's alert).
    let na = spoofed_gateway_na();
    send_frames(&lab.mitm, "eth0", vec![behind_destination_options(na)]);
    let d = receiver.wait_kind("gateway_mac_changed", WAIT, |_| true);
    assert_eq!(
        d,
        json!({"interface": "eth0", "ip": "fe80::1", "old_mac": GW_MAC, "new_mac": MITM_MAC, "source": "ndp", "sources": ["ndp"]})
    );
    assert!(
        lab.ip(&lab.host, &["neigh", "show", GW6_LL])
            .contains(GW_MAC)
    );
}

#[test]
fn the_kernel_takes_the_longest_syn_filter_and_hands_over_syns() {
    use netsentry::source::capture::{SYN_SNAPLEN, SynFilter, open_with};
    if !have_root() {
        return;
    }
    let lab = Lab::new();
    let host = lab.host.clone();
    // 64 ports, sampling on: the longest program the agent can attach.
    let longest = SynFilter {
        keep: 1 << 15,
        ..SynFilter::all((5200..5300).collect())
    };
    let fd = in_netns(&host, move || open_with(1 << 20, &longest));
    let fd = fd.expect("the kernel refused the filter");
    // A SYN to a watched port from the attacker's namespace arrives, cut to the headers.
    let syn =
        netsentry::wire::build::tcp_v4(60, 0x02, 5222, netsentry::wire::build::LINUX_SYN_OPTIONS);
    let mut syn = syn;
    syn[..6].copy_from_slice(&mac_bytes(&lab.host_mac()));
    // A bridge drops frames from a zero source MAC.
    syn[6..12].copy_from_slice(&mitm());
    set_ipv4_header_checksum(&mut syn[14..34]);
    let with_checksum = syn;
    let deadline = Instant::now() + WAIT;
    let mut got = None;
    while got.is_none() && Instant::now() < deadline {
        send_frames(&lab.mitm, "eth0", vec![with_checksum.clone()]);
        std::thread::sleep(Duration::from_millis(20));
        let mut buf = vec![0u8; 2048];
        let n = unsafe {
            libc::recv(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        // Neighbour discovery passes too; look for the SYN.
        if n > 0 {
            assert!(
                n as usize <= SYN_SNAPLEN as usize || netsentry::wire::syn::parse(&buf).is_none()
            );
            got = netsentry::wire::syn::parse(&buf[..(n as usize).min(buf.len())]);
        }
    }
    let syn = got.expect("no SYN through the filter (sampled at 1 in 2)");
    assert_eq!((syn.dst_port, syn.ttl), (5222, 60));
}

#[test]
fn listening_ports_come_from_the_kernel() {
    use netsentry::source::listeners::{listening, outside_ports};
    if !have_root() {
        return;
    }
    let lab = Lab::new();
    let ports = in_netns(&lab.host, || {
        let outside = std::net::TcpListener::bind("0.0.0.0:5222").unwrap();
        let local = std::net::TcpListener::bind("127.0.0.1:8080").unwrap();
        let v6 = std::net::TcpListener::bind("[::]:5223").unwrap();
        let l = listening().unwrap();
        drop((outside, local, v6));
        (outside_ports(&l, &[]), l.len())
    });
    assert_eq!(ports, (vec![5222, 5223], 3));
    // Gone when the listeners are.
    let after = in_netns(&lab.host, || outside_ports(&listening().unwrap(), &[]));
    assert!(after.is_empty(), "{after:?}");
}

/// A switch from arpwatch: its arp.dat imported before the first start, the
/// stations it knew are not announced again; the ones it did not know are.
#[test]
fn stations_imported_from_arpwatch_are_not_announced_again() {
    let Some((lab, receiver, config)) = prepare("coalesce_window = \"3s\"") else {
        return;
    };
    let dat = lab.path("arp.dat");
    // As arpwatch writes it: MAC octets without leading zeros; a line without
    // interface (older arpwatch) takes --interface; one damaged line.
    std::fs::write(
        &dat,
        "2:0:0:0:0:50\t192.0.2.50\t1700000000\tprinter\teth0\n2:0:0:0:0:51\t192.0.2.51\t1700000100\nnot a station\n",
    )
    .unwrap();
    let (code, out, err) = netsentry(&[
        "import-arpwatch",
        dat.to_str().unwrap(),
        "--interface",
        "eth0",
        "-c",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("2 stations imported from "), "{out}");
    assert!(out.contains("1 lines skipped"), "{out}");
    let _agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", WAIT, |_| true);
    std::thread::sleep(Duration::from_millis(300));
    let (known, new) = (Ipv4Addr::new(192, 0, 2, 50), Ipv4Addr::new(192, 0, 2, 52));
    send_frames(
        &lab.mitm,
        "eth0",
        vec![
            build::gratuitous_arp([2, 0, 0, 0, 0, 0x50], known),
            build::gratuitous_arp([2, 0, 0, 0, 0, 0x52], new),
        ],
    );
    receiver.wait_kind("arp_new_station", WAIT, |d| d["ip"] == "192.0.2.52");
    let announced: Vec<Value> = receiver
        .all()
        .into_iter()
        .filter(|x| x.body["kind"] == "arp_new_station")
        .map(|x| x.body["details"]["ip"].clone())
        .collect();
    assert_eq!(
        announced,
        vec![json!("192.0.2.52")],
        "arpwatch's stations are known"
    );
}

/// The gateway's router advertisement, as the gateway sends it (or, with
/// `eth_src`, as someone else sends it in its name): prefix, RDNSS, MTU.
fn gateway_ra(eth_src: [u8; 6], prefix: &str, dns: &str) -> Vec<u8> {
    with_icmpv6_checksum(build::icmpv6(
        eth_src,
        [0x33, 0x33, 0, 0, 0, 1],
        GW6_LL.parse().unwrap(),
        "ff02::1".parse().unwrap(),
        &build::ra_body_with(
            eth_src,
            1800,
            prefix.parse().unwrap(),
            dns.parse().unwrap(),
            1500,
        ),
    ))
}

/// The gateway advertises 2001:db8:1::/64 every few seconds (quiet); then an
/// advertisement from the gateway's own link-local address carries a rogue
/// prefix and DNS server — the host's kernel takes the prefix (a rogue
/// address) — `ndp_router_changed`, naming the changes; from another MAC,
/// critical.
#[test]
fn a_router_advertisement_whose_contents_change_is_reported() {
    let Some(r) = running("") else { return };
    let gw_mac = mac_bytes(GW_MAC);
    for _ in 0..4 {
        send_frames(
            &r.lab.gw,
            "eth0",
            vec![gateway_ra(gw_mac, "2001:db8:1::", "2001:db8:1::53")],
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(r.receiver.count_kind("ndp_router_changed"), 0);
    // The gateway (compromised, or misconfigured) now hands out another prefix.
    send_frames(
        &r.lab.gw,
        "eth0",
        vec![gateway_ra(gw_mac, "2001:db8:bad::", "2001:db8:bad::53")],
    );
    let d = r.receiver.wait_kind("ndp_router_changed", WAIT, |_| true);
    let changes = d["changes"].to_string();
    assert!(
        changes.contains("prefix 2001:db8:bad::/64 on-link autonomous added"),
        "{d}"
    );
    assert!(changes.contains("RDNSS 2001:db8:bad::53 added"), "{d}");
    // What the kernel did with it: an address in the rogue prefix.
    let deadline = Instant::now() + WAIT;
    while !ip(&r.lab.host, "-6 addr show dev eth0").contains("2001:db8:bad:") {
        assert!(
            Instant::now() < deadline,
            "the kernel did not take the prefix"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The same from the attacker's MAC, in the gateway's name: critical.
    send_frames(
        &r.lab.mitm,
        "eth0",
        vec![gateway_ra(mitm(), "2001:db8:bad::", "2001:db8:bad::54")],
    );
    let got = r.receiver.wait_for("ndp_router_changed", WAIT, |b| {
        b["kind"] == "ndp_router_changed" && b["severity"] == "critical"
    });
    assert_eq!(got.body["details"]["mac"], MITM_MAC);
    assert_eq!(got.body["details"]["known_mac"], GW_MAC);
}

/// A backend NIC (no default route, an address of its own): poisoning there
/// is seen without naming it in `[arp] interfaces`; its ordinary traffic is
/// not a warning.
#[test]
fn a_backend_interface_with_an_address_is_captured_by_default() {
    let Some(r) = running("") else { return };
    let (host, mitm_ns) = (&r.lab.host, &r.lab.mitm);
    run(
        "ip",
        &[
            "-n", host, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1", "netns",
            mitm_ns,
        ],
    );
    ip(host, "addr add 203.0.113.10/24 dev eth1");
    ip(host, "link set eth1 up");
    ip(mitm_ns, "addr add 203.0.113.66/24 dev eth1");
    ip(mitm_ns, "link set eth1 up");
    std::thread::sleep(Duration::from_millis(500));
    // A database client on the backend network resolving us: ordinary.
    let backend_mac = mac_bytes(
        ip(mitm_ns, "-br link show eth1")
            .split_whitespace()
            .nth(2)
            .unwrap(),
    );
    let ask = build::arp(
        backend_mac,
        [0xff; 6],
        false,
        backend_mac,
        Ipv4Addr::new(203, 0, 113, 66),
        [0; 6],
        Ipv4Addr::new(203, 0, 113, 10),
    );
    send_frames(mitm_ns, "eth1", vec![ask]);
    r.receiver
        .wait_kind("arp_new_station", WAIT, |d| d["interface"] == "eth1");
    // (The new NIC itself is a link_added, as any new link.)
    let loud: Vec<Value> = r
        .receiver
        .loud()
        .into_iter()
        .filter(|b| b["kind"] != "link_added")
        .collect();
    assert!(loud.is_empty(), "{loud:#?}");
    // Someone on that network claims our backend address.
    send_gratuitous_arp(mitm_ns, "eth1", Ipv4Addr::new(203, 0, 113, 10), backend_mac);
    let d = r.receiver.wait_kind("arp_own_address_claimed", WAIT, |d| {
        d["interface"] == "eth1"
    });
    assert_eq!(d["ip"], "203.0.113.10");
}

/// On a trunk, VLANs 42 and 43 reuse this segment's addressing: each has
/// its own 192.0.2.1 at its own MAC. The kernel strips the tag into the
/// frame's metadata; the agent reads it and keeps each VLAN apart
/// (`eth0.42`, `eth0.43`), judging none of it against this host's gateway.
/// The same claim untagged still is a spoof.
#[test]
fn another_vlans_gateway_is_not_ours() {
    let Some(r) = running("") else { return };
    let host = mac_bytes(&r.lab.host_mac());
    for n in 0..6u16 {
        let vlan = 42 + n % 2;
        let other = [2, 0, 0, 0, vlan as u8, 1];
        let claim = build::arp(other, host, true, other, gw(), host, HOST_IP);
        send_frames(&r.lab.mitm, "eth0", vec![build::tagged(&claim, vlan)]);
        std::thread::sleep(Duration::from_millis(200));
    }
    r.receiver
        .wait_kind("arp_new_station", WAIT, |d| d["interface"] == "eth0.43");
    std::thread::sleep(Duration::from_secs(1));
    let loud = r.receiver.loud();
    assert!(loud.is_empty(), "{loud:#?}");
    let claim = build::arp(mitm(), host, true, mitm(), gw(), host, HOST_IP);
    send_frames(&r.lab.mitm, "eth0", vec![claim]);
    let d = r.receiver.wait_kind("gateway_mac_changed", WAIT, |_| true);
    assert_eq!(d["new_mac"], MITM_MAC);
}

/// Trust at first sight: the host was poisoned before the agent first
/// started, so the kernel's entry (what the agent learns) holds the
/// attacker's MAC. The agent asks the gateway; the real gateway answers from
/// another MAC: `arp_gateway_conflict` naming both — not a
/// `gateway_mac_changed` calling the real gateway the intruder.
#[test]
fn a_gateway_learned_from_a_poisoned_entry_is_not_trusted_blindly() {
    let Some((lab, receiver, config)) = prepare("") else {
        return;
    };
    ip(
        &lab.host,
        &format!("neigh replace {GW_IP} lladdr {MITM_MAC} dev eth0 nud reachable"),
    );
    let _agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    let got = receiver.wait_for("arp_gateway_conflict", WAIT, |b| {
        b["kind"] == "arp_gateway_conflict"
    });
    assert_eq!(got.body["severity"], "critical");
    let d = &got.body["details"];
    assert_eq!(d["unconfirmed"], true, "{d}");
    assert_eq!(d["learned_mac"], MITM_MAC);
    assert_eq!(d["macs"], json!([GW_MAC, MITM_MAC]));
    // The real gateway keeps announcing itself: still not an intruder.
    send_gratuitous_arp(&lab.gw, "eth0", gw(), mac_bytes(GW_MAC));
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        receiver.count_kind("gateway_mac_changed"),
        0,
        "{:#?}",
        receiver.loud()
    );
    let (_, out, _) = netsentry(&["baseline", "-c", config.to_str().unwrap()]);
    assert!(out.contains("unconfirmed"), "{out}");
}

/// The ordinary first start: the gateway answers from the MAC learned; the
/// baseline says so, and nothing is reported.
#[test]
fn a_gateway_learned_at_first_sight_is_confirmed_quietly() {
    let Some((lab, receiver, config)) = prepare("") else {
        return;
    };
    let _agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", WAIT, |_| true);
    std::thread::sleep(Duration::from_secs(5));
    let loud = receiver.loud();
    assert!(loud.is_empty(), "{loud:#?}");
    let (_, out, _) = netsentry(&["baseline", "-c", config.to_str().unwrap()]);
    assert!(
        out.contains("confirmed") && !out.contains("unconfirmed"),
        "{out}"
    );
}

const VMAC7: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x07];
const R1_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const R2_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
const R2_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];

/// An ARP request from `(mac, ip)` for the host: how a router's own traffic
/// (and, with `arp_announce` 0, its traffic from the virtual address) shows
/// its MAC to the segment.
fn router_arp(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    build::arp(mac, [0xff; 6], false, mac, ip, [0; 6], HOST_IP)
}

/// VRRP group 7 for the gateway address: `(namespace, frame)` steps, one a
/// second with an advertisement before each, as keepalived with a virtual
/// MAC and the kernel's default `arp_announce = 0` sends them.
fn vrrp_steps(ns: &str, router: Ipv4Addr, steps: &[Vec<u8>]) {
    for frame in steps {
        let advert = build::vrrp4(VMAC7, router, 2, 7, 200, &[gw()]);
        send_frames(ns, "eth0", vec![advert, frame.clone()]);
        // Longer than the kernel's locktime (1 s): each step moves its entry.
        std::thread::sleep(Duration::from_millis(1_200));
    }
}

/// A VRRP pair failing over, as it really looks from a server on the LAN:
/// the master (the gateway namespace, 192.0.2.2, which answered from its own
/// MAC when the host first resolved the gateway) announces the virtual MAC,
/// answers from its own MAC now and then; the backup (192.0.2.3) takes over
/// after three missed advertisements, and its own traffic from the virtual
/// address comes from its own MAC. The kernel's entry moves five times; none
/// of it may page anyone, on the wire or through netlink.
#[test]
fn a_vrrp_failover_is_information_on_both_paths() {
    let Some(r) = running("") else { return };
    let (lab, gw_mac) = (&r.lab, mac_bytes(GW_MAC));
    // The capture joined the VRRP groups on the watched interface: a real
    // NIC's multicast filter would drop the advertisements otherwise.
    let deadline = Instant::now() + WAIT;
    let joined = loop {
        let groups = r.lab.ip(&lab.host, &["maddr", "show", "dev", "eth0"]);
        if groups.contains("01:00:5e:00:00:12") && groups.contains("33:33:00:00:00:12") {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(joined, "VRRP groups not joined on eth0");
    // The backup's own traffic, before anything happens (a station like any).
    send_frames(&lab.mitm, "eth0", vec![router_arp(R2_MAC, R2_IP)]);
    vrrp_steps(
        &lab.gw,
        R1_IP,
        &[
            router_arp(gw_mac, R1_IP),
            build::gratuitous_arp(VMAC7, gw()),
            router_arp(gw_mac, gw()),
            build::gratuitous_arp(VMAC7, gw()),
        ],
    );
    // The master is gone: 3 s without advertisements, then the backup.
    std::thread::sleep(Duration::from_millis(3_000));
    vrrp_steps(
        &lab.mitm,
        R2_IP,
        &[
            build::gratuitous_arp(VMAC7, gw()),
            router_arp(R2_MAC, gw()),
            build::gratuitous_arp(VMAC7, gw()),
        ],
    );
    let entry = r.lab.ip(&lab.host, &["neigh", "show", GW_IP]);
    assert!(entry.contains("00:00:5e:00:01:07"), "{entry}");
    // Every move is one gateway_failover (a move back to a MAC reported
    // within the window is folded into the first), seen by the wire and by
    // netlink: the later one is folded ("also seen by").
    r.receiver.wait_kind("gateway_failover", WAIT, |d| {
        d["new_mac"] == "02:00:00:00:00:03"
    });
    std::thread::sleep(Duration::from_secs(1));
    let failovers: Vec<Value> = r
        .receiver
        .all()
        .into_iter()
        .map(|a| a.body)
        .filter(|b| b["kind"] == "gateway_failover")
        .collect();
    let mut moved_to: Vec<&str> = failovers
        .iter()
        .map(|f| f["details"]["new_mac"].as_str().unwrap())
        .collect();
    moved_to.sort();
    assert_eq!(
        moved_to,
        vec!["00:00:5e:00:01:07", GW_MAC, "02:00:00:00:00:03"]
    );
    for f in &failovers {
        assert_eq!(
            (&f["severity"], &f["details"]["vrid"]),
            (&json!("info"), &json!(7))
        );
    }
    // Netlink judged the kernel's moves too: had it called one a change,
    // that would be a critical gateway_mac_changed below.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(r.receiver.loud(), Vec::<Value>::new());
    // The baseline says why the gateway's MAC moved.
    let config = lab.path("netsentry.toml");
    let (code, out, _) = netsentry_in(&lab.host, &["baseline", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("VRRP failover (group 7)"), "{out}");
}

/// A gateway change (`details`) was judged alike by the wire and by
/// netlink: each either sent it or had its sighting folded into it.
fn seen_by_both(r: &Running, details: &Value) {
    let log = r.agent.log_text();
    let mac = details["new_mac"].as_str().unwrap();
    for source in ["arp", "netlink"] {
        let sent = details["sources"]
            .as_array()
            .unwrap()
            .contains(&json!(source));
        let folded = log.contains(&format!("192.0.2.1 at {mac}: also seen by {source}"));
        assert!(sent || folded, "not seen by {source}: {details}\n{log}");
    }
}

/// An attacker claiming the gateway from a VRRP virtual MAC nobody
/// advertises, then from its own MAC while the gateway's group advertises:
/// both are attacks, on both paths.
#[test]
fn a_vrrp_mac_or_a_vrrp_network_is_no_cover_for_an_attacker() {
    let Some(r) = running("") else { return };
    let lab = &r.lab;
    let vmac9 = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x09];
    send_frames(&lab.mitm, "eth0", vec![build::gratuitous_arp(vmac9, gw())]);
    let d = r.receiver.wait_kind("gateway_mac_changed", WAIT, |d| {
        d["new_mac"] == "00:00:5e:00:01:09"
    });
    assert_eq!(d["old_mac"], GW_MAC);
    seen_by_both(&r, &d);
    // The group of the gateway advertises (from its real routers), and an
    // attacker answers from its own MAC.
    vrrp_steps(&lab.gw, R1_IP, &[router_arp(mac_bytes(GW_MAC), R1_IP)]);
    send_frames(
        &lab.gw,
        "eth0",
        vec![build::vrrp4(VMAC7, R1_IP, 2, 7, 200, &[gw()])],
    );
    send_frames(&lab.mitm, "eth0", vec![build::gratuitous_arp(mitm(), gw())]);
    let d = r
        .receiver
        .wait_kind("gateway_mac_changed", WAIT, |d| d["new_mac"] == MITM_MAC);
    seen_by_both(&r, &d);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(r.receiver.count_kind("gateway_failover"), 0);
    let got = r
        .receiver
        .wait_for("critical", WAIT, |b| b["kind"] == "gateway_mac_changed");
    assert_eq!(got.body["severity"], "critical");
}

/// A real VRRP router: Debian's keepalived (VRRP only, no virtual MAC — its
/// default, so the master answers for the virtual address from its own MAC)
/// in namespace `ns`, group 7 for the gateway address. SIGTERM when dropped.
struct Keepalived {
    child: Option<std::process::Child>,
    log: std::path::PathBuf,
}

impl Keepalived {
    fn start(lab: &Lab, ns: &str, name: &str, priority: u8) -> Keepalived {
        let dir = lab.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("keepalived.conf");
        std::fs::write(
            &config,
            format!(
                "global_defs {{\n  router_id {name}\n}}\nvrrp_instance gw {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 7\n  priority {priority}\n  advert_int 1\n  virtual_ipaddress {{\n    {GW_IP}/24\n  }}\n}}\n"
            ),
        )
        .unwrap();
        let log = dir.join("keepalived.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "keepalived",
                "--dont-fork",
                "--log-console",
                "--vrrp",
            ])
            .arg("--use-file")
            .arg(&config)
            .arg("--pid")
            .arg(dir.join("keepalived.pid"))
            .arg("--vrrp_pid")
            .arg(dir.join("vrrp.pid"))
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("keepalived (Debian package keepalived)");
        Keepalived {
            child: Some(child),
            log,
        }
    }

    /// Waits until its log says it entered `state` (MASTER, BACKUP).
    fn wait_state(&self, state: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let pattern = format!("Entering {state} STATE");
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.matches(&pattern).count() >= count {
                return;
            }
            assert!(Instant::now() < deadline, "keepalived not {state}:\n{log}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM: a graceful stop (it resigns with priority 0 and removes the
    /// virtual address), as at a maintenance reboot.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Two real keepalived routers for the gateway address (the gateway
/// namespace at 192.0.2.2, priority 200; the other at 192.0.2.66, 100). The
/// master is stopped for maintenance — the backup takes over — and comes
/// back and preempts: the gateway's MAC moves twice, each time between two
/// routers heard advertising the group. Information, never a page; an
/// attacker claiming the gateway in the same network still is one.
#[test]
fn a_keepalived_failover_and_preemption_are_information() {
    let Some((lab, receiver, config)) = prepare("coalesce_window = \"3s\"") else {
        return;
    };
    // The gateway address becomes the group's: keepalived holds it.
    lab.ip(&lab.gw, &["addr", "del", "192.0.2.1/24", "dev", "eth0"]);
    lab.ip(&lab.gw, &["addr", "add", "192.0.2.2/24", "dev", "eth0"]);
    let mut master = Keepalived::start(&lab, &lab.gw, "r1", 200);
    let mut backup = Keepalived::start(&lab, &lab.mitm, "r2", 100);
    backup.wait_state("BACKUP", 1);
    master.wait_state("MASTER", 1);
    assert_eq!(lab.resolve_gateway(GW_IP), GW_MAC);
    let mut agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", WAIT, |_| true);
    // Advertisements from the master for a few seconds.
    std::thread::sleep(Duration::from_secs(3));
    master.stop();
    backup.wait_state("MASTER", 1);
    let d = receiver.wait_kind("gateway_failover", WAIT, |d| d["new_mac"] == MITM_MAC);
    assert_eq!((&d["old_mac"], &d["vrid"]), (&json!(GW_MAC), &json!(7)));
    let entry = lab.ip(&lab.host, &["neigh", "show", GW_IP]);
    assert!(entry.contains(MITM_MAC), "{entry}");
    // The master is back and preempts.
    let mut master = Keepalived::start(&lab, &lab.gw, "r1-again", 200);
    master.wait_state("MASTER", 1);
    let d = receiver.wait_kind("gateway_failover", Duration::from_secs(15), |d| {
        d["new_mac"] == GW_MAC
    });
    assert_eq!(d["old_mac"], MITM_MAC);
    // keepalived repeats its gratuitous ARPs 5 s after taking over.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(receiver.loud(), Vec::<Value>::new());
    // `status` shows the group that made these failovers (as the agent
    // wrote it at its last 10 s capture report).
    let (code, out, _) = netsentry_in(&lab.host, &["status", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("eth0 group 7 (inet): 192.0.2.1 from"))
        .unwrap_or_else(|| panic!("no VRRP group in status:\n{out}"));
    assert!(line.contains("192.0.2.2"), "{line}");
    // The same network, an attacker's claim: a page.
    let evil = [0x02, 0xde, 0xad, 0xbe, 0xef, 0x07];
    send_frames(&lab.mitm, "eth0", vec![build::gratuitous_arp(evil, gw())]);
    let got = receiver.wait_for("attack", WAIT, |b| {
        b["kind"] == "gateway_mac_changed" && b["details"]["new_mac"] == "02:de:ad:be:ef:07"
    });
    assert_eq!(got.body["severity"], "critical");
    master.stop();
    backup.stop();
    agent.stop();
}
