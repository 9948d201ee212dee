//! DANE (issue 17, item 5) against real parts: a zone signed by Debian's
//! `ldns-signzone` (keys from `ldns-keygen`), served by Debian's NSD on the
//! host's loopback; the test's KSK is the agent's DNSSEC trust anchor. One
//! service, three ports: 5222's TLSA matches the certificate, 5223's names
//! another key (an interceptor's certificate would look like this), 5224's
//! RRSIG is damaged (bogus: never a match, `dane_unavailable`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::tls::{Dialogue, TlsServer, service_lab};
use common::*;
use serde_json::Value;

/// NSD serving `zone_file` for example.org on 127.0.0.1:5354 in `ns`.
struct Nsd(std::process::Child);

impl Nsd {
    fn start(ns: &str, dir: &Path, zone_file: &Path) -> Nsd {
        let conf = dir.join("nsd.conf");
        let d = dir.display();
        std::fs::write(
            &conf,
            format!(
                "server:\n  ip-address: 127.0.0.1\n  port: 5354\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  database: \"\"\n  zonelistfile: \"{d}/zone.list\"\n  xfrdfile: \"{d}/xfrd.state\"\n  logfile: \"{d}/nsd.log\"\n  server-count: 1\n  verbosity: 2\nremote-control:\n  control-enable: no\nzone:\n  name: example.org\n  zonefile: \"{}\"\n",
                zone_file.display()
            ),
        )
        .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "nsd", "-d", "-c"])
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nsd (apt-get install nsd)");
        wait_for_udp_port(ns, "127.0.0.1:5354");
        // The zone is loaded shortly after the port opens.
        std::thread::sleep(Duration::from_millis(300));
        Nsd(child)
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tool(dir: &Path, cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} (apt-get install ldnsutils): {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Signs the example.org zone with a fresh KSK and ZSK, damages the RRSIG
/// of `_5224._tcp.xmpp`, and returns (signed zone, trust anchor file).
fn signed_zone(dir: &Path, ours_spki: &str, other_spki: &str) -> (PathBuf, PathBuf) {
    let zone = dir.join("example.org.zone");
    std::fs::write(
        &zone,
        format!(
            "$ORIGIN example.org.\n$TTL 300\n@ IN SOA ns.example.org. admin.example.org. 1 3600 600 86400 300\n@ IN NS ns.example.org.\nns IN A 127.0.0.1\nxmpp IN A {SVC_IP}\n_5222._tcp.xmpp IN TLSA 3 1 1 {ours_spki}\n_5223._tcp.xmpp IN TLSA 3 1 1 {other_spki}\n_5224._tcp.xmpp IN TLSA 3 1 1 {ours_spki}\n"
        ),
    )
    .unwrap();
    let ksk = tool(
        dir,
        "ldns-keygen",
        &["-a", "ECDSAP256SHA256", "-k", "example.org"],
    );
    let zsk = tool(
        dir,
        "ldns-keygen",
        &["-a", "ECDSAP256SHA256", "example.org"],
    );
    tool(dir, "ldns-signzone", &["example.org.zone", &zsk, &ksk]);
    let signed = dir.join("example.org.zone.signed");
    // Damage the signature over _5224's TLSA: flip characters of its base64.
    let text = std::fs::read_to_string(&signed).unwrap();
    let mut damaged = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("_5224._tcp.xmpp.example.org.") && l.contains("RRSIG\tTLSA") {
                damaged += 1;
                let (head, sig) = l.rsplit_once(' ').unwrap();
                let flipped: String = sig
                    .chars()
                    .enumerate()
                    .map(|(i, c)| match (i, c) {
                        (4..=12, 'A') => 'B',
                        (4..=12, _) => 'A',
                        _ => c,
                    })
                    .collect();
                format!("{head} {flipped}")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_eq!(damaged, 1, "one RRSIG over _5224's TLSA in:\n{text}");
    std::fs::write(&signed, lines.join("\n") + "\n").unwrap();
    // The zone's keys as its trust anchor ("example.org. 300 IN DNSKEY
    // 257 3 13 ..."): hickory asks the parent for the DS of any key of the
    // zone that is not an anchor, and the test has no parent zone.
    let mut anchors = String::new();
    for k in [&ksk, &zsk] {
        let key = std::fs::read_to_string(dir.join(format!("{k}.key"))).unwrap();
        let fields: Vec<&str> = key.split(';').next().unwrap().split_whitespace().collect();
        let dnskey = fields.iter().position(|f| *f == "DNSKEY").unwrap();
        anchors.push_str(&format!(
            "example.org. 300 IN DNSKEY {}\n",
            fields[dnskey + 1..].join(" ")
        ));
    }
    let anchor = dir.join("anchor.keys");
    std::fs::write(&anchor, anchors).unwrap();
    (signed, anchor)
}

#[test]
fn tlsa_records_match_mismatch_and_bogus_signatures() {
    if !have_root() {
        return;
    }
    let (lab, receiver, pki) = service_lab("DANE Test CA");
    let dir = lab.path("dns");
    std::fs::create_dir_all(&dir).unwrap();
    let other = pki.ca.issue(&["xmpp.example.org"], 90);
    let (signed, anchor) = signed_zone(&dir, &pki.ours.spki_sha256, &other.spki_sha256);
    let _nsd = Nsd::start(&lab.host, &dir, &signed);
    let _servers: Vec<TlsServer> = [5222, 5223, 5224]
        .iter()
        .map(|p| {
            TlsServer::start(
                lab.svc(),
                &format!("{SVC_IP}:{p}"),
                Dialogue::Direct,
                &pki.ours,
            )
        })
        .collect();
    let config = write_config(&lab, &receiver, "");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[tls]\nnameservers = [\"127.0.0.1:5354\"]\ndnssec_trust_anchor = \"{}\"\n",
        anchor.display()
    ));
    for port in [5222, 5223, 5224] {
        text.push_str(&format!(
            "\n[[tls.target]]\nname = \"p{port}\"\naddress = \"xmpp.example.org:{port}\"\nca_file = \"{}\"\ninterval = \"1s\"\npath_check = false\nexpect = {{ dane = true }}\n",
            pki.ca_file.display()
        ));
    }
    std::fs::write(&config, text).unwrap();

    // The monitoring plugin.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.host,
            &agent_binary(),
            "probe",
            "--json",
            "-c",
        ])
        .arg(&config)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(2), "{report:#}");
    let row = |port: u16| -> &Value {
        report["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["target"] == format!("p{port}"))
            .unwrap()
    };
    assert_eq!(row(5222)["status"], "OK", "{:#}", row(5222));
    assert_eq!(row(5222)["dane"]["state"], "match");
    assert_eq!(
        row(5222)["dane"]["tlsa_name"],
        "_5222._tcp.xmpp.example.org"
    );
    assert_eq!(
        row(5222)["dane"]["record"],
        format!("3 1 1 {}", pki.ours.spki_sha256)
    );
    assert_eq!(row(5223)["status"], "CRITICAL", "{:#}", row(5223));
    assert_eq!(row(5223)["dane"]["state"], "mismatch");
    assert_eq!(row(5224)["status"], "WARNING", "{:#}", row(5224));
    assert_eq!(row(5224)["dane"]["state"], "unavailable");
    let why = row(5224)["dane"]["error"].as_str().unwrap();
    assert!(why.contains("bogus") || why.contains("validat"), "{why}");

    // The agent: dane_mismatch for 5223, dane_unavailable for 5224, nothing for 5222.
    let agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    let mismatch = receiver.wait_kind("dane_mismatch", Duration::from_secs(20), |_| true);
    assert_eq!(mismatch["target"], "p5223");
    assert_eq!(mismatch["tlsa"][0], format!("3 1 1 {}", other.spki_sha256));
    assert_eq!(mismatch["cert_sha256"], pki.ours.cert_sha256);
    let bogus = receiver.wait_kind("dane_unavailable", Duration::from_secs(20), |_| true);
    assert_eq!(bogus["target"], "p5224");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(receiver.count_kind("dane_mismatch"), 1);
    assert_eq!(receiver.count_kind("dane_unavailable"), 1);
    assert_eq!(receiver.count_kind("tls_probe_failed"), 0);
    drop(agent);
}
