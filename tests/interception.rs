//! The jabber.ru scenario end to end: the service on one host, the agent on
//! another, an interceptor that takes over the service's address on the path
//! with a certificate from the same CA, and a link flap on the agent's host
//! shortly before.

mod common;

use std::time::{Duration, Instant};

use common::tls::{Dialogue, TlsServer, service_lab};
use common::*;

fn probe_exit(lab: &Lab, config: &std::path::Path) -> (i32, String) {
    let (code, out, _) = netsentry_in(&lab.host, &["probe", "-c", config.to_str().unwrap()]);
    (code, out)
}

#[test]
fn interception_is_reported_and_correlated_with_the_link_flap() {
    if !have_root() {
        return;
    }
    let (lab, receiver, pki) = service_lab("Shared Public CA");
    let ours = &pki.ours;
    // The interceptor's certificate: same names, same CA, its own key.
    let rogue = pki.ca.issue(&["example.org", "xmpp.example.org"], 90);
    let _service = TlsServer::start(lab.svc(), "198.51.100.10:5223", Dialogue::Direct, ours);
    let _interceptor = TlsServer::start(&lab.mitm, "0.0.0.0:5223", Dialogue::Direct, &rogue);

    let config = write_config(&lab, &receiver, "");
    append_config(
        &config,
        &(pki.target(
            "xmpp",
            "198.51.100.10:5223",
            "xmpp.example.org",
            &pki.ours_file,
            "interval = \"1s\"\ntimeout = \"1s\"",
        ) + "\n[correlation]\nwindow = \"10m\"\n"),
    );
    let (code, out) = probe_exit(&lab, &config);
    assert_eq!(code, 0, "{out}");
    let mut agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", Duration::from_secs(10), |_| true);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(receiver.count_kind("tls_mismatch"), 0);

    // A short link flap on the agent's host.
    ip(&lab.lan, "link set phost down");
    std::thread::sleep(Duration::from_millis(300));
    ip(&lab.lan, "link set phost up");
    let flap = receiver.wait_for("link_down", Duration::from_secs(10), |b| {
        b["kind"] == "link_down" && b["details"]["interface"] == "eth0"
    });
    std::thread::sleep(Duration::from_secs(1));

    // The interceptor takes over.
    lab.intercept_service();
    let taken_over = Instant::now();
    let mismatch = receiver.wait_for("tls_mismatch", Duration::from_secs(10), |b| {
        b["kind"] == "tls_mismatch"
    });
    let d = &mismatch.body["details"];
    assert_eq!(mismatch.body["severity"], "critical");
    assert_eq!(d["target"], "xmpp");
    assert_eq!(d["address"], "198.51.100.10:5223");
    assert_eq!(d["server_name"], "xmpp.example.org");
    assert_eq!(d["vantage"], "direct");
    assert_eq!(d["expected"], serde_json::json!([ours.cert_sha256]));
    assert_eq!(d["seen"]["cert_sha256"], rogue.cert_sha256);
    assert_eq!(d["seen"]["spki_sha256"], rogue.spki_sha256);
    assert_eq!(
        d["seen"]["chain_valid"], true,
        "the interceptor's certificate is CA-valid: {d}"
    );
    assert_eq!(d["seen"]["issuer"], "CN=Shared Public CA");
    eprintln!(
        "tls_mismatch {} ms after the takeover",
        (mismatch.at - taken_over).as_millis()
    );

    let suspected = receiver.wait_for("interception_suspected", Duration::from_secs(5), |b| {
        b["kind"] == "interception_suspected"
    });
    let s = &suspected.body["details"];
    assert_eq!(suspected.body["severity"], "critical");
    let evidence: Vec<&str> = s["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(evidence.contains(&flap.body["id"].as_str().unwrap()), "{s}");
    assert!(
        evidence.contains(&mismatch.body["id"].as_str().unwrap()),
        "{s}"
    );
    assert_eq!(s["window_s"], 600);
    let reasons = s["reasons"].as_array().unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().unwrap().contains("link_down")),
        "{s}"
    );

    let (code, out) = probe_exit(&lab, &config);
    assert_eq!(code, 2, "probe during the interception: {out}");
    assert!(out.contains(&rogue.cert_sha256), "{out}");

    // The path is restored.
    lab.restore_service();
    let recovered = receiver.wait_kind("tls_recovered", Duration::from_secs(10), |_| true);
    assert_eq!(recovered["target"], "xmpp");
    assert_eq!(recovered["after"], "tls_mismatch");
    let (code, out) = probe_exit(&lab, &config);
    assert_eq!(code, 0, "probe after the interception: {out}");
    let (_, status, _) = netsentry_in(
        &lab.host,
        &["status", "--json", "-c", config.to_str().unwrap()],
    );
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["tls_checks"]["xmpp"]["status"], "OK", "{status}");
    assert_eq!(receiver.count_kind("interception_suspected"), 1);
    assert_eq!(
        receiver.count_kind("tls_mismatch"),
        1,
        "one alert per foreign certificate"
    );
    agent.stop();
}

/// A certificate renewal is not an alarm: the new certificate in the file, the
/// server still on the old one until reloaded — within `rotation_grace`, also
/// across an agent restart; after it, the old one is a mismatch.
#[test]
fn renewal_within_the_rotation_grace_is_not_an_alarm() {
    if !have_root() {
        return;
    }
    let (lab, receiver, pki) = service_lab("Shared Public CA");
    let dir = lab.dir.path();
    let old = pki.ours.clone();
    let new = pki.ca.issue(&["example.org"], 90);
    let server = TlsServer::start(lab.svc(), "198.51.100.10:443", Dialogue::Direct, &old);
    let config = write_config(&lab, &receiver, "");
    append_config(
        &config,
        &pki.target(
            "web",
            "198.51.100.10:443",
            "example.org",
            &pki.ours_file,
            "interval = \"1s\"\nrotation_grace = \"8s\"",
        ),
    );
    let mut agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", Duration::from_secs(10), |_| true);
    std::thread::sleep(Duration::from_millis(1500));
    // Renewal: certbot writes the new certificate; the server is not reloaded.
    new.write(dir, "ours");
    let renewed = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    agent.stop();
    let mut agent = Agent::start(&lab.host, &config, &lab.path("agent2.log"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        receiver.count_kind("tls_mismatch"),
        0,
        "the previous certificate is accepted inside rotation_grace, also after a restart"
    );
    // The grace ends while the server still presents the old certificate.
    let stale = receiver.wait_for("tls_mismatch", Duration::from_secs(15), |b| {
        b["kind"] == "tls_mismatch"
    });
    assert!(renewed.elapsed() >= Duration::from_secs(8));
    assert_eq!(
        stale.body["details"]["seen"]["cert_sha256"],
        old.cert_sha256
    );
    assert_eq!(
        stale.body["details"]["expected"],
        serde_json::json!([new.cert_sha256])
    );
    // The server is reloaded with the new certificate.
    drop(server);
    let _server = TlsServer::start(lab.svc(), "198.51.100.10:443", Dialogue::Direct, &new);
    receiver.wait_kind("tls_recovered", Duration::from_secs(10), |d| {
        d["cert_sha256"] == new.cert_sha256.as_str()
    });
    assert_eq!(receiver.count_kind("tls_mismatch"), 1);
    agent.stop();
}
