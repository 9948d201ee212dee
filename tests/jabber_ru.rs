//! The jabber.ru interception, replayed end to end with real parts.
//!
//! - `svc` (198.51.100.10) is the server: a real **Prosody** with c2s STARTTLS
//!   on 5222 and direct TLS on 5223, a plain TCP listener on 22, and a
//!   netsentry agent with default settings (only `[inbound] window` shortened).
//! - `gw` is the provider's router in front of it.
//! - `host` (initial TTL 50) and `mitm` (initial TTL 120) are internet
//!   clients connecting to 22, 5222 and 5223 all the time; `host` also runs
//!   the outside prober: a netsentry agent with TLS targets on 5222 (with
//!   `reference_port = 22`) and 5223.
//! - The interception: on `gw`, nftables `tproxy` hands **only 5222** to a
//!   transparent proxy that answers STARTTLS with its own certificate from the
//!   same CA and opens its own connection to the server from the client's
//!   address (TTL 64, zero hops away: "without intermediate hops").
//!
//! Expected: on the server `inbound_path_changed` for 5222 only, and with the
//! link flap before it `interception_suspected`; on the prober `tls_mismatch`
//! and `path_length_mismatch` for 5222 (one hop short of 22) and
//! `interception_suspected`; nothing for 5223 or 22; afterwards
//! `inbound_path_restored` and `tls_recovered`. An agent installed while the
//! interception runs says `reason = "siblings"`.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::inbound::{Clients, Listeners, set_initial_ttl};
use common::tls::{Dialogue, Pki, Prosody, TransparentInterceptor};
use common::*;
use serde_json::Value;

const WINDOW: &str = "10s";

fn svc(port: u16) -> SocketAddr {
    format!("{SVC_IP}:{port}").parse().unwrap()
}

