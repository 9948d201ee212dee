//! Alerts reach a real systemd-journald with the fields of SPEC.md.
//!
//! journald runs in a private mount namespace (tmpfs over /run/systemd and
//! /run/log), so the host's journal, if any, is never touched; the agent runs in
//! that mount namespace and in the lab's host network namespace.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const JOURNALD: &str = "/lib/systemd/systemd-journald";

struct Journald {
    child: std::process::Child,
}

impl Journald {
    fn start() -> Journald {
        let script = "set -e; mkdir -p /run/systemd /run/log; mount -t tmpfs none /run/systemd; mount -t tmpfs none /run/log; \
                      if [ -d /var/log/journal ]; then mount -t tmpfs none /var/log/journal; fi; exec /lib/systemd/systemd-journald";
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                script,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start journald");
        let j = Journald { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !j
            .in_ns(&["test", "-S", "/run/systemd/journal/socket"])
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(
                Instant::now() < deadline,
                "journald did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        j
    }

    fn mount_ns(&self) -> String {
        format!("--mount=/proc/{}/ns/mnt", self.child.id())
    }

    fn in_ns(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(self.mount_ns()).arg("--").args(args);
        c
    }

    /// The netsentry entries in the journal, as `journalctl -o json` prints them.
    fn entries(&self) -> Vec<Value> {
        let out = self
            .in_ns(&[
                "journalctl",
                "-D",
                "/run/log/journal",
                "-o",
                "json",
                "--no-pager",
                "SYSLOG_IDENTIFIER=netsentry",
            ])
            .output()
            .expect("journalctl");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn alerts_are_journal_entries_with_spec_fields() {
    if !have_root() {
        return;
    }
    assert!(
        std::path::Path::new(JOURNALD).exists(),
        "{JOURNALD} is missing: install the systemd package"
    );
    let journald = Journald::start();
    let lab = Lab::new();
    lab.resolve_gateway(GW_IP);
    let receiver = Receiver::start(&lab.host);
    let config = write_config(&lab, &receiver, "");
    // Same config, but journald on.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("journald = \"off\"", "journald = \"on\"");
    std::fs::write(&config, text).unwrap();
    let mount = journald.mount_ns();
    let net = format!("--net=/run/netns/{}", lab.host);
    let _agent = Agent::start_with(
        &["nsenter", &mount, &net, "--"],
        &config,
        &lab.path("agent.log"),
    );
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
    // The frame and the kernel's entry race; the first is the alert.
    let source = sent["details"]["source"].as_str().unwrap().to_string();

    let deadline = Instant::now() + Duration::from_secs(10);
    let entry = loop {
        let entries = journald.entries();
        if let Some(e) = entries.iter().find(|e| {
            e["NETSENTRY_KIND"] == "gateway_mac_changed" && e["NETSENTRY_SOURCE"] == source.as_str()
        }) {
            break e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no gateway_mac_changed entry in the journal; entries: {entries:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(entry["MESSAGE"], sent["summary"]);
    assert_eq!(entry["PRIORITY"], "2");
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "netsentry");
    assert_eq!(entry["NETSENTRY_ALERT_ID"], sent["id"]);
    assert_eq!(entry["NETSENTRY_SEVERITY"], "critical");
    assert_eq!(entry["NETSENTRY_INTERFACE"], "eth0");
    assert_eq!(entry["NETSENTRY_IP"], "192.0.2.1");
    assert_eq!(entry["NETSENTRY_OLD_MAC"], GW_MAC);
    assert_eq!(entry["NETSENTRY_NEW_MAC"], "02:de:ad:be:ef:01");
    assert_eq!(entry["NETSENTRY_SOURCE"], source.as_str());
    // agent_started is an info entry; the agent's own log lines are there too.
    let entries = journald.entries();
    let started = entries
        .iter()
        .find(|e| e["NETSENTRY_KIND"] == "agent_started")
        .expect("agent_started entry");
    assert_eq!(started["PRIORITY"], "6");
    let log_line = entries
        .iter()
        .find(|e| {
            e["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.contains("baseline ready"))
        })
        .expect("log lines go to the journal too");
    // One PRIORITY mapping: an informational log line is 6, like an info alert.
    assert_eq!(log_line["PRIORITY"], "6");
    // Each kind has its MESSAGE_ID (the catalog's key for `journalctl -x`).
    assert_eq!(
        entry["MESSAGE_ID"],
        netsentry::alert::Kind::GatewayMacChanged.message_id()
    );
    assert_ne!(started["MESSAGE_ID"], entry["MESSAGE_ID"]);
}

#[test]
fn journalctl_takes_the_catalog_and_explains_each_kind() {
    // The real journalctl compiles the catalog the package installs.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("usr/lib/systemd/catalog");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("netsentry.catalog"),
        netsentry::alert::journal_catalog(),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("journalctl")
            .arg(format!("--root={}", root.path().display()))
            .args(args)
            .output()
            .expect("journalctl (apt-get install systemd)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    run(&["--update-catalog"]);
    let listed = run(&["--list-catalog"]);
    for kind in netsentry::alert::Kind::ALL {
        assert!(
            listed.contains(&format!(
                "{} netsentry: netsentry: {} (",
                kind.message_id(),
                kind.as_str()
            )),
            "{} not in the compiled catalog:\n{listed}",
            kind.as_str()
        );
    }
    let id = netsentry::alert::Kind::TlsMismatch.message_id();
    let text = run(&["--dump-catalog", &id]);
    assert!(text.contains("jabber.ru"), "{text}");
}
