//! A real Prometheus Alertmanager (Debian's prometheus-alertmanager, on the lab
//! host's loopback) receives the agent's alerts through its v2 API.

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
const PORT: u16 = 9093;

struct Alertmanager(Child);

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET on the namespace's loopback: (status, body).
fn http_get(ns: &str, path: &str) -> Option<(u16, String)> {
    let path = path.to_string();
    in_netns(ns, move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", PORT)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n")?.1.to_string();
        // Chunked answers: keep the JSON between the first '[' or '{' and the last ']' or '}'.
        let start = body.find(['[', '{']).unwrap_or(0);
        let end = body.rfind([']', '}']).map(|e| e + 1).unwrap_or(body.len());
        Some((status, body[start..end].to_string()))
    })
}

fn start_alertmanager(lab: &Lab) -> Alertmanager {
    assert!(
        std::path::Path::new(ALERTMANAGER).exists(),
        "install Debian's prometheus-alertmanager"
    );
    let config = lab.path("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
    )
    .unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.host, ALERTMANAGER])
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", lab.path("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{PORT}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(lab.path("alertmanager.log")).unwrap())
        .spawn()
        .expect("start alertmanager");
    let am = Alertmanager(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(&lab.host, "/-/ready").map(|(s, _)| s) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "alertmanager did not get ready: {}",
            std::fs::read_to_string(lab.path("alertmanager.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    am
}

/// A `[[webhook]]` section for the lab's Alertmanager, with `extra` keys.
fn am_webhook(extra: &str) -> String {
    format!(
        "\n[[webhook]]\nurl = \"http://127.0.0.1:{PORT}/api/v2/alerts\"\nformat = \"alertmanager\"\n{extra}"
    )
}

fn am_alerts(lab: &Lab) -> Vec<Value> {
    http_get(&lab.host, "/api/v2/alerts")
        .and_then(|(_, b)| serde_json::from_str::<Vec<Value>>(&b).ok())
        .unwrap_or_default()
}

fn wait_am(lab: &Lab, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let alerts = am_alerts(lab);
        if let Some(a) = alerts.iter().find(|a| pred(a)) {
            return a.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {what} in alertmanager: {alerts:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn alertmanager_receives_labels_and_annotations() {
    let Some((lab, receiver, config)) =
        prepare("heartbeat_interval = \"2s\"\n[arp]\nenabled = false")
    else {
        return;
    };
    let _am = start_alertmanager(&lab);
    append_config(&config, &am_webhook(""));
    let _agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", Duration::from_secs(10), |_| true);
    send_gratuitous_arp(
        &lab.gw,
        "eth0",
        GW_IP.parse().unwrap(),
        mac_bytes("02:de:ad:be:ef:01"),
    );
    let sent = receiver
        .wait_for("gateway_mac_changed", Duration::from_secs(10), |b| {
            b["kind"] == "gateway_mac_changed"
        })
        .body;

    let a = wait_am(&lab, "gateway_mac_changed", |a| {
        a["labels"]["alertname"] == "gateway_mac_changed"
    });
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["labels"]["host"], "testhost");
    assert_eq!(a["labels"]["interface"], "eth0");
    assert_eq!(a["labels"]["ip"], "192.0.2.1");
    assert_eq!(a["annotations"]["summary"], sent["summary"]);
    assert_eq!(a["annotations"]["id"], sent["id"]);
    let details: Value =
        serde_json::from_str(a["annotations"]["details"].as_str().unwrap()).unwrap();
    assert_eq!(details["new_mac"], "02:de:ad:be:ef:01");
    assert_eq!(a["status"]["state"], "active");
    // What it means and where to read more (the kind's row in the reference).
    let description = a["annotations"]["description"].as_str().unwrap();
    assert!(description.contains("gateway"), "{description}");
    assert_eq!(
        a["annotations"]["runbook_url"],
        "file:///usr/share/doc/netsentry/ALERTS.md#gateway_mac_changed"
    );

    // The heartbeat is a long-lived alert that expires three beats after the last one.
    let hb = wait_am(&lab, "agent_heartbeat", |a| {
        a["labels"]["alertname"] == "agent_heartbeat"
    });
    let ends = chrono::DateTime::parse_from_rfc3339(hb["endsAt"].as_str().unwrap()).unwrap();
    let left = ends.signed_duration_since(chrono::Utc::now()).num_seconds();
    assert!(
        (0..=7).contains(&left),
        "expires 3 beats (6 s) after the last one, not later: {hb}"
    );
}

#[test]
fn a_condition_stays_active_while_it_holds_and_resolves_when_it_clears() {
    let Some((lab, receiver, config)) = prepare("[arp]\nenabled = false") else {
        return;
    };
    let _am = start_alertmanager(&lab);
    append_config(&config, &am_webhook("resolve_after = \"4s\"\n"));
    let _agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", Duration::from_secs(10), |_| true);

    // The gateway goes silent: the host's entry fails.
    ip(&lab.gw, "addr del 192.0.2.1/24 dev eth0");
    ip(&lab.host, "neigh del 192.0.2.1 dev eth0");
    let _ = std::panic::catch_unwind(|| lab.resolve_gateway(GW_IP));
    let is_unreachable = |a: &Value| a["labels"]["alertname"] == "gateway_unreachable";
    wait_am(&lab, "gateway_unreachable", is_unreachable);
    // Longer than resolve_after: refreshed, so still active.
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        am_alerts(&lab).iter().any(is_unreachable),
        "the condition holds: still active after resolve_after"
    );

    // The gateway answers again: resolved in Alertmanager.
    ip(&lab.gw, "addr add 192.0.2.1/24 dev eth0");
    lab.resolve_gateway(GW_IP);
    let deadline = Instant::now() + Duration::from_secs(15);
    while am_alerts(&lab).iter().any(is_unreachable) {
        assert!(
            Instant::now() < deadline,
            "not resolved: {:#?}",
            am_alerts(&lab)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The netsentry receiver got the alert once, and no refresh or resolution.
    assert_eq!(receiver.count_kind("gateway_unreachable"), 1);
    assert!(
        receiver
            .all()
            .iter()
            .all(|r| r.body.get("delivery").is_none())
    );
}

#[test]
fn a_link_flap_resolves_when_the_link_is_back() {
    let Some((lab, receiver, config)) = prepare("[arp]\nenabled = false") else {
        return;
    };
    let _am = start_alertmanager(&lab);
    append_config(&config, &am_webhook(""));
    let _agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", Duration::from_secs(10), |_| true);
    // The host's eth0 loses carrier (its peer on the LAN bridge goes down).
    ip(&lab.lan, "link set phost down");
    let is_down = |a: &Value| a["labels"]["alertname"] == "link_down";
    let a = wait_am(&lab, "link_down", is_down);
    assert_eq!(a["labels"]["interface"], "eth0");
    ip(&lab.lan, "link set phost up");
    // Resolved at once, not after resolve_after (1 h).
    let deadline = Instant::now() + Duration::from_secs(15);
    while am_alerts(&lab).iter().any(is_down) {
        assert!(
            Instant::now() < deadline,
            "not resolved: {:#?}",
            am_alerts(&lab)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    receiver.wait_kind("link_up", Duration::from_secs(5), |d| {
        d["interface"] == "eth0"
    });
}
