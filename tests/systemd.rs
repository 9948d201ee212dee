//! Running under systemd: sd_notify (READY, WATCHDOG, RELOADING, STOPPING),
//! reload on SIGHUP (valid: takes effect, keeps baseline and spool; invalid:
//! rejected with an alert, the agent carries on), and the agent working with
//! nothing but CAP_NET_RAW as an unprivileged user, as the packaged unit runs it.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;
use netsentry::wire::build;

const WAIT: Duration = Duration::from_secs(10);

fn hup(agent: &Agent) {
    unsafe { libc::kill(agent.pid(), libc::SIGHUP) };
}

/// An unsolicited ARP reply from the attacker claiming the gateway's address.
fn poison_gateway(lab: &Lab) {
    let mitm = mac_bytes(MITM_MAC);
    let host = mac_bytes(&lab.host_mac());
    let frame = build::arp(
        mitm,
        host,
        true,
        mitm,
        GW_IP.parse().unwrap(),
        host,
        "192.0.2.10".parse().unwrap(),
    );
    send_frames(&lab.mitm, "eth0", vec![frame]);
}

#[test]
fn sd_notify_ready_watchdog_reloading_stopping() {
    let Some((lab, receiver, config)) = prepare("") else {
        return;
    };
    let socket_path = lab.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let notify = format!("NOTIFY_SOCKET={}", socket_path.display());
    let mut agent = Agent::start_with(
        &[
            "ip",
            "netns",
            "exec",
            &lab.host,
            "env",
            &notify,
            "WATCHDOG_USEC=400000",
        ],
        &config,
        &lab.path("agent.log"),
    );
    let mut seen: Vec<String> = Vec::new();
    let read_until = |what: &str, seen: &mut Vec<String>| {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 4096];
        while !seen.iter().any(|m| m.lines().any(|l| l == what)) {
            assert!(Instant::now() < deadline, "no {what}; got {seen:?}");
            if let Ok(n) = socket.recv(&mut buf) {
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    };
    read_until("READY=1", &mut seen);
    receiver.wait_kind("agent_started", WAIT, |_| true);
    let ready = seen.iter().find(|m| m.starts_with("READY=1")).unwrap();
    assert!(ready.contains("STATUS=watching eth0"), "{ready}");
    // Pings at half of WATCHDOG_USEC.
    seen.clear();
    let t0 = Instant::now();
    read_until("WATCHDOG=1", &mut seen);
    seen.clear();
    read_until("WATCHDOG=1", &mut seen);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "watchdog pings every 200 ms"
    );
    seen.clear();
    hup(&agent);
    read_until("RELOADING=1", &mut seen);
    read_until("READY=1", &mut seen);
    let reloading = seen.iter().find(|m| m.starts_with("RELOADING=1")).unwrap();
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    seen.clear();
    assert_eq!(agent.stop(), Some(0));
    read_until("STOPPING=1", &mut seen);
}

#[test]
fn sighup_reloads_a_valid_config_and_rejects_an_invalid_one() {
    let Some(Running {
        lab,
        receiver,
        agent,
    }) = start_agent("")
    else {
        return;
    };
    let config = lab.path("netsentry.toml");
    // An alert waits in the spool while the receiver is down.
    receiver.set_status(503);
    ip(&lab.lan, "link set phost down");
    std::thread::sleep(Duration::from_millis(300));
    ip(&lab.lan, "link set phost up");
    std::thread::sleep(Duration::from_millis(500));

    // A valid new config: heartbeats every second.
    write_config(&lab, &receiver, "heartbeat_interval = \"1s\"");
    hup(&agent);
    receiver.set_status(200);
    let reloaded = receiver.wait_kind("config_reloaded", WAIT, |_| true);
    assert_eq!(reloaded["changed"], serde_json::json!(["agent"]));
    assert_eq!(reloaded["needs_restart"], serde_json::json!([]));
    receiver.wait_kind("agent_heartbeat", WAIT, |_| true);
    // The spooled alert was not lost by the reload.
    receiver.wait_kind("link_down", WAIT, |d| d["interface"] == "eth0");

    // An invalid one: rejected, with the position of the mistake.
    std::fs::write(&config, "[agent]\nbogus = 1\n").unwrap();
    hup(&agent);
    let rejected = receiver.wait_for("config_rejected", WAIT, |b| b["kind"] == "config_rejected");
    assert_eq!(rejected.body["severity"], "warning");
    let error = rejected.body["details"]["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("{}:2:1: unknown field `bogus`", config.display())),
        "{error}"
    );
    // The agent carries on with the running config: heartbeats go on, and the
    // baseline is the one from before (the gateway's real MAC is the old one).
    let beats = receiver.count_kind("agent_heartbeat");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(receiver.count_kind("agent_heartbeat") > beats);
    poison_gateway(&lab);
    let d = receiver.wait_kind("gateway_mac_changed", WAIT, |d| d["source"] == "arp");
    assert_eq!(d["old_mac"], GW_MAC);
    assert_eq!(
        receiver.count_kind("agent_started"),
        1,
        "no restart happened"
    );
}

/// The capabilities in /proc/PID/status of `pid`: (effective, bounding).
fn capabilities(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(|v| u64::from_str_radix(v, 16).unwrap())
            .unwrap()
    };
    (field("CapEff:"), field("CapBnd:"))
}

#[test]
fn runs_unprivileged_with_only_cap_net_raw() {
    let Some((lab, receiver, config)) = prepare("") else {
        return;
    };
    // The state directory belongs to the service user (systemd's StateDirectory= does this).
    let state = lab.path("state");
    std::fs::create_dir_all(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    std::os::unix::fs::chown(lab.dir.path(), Some(65534), None).unwrap();
    let mut agent = Agent::start_with(
        &[
            "ip",
            "netns",
            "exec",
            &lab.host,
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all,+net_raw",
            "--ambient-caps=-all,+net_raw",
            "--bounding-set=-all,+net_raw",
            "--no-new-privs",
        ],
        &config,
        &lab.path("agent.log"),
    );
    receiver.wait_kind("agent_started", WAIT, |_| true);
    let (effective, bounding) = capabilities(agent.pid());
    let net_raw = 1u64 << 13;
    assert_eq!(
        (effective, bounding),
        (net_raw, net_raw),
        "only CAP_NET_RAW"
    );
    let uid = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    assert!(
        uid.lines().any(|l| l.starts_with("Uid:\t65534\t65534")),
        "{uid}"
    );
    std::thread::sleep(Duration::from_millis(300));
    // Capture works: a forged ARP reply on the wire.
    poison_gateway(&lab);
    receiver.wait_kind("gateway_mac_changed", WAIT, |d| d["source"] == "arp");
    // Netlink works: a link flap.
    ip(&lab.lan, "link set phost down");
    receiver.wait_kind("link_down", WAIT, |d| d["interface"] == "eth0");
    ip(&lab.lan, "link set phost up");
    assert!(
        !agent.log_text().contains("CAP_NET_RAW"),
        "no complaint about missing privileges: {}",
        agent.log_text()
    );
    assert!(state.join("baseline.json").exists());
    assert_eq!(agent.stop(), Some(0));
}
