//! Webhook delivery against real HTTP receivers: retries, permanent rejections,
//! independent receivers, signatures, severity filter, heartbeats.

mod common;

use std::time::{Duration, Instant};

use common::*;

const WAIT: Duration = Duration::from_secs(15);

fn spoof_gateway(lab: &Lab, mac: &str) {
    send_gratuitous_arp(&lab.gw, "eth0", GW_IP.parse().unwrap(), mac_bytes(mac));
}

#[test]
fn alerts_produced_during_an_outage_arrive_in_order_afterwards() {
    let Some((lab, receiver, config)) = prepare("[arp]\nenabled = false") else {
        return;
    };
    receiver.set_status(503);
    // Netlink alone: exactly one gateway_mac_changed for the frame.
    let agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    std::thread::sleep(Duration::from_millis(800));
    spoof_gateway(&lab, "02:de:ad:be:ef:01");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(receiver.all().is_empty());
    // `netsentry status` shows what waits and why.
    let r = &status_json(&lab, &config)["receivers"][0];
    assert_eq!(r["pending"], 2, "{r}");
    assert!(
        r["last_error"].as_str().unwrap_or("").contains("503"),
        "{r}"
    );
    assert!(r["last_success"].is_null(), "{r}");
    receiver.set_status(200);
    receiver.wait_kind("gateway_mac_changed", WAIT, |_| true);
    let deadline = Instant::now() + WAIT;
    loop {
        let r = status_json(&lab, &config)["receivers"][0].clone();
        if r["pending"] == 0 && r["last_success"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "status after recovery: {r}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let kinds: Vec<String> = receiver
        .all()
        .iter()
        .map(|r| r.body["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        vec!["agent_started", "gateway_mac_changed"],
        "in order, each once"
    );
    assert!(
        agent.log_text().contains("HTTP 503"),
        "the failure is logged with the receiver's answer"
    );
}

#[test]
fn a_permanent_rejection_is_not_retried_forever() {
    let Some((lab, receiver, config)) = prepare("") else {
        return;
    };
    receiver.set_status(400);
    let agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    let deadline = std::time::Instant::now() + WAIT;
    while !agent.log_text().contains("rejected the alert") {
        assert!(
            std::time::Instant::now() < deadline,
            "no rejection logged:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    receiver.set_status(200);
    spoof_gateway(&lab, "02:de:ad:be:ef:01");
    receiver.wait_kind("gateway_mac_changed", WAIT, |_| true);
    assert_eq!(
        receiver.count_kind("agent_started"),
        0,
        "the rejected alert was dropped, not retried"
    );
    // ... and kept aside with the receiver's answer.
    let aside: Vec<String> = std::fs::read_dir(lab.path("state/spool"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".rejected.jsonl"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert_eq!(aside.len(), 1);
    let first: serde_json::Value = serde_json::from_str(aside[0].lines().next().unwrap()).unwrap();
    assert_eq!(first["alert"]["kind"], "agent_started");
    assert!(
        first["answer"].as_str().unwrap().starts_with("HTTP 400"),
        "{first}"
    );
}

#[test]
fn a_dead_receiver_does_not_delay_a_healthy_one() {
    let Some((lab, healthy, config)) = prepare("") else {
        return;
    };
    // A second receiver that never answers: connections to a closed port are
    // refused, and this one accepts but never replies.
    let silent = in_netns(&lab.host, || {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap()
    });
    let silent_port = silent.local_addr().unwrap().port();
    append_config(
        &config,
        &format!(
            "\n[[webhook]]\nurl = \"http://127.0.0.1:{silent_port}/\"\ntimeout = \"10s\"\n\n[[webhook]]\nurl = \"http://127.0.0.1:1/\"\n"
        ),
    );
    let _agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    healthy.wait_kind("agent_started", WAIT, |_| true);
    let sent = std::time::Instant::now();
    spoof_gateway(&lab, "02:de:ad:be:ef:01");
    let got = healthy.wait_for("gateway_mac_changed", WAIT, |b| {
        b["kind"] == "gateway_mac_changed"
    });
    let ms = got.at.duration_since(sent).as_millis();
    assert!(ms < 1000, "the healthy receiver waited {ms} ms");
    drop(silent);
}

#[test]
fn signed_deliveries_carry_standard_webhooks_headers() {
    let Some((lab, receiver, config)) = prepare("") else {
        return;
    };
    let secret = write_secret(&lab);
    append_config(
        &config,
        &format!(
            "secret_file = \"{}\"
min_severity = \"warning\"
",
            secret.display()
        ),
    );
    let _agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    std::thread::sleep(Duration::from_millis(800));
    spoof_gateway(&lab, "02:de:ad:be:ef:01");
    let got = receiver.wait_for("gateway_mac_changed", WAIT, |b| {
        b["kind"] == "gateway_mac_changed"
    });
    assert_eq!(
        receiver.count_kind("agent_started"),
        0,
        "info is below min_severity = warning"
    );
    let id = got.body["id"].as_str().unwrap();
    assert_eq!(got.headers["webhook-id"], id);
    let ts: i64 = got.headers["webhook-timestamp"].parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
    let body = String::from_utf8(got.raw.clone()).unwrap();
    let key = netsentry::sink::format::secret_key(TEST_SECRET).unwrap();
    assert_eq!(
        got.headers["webhook-signature"],
        netsentry::sink::format::sign(&key, id, ts, &body)
    );
}

#[test]
fn heartbeats_arrive_on_schedule() {
    if !have_root() {
        return;
    }
    let lab = Lab::new();
    let receiver = Receiver::start(&lab.host);
    let config = write_config(&lab, &receiver, "heartbeat_interval = \"1s\"");
    let _agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_heartbeat", WAIT, |d| {
        d["uptime_s"].as_u64().is_some()
    });
    receiver.wait_kind("agent_heartbeat", WAIT, |d| {
        d["uptime_s"].as_u64() >= Some(2)
    });
}

/// The receiver answers 503 for 20 s while alerts are produced and the agent is
/// killed with SIGKILL twice and started again: afterwards every alert arrives
/// (each id at least once) with a valid signature.
#[test]
fn nothing_is_lost_across_an_outage_and_two_kill_9() {
    let Some((lab, receiver, config)) = prepare("[arp]\nenabled = false") else {
        return;
    };
    receiver.set_status(503);
    let outage_ends = Instant::now() + Duration::from_secs(20);
    let secret = write_secret(&lab);
    append_config(
        &config,
        &format!(
            "secret_file = \"{}\"
",
            secret.display()
        ),
    );

    let mut produced = Vec::new();
    let mut last = None;
    for round in 0..3u32 {
        let mut agent = Agent::start(&lab.host, &config, &lab.path(&format!("agent{round}.log")));
        agent.wait_for_log("agent_started:", 1);
        for i in 0..5 {
            ip(
                &lab.host,
                &format!("link set eth0 mtu {}", 1400 + round * 10 + i),
            );
            std::thread::sleep(Duration::from_millis(30));
        }
        agent.wait_for_log("link_mtu_changed:", 5);
        produced.extend(agent.alert_ids());
        if round < 2 {
            agent.kill9();
        } else {
            last = Some(agent);
        }
    }
    assert!(
        receiver.all().is_empty(),
        "nothing gets through during the outage"
    );
    assert_eq!(
        produced.len(),
        18,
        "3 x (agent_started + 5 MTU changes): {produced:?}"
    );
    std::thread::sleep(outage_ends.saturating_duration_since(Instant::now()));
    receiver.set_status(200);

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: std::collections::HashSet<String> = receiver
            .all()
            .iter()
            .filter_map(|r| r.body["id"].as_str().map(str::to_string))
            .collect();
        let missing: Vec<&String> = produced.iter().filter(|id| !got.contains(*id)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never arrived: {missing:?}\nlog:\n{}",
            last.as_ref().unwrap().log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let all = receiver.all();
    let key = netsentry::sink::format::secret_key(TEST_SECRET).unwrap();
    for r in &all {
        let id = r.body["id"].as_str().unwrap();
        assert_eq!(r.headers["webhook-id"], id);
        let ts: i64 = r.headers["webhook-timestamp"].parse().unwrap();
        let body = String::from_utf8(r.raw.clone()).unwrap();
        assert_eq!(
            r.headers["webhook-signature"],
            netsentry::sink::format::sign(&key, id, ts, &body),
            "signature of {id}"
        );
    }
    let unique: std::collections::HashSet<&str> =
        all.iter().filter_map(|r| r.body["id"].as_str()).collect();
    eprintln!(
        "outage + 2 x kill -9: {} alerts produced, {} deliveries, {} duplicates",
        produced.len(),
        all.len(),
        all.len() - unique.len()
    );
}

fn status_json(lab: &Lab, config: &std::path::Path) -> serde_json::Value {
    let out = std::process::Command::new("nsenter")
        .args([
            &format!("--net=/run/netns/{}", lab.host),
            "--",
            &agent_binary(),
            "status",
            "--json",
            "-c",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A full spool drops the oldest alerts, and says so to the receiver once it is back.
#[test]
fn a_full_spool_drops_the_oldest_and_reports_it() {
    if !have_root() {
        return;
    }
    let lab = Lab::new();
    lab.resolve_gateway(GW_IP);
    let receiver = Receiver::start(&lab.host);
    receiver.set_status(503);
    let extra = "max_spool_bytes = 2097152\ncoalesce_burst = 1000000\n[arp]\nalerts_per_kind = 1000000\nstorm_pps = 1000000";
    let config = write_config(&lab, &receiver, extra);
    let agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    agent.wait_for_log("agent_started:", 1);
    std::thread::sleep(Duration::from_millis(200));
    // ~12,000 station alerts of ~350 bytes: about twice the spool's size.
    let host = mac_bytes(&lab.host_mac());
    send_frames(
        &lab.mitm,
        "eth0",
        flood_frames(12_000, [2, 0xde, 0xad, 0xbe, 0xef, 0x53], host),
    );
    agent.wait_for_log("older undelivered alerts were dropped (max_spool_bytes)", 1);
    receiver.set_status(200);
    let d = receiver.wait_kind("alerts_suppressed", Duration::from_secs(30), |d| {
        d["kind"] == "spool"
    });
    let dropped = d["count"].as_u64().unwrap();
    assert!(dropped > 1000, "{d}");
    assert_eq!(d["reason"], "max_spool_bytes");
}

#[test]
fn test_alert_reaches_each_receiver_and_says_which_failed() {
    let Some((lab, receiver, config)) = prepare("") else {
        return;
    };
    let secret = write_secret(&lab);
    append_config(
        &config,
        &format!("secret_file = \"{}\"\n", secret.display()),
    );
    let broken = Receiver::start(&lab.host);
    broken.set_status(500);
    append_config(
        &config,
        &format!(
            "\n[[webhook]]\nname = \"broken\"\nurl = \"{}\"\n",
            broken.url()
        ),
    );
    let c = config.to_str().unwrap();
    let (code, out, err) = netsentry_in(&lab.host, &["test-alert", "-c", c]);
    assert_eq!(code, 1, "one receiver failed: {out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].ends_with(": delivered (HTTP 200), signed (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature v1), format netsentry"),
        "{out}"
    );
    assert!(lines[1].starts_with("broken: FAILED: HTTP 500"), "{out}");
    let got = receiver.wait_for("test alert", WAIT, |b| b["kind"] == "test");
    assert_eq!(got.body["severity"], "info");
    assert!(got.headers.contains_key("webhook-signature"));
    assert!(lines[2].contains(got.body["id"].as_str().unwrap()), "{out}");
    let first_run = format!("{out}{err}");
    // Nothing was spooled: no agent will send it again.
    assert!(
        !lab.path("state/spool").exists()
            || std::fs::read_dir(lab.path("state/spool"))
                .unwrap()
                .next()
                .is_none()
    );
    // One receiver by name, and a name that is not there.
    let (code, out, _) = netsentry_in(&lab.host, &["test-alert", "-c", c, "--receiver", "broken"]);
    assert_eq!(code, 1);
    assert_eq!(out.lines().count(), 2, "{out}");
    broken.set_status(200);
    let (code, out, _) = netsentry_in(&lab.host, &["test-alert", "-c", c, "--receiver", "broken"]);
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = netsentry_in(&lab.host, &["test-alert", "-c", c, "--receiver", "nosuch"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no receiver named \"nosuch\" (configured: "),
        "{err}"
    );
    // The signing secret (the run that used it) appears nowhere in what it prints.
    let secret_text = std::fs::read_to_string(&secret).unwrap();
    let key = secret_text.trim().trim_start_matches("whsec_");
    assert!(key.len() > 8, "{secret_text}");
    assert!(!first_run.contains(key), "{first_run}");
}
