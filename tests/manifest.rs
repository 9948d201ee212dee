//! Two agents and a signed manifest: the server (`svc`) publishes with
//! `[publish]`, a small HTTP server serves the files, a TLS service presents
//! the certificate; the prober (`host`) expects only `{ manifest,
//! manifest_key }`. A renewal (file first, server reloaded later) raises
//! nothing; an interceptor does; a manifest signed with another key and a
//! replayed older one are `manifest_invalid`; the HTTP server down is
//! `manifest_unavailable` and the checks go on with the kept copy.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::tls::{Dialogue, Pki, TlsServer};
use common::*;

/// Serves the files of a directory (switchable) over HTTP/1.0 on `addr` in
/// a namespace; stopped on drop (connections refused afterwards).
struct StaticServer {
    root: Arc<Mutex<PathBuf>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StaticServer {
    fn start(ns: &str, addr: &str, root: PathBuf) -> StaticServer {
        let addr = addr.to_string();
        let listener = in_netns(ns, move || {
            let l = TcpListener::bind(&addr).unwrap();
            l.set_nonblocking(true).unwrap();
            l
        });
        let root = Arc::new(Mutex::new(root));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, st) = (root.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let mut line = String::new();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let _ = reader.read_line(&mut line);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) <= 2 {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let file = r.lock().unwrap().join(path.trim_start_matches('/'));
                let _ = match std::fs::read(&file) {
                    Ok(body) => conn
                        .write_all(
                            format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                                .as_bytes(),
                        )
                        .and_then(|_| conn.write_all(&body)),
                    Err(_) => {
                        conn.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    }
                };
            }
        });
        StaticServer {
            root,
            stop,
            thread: Some(thread),
        }
    }

    fn serve_from(&self, dir: PathBuf) {
        *self.root.lock().unwrap() = dir;
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const WELL_KNOWN: &str = ".well-known/netsentry";

fn kinds(r: &Receiver) -> Vec<String> {
    r.all()
        .iter()
        .map(|x| x.body["kind"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn a_prober_with_only_a_manifest_survives_a_renewal_and_catches_forgeries() {
    if !have_root() {
        return;
    }
    let lab = Lab::with_service();
    assert_eq!(lab.resolve_gateway(GW_IP), GW_MAC);
    let dir = lab.dir.path().to_path_buf();
    let pki = Pki::new(&dir, "Fleet CA");
    let key = dir.join("manifest.key");
    let (code, line, _) = netsentry(&["keygen", "--output", key.to_str().unwrap()]);
    assert_eq!(code, 0);
    let line = line.trim().to_string();

    // The server: publishes; the files are served over HTTP; TLS on 5223.
    let www = dir.join("www");
    std::fs::create_dir_all(www.join(WELL_KNOWN)).unwrap();
    let server_rx = Receiver::start(lab.svc());
    let server_config = dir.join("server.toml");
    std::fs::write(
        &server_config,
        format!(
            "[agent]\nhost_id = \"xmpp-server\"\nstate_dir = \"{}\"\n[log]\njournald = \"off\"\n[[webhook]]\nurl = \"{}\"\n[inbound]\nenabled = false\n[publish]\nkey_file = \"{}\"\npath = \"{}\"\ncert_files = [\"{}\"]\n",
            dir.join("server-state").display(),
            server_rx.url(),
            key.display(),
            www.join(WELL_KNOWN).join("fingerprints.json").display(),
            pki.ours_file.display()
        ),
    )
    .unwrap();
    let _server = Agent::start(lab.svc(), &server_config, &dir.join("server.log"));
    server_rx.wait_kind("manifest_published", Duration::from_secs(10), |d| {
        d["sequence"] == 1
    });
    let first_copy = dir.join("sequence-1");
    std::fs::create_dir_all(first_copy.join(WELL_KNOWN)).unwrap();
    for f in ["fingerprints.json", "fingerprints.json.minisig"] {
        std::fs::copy(
            www.join(WELL_KNOWN).join(f),
            first_copy.join(WELL_KNOWN).join(f),
        )
        .unwrap();
    }
    let http = StaticServer::start(lab.svc(), "198.51.100.10:8080", www.clone());
    let mut tls = Some(TlsServer::start(
        lab.svc(),
        "198.51.100.10:5223",
        Dialogue::Direct,
        &pki.ours,
    ));

    // The prober: no files, no pins, only the manifest.
    let prober_rx = Receiver::start(&lab.host);
    let url = format!("http://198.51.100.10:8080/{WELL_KNOWN}/fingerprints.json");
    let prober_config = dir.join("prober.toml");
    std::fs::write(
        &prober_config,
        format!(
            "[agent]\nhost_id = \"prober\"\nstate_dir = \"{}\"\n[log]\njournald = \"off\"\n[[webhook]]\nurl = \"{}\"\n[tls]\nmanifest_refresh = \"1s\"\n[[tls.target]]\nname = \"xmpps\"\naddress = \"198.51.100.10:5223\"\nserver_name = \"xmpp.example.org\"\nca_file = \"{}\"\ninterval = \"1s\"\ntimeout = \"3s\"\npath_check = false\nexpect = {{ manifest = \"{url}\", manifest_key = \"{line}\" }}\n",
            dir.join("prober-state").display(),
            prober_rx.url(),
            pki.ca_file.display()
        ),
    )
    .unwrap();
    let (code, out, err) =
        netsentry_in(&lab.host, &["probe", "-c", prober_config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("OK xmpps") && out.contains("[manifest 1, generated"),
        "{out}"
    );
    let _prober = Agent::start(&lab.host, &prober_config, &dir.join("prober.log"));
    prober_rx.wait_kind("agent_started", Duration::from_secs(10), |_| true);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !kinds(&prober_rx)
            .iter()
            .any(|k| k.starts_with("tls_mismatch") || k.starts_with("manifest")),
        "{:?}",
        kinds(&prober_rx)
    );

    // A renewal: the new certificate is written, the server reloads 4 s later.
    let renewed = pki.ca.issue(&["example.org", "xmpp.example.org"], 90);
    std::fs::write(&pki.ours_file, &renewed.cert_pem).unwrap();
    server_rx.wait_kind("manifest_published", Duration::from_secs(10), |d| {
        d["sequence"] == 2
    });
    std::thread::sleep(Duration::from_secs(4));
    drop(tls.take());
    tls = Some(TlsServer::start(
        lab.svc(),
        "198.51.100.10:5223",
        Dialogue::Direct,
        &renewed,
    ));
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !kinds(&prober_rx)
            .iter()
            .any(|k| k == "tls_mismatch" || k.starts_with("manifest")),
        "across the renewal: {:?}",
        kinds(&prober_rx)
    );

    // An interceptor with a certificate from the same CA.
    let rogue = pki.ca.issue(&["example.org", "xmpp.example.org"], 90);
    let _interceptor = TlsServer::start(&lab.mitm, "0.0.0.0:5223", Dialogue::Direct, &rogue);
    lab.intercept_service();
    let mismatch = prober_rx.wait_kind("tls_mismatch", Duration::from_secs(10), |_| true);
    assert_eq!(mismatch["seen"]["cert_sha256"], rogue.cert_sha256);
    lab.restore_service();
    prober_rx.wait_for("recovered", Duration::from_secs(10), |b| {
        b["kind"] == "tls_recovered"
    });

    // A manifest signed with another key.
    let other_key = dir.join("other.key");
    assert_eq!(
        netsentry(&["keygen", "--output", other_key.to_str().unwrap()]).0,
        0
    );
    let forged = dir.join("forged");
    std::fs::create_dir_all(forged.join(WELL_KNOWN)).unwrap();
    let bytes = std::fs::read(www.join(WELL_KNOWN).join("fingerprints.json")).unwrap();
    std::fs::write(forged.join(WELL_KNOWN).join("fingerprints.json"), &bytes).unwrap();
    let sig = netsentry::manifest::sign(&bytes, &other_key, "forged").unwrap();
    std::fs::write(
        forged.join(WELL_KNOWN).join("fingerprints.json.minisig"),
        sig,
    )
    .unwrap();
    http.serve_from(forged);
    let invalid = prober_rx.wait_for("manifest_invalid", Duration::from_secs(10), |b| {
        b["kind"] == "manifest_invalid"
    });
    assert_eq!(invalid.body["severity"], "critical");
    assert!(
        invalid.body["details"]["error"]
            .as_str()
            .unwrap()
            .contains("signature"),
        "{}",
        invalid.body
    );
    // The older manifest, replayed with its valid signature.
    http.serve_from(first_copy);
    let replay = prober_rx.wait_for("rollback", Duration::from_secs(10), |b| {
        b["kind"] == "manifest_invalid"
            && b["details"]["error"]
                .as_str()
                .unwrap_or("")
                .contains("older than")
    });
    assert_eq!(replay.body["details"]["sequence_in_use"], 2);

    // The manifest server goes away: manifest_unavailable, the kept copy is used.
    http.serve_from(www.clone());
    std::thread::sleep(Duration::from_secs(5));
    let before: Vec<String> = prober_rx
        .all()
        .iter()
        .filter(|r| r.body["kind"] == "manifest_unavailable")
        .map(|r| r.body["id"].as_str().unwrap().to_string())
        .collect();
    drop(http);
    let unavailable = prober_rx
        .wait_for("manifest_unavailable", Duration::from_secs(15), |b| {
            b["kind"] == "manifest_unavailable" && !before.iter().any(|id| b["id"] == id.as_str())
        })
        .body;
    assert_eq!(unavailable["severity"], "warning");
    assert_eq!(
        unavailable["details"]["sequence_in_use"], 2,
        "{unavailable}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        kinds(&prober_rx)
            .iter()
            .filter(|k| *k == "tls_mismatch")
            .count(),
        1,
        "{:?}",
        kinds(&prober_rx)
    );
    drop(tls);
}
