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

/// Link churn at start, during periodic re-dumps and overrun re-dumps, and
/// during `status`: no partial view is ever taken for the kernel's state.
#[test]
fn link_churn_during_start_re_dumps_and_status_invents_nothing() {
    let Some((lab, receiver, config)) =
        prepare("reconcile_interval = \"1s\"\nnetlink_receive_buffer = 4096")
    else {
        return;
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = churn_links(lab.host.clone(), "vethc", 150, stop.clone(), lab.path(""));
    std::thread::sleep(Duration::from_millis(300));
    let agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    let started = receiver.wait_kind("agent_started", Duration::from_secs(30), |_| true);
    assert_eq!(started["watching"], serde_json::json!(["eth0"]));
    let config_arg = config.to_str().unwrap();
    for _ in 0..10 {
        let (code, out, err) = netsentry_in(&lab.host, &["status", "--json", "-c", config_arg]);
        assert_eq!(code, 0, "{err}");
        let status: serde_json::Value = serde_json::from_str(&out).unwrap();
        let links = status["links"].as_array().unwrap();
        assert!(
            links.iter().any(|l| l["name"] == "eth0"),
            "status without eth0"
        );
        assert_eq!(
            status["default_routes"].as_array().map(Vec::len),
            Some(1),
            "{}",
            status["default_routes"]
        );
    }
    // Several periodic and overrun re-dumps under churn.
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let rounds = churn.join().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let log = agent.log_text();
    let redumps = log.matches("full dump after").count();
    eprintln!("churn: {rounds} rounds of 150 veth pairs; {redumps} re-dumps");
    assert!(rounds >= 2, "the churn did not run");
    let false_alarms: Vec<String> = receiver
        .all()
        .iter()
        .map(|r| r.body.clone())
        .filter(|b| {
            !matches!(
                b["kind"].as_str(),
                Some("agent_started" | "agent_heartbeat")
            )
        })
        .map(|b| b.to_string())
        .collect();
    assert!(
        false_alarms.is_empty(),
        "false alarms:\n{}",
        false_alarms.join("\n")
    );
    assert!(
        !log.contains("panicked") && !log.contains("netlink dump failed"),
        "{log}"
    );
}
