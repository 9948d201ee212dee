//! TLS checks against real servers in namespaces: direct TLS and STARTTLS
//! (in-test SMTP/IMAP/POP3 servers following the RFC dialogues, a real Prosody
//! for XMPP), a real SOCKS5 proxy, misbehaving servers, and the command line.

mod common;

use std::path::Path;
use std::time::Duration;

use common::tls::{Dialogue, Pki, Prosody, Socks5Proxy, TlsServer, plugin_output};
use common::*;
use serde_json::Value;

/// A target of these tests: server name example.org, 2 s timeout.
fn target(
    name: &str,
    address: &str,
    starttls: &str,
    p: &Pki,
    expect: &Path,
    extra: &str,
) -> String {
    p.target(
        name,
        address,
        "example.org",
        expect,
        &format!("starttls = \"{starttls}\"\ntimeout = \"2s\"\n{extra}"),
    )
}

fn parse(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn probe_direct_and_starttls_servers_and_what_goes_wrong() {
    if !have_root() {
        return;
    }
    let lab = Lab::with_service();
    let svc = lab.svc().to_string();
    let dir = lab.dir.path();
    let p = Pki::new(dir, "netsentry test CA");
    let soon = p.ca.issue(&["example.org"], 5);
    let (soon_file, _) = soon.write(dir, "soon");
    let other = p.ca.issue(&["example.org"], 90);
    let (other_file, _) = other.write(dir, "other");
    let _servers = [
        TlsServer::start(&svc, "198.51.100.10:443", Dialogue::Direct, &p.ours),
        TlsServer::start(&svc, "198.51.100.10:25", Dialogue::Smtp, &p.ours),
        TlsServer::start(&svc, "198.51.100.10:143", Dialogue::Imap, &p.ours),
        TlsServer::start(&svc, "198.51.100.10:110", Dialogue::Pop3, &p.ours),
        TlsServer::start(&svc, "198.51.100.10:8443", Dialogue::Direct, &soon),
        TlsServer::start(&svc, "198.51.100.10:8080", Dialogue::PlainText, &p.ours),
        TlsServer::start(&svc, "198.51.100.10:8444", Dialogue::Silent, &p.ours),
        TlsServer::start(&svc, "198.51.100.10:2525", Dialogue::EndlessBanner, &p.ours),
    ];
    let ours = &p.ours_file;
    let mut text = String::from("[tls]\nconcurrency = 4\n");
    text += &target("web", "198.51.100.10:443", "none", &p, ours, "");
    text += &target("smtp", "198.51.100.10:25", "smtp", &p, ours, "");
    text += &target("imap", "198.51.100.10:143", "imap", &p, ours, "");
    text += &target("pop3", "198.51.100.10:110", "pop3", &p, ours, "");
    text += &target("soon", "198.51.100.10:8443", "none", &p, &soon_file, "");
    text += &target("wrong", "198.51.100.10:443", "none", &p, &other_file, "");
    text += &target("plain", "198.51.100.10:8080", "none", &p, ours, "");
    text += &target("silent", "198.51.100.10:8444", "none", &p, ours, "");
    text += &target("closed", "198.51.100.10:9", "smtp", &p, ours, "");
    text += &target("nostarttls", "198.51.100.10:443", "smtp", &p, ours, "");
    text += &target("endless", "198.51.100.10:2525", "smtp", &p, ours, "");
    let config = lab.path("probe.toml");
    std::fs::write(&config, text).unwrap();
    let c = config.to_str().unwrap();
    let host = lab.host.clone();

    // Our certificate, on the wire as on disk, with and without STARTTLS.
    let (code, out, err) = netsentry_in(&host, &["probe", "-c", c, "web", "smtp", "imap", "pop3"]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    // The plugin's first line: the state, a summary, perfdata per endpoint.
    assert_eq!(
        plugin_output(code, &out).len(),
        4 * 3,
        "days_left, time, hops each"
    );
    let (status, perf) = lines[0].split_once(" | ").expect("perfdata");
    assert_eq!(status, "NETSENTRY OK - 4 checks OK");
    for name in ["web", "smtp", "imap", "pop3"] {
        assert!(
            perf.contains(&format!("'{name} days_left'=89;14:;")),
            "{perf}"
        );
        assert!(perf.contains(&format!("'{name} time'=")), "{perf}");
    }
    for (line, name) in lines[1..].iter().zip(["web", "smtp", "imap", "pop3"]) {
        assert!(
            line.starts_with(&format!("OK {name} (198.51.100.10:")),
            "{line}"
        );
        assert!(line.contains(&p.ours.cert_sha256), "{line}");
        assert!(line.contains("chain valid"), "{line}");
    }

    let (code, out, _) = netsentry_in(&host, &["probe", "-c", c, "--json", "smtp"]);
    assert_eq!(code, 0);
    let v = parse(&out);
    assert_eq!(v["status"], "OK");
    let t = &v["targets"][0];
    assert_eq!(t["seen"]["cert_sha256"], p.ours.cert_sha256);
    assert_eq!(t["seen"]["spki_sha256"], p.ours.spki_sha256);
    assert_eq!(t["seen"]["chain_valid"], true);
    assert_eq!(t["seen"]["issuer"], "CN=netsentry test CA");
    assert_eq!(t["peer"], "198.51.100.10:25");
    assert_eq!(t["local"], false);
    assert_eq!(t["expected"][0], p.ours.cert_sha256);

    // Close to expiry: warning.
    let (code, out, _) = netsentry_in(&host, &["probe", "-c", c, "soon"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("NETSENTRY WARNING - soon ("), "{out}");
    plugin_output(code, &out);
    assert!(
        out.lines().nth(1).unwrap().starts_with("WARNING soon"),
        "{out}"
    );
    // -w moves the warning, -C makes it critical.
    let (code, out, _) = netsentry_in(&host, &["probe", "-c", c, "-w", "1", "soon"]);
    assert_eq!(code, 0, "{out}");
    let perf = out.lines().next().unwrap().split_once(" | ").unwrap().1;
    assert!(
        perf.starts_with("'soon days_left'=4;1:; ") || perf.starts_with("'soon days_left'=5;1:; "),
        "{perf}"
    );
    let (code, out, _) = netsentry_in(
        &host,
        &["probe", "-c", c, "-w", "30", "-C", "7", "web", "soon"],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.starts_with("NETSENTRY CRITICAL - soon ("), "{out}");
    plugin_output(code, &out);
    assert!(out.contains("ends within 7 days (-C)"), "{out}");

    // A valid certificate from the right CA that is not the one we hold: critical.
    let (code, out, _) = netsentry_in(&host, &["probe", "-c", c, "wrong", "web"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.starts_with("NETSENTRY CRITICAL - wrong ("), "{out}");
    assert!(out.contains("1 of 2 checks not OK"), "{out}");
    plugin_output(code, &out);
    assert!(
        out.lines().nth(1).unwrap().starts_with("CRITICAL wrong"),
        "{out}"
    );
    assert!(out.contains("certificate is NOT ours"), "{out}");
    assert!(out.contains(&p.ours.cert_sha256), "{out}");

    // Misbehaving servers: precise errors, bounded time, exit 3.
    let started = std::time::Instant::now();
    let (code, out, _) = netsentry_in(
        &host,
        &[
            "probe",
            "-c",
            c,
            "--json",
            "plain",
            "silent",
            "closed",
            "nostarttls",
            "endless",
        ],
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "bounded by the 2 s timeouts"
    );
    assert_eq!(code, 3, "{out}");
    let v = parse(&out);
    let error = |i: usize| {
        v["targets"][i]["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(error(0).starts_with("TLS handshake: "), "{}", error(0));
    assert_eq!(error(1), "timed out after 2s while in the TLS handshake");
    assert!(
        error(2).starts_with("connect to 198.51.100.10:9: Connection refused"),
        "{}",
        error(2)
    );
    assert!(
        error(3).starts_with("timed out after 2s while in the smtp STARTTLS dialogue"),
        "{}",
        error(3)
    );
    assert_eq!(
        error(4),
        "STARTTLS (smtp): the server sent a line longer than 4096 bytes"
    );
    assert_eq!(v["targets"][0]["status"], "UNKNOWN");

    // Unusable input: UNKNOWN (3), said on stdout (what a monitoring system shows).
    let (code, out, _) = netsentry_in(&host, &["probe", "-c", c, "nosuch"]);
    assert_eq!(code, 3);
    assert!(
        out.starts_with("NETSENTRY UNKNOWN - no tls target named \"nosuch\""),
        "{out}"
    );
    let (code, out, _) = netsentry_in(&host, &["probe", "-c", c, "--frobnicate"]);
    assert_eq!(code, 3);
    assert!(
        out.starts_with("NETSENTRY UNKNOWN - netsentry probe: unexpected argument"),
        "{out}"
    );

    // No configuration: one address on the command line.
    let spki = p.ours.spki_sha256.as_str();
    let ca = p.ca_file.to_str().unwrap();
    let adhoc = |extra: &[&str]| {
        let mut args = vec![
            "probe",
            "--address",
            "198.51.100.10:25",
            "--starttls",
            "smtp",
            "--server-name",
            "example.org",
            "--ca-file",
            ca,
        ];
        args.extend_from_slice(extra);
        netsentry_in(&host, &args)
    };
    let (code, out, _) = adhoc(&["--expect-spki", spki]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("NETSENTRY OK - 1 checks OK | '198.51.100.10 days_left'=89;14:;"),
        "{out}"
    );
    let other = "ab".repeat(32);
    let (code, out, _) = adhoc(&["--expect-spki", &other]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("certificate is NOT ours"), "{out}");
    let (code, out, _) = adhoc(&["--expect-spki", "12"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.starts_with("NETSENTRY UNKNOWN - "), "{out}");
    assert!(out.contains("\"12\" is not a SHA-256 value"), "{out}");
}

#[test]
fn fingerprints_of_certificate_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pki::new(dir.path(), "netsentry test CA");
    let chain = dir.path().join("fullchain.pem");
    std::fs::write(&chain, format!("{}{}", p.ours.cert_pem, p.ca.pem())).unwrap();
    let (code, out, err) = netsentry(&["fingerprints", "--json", chain.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let v = parse(&out);
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["cert_sha256"], p.ours.cert_sha256);
    assert_eq!(v[0]["spki_sha256"], p.ours.spki_sha256);
    assert_eq!(v[0]["dns_names"][1], "xmpp.example.org");
    assert_eq!(v[1]["subject"], "CN=netsentry test CA");
    let (code, out, _) = netsentry(&["fingerprints", p.ours_file.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains(&p.ours.spki_sha256), "{out}");
    assert!(out.contains("subject      CN=example.org"), "{out}");
    // From the configuration's expected files.
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        target("x", "192.0.2.1:443", "none", &p, &p.ours_file, ""),
    )
    .unwrap();
    let (code, out, _) = netsentry(&["fingerprints", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains(&p.ours.cert_sha256), "{out}");
    let (code, _, err) = netsentry(&["fingerprints", "/nonexistent.pem"]);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        "netsentry fingerprints: cannot read /nonexistent.pem: No such file or directory (os error 2)"
    );
}

#[test]
fn xmpp_starttls_against_prosody_and_through_a_socks5_proxy() {
    if !have_root() {
        return;
    }
    let lab = Lab::with_service();
    let svc = lab.svc().to_string();
    let dir = lab.dir.path();
    let p = Pki::new(dir, "netsentry test CA");
    let (_, key) = p.ours.write(dir, "example.org");
    let _prosody = Prosody::start(&svc, dir, &dir.join("example.org.pem"), &key, None);
    // The proxy runs on the service side; the TLS server behind it listens on
    // the service's own loopback, which only the proxy can reach.
    let _proxy = Socks5Proxy::start(&svc, "198.51.100.10", 1080);
    let _hidden = TlsServer::start(&svc, "127.0.0.1:4443", Dialogue::Smtp, &p.ours);

    let ours = &p.ours_file;
    let mut text = target("xmpp", "198.51.100.10:5222", "xmpp", &p, ours, "");
    text += &target(
        "xmpp-s2s",
        "198.51.100.10:5269",
        "xmpp-server",
        &p,
        ours,
        "",
    );
    text += &target(
        "proxied",
        "127.0.0.1:4443",
        "smtp",
        &p,
        ours,
        "via = \"socks5://198.51.100.10:1080\"",
    );
    text += &target("direct-loopback", "127.0.0.1:4443", "smtp", &p, ours, "");
    let config = lab.path("probe.toml");
    std::fs::write(&config, text).unwrap();
    let c = config.to_str().unwrap();

    let (code, out, err) = netsentry_in(
        &lab.host,
        &["probe", "-c", c, "--json", "xmpp", "xmpp-s2s", "proxied"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let v = parse(&out);
    for t in v["targets"].as_array().unwrap() {
        assert_eq!(t["status"], "OK", "{t}");
        assert_eq!(t["seen"]["cert_sha256"], p.ours.cert_sha256);
        assert_eq!(t["seen"]["chain_valid"], true);
    }
    assert_eq!(
        v["targets"][2]["vantage"],
        "via socks5://198.51.100.10:1080"
    );
    assert_eq!(v["targets"][2]["peer"], Value::Null);

    // Without the proxy the same address is the host's own loopback: nothing
    // listens there, and the check says it never left the host.
    let (code, out, _) = netsentry_in(&lab.host, &["probe", "-c", c, "direct-loopback"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("Connection refused"), "{out}");
    assert!(out.contains("this check never leaves the host"), "{out}");
}
