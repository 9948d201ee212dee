//! Webhook delivery against real HTTP receivers: retries, permanent rejections,
//! independent receivers, signatures, severity filter, heartbeats.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(15);

fn spoof_gateway(lab: &Lab, mac: &str) {
    send_gratuitous_arp(&lab.gw, "eth0", GW_IP.parse().unwrap(), mac_bytes(mac));
}

#[test]
fn alerts_produced_during_an_outage_arrive_in_order_afterwards() {
    if !have_root() {
        return;
    }
    let lab = Lab::new();
    lab.resolve_gateway(GW_IP);
    let receiver = Receiver::start(&lab.host);
    receiver.set_status(503);
    // Netlink alone: exactly one gateway_mac_changed for the frame.
    let config = write_config(&lab, &receiver, "[arp]\nenabled = false");
    let agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    std::thread::sleep(Duration::from_millis(800));
    spoof_gateway(&lab, "02:de:ad:be:ef:01");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(receiver.all().is_empty());
    receiver.set_status(200);
    receiver.wait_kind("gateway_mac_changed", WAIT, |_| true);
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
    if !have_root() {
        return;
    }
    let lab = Lab::new();
    lab.resolve_gateway(GW_IP);
    let receiver = Receiver::start(&lab.host);
    receiver.set_status(400);
    let config = write_config(&lab, &receiver, "");
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
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[webhook]]\nurl = \"http://127.0.0.1:{silent_port}/\"\ntimeout = \"10s\"\n"
    ));
    text.push_str("\n[[webhook]]\nurl = \"http://127.0.0.1:1/\"\n");
    std::fs::write(&config, text).unwrap();
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
    use std::os::unix::fs::PermissionsExt;
    let Some((lab, receiver, config)) = prepare("") else {
        return;
    };
    let secret = lab.path("webhook.key");
    std::fs::write(&secret, "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!(
            "{text}secret_file = \"{}\"\nmin_severity = \"warning\"\n",
            secret.display()
        ),
    )
    .unwrap();
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
    let key =
        netsentry::sink::format::secret_key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
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
