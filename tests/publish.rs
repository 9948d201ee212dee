//! `netsentry keygen` and `[publish]`: the signed fingerprint manifest, as
//! Debian's `minisign` (the reference tool) verifies it, across a renewal
//! and a directory that is not there yet.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::tls::Pki;
use common::*;
use serde_json::Value;

fn minisign_verifies(file: &Path, key: &str) -> (bool, String) {
    let out = std::process::Command::new("minisign")
        .args(["-V", "-m"])
        .arg(file)
        .args(["-P", key])
        .output()
        .expect("minisign (apt-get install minisign)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn keygen_writes_a_private_key_and_refuses_to_overwrite_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("m.key");
    let (code, out, err) = netsentry(&["keygen", "--output", key.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.trim().starts_with("RW") && out.trim().len() == 56,
        "{out}"
    );
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let public = std::fs::read_to_string(dir.path().join("m.key.pub")).unwrap();
    assert!(public.contains(out.trim()), "{public}");
    let (code, _, err) = netsentry(&["keygen", "--output", key.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("File exists") && err.contains("--force"),
        "{err}"
    );
    let (code, again, _) = netsentry(&["keygen", "--output", key.to_str().unwrap(), "--force"]);
    assert_eq!(code, 0);
    assert_ne!(again, out);
}

#[test]
fn the_manifest_follows_a_renewal_and_minisign_verifies_it() {
    let Some((lab, receiver, config)) = prepare("") else {
        return;
    };
    let dir = lab.dir.path();
    let pki = Pki::new(dir, "Publish CA");
    let key = dir.join("manifest.key");
    let (code, line, err) = netsentry(&["keygen", "--output", key.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let line = line.trim().to_string();
    // Served from a directory that does not exist yet: publish_failed first.
    let www = dir.join("www/.well-known/netsentry");
    let path = www.join("fingerprints.json");
    append_config(
        &config,
        &format!(
            "\n[publish]\nkey_file = \"{}\"\npath = \"{}\"\ncert_files = [\"{}\"]\n",
            key.display(),
            path.display(),
            pki.ours_file.display()
        ),
    );
    let _agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    let failed = receiver.wait_kind("publish_failed", Duration::from_secs(10), |_| true);
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("fingerprints.json.minisig"),
        "{failed}"
    );
    std::fs::create_dir_all(&www).unwrap();
    let first = receiver.wait_kind("manifest_published", Duration::from_secs(10), |_| true);
    assert_eq!(first["sequence"], 1);
    assert_eq!(
        first["names"],
        serde_json::json!(["example.org", "xmpp.example.org"])
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let (ok, said) = minisign_verifies(&path, &line);
    assert!(ok, "{said}");
    assert!(said.contains("sequence=1"), "the trusted comment: {said}");
    let m: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(m["format"], "netsentry-manifest/1");
    assert_eq!(m["host"], "testhost");
    assert_eq!(
        m["names"][0]["current"][0]["cert_sha256"],
        pki.ours.cert_sha256
    );
    let text = std::fs::read_to_string(www.join("fingerprints.txt")).unwrap();
    assert!(
        text.contains(&pki.ours.cert_sha256) && text.contains("minisign -Vm"),
        "{text}"
    );

    // A renewal: the ACME client writes a new certificate into the file.
    let renewed = pki.ca.issue(&["example.org", "xmpp.example.org"], 90);
    let written = Instant::now();
    std::fs::write(&pki.ours_file, &renewed.cert_pem).unwrap();
    let second = receiver.wait_for("manifest 2", Duration::from_secs(10), |b| {
        b["kind"] == "manifest_published" && b["details"]["sequence"] == 2
    });
    eprintln!(
        "FIGURE renewal -> manifest_published: {} ms",
        (second.at - written).as_millis()
    );
    let m: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let entry = &m["names"][0];
    assert_eq!(entry["current"][0]["cert_sha256"], renewed.cert_sha256);
    assert_eq!(
        entry["retired"][0]["cert_sha256"], pki.ours.cert_sha256,
        "{m}"
    );
    assert!(minisign_verifies(&path, &line).0);
    // The real tool rejects a changed byte (what a prober must do too).
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.iter().position(|b| *b == b'1').unwrap();
    bytes[at] = b'2';
    let forged = dir.join("forged.json");
    std::fs::write(&forged, &bytes).unwrap();
    std::fs::copy(
        path.with_extension("json.minisig"),
        dir.join("forged.json.minisig"),
    )
    .unwrap();
    assert!(!minisign_verifies(&forged, &line).0);
    // Nothing changed: no new sequence.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(receiver.count_kind("manifest_published"), 2);
}

/// TLSA record data for `3 1 1 <spki>` as dnsmasq's `--dns-rr` hex.
fn tlsa_311(spki_hex: &str) -> String {
    format!("030101{spki_hex}")
}

#[test]
fn a_renewal_with_a_key_the_tlsa_records_do_not_cover_is_dane_stale() {
    let Some((lab, receiver, config)) = prepare("") else {
        return;
    };
    let dir = lab.dir.path();
    let pki = Pki::new(dir, "DANE stale CA");
    let key = dir.join("manifest.key");
    let (code, _, err) = netsentry(&["keygen", "--output", key.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let name = "_5222._tcp.xmpp.example.org";
    let record = |spki: &str| format!("--dns-rr={name},52,{}", tlsa_311(spki));
    let mut dns = Dnsmasq::start(
        &lab.host,
        &[
            "--local=/example.org/".into(),
            record(&pki.ours.spki_sha256),
        ],
    );
    append_config(
        &config,
        &format!(
            "\n[tls]\nnameservers = [\"127.0.0.1:5353\"]\n\n[publish]\nkey_file = \"{}\"\npath = \"{}\"\ncert_files = [\"{}\"]\ntlsa_names = [\"{name}\"]\ntlsa_refresh = \"1s\"\n",
            key.display(),
            dir.join("fingerprints.json").display(),
            pki.ours_file.display()
        ),
    );
    let agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("manifest_published", Duration::from_secs(10), |_| true);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        receiver.count_kind("dane_stale"),
        0,
        "the record covers the key"
    );

    // The ACME client renews with a new key; the server is not reloaded yet.
    let renewed = pki.ca.issue(&["example.org", "xmpp.example.org"], 90);
    renewed.write(dir, "ours");
    let stale = receiver.wait_kind("dane_stale", Duration::from_secs(10), |_| true);
    assert_eq!(stale["tlsa_name"], name);
    assert_eq!(stale["spki_sha256"], renewed.spki_sha256);
    assert_eq!(
        stale["add"],
        format!("{name}. IN TLSA 3 1 1 {}", renewed.spki_sha256)
    );
    assert_eq!(stale["tlsa"][0], format!("3 1 1 {}", pki.ours.spki_sha256));

    // The operator publishes the next key's record: the condition ends.
    drop(dns);
    dns = Dnsmasq::start(
        &lab.host,
        &[
            "--local=/example.org/".into(),
            record(&pki.ours.spki_sha256),
            record(&renewed.spki_sha256),
        ],
    );
    agent.wait_for_log("cover the certificates on disk again", 1);
    assert_eq!(receiver.count_kind("dane_stale"), 1);
    drop(dns);
}
