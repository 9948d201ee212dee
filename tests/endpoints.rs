//! Every endpoint of a service (issue 17, items 3 and 4): a real DNS server
//! (Debian's dnsmasq) serves `_xmpp-client._tcp` (5222) and
//! `_xmpps-client._tcp` (5223) for example.org, whose SRV target has two
//! addresses. An interceptor with a certificate from the same CA answers
//! 5222 at one of the two addresses only. The agent's alerts name that
//! address and nothing else; the targets without any expectation still
//! report `tls_inconsistent` (5222 differs from 5223: jabber.ru); `netsentry
//! probe` says the same, endpoint by endpoint.

mod common;

use std::time::Duration;

use common::tls::{Dialogue, Pki, TlsServer, service_lab};
use common::*;

const GOOD: &str = "198.51.100.10";
const TAKEN: &str = "198.51.100.11";

/// The two SRV names, and two A records for their target.
fn dns(ns: &str) -> Dnsmasq {
    Dnsmasq::start(
        ns,
        &[
            "--local=/example.org/".into(),
            "--srv-host=_xmpp-client._tcp.example.org,xmpp.example.org,5222,0,5".into(),
            "--srv-host=_xmpps-client._tcp.example.org,xmpp.example.org,5223,0,5".into(),
            format!("--host-record=xmpp.example.org,{GOOD}"),
            format!("--host-record=xmpp.example.org,{TAKEN}"),
        ],
    )
}

/// The service on both addresses (our certificate), except 5222 at
/// `TAKEN`, which the interceptor answers with its own CA-valid certificate.
fn servers(lab: &Lab, pki: &Pki) -> Vec<TlsServer> {
    let svc = lab.svc();
    ip(svc, &format!("addr add {TAKEN}/24 dev eth0"));
    let rogue = pki.ca.issue(&["example.org", "xmpp.example.org"], 90);
    vec![
        TlsServer::start(svc, &format!("{GOOD}:5222"), Dialogue::Direct, &pki.ours),
        TlsServer::start(svc, &format!("{GOOD}:5223"), Dialogue::Direct, &pki.ours),
        TlsServer::start(svc, &format!("{TAKEN}:5223"), Dialogue::Direct, &pki.ours),
        TlsServer::start(svc, &format!("{TAKEN}:5222"), Dialogue::Direct, &rogue),
    ]
}

/// `[tls]` with the test's DNS server, and the targets: two services with no
/// expectation, one pinned to our certificate, one host name (every address).
fn targets(pki: &Pki) -> String {
    let ca = pki.ca_file.display();
    let ours = pki.ours_file.display();
    format!(
        r#"
[tls]
nameservers = ["127.0.0.1:5353"]
failures_before_alert = 1

[[tls.target]]
name = "c2s"
srv = "_xmpp-client._tcp.example.org"
interval = "1s"
ca_file = "{ca}"
path_check = false
timeout = "2s"

[[tls.target]]
name = "c2s-direct"
srv = "_xmpps-client._tcp.example.org"
interval = "1s"
ca_file = "{ca}"
path_check = false
timeout = "2s"

[[tls.target]]
name = "pinned"
srv = "_xmpp-client._tcp.example.org"
interval = "1s"
ca_file = "{ca}"
path_check = false
timeout = "2s"
expect = {{ cert_files = ["{ours}"] }}

[[tls.target]]
name = "byname"
address = "xmpp.example.org:5222"
server_name = "example.org"
ca_file = "{ca}"
path_check = false
timeout = "2s"
expect = {{ cert_files = ["{ours}"] }}
"#
    )
}

#[test]
fn an_interceptor_at_one_address_is_named_and_only_that_address() {
    if !have_root() {
        return;
    }
    let (lab, receiver, pki) = service_lab("Endpoints Test CA");
    let _dns = dns(&lab.host);
    let mut servers = servers(&lab, &pki);
    let config = write_config(&lab, &receiver, "");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&targets(&pki));
    std::fs::write(&config, text).unwrap();

    // The monitoring plugin first: one line per endpoint, the taken address
    // CRITICAL for the pinned targets and, without expectation, as the odd one.
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.host, &agent_binary(), "probe", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.starts_with("NETSENTRY CRITICAL - "), "{stdout}");
    assert!(
        stdout.contains(&format!("'c2s@{TAKEN}:5222 days_left'=")),
        "perfdata per endpoint: {stdout}"
    );
    let lines: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(
        lines.len(),
        8,
        "two endpoints for each of 4 targets:\n{stdout}"
    );
    for line in &lines {
        let taken_5222 = line.contains(&format!("{TAKEN}:5222"));
        assert_eq!(line.starts_with("CRITICAL"), taken_5222, "{line}");
        assert!(
            line.contains("xmpp.example.org 198.51.100.1"),
            "names the host and address: {line}"
        );
    }
    let c2s_taken = lines
        .iter()
        .find(|l| l.starts_with("CRITICAL c2s ") && l.contains(TAKEN))
        .expect("c2s at the taken address");
    assert!(c2s_taken.contains("INCONSISTENT"), "{c2s_taken}");
    assert!(c2s_taken.contains(&pki.ours.spki_sha256), "{c2s_taken}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("OK c2s-direct ") && l.contains("no expectation")),
        "{stdout}"
    );

    // The agent.
    let agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    let odd = receiver
        .wait_for("tls_inconsistent", Duration::from_secs(20), |a| {
            a["kind"] == "tls_inconsistent"
                && a["details"]["endpoint"] == format!("c2s@{TAKEN}:5222")
        })
        .body;
    assert_eq!(odd["severity"], "critical");
    assert_eq!(odd["details"]["usual_spki_sha256"], pki.ours.spki_sha256);
    for target in ["pinned", "byname"] {
        let mismatch = receiver
            .all()
            .into_iter()
            .map(|a| a.body)
            .find(|a| a["kind"] == "tls_mismatch" && a["details"]["target"] == target)
            .unwrap_or_else(|| panic!("no tls_mismatch for {target}"));
        assert_eq!(mismatch["details"]["address"], format!("{TAKEN}:5222"));
        let summary = mismatch["summary"].as_str().unwrap();
        assert!(summary.contains(&format!("{TAKEN}:5222")), "{summary}");
    }
    // A few more rounds: nothing names the good address, or 5223.
    std::thread::sleep(Duration::from_secs(4));
    for a in receiver.all() {
        let kind = a.body["kind"].as_str().unwrap_or_default().to_string();
        if !["tls_mismatch", "tls_inconsistent", "tls_probe_failed"].contains(&kind.as_str()) {
            continue;
        }
        let d = &a.body["details"];
        let named = d["address"]
            .as_str()
            .or(d["endpoint"].as_str())
            .unwrap_or_default();
        assert!(
            named.ends_with(&format!("{TAKEN}:5222")),
            "an alert about another endpoint: {}",
            a.body
        );
    }
    assert_eq!(receiver.count_kind("tls_probe_failed"), 0);

    // The interceptor leaves: the conditions end (Alertmanager resolves them).
    drop(servers.pop());
    servers.push(TlsServer::start(
        lab.svc(),
        &format!("{TAKEN}:5222"),
        Dialogue::Direct,
        &pki.ours,
    ));
    agent.wait_for_log(
        &format!(
            "c2s@{TAKEN}:5222 presents the same key for example.org as the other endpoints again"
        ),
        1,
    );
    agent.wait_for_log("pinned presents our certificate again", 1);
    drop(agent);
}
