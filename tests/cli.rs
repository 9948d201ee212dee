//! The command line as a user meets it: exit codes and messages.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

#[test]
fn check_config_prints_the_effective_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.toml");
    std::fs::write(
        &path,
        "[agent]\nhost_id = \"web1\"\nheartbeat_interval = \"90s\"\n",
    )
    .unwrap();
    let (code, out, err) = netsentry(&["check-config", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("host_id = \"web1\""), "{out}");
    assert!(out.contains("heartbeat_interval = \"1m30s\""), "{out}");
    assert!(
        out.contains("state_dir = \"/var/lib/netsentry\""),
        "defaults are shown: {out}"
    );
}

#[test]
fn check_config_points_at_the_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[agent]\nhost_id = \"web1\"\nheartbeat = \"5m\"\n").unwrap();
    let (code, out, err) = netsentry(&["check-config", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    let expected = format!("{}:3:1: unknown field `heartbeat`", path.display());
    assert!(err.starts_with(&expected), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

#[test]
fn unusable_input_is_exit_2_with_one_line() {
    let (code, _, err) = netsentry(&["check-config", "-c", "/nonexistent/netsentry.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("/nonexistent/netsentry.toml: cannot read the configuration"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[webhook]]\nurl = \"ftp://example.net/\"\n").unwrap();
    // `run` with a bad configuration: 78 (EX_CONFIG), which the unit does
    // not restart; check-config says the same with 2.
    let (code, _, err) = netsentry(&["run", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 78);
    assert!(
        err.contains(":2:7: url \"ftp://example.net/\" must start with https://"),
        "{err}"
    );
    let (code, out, err) = netsentry(&["check-config", "--quiet", "-c", path.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.contains(":2:7: url"), "{err}");
    // --quiet (ExecReload=): nothing on stdout when it loads.
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[agent]\nhost_id = \"x\"\n").unwrap();
    let (code, out, _) = netsentry(&["check-config", "--quiet", "-c", good.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (0, ""));
    // probe without targets, and with a config that is not one.
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    // (A monitoring plugin: UNKNOWN, 3, with the reason on stdout.)
    let (code, out, err) = netsentry(&["probe", "-c", empty.to_str().unwrap()]);
    assert_eq!((code, err.as_str()), (3, ""));
    assert_eq!(
        out.trim(),
        "NETSENTRY UNKNOWN - no [[tls.target]] in the configuration: add one (see config/netsentry.toml)"
    );
    let (code, out, _) = netsentry(&["probe", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 3);
    assert_eq!(out.trim_end().lines().count(), 1, "one line: {out}");
    assert!(out.starts_with("NETSENTRY UNKNOWN - "), "{out}");
}

#[test]
fn the_shipped_config_checks() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/netsentry.toml");
    let (code, _, err) = netsentry(&["check-config", "-c", path]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn every_verb_has_help() {
    for verb in [
        "run",
        "check-config",
        "status",
        "baseline",
        "probe",
        "fingerprints",
        "test-alert",
    ] {
        let (code, out, _) = netsentry(&[verb, "--help"]);
        assert_eq!(code, 0);
        assert!(out.contains("--config"), "{verb}: {out}");
    }
}

#[test]
fn status_shows_routes_gateways_links_and_baseline() {
    let Some((lab, receiver, config)) = prepare("") else {
        return;
    };
    let ns = format!("--net=/run/netns/{}", lab.host);
    let binary = agent_binary();
    let status = |json: bool| {
        let mut args = vec![
            ns.as_str(),
            "--",
            binary.as_str(),
            "status",
            "-c",
            config.to_str().unwrap(),
        ];
        if json {
            args.push("--json");
        }
        let out = Command::new("nsenter").args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let s: Value = serde_json::from_str(&status(true)).unwrap();
    assert_eq!(
        s["default_routes"][0]["nexthops"][0]["gateway"],
        "192.0.2.1"
    );
    assert_eq!(s["gateways"][0]["mac"], GW_MAC);
    assert_eq!(s["gateways"][0]["state"], "reachable");
    let eth0 = s["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "eth0")
        .unwrap();
    assert_eq!(eth0["watched"], true);
    assert_eq!(eth0["mtu"], 1500);
    assert!(s["baseline"].is_null());
    let text = status(false);
    assert!(
        text.contains("192.0.2.1") && text.contains("not in baseline"),
        "{text}"
    );

    // After the agent ran once, the baseline is shown.
    let mut agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", std::time::Duration::from_secs(10), |_| {
        true
    });
    agent.stop();
    let s: Value = serde_json::from_str(&status(true)).unwrap();
    assert_eq!(s["baseline"]["gateways"][0]["mac"], GW_MAC);
    assert_eq!(s["gateways"][0]["baseline_mac"], GW_MAC);
}

#[test]
fn a_world_readable_webhook_secret_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("webhook.key");
    std::fs::write(&secret, "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[log]\njournald = \"off\"\n[[webhook]]\nurl = \"http://127.0.0.1:9/\"\nsecret_file = \"{}\"\n",
            dir.path().join("state").display(),
            secret.display()
        ),
    )
    .unwrap();
    let (code, _, err) = netsentry(&["run", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("is readable by everyone: run `chmod 600"),
        "{err}"
    );
}

/// `netsentry check-config | head -1`: the reader goes away; no panic, exit 0.
#[test]
fn a_closed_pipe_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.toml");
    std::fs::write(&path, "[agent]\nhost_id = \"web1\"\n").unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader); // closed before the first byte is written: EPIPE for sure
    let out = Command::new(agent_binary())
        .args(["check-config", "-c", path.to_str().unwrap()])
        .stdout(writer)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A FIFO where the configuration should be would block a read for ever; an
/// empty state_dir would fail only when the agent first saves its state.
#[test]
fn files_that_are_not_files_and_an_empty_state_dir_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.toml");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let started = std::time::Instant::now();
    let (code, _, err) = netsentry(&["check-config", "-c", fifo.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));

    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[agent]\nstate_dir = \"\"\n").unwrap();
    let (code, _, err) = netsentry(&["check-config", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(":2:1: state_dir is empty"), "{err}");

    // A secret_file that is a FIFO: the agent refuses to start, at once.
    let secret = dir.path().join("secret");
    assert!(
        Command::new("mkfifo")
            .args(["-m", "600"])
            .arg(&secret)
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(
        &path,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[log]\njournald = \"off\"\n[arp]\nenabled = false\n[[webhook]]\nurl = \"http://127.0.0.1:9/\"\nsecret_file = \"{}\"\n",
            dir.path().join("state").display(),
            secret.display()
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let (code, _, err) = netsentry(&["run", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// With a receiver and nothing said, heartbeats are on: `kill -9` of the agent
/// is noticed by the silence (item 6 of the trust-defects issue).
#[test]
fn check_config_shows_the_heartbeat_a_receiver_implies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[[webhook]]\nurl = \"https://alerts.example.net/x\"\n",
    )
    .unwrap();
    let (code, out, err) = netsentry(&["check-config", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("heartbeat_interval = \"5m\""), "{out}");
    std::fs::write(&path, "[agent]\nhost_id = \"x\"\n").unwrap();
    let (_, out, _) = netsentry(&["check-config", "-c", path.to_str().unwrap()]);
    assert!(out.contains("heartbeat_interval = \"0s\""), "{out}");
}

#[test]
fn huge_durations_and_duplicate_receivers_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    for (text, want) in [
        (
            "[agent]\ncoalesce_window = \"1000000000d\"\n",
            ":2:19: duration \"1000000000d\" is too long: at most \"3650d\" (ten years)",
        ),
        (
            "[[tls.target]]\nname = \"x\"\naddress = \"192.0.2.1:443\"\nrotation_grace = \"100000000d\"\n",
            ":4:18: duration \"100000000d\" is too long",
        ),
        (
            "[[webhook]]\nurl = \"http://127.0.0.1:9/a\"\nformat = \"alertmanager\"\nresolve_after = \"1000000000d\"\n",
            ":4:17: duration \"1000000000d\" is too long",
        ),
        (
            "[[webhook]]\nurl = \"http://127.0.0.1:9/a\"\nname = \"one\"\n\n[[webhook]]\nurl = \"http://127.0.0.1:9/a\"\n",
            ":6:1: this url is already the one of [[webhook]] number 1 (one): every alert would be sent to it twice",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let (code, _, err) = netsentry(&["check-config", "-c", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{text}");
        assert!(err.contains(want), "{text}\n{err}");
    }
    // The longest allowed one is fine.
    std::fs::write(&path, "[agent]\ncoalesce_window = \"3650d\"\n").unwrap();
    let (code, _, err) = netsentry(&["check-config", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}
