//! 100,000 neighbour updates in one burst: the agent keeps up or re-dumps, and a
//! gateway MAC change in the middle of the burst is still reported.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_gateway_change_inside_a_burst_of_100k_neighbour_updates_is_reported() {
    let Some(Running {
        lab,
        receiver,
        agent,
    }) = start_agent("")
    else {
        return;
    };
    let batch = write_burst(&lab, "02:de:ad:be:ef:99");
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
        "churn: {BURST_UPDATES} updates in {:.2} s; gateway change reported {:.2} s after the burst started; {resyncs} re-dumps after overrun",
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
    let Some(Running {
        lab,
        receiver,
        agent,
    }) = start_agent("netlink_receive_buffer = 4096")
    else {
        return;
    };
    let batch = write_burst(&lab, "02:de:ad:be:ef:98");
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
