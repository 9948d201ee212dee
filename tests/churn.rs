//! 100,000 neighbour updates in one burst: the agent keeps up or re-dumps, and a
//! gateway MAC change in the middle of the burst is still reported.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;

pub const UPDATES: usize = 100_000;

/// Writes an `ip -batch` file: 1,000 permanent entries in 198.18.0.0/15 rewritten
/// 100 times (permanent entries are exempt from the neighbour table's gc limits),
/// with the gateway moved to `spoof_mac` halfway through.
fn burst_file(lab: &Lab, spoof_mac: &str) -> std::path::PathBuf {
    let path = lab.path("burst.batch");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for n in 0..UPDATES {
        if n == UPDATES / 2 {
            writeln!(
                f,
                "neigh replace {GW_IP} lladdr {spoof_mac} dev eth0 nud reachable"
            )
            .unwrap();
        }
        let (round, i) = (n / 1000, n % 1000);
        writeln!(f, "neigh replace 198.18.{}.{} lladdr 02:00:00:{:02x}:{:02x}:{:02x} dev eth0 nud permanent", i / 250, i % 250 + 1, round, i / 256, i % 256).unwrap();
    }
    path
}

#[test]
fn a_gateway_change_inside_a_burst_of_100k_neighbour_updates_is_reported() {
    if !have_root() {
        return;
    }
    let lab = Lab::new();
    lab.resolve_gateway(GW_IP);
    let receiver = Receiver::start(&lab.host);
    let config = write_config(&lab, &receiver, "");
    let agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", Duration::from_secs(10), |_| true);
    let batch = burst_file(&lab, "02:de:ad:be:ef:99");
    let t0 = Instant::now();
    lab.ip(&lab.host, &["-batch", batch.to_str().unwrap()]);
    let burst = t0.elapsed();
    let Some(got) = receiver.try_wait_for(Duration::from_secs(30), |b| {
        b["kind"] == "gateway_mac_changed"
    }) else {
        panic!(
            "no gateway_mac_changed; neighbour entry now: {}\nagent log:\n{}",
            lab.ip(&lab.host, &["neigh", "show", GW_IP]),
            agent.log_text()
        );
    };
    let d = got.body["details"].clone();
    let detected = t0.elapsed();
    assert_eq!(d["new_mac"], "02:de:ad:be:ef:99");
    assert_eq!(d["old_mac"], GW_MAC);
    let log = agent.log_text();
    let resyncs = log.matches("full dump after overrun").count();
    eprintln!(
        "churn: {UPDATES} updates in {:.2} s; gateway change reported {:.2} s after the burst started; {resyncs} re-dumps after overrun",
        burst.as_secs_f64(),
        detected.as_secs_f64()
    );
    // Reported exactly once, whether it came from an event or a re-dump.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.count_kind("gateway_mac_changed"), 1);
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn with_a_small_receive_buffer_events_are_lost_and_the_re_dump_still_finds_the_change() {
    if !have_root() {
        return;
    }
    let lab = Lab::new();
    lab.resolve_gateway(GW_IP);
    let receiver = Receiver::start(&lab.host);
    let config = write_config(&lab, &receiver, "netlink_receive_buffer = 4096");
    let agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", Duration::from_secs(10), |_| true);
    let batch = burst_file(&lab, "02:de:ad:be:ef:98");
    lab.ip(&lab.host, &["-batch", batch.to_str().unwrap()]);
    let d = receiver.wait_kind("gateway_mac_changed", Duration::from_secs(30), |_| true);
    assert_eq!(d["new_mac"], "02:de:ad:be:ef:98");
    let log = agent.log_text();
    assert!(
        log.contains("full dump after overrun"),
        "a 4 KiB buffer must overrun:\n{log}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.count_kind("gateway_mac_changed"), 1);
}
