//! CT monitoring against a local server speaking Cert Spotter's issuances
//! format (the real API is on the internet), and the CAA audit against a real
//! DNS server (Debian's dnsmasq) serving CAA records on loopback.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::tls::Pki;
use common::*;
use serde_json::{Value, json};

/// A Cert Spotter stand-in: `GET /v1/issuances?domain=..&after=..` pages of
/// `page_size` in id order; the first request is answered 429 with Retry-After: 1.
/// Each request: its target (path and query) and its Authorization header.
type RequestLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

struct CertSpotter {
    requests: RequestLog,
    port: u16,
}

/// Files the stand-in also serves (path → body): a peer's signed manifest.
type Files = std::collections::HashMap<String, Vec<u8>>;

impl CertSpotter {
    fn start(ns: &str, issuances: Vec<Value>, page_size: usize, files: Files) -> CertSpotter {
        let listener = in_netns(ns, || TcpListener::bind("127.0.0.1:0").unwrap());
        let port = listener.local_addr().unwrap().port();
        let requests: RequestLog = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut auth = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h
                        .strip_prefix("authorization: ")
                        .or(h.strip_prefix("Authorization: "))
                    {
                        auth = Some(v.trim().to_string());
                    }
                }
                let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut conn = conn;
                if let Some(body) = files.get(&target) {
                    let mut answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    answer.extend_from_slice(body);
                    let _ = conn.write_all(&answer);
                    continue;
                }
                let first = {
                    let mut l = log.lock().unwrap();
                    l.push((target.clone(), auth));
                    l.len() == 1
                };
                if first {
                    let _ = conn.write_all(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                let url = reqwest::Url::parse(&format!("http://x{target}")).unwrap();
                let after: Option<u64> = url
                    .query_pairs()
                    .find(|(k, _)| k == "after")
                    .and_then(|(_, v)| v.parse().ok());
                let page: Vec<&Value> = issuances
                    .iter()
                    .filter(|i| {
                        after.is_none_or(|a| i["id"].as_str().unwrap().parse::<u64>().unwrap() > a)
                    })
                    .take(page_size)
                    .collect();
                let body = serde_json::to_string(&page).unwrap();
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        CertSpotter { requests, port }
    }
}

fn issuance(id: u64, tbs: &str, cert: &str, spki: &str, names: &[&str]) -> Value {
    json!({
        "id": id.to_string(),
        "tbs_sha256": tbs,
        "cert_sha256": cert,
        "pubkey_sha256": spki,
        "dns_names": names,
        "issuer": {"friendly_name": "Let's Encrypt", "name": "C=US, O=Let's Encrypt, CN=R11", "caa_domains": ["letsencrypt.org"]},
        "not_before": "2026-11-01T00:00:00Z",
        "not_after": "2099-01-30T00:00:00Z",
        "revoked": false
    })
}

#[test]
fn ct_reports_only_the_foreign_certificate_once_even_across_restarts() {
    let Some((lab, receiver, config)) = prepare("") else {
        return;
    };
    let dir = lab.dir.path();
    let pki = Pki::new(dir, "CT test CA");
    let rogue = pki.ca.issue(&["xmpp.example.org"], 90);
    // Another of our servers renewed: its certificate is in its signed
    // manifest ([ct] authorized_manifests), not in any file here.
    let peer = pki.ca.issue(&["conference.example.org"], 90);
    let (manifest_files, manifest_key) = peer_manifest(dir, &peer);
    let tbs = |n: u8| format!("{n:02x}").repeat(32);
    let old_expired = {
        let mut v = issuance(1, &tbs(1), &tbs(101), &tbs(201), &["old.example.org"]);
        v["not_after"] = json!("2020-01-01T00:00:00Z");
        v
    };
    let server = CertSpotter::start(
        &lab.host,
        vec![
            old_expired,
            // Ours: its key and certificate are those of our certificate file.
            issuance(
                2,
                &tbs(2),
                &pki.ours.cert_sha256,
                &pki.ours.spki_sha256,
                &["example.org", "xmpp.example.org"],
            ),
            // The interceptor's precertificate and certificate (one TBS).
            issuance(
                3,
                &tbs(3),
                &tbs(103),
                &rogue.spki_sha256,
                &["xmpp.example.org"],
            ),
            issuance(
                4,
                &tbs(3),
                &rogue.cert_sha256,
                &rogue.spki_sha256,
                &["xmpp.example.org"],
            ),
            issuance(
                5,
                &tbs(5),
                &peer.cert_sha256,
                &peer.spki_sha256,
                &["conference.example.org"],
            ),
        ],
        2,
        manifest_files,
    );
    let key = lab.path("certspotter.key");
    std::fs::write(&key, "k-123\n").unwrap();
    append_config(
        &config,
        &format!(
            "\n[ct]\ndomains = [\"example.org\"]\napi_url = \"http://127.0.0.1:{}/v1/issuances\"\napi_key_file = \"{}\"\ninterval = \"1s\"\nauthorized_cert_files = [\"{}\"]\nauthorized_manifests = [{{ url = \"http://127.0.0.1:{}/peer/fingerprints.json\", key = \"{manifest_key}\" }}]\n",
            server.port,
            key.display(),
            pki.ours_file.display(),
            server.port,
        ),
    );
    let mut agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    let d = receiver.wait_kind("ct_unknown_certificate", Duration::from_secs(15), |_| true);
    assert_eq!(d["domain"], "example.org");
    assert_eq!(d["spki_sha256"], rogue.spki_sha256);
    assert_eq!(d["tbs_sha256"], tbs(3));
    assert_eq!(d["issuer"], "Let's Encrypt");
    assert_eq!(d["dns_names"], json!(["xmpp.example.org"]));
    assert_eq!(d["source"], "certspotter");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        receiver.count_kind("ct_unknown_certificate"),
        1,
        "ours, the expired one, the second half of the pair and the peer's renewal are quiet"
    );
    {
        let requests = server.requests.lock().unwrap();
        assert!(requests.len() >= 4, "{requests:?}");
        let (first, auth) = &requests[0];
        assert!(first.starts_with("/v1/issuances?domain=example.org&include_subdomains=true&expand=dns_names&expand=issuer"), "{first}");
        assert_eq!(auth.as_deref(), Some("Bearer k-123"));
        assert!(
            requests.iter().any(|(r, _)| r.ends_with("&after=2")),
            "paged with after: {requests:?}"
        );
    }
    agent.stop();
    // A restart does not re-alert (the position is in state_dir).
    let mut agent = Agent::start(&lab.host, &config, &lab.path("agent2.log"));
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(receiver.count_kind("ct_unknown_certificate"), 1);
    assert!(
        server
            .requests
            .lock()
            .unwrap()
            .iter()
            .rev()
            .take(2)
            .all(|(r, _)| r.contains("after=5")),
        "after the restart the agent asks from where it stopped"
    );
    agent.stop();
    // The certificate history lists our certificate.
    let (code, out, err) = netsentry(&[
        "fingerprints",
        "--history",
        "--json",
        "-c",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let history: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(history[0]["cert_sha256"], pki.ours.cert_sha256);
}

/// A manifest of `cert` signed with a fresh key, as another server's
/// `[publish]` writes it: the files to serve and the public key line.
fn peer_manifest(dir: &std::path::Path, cert: &common::tls::Issued) -> (Files, String) {
    use netsentry::manifest;
    let (secret, _, public) = manifest::keygen("peer").unwrap();
    let key_file = dir.join("peer-manifest.key");
    std::fs::write(&key_file, secret).unwrap();
    let (pem, _) = cert.write(dir, "peer");
    let facts = netsentry::cert::read_leaf(&pem).unwrap();
    let now = chrono::Utc::now();
    let content = manifest::build("peer", &[facts], &[], &[], chrono::Duration::days(1), now);
    let m = manifest::Manifest::new(content, 1, now, chrono::Duration::days(7));
    let bytes = m.to_bytes();
    let sig = manifest::sign(&bytes, &key_file, "peer").unwrap();
    let mut files = Files::new();
    files.insert("/peer/fingerprints.json".into(), bytes);
    files.insert("/peer/fingerprints.json.minisig".into(), sig.into_bytes());
    (files, public)
}

/// CAA record data (RFC 8659): flags, tag length, tag, value — as dnsmasq's
/// `--dns-rr` hex.
fn caa_hex(tag: &str, value: &str) -> String {
    let mut bytes = vec![0u8, tag.len() as u8];
    bytes.extend_from_slice(tag.as_bytes());
    bytes.extend_from_slice(value.as_bytes());
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn caa_audit_flags_only_the_weak_domain() {
    let Some((lab, receiver, config)) = prepare("") else {
        return;
    };
    let strong = "letsencrypt.org; accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/123456; validationmethods=dns-01";
    let dns = Dnsmasq::start(
        &lab.host,
        &[
            "--local=/example.org/".into(),
            "--local=/example.net/".into(),
            "--local=/org/".into(),
            "--local=/net/".into(),
            format!(
                "--dns-rr=strong.example.org,257,{}",
                caa_hex("issue", strong)
            ),
            format!(
                "--dns-rr=strong.example.org,257,{}",
                caa_hex("issuewild", ";")
            ),
            format!(
                "--dns-rr=weak.example.net,257,{}",
                caa_hex("issue", "letsencrypt.org")
            ),
        ],
    );
    append_config(
        &config,
        "\n[caa]\ndomains = [\"xmpp.strong.example.org\", \"weak.example.net\"]\nnameservers = [\"127.0.0.1:5353\"]\ninterval = \"1s\"\n",
    );
    let mut agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    let first = receiver.wait_kind("caa_weak", Duration::from_secs(15), |_| true);
    assert_eq!(first["domain"], "weak.example.net");
    std::thread::sleep(Duration::from_secs(3));
    let weak: Vec<Value> = receiver
        .all()
        .into_iter()
        .filter(|r| r.body["kind"] == "caa_weak")
        .map(|r| r.body["details"].clone())
        .collect();
    assert_eq!(
        weak.len(),
        2,
        "two problems, each once, for the weak domain only: {weak:?}"
    );
    assert!(weak.iter().all(|d| d["domain"] == "weak.example.net"));
    let problems: Vec<&str> = weak
        .iter()
        .map(|d| d["problem"].as_str().unwrap())
        .collect();
    assert!(
        problems[0].contains("no accounturi and no validationmethods"),
        "{}",
        problems[0]
    );
    assert!(
        problems[0].contains("CAA 0 issue \"letsencrypt.org; accounturi="),
        "{}",
        problems[0]
    );
    assert!(problems[1].contains("no issuewild"), "{}", problems[1]);
    assert!(
        !agent
            .log_text()
            .contains("CAA audit of xmpp.strong.example.org:"),
        "{}",
        agent.log_text()
    );
    agent.stop();
    drop(dns);
}
