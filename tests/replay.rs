//! `netsentry replay` on small capture files the tests write themselves.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use netsentry::wire::build;
use serde_json::Value;

const GW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const GWM: [u8; 6] = [2, 0, 0, 0, 0, 1];
const EVIL: [u8; 6] = [2, 0xde, 0xad, 0xbe, 0xef, 1];
const HOST: [u8; 6] = [2, 0, 0, 0, 0, 0x10];

fn reply(src: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    build::arp(src, HOST, true, src, ip, HOST, Ipv4Addr::new(192, 0, 2, 10))
}

fn at(s: u64) -> Duration {
    Duration::from_secs(1_800_000_000 + s)
}

/// A short story: stations come, one changes and flips back, a poisoner claims the gateway.
fn story() -> Vec<(Duration, Vec<u8>)> {
    let s = Ipv4Addr::new(192, 0, 2, 50);
    vec![
        (at(0), reply(GWM, GW)),
        (at(1), reply([2, 0, 0, 0, 0, 0xa], s)),
        (at(2), reply([2, 0, 0, 0, 0, 0xb], s)),
        (at(3), reply([2, 0, 0, 0, 0, 0xa], s)),
        (at(4), reply(EVIL, GW)),
        (at(5), reply(EVIL, GW)),
        (at(6), reply(GWM, GW)[..20].to_vec()),
    ]
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn kinds(alerts: &[Value]) -> Vec<String> {
    alerts
        .iter()
        .map(|a| a["kind"].as_str().unwrap().to_string())
        .collect()
}

fn config_with_gateway(dir: &std::path::Path) -> std::path::PathBuf {
    let c = dir.join("c.toml");
    std::fs::write(&c, format!("[agent]\nhost_id = \"forensics\"\nstate_dir = \"{}\"\n[arp]\ngateways = [\"192.0.2.1\"]\n", dir.join("state").display())).unwrap();
    c
}

#[test]
fn pcap_replay_reports_every_finding_with_packet_time() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("story.pcap");
    // The real gateway answers again after the poisoner: two MACs really
    // answer, a conflict (one change alone is not).
    let mut frames = story();
    frames[5] = (at(5), reply(GWM, GW));
    write_pcap(&pcap, &frames);
    let config = config_with_gateway(dir.path());
    let (code, out, err) = netsentry(&[
        "replay",
        pcap.to_str().unwrap(),
        "-c",
        config.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let alerts = json_lines(&out);
    assert_eq!(
        kinds(&alerts),
        vec![
            "arp_new_station",
            "arp_mac_changed",
            "arp_flip_flop",
            "gateway_mac_changed",
            "arp_gateway_conflict"
        ]
    );
    let spoof = &alerts[3];
    assert_eq!(spoof["details"]["source"], "arp");
    assert_eq!(spoof["details"]["old_mac"], "02:00:00:00:00:01");
    assert_eq!(spoof["details"]["new_mac"], "02:de:ad:be:ef:01");
    assert_eq!(spoof["details"]["interface"], "pcap");
    assert_eq!(spoof["host"], "forensics");
    assert_eq!(
        spoof["time"], "2027-01-15T08:00:04.000000Z",
        "packet time, not wall time"
    );
    assert!(
        err.contains("7 frames (6 ARP, 0 NDP, 0 TCP SYN, 1 malformed, 0 other); 5 alerts"),
        "{err}"
    );
}

#[test]
fn pcapng_replay_uses_interface_names_and_reads_ndp() {
    let dir = tempfile::tempdir().unwrap();
    let pcapng = dir.path().join("story.pcapng");
    let ll: std::net::Ipv6Addr = "fe80::66".parse().unwrap();
    let all: std::net::Ipv6Addr = "ff02::1".parse().unwrap();
    let mut frames = story();
    frames.push((
        at(7),
        build::icmpv6(
            EVIL,
            [0x33, 0x33, 0, 0, 0, 1],
            ll,
            all,
            &build::ra_body(EVIL, 1800),
        ),
    ));
    frames.push((
        at(8),
        build::tagged(
            &reply([2, 0, 0, 0, 0, 0xc], Ipv4Addr::new(192, 0, 2, 51)),
            7,
        ),
    ));
    write_pcapng(&pcapng, "uplink0", &frames);
    let (code, out, err) = netsentry(&["replay", pcapng.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let alerts = json_lines(&out);
    // Without -c there are no gateways: the claims are plain stations.
    assert_eq!(
        kinds(&alerts),
        vec![
            "arp_new_station",
            "arp_new_station",
            "arp_mac_changed",
            "arp_flip_flop",
            "arp_mac_changed",
            "ndp_router_new",
            "arp_new_station"
        ]
    );
    assert!(
        alerts[..6]
            .iter()
            .all(|a| a["details"]["interface"] == "uplink0")
    );
    // The tagged frame is another segment's station.
    assert_eq!(alerts[6]["details"]["interface"], "uplink0.7");
    assert_eq!(alerts[5]["details"]["router_ip"], "fe80::66");
    assert_eq!(
        alerts[6]["details"]["ip"], "192.0.2.51",
        "802.1Q-tagged frames are read"
    );
}

#[test]
fn replay_applies_no_rate_limits() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("many.pcap");
    let frames: Vec<_> = (0..500u32)
        .map(|i| {
            (
                at(0) + Duration::from_millis(i as u64),
                reply(
                    [2, 0, 0, 1, (i >> 8) as u8, i as u8],
                    Ipv4Addr::from(0xC000_0200 + (i % 250) + 1 + (i / 250) * 0x100),
                ),
            )
        })
        .collect();
    write_pcap(&pcap, &frames);
    let (code, out, _) = netsentry(&["replay", pcap.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0);
    assert_eq!(
        json_lines(&out)
            .iter()
            .filter(|a| a["kind"] == "arp_new_station")
            .count(),
        500
    );
}

#[test]
fn human_output_is_one_line_per_alert() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("story.pcap");
    write_pcap(&pcap, &story());
    let (code, out, _) = netsentry(&["replay", pcap.to_str().unwrap()]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[2].contains("WARNING  arp_mac_changed: 192.0.2.50 on pcap moved to 02:00:00:00:00:0b (was 02:00:00:00:00:0a)"), "{out}");
}

#[test]
fn unusable_files_are_exit_2_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pcap");
    std::fs::write(&junk, b"this is not a capture").unwrap();
    let (code, _, err) = netsentry(&["replay", junk.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("not a pcap or pcapng file"), "{err}");
    let (code, _, err) = netsentry(&["replay", "/nonexistent.pcap"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent.pcap: cannot read"), "{err}");
    // A capture cut in the middle of a packet: what was read is reported, then the error.
    let pcap = dir.path().join("cut.pcap");
    write_pcap(&pcap, &story());
    let bytes = std::fs::read(&pcap).unwrap();
    std::fs::write(&pcap, &bytes[..bytes.len() - 10]).unwrap();
    let (code, out, err) = netsentry(&["replay", pcap.to_str().unwrap(), "--json"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("broken capture file"), "{err}");
    assert_eq!(json_lines(&out).len(), 5);
    // Not Ethernet.
    let ng = dir.path().join("empty.pcap");
    std::fs::write(
        &ng,
        [
            0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 101, 0,
            0, 0,
        ],
    )
    .unwrap();
    let (code, _, err) = netsentry(&["replay", ng.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("no Ethernet frames"), "{err}");
}

/// A capture that starts in the middle of an attack (the poisoner's frames
/// first, as in arpspoof and bettercap captures): told which MAC the gateway
/// really is at, replay names the attacker, not the real router, as the new MAC.
#[test]
fn a_capture_that_starts_mid_attack_with_the_gateway_given() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("mid-attack.pcap");
    write_pcap(
        &pcap,
        &[
            (at(0), reply(EVIL, GW)),
            (at(1), reply(EVIL, GW)),
            (at(2), reply(GWM, GW)),
        ],
    );
    let args = |extra: &[&str]| {
        let mut a = vec!["replay", pcap.to_str().unwrap(), "--json"];
        a.extend_from_slice(extra);
        netsentry(&a)
    };
    let (code, out, err) = args(&["--gateway", "192.0.2.1=02:00:00:00:00:01"]);
    assert_eq!(code, 0, "{err}");
    let alerts = json_lines(&out);
    let first = alerts
        .iter()
        .find(|a| a["kind"] == "gateway_mac_changed")
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(first["details"]["old_mac"], "02:00:00:00:00:01");
    assert_eq!(first["details"]["new_mac"], "02:de:ad:be:ef:01");
    // The same from the configuration: [arp] gateways with a MAC.
    let c = dir.path().join("c.toml");
    std::fs::write(&c, "[arp]\ngateways = [\"192.0.2.1=02:00:00:00:00:01\"]\n").unwrap();
    let (code, out, err) = args(&["-c", c.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let alerts = json_lines(&out);
    let first = alerts
        .iter()
        .find(|a| a["kind"] == "gateway_mac_changed")
        .unwrap();
    assert_eq!(first["details"]["new_mac"], "02:de:ad:be:ef:01");
    // A gateway that is not one.
    let (code, _, err) = args(&["--gateway", "192.0.2.1=nonsense"]);
    assert_eq!(code, 2);
    assert!(err.contains("is not a gateway"), "{err}");
}

/// The SYNs of a capture go through the inbound-path detector, with windows
/// by packet time: three 10-minute windows of internet clients on 22 and
/// 5222, then 5222 answered from right in front (TTL 64).
#[test]
fn syns_in_a_capture_show_an_inbound_path_change() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("syns.pcap");
    let opts = build::LINUX_SYN_OPTIONS;
    let mut frames = Vec::new();
    for w in 0..4u64 {
        for i in 0..60u64 {
            let t = at(w * 600 + i * 5);
            let ttl = [49u8, 55, 113][(i % 3) as usize];
            frames.push((t, build::tcp_v4(ttl, 0x02, 22, opts)));
            let xmpp_ttl = if w == 3 { 64 } else { ttl };
            frames.push((t, build::tcp_v4(xmpp_ttl, 0x02, 5222, opts)));
            // SYN-ACKs and ACKs are not connection attempts.
            frames.push((t, build::tcp_v4(64, 0x12, 5222, opts)));
        }
    }
    write_pcap(&pcap, &frames);
    let (code, out, err) = netsentry(&["replay", pcap.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let alerts = json_lines(&out);
    let kinds: Vec<&str> = alerts.iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["inbound_path_changed"], "{out}");
    let a = &alerts[0];
    assert_eq!(a["details"]["port"], 5222);
    assert_eq!(a["details"]["reason"], "baseline");
    assert_eq!(a["details"]["now"]["ttl"], 64);
    assert_eq!(a["time"], "2027-01-15T08:40:00.000000Z", "{a}");
    assert!(
        err.contains("720 frames (0 ARP, 0 NDP, 480 TCP SYN"),
        "{err}"
    );
}