/// A config for an agent with its own state directory and receiver.
fn agent_config(lab: &Lab, name: &str, receiver: &Receiver, extra: &str) -> PathBuf {
    let path = lab.path(&format!("{name}.toml"));
    let text = format!(
        "[agent]\nhost_id = \"{name}\"\nstate_dir = \"{}\"\n[log]\njournald = \"off\"\n\n[[webhook]]\nurl = \"{}\"\ntimeout = \"2s\"\n{extra}\n",
        lab.path(&format!("{name}-state")).display(),
        receiver.url()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn kinds(receiver: &Receiver) -> Vec<String> {
    receiver
        .all()
        .iter()
        .map(|r| r.body["kind"].as_str().unwrap_or("").to_string())
        .collect()
}

fn wait(
    receiver: &Receiver,
    kind: &str,
    secs: u64,
    pred: impl Fn(&Value) -> bool,
) -> common::Received {
    receiver.wait_for(kind, Duration::from_secs(secs), |b| {
        b["kind"] == kind && pred(b)
    })
}

fn ids(alerts: &[&common::Received]) -> Vec<String> {
    alerts
        .iter()
        .map(|r| r.body["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn jabber_ru_is_caught_on_the_server_and_from_outside() {
    if !have_root() {
        return;
    }
    let lab = Lab::with_service();
    assert_eq!(lab.resolve_gateway(GW_IP), GW_MAC);
    let dir = lab.dir.path();
    let pki = Pki::new(dir, "Shared Public CA");
    let (_, key) = pki.ours.write(dir, "example.org");
    let _prosody = Prosody::start(
        lab.svc(),
        dir,
        &dir.join("example.org.pem"),
        &key,
        Some(5223),
    );
    let _ssh = Listeners::start(lab.svc(), &["198.51.100.10:22"]);
    set_initial_ttl(&lab.host, 50);
    set_initial_ttl(&lab.mitm, 120);
    ip(&lab.mitm, "route add default via 192.0.2.1");
    let ports = [svc(22), svc(5222), svc(5223)];
    let _clients: Vec<Clients> = [&lab.host, &lab.mitm]
        .into_iter()
        .map(|ns| Clients::start(ns, None, &ports, Duration::from_millis(40)))
        .collect();

    // The server's agent: defaults, a short window.
    let server_rx = Receiver::start(lab.svc());
    let server_config = agent_config(
        &lab,
        "server",
        &server_rx,
        &format!("[inbound]\nwindow = \"{WINDOW}\"\n"),
    );
    let mut server = Agent::start(lab.svc(), &server_config, &lab.path("server.log"));
    wait(&server_rx, "agent_started", 10, |_| true);
    server.wait_for_log("watching the SYNs to TCP ports 22, 5222, 5223", 1);

    // The outside prober.
    let prober_rx = Receiver::start(&lab.host);
    let checks = "interval = \"2s\"\ntimeout = \"3s\"";
    let targets = pki.target(
        "xmpp",
        "198.51.100.10:5222",
        "example.org",
        &pki.ours_file,
        &format!("starttls = \"xmpp\"\nreference_port = 22\n{checks}"),
    ) + &pki.target(
        "xmpps",
        "198.51.100.10:5223",
        "example.org",
        &pki.ours_file,
        checks,
    );
    let prober_config = agent_config(&lab, "prober", &prober_rx, &targets);
    let (code, out, err) =
        netsentry_in(&lab.host, &["probe", "-c", prober_config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("port 5222 answers at hop 2; port 22 at hop 2"),
        "{out}"
    );
    assert!(out.contains("port 5223 answers at hop 2"), "{out}");
    let _prober = Agent::start(&lab.host, &prober_config, &lab.path("prober.log"));
    wait(&prober_rx, "agent_started", 10, |_| true);

    // Two windows of normal life: the server learns its ports' clients.
    std::thread::sleep(Duration::from_secs(21));
    for rx in [&server_rx, &prober_rx] {
        let k = kinds(rx);
        assert!(
            !k.iter()
                .any(|k| k.contains("mismatch") || k.contains("path") || k.contains("suspected")),
            "before the interception: {k:?}"
        );
    }

    // At the first rogue issuance: the server's NIC loses its link a moment.
    ip(&lab.gw, "link set eth1 down");
    std::thread::sleep(Duration::from_millis(1500));
    ip(&lab.gw, "link set eth1 up");
    let flap = wait(&server_rx, "link_down", 10, |b| {
        b["details"]["interface"] == "eth0"
    });

    // The provider's router redirects 5222, and only 5222.
    let rogue = pki.ca.issue(&["example.org", "xmpp.example.org"], 90);
    let started = Instant::now();
    let interceptor = TransparentInterceptor::start(&lab.gw, svc(5222), Dialogue::Xmpp, &rogue);

    // On the server.
    let changed = wait(&server_rx, "inbound_path_changed", 25, |_| true);
    let d = &changed.body["details"];
    assert_eq!(
        (d["port"].as_u64(), d["reason"].as_str()),
        (Some(5222), Some("baseline")),
        "{d}"
    );
    assert_eq!(d["now"]["hops"], 0, "{d}");
    assert_eq!(d["now"]["ttl"], 64, "{d}");
    assert_eq!(d["before"]["p10_hops"], 9, "{d}");
    assert_eq!(d["before"]["p90_hops"], 15, "{d}");
    eprintln!(
        "FIGURE interception -> inbound_path_changed at the webhook: {} ms (window {WINDOW})",
        (changed.at - started).as_millis()
    );
    let suspected = wait(&server_rx, "interception_suspected", 5, |_| true);
    let evidence = &suspected.body["details"]["evidence"];
    for id in ids(&[&flap, &changed]) {
        assert!(
            evidence
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e == id.as_str()),
            "{evidence}"
        );
    }
    assert!(
        interceptor
            .upstream
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );

    // From outside.
    let mismatch = wait(&prober_rx, "tls_mismatch", 10, |_| true);
    assert_eq!(mismatch.body["details"]["target"], "xmpp");
    assert_eq!(
        mismatch.body["details"]["seen"]["cert_sha256"],
        rogue.cert_sha256
    );
    let path = wait(&prober_rx, "path_length_mismatch", 15, |_| true);
    let p = &path.body["details"];
    assert_eq!(
        (p["target"].as_str(), p["port"].as_u64(), p["hops"].as_u64()),
        (Some("xmpp"), Some(5222), Some(1)),
        "{p}"
    );
    assert_eq!(
        (p["reference_port"].as_u64(), p["reference_hops"].as_u64()),
        (Some(22), Some(2)),
        "{p}"
    );
    assert_eq!(
        p["routers"]["reference"],
        serde_json::json!(["192.0.2.1"]),
        "{p}"
    );
    eprintln!(
        "FIGURE interception -> path_length_mismatch at the webhook: {} ms (interval 2s)",
        (path.at - started).as_millis()
    );
    // With no expectation at all this alone would say it: 5222 presents
    // another key than 5223 for the same name.
    let inconsistent = wait(&prober_rx, "tls_inconsistent", 10, |_| true);
    assert_eq!(
        inconsistent.body["details"]["endpoint"], "xmpp",
        "{}",
        inconsistent.body
    );
    assert_eq!(
        inconsistent.body["details"]["spki_sha256"],
        rogue.spki_sha256
    );
    let outside = wait(&prober_rx, "interception_suspected", 10, |_| true);
    let kinds_in = outside.body["details"]["evidence_kinds"].to_string();
    // The first pair of evidence makes it: the certificate, and the key that
    // differs from 5223's (or the path length, whichever came first).
    assert!(
        kinds_in.contains("tls_mismatch")
            && (kinds_in.contains("path_length_mismatch") || kinds_in.contains("tls_inconsistent")),
        "{kinds_in}"
    );

    // Nothing for 5223 or 22.
    std::thread::sleep(Duration::from_secs(5));
    for r in server_rx.all() {
        if r.body["kind"] == "inbound_path_changed" {
            assert_eq!(r.body["details"]["port"], 5222, "{}", r.body);
        }
    }
    for r in prober_rx.all() {
        if matches!(
            r.body["kind"].as_str(),
            Some("tls_mismatch" | "path_length_mismatch")
        ) {
            assert_eq!(r.body["details"]["target"], "xmpp", "{}", r.body);
        }
    }

    // The interception ends.
    drop(interceptor);
    wait(&server_rx, "inbound_path_restored", 25, |b| {
        b["details"]["port"] == 5222
    });
    wait(&prober_rx, "tls_recovered", 10, |b| {
        b["details"]["target"] == "xmpp"
    });
    server.stop();

    // An agent installed while the interception already runs.
    let _again = TransparentInterceptor::start(&lab.gw, svc(5222), Dialogue::Xmpp, &rogue);
    let late_rx = Receiver::start(lab.svc());
    let late_config = agent_config(
        &lab,
        "late",
        &late_rx,
        &format!("[inbound]\nwindow = \"{WINDOW}\"\n"),
    );
    let _late = Agent::start(lab.svc(), &late_config, &lab.path("late.log"));
    let late = wait(&late_rx, "inbound_path_changed", 25, |_| true);
    assert_eq!(late.body["details"]["reason"], "siblings", "{}", late.body);
    assert_eq!(late.body["details"]["port"], 5222);
    assert_eq!(
        late.body["details"]["before"]["ports"],
        serde_json::json!([22, 5223])
    );
}
