//! Faults the product must survive without losing or inventing alerts: a full
//! disk under the spool, hostile receivers, a connection flood on `/metrics`.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;

const WAIT: Duration = Duration::from_secs(10);

/// How many times each alert id arrived.
fn ids_seen(receiver: &Receiver) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for r in receiver.all() {
        *seen
            .entry(r.body["id"].as_str().unwrap_or("").to_string())
            .or_insert(0) += 1;
    }
    seen
}

fn wait_until(
    what: &str,
    timeout: Duration,
    mut ok: impl FnMut() -> bool,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}; agent log:\n{}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn alerts_made_while_the_disk_is_full_arrive_once_space_returns() {
    let Some((lab, receiver, _)) = prepare("") else {
        return;
    };
    let disk = SmallDisk::mount(&lab.path("state"), "256k");
    // Links of any name are reported (each new one is an alert), no coalescing in the way.
    let config = write_config(
        &lab,
        &receiver,
        "ignore_links = []\ncoalesce_burst = 1000\nheartbeat_interval = \"0s\"",
    );
    let mut agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", WAIT, |_| true);
    let log = || agent_log(&lab);
    // A delivery happened, so the cursor file exists: then fill the disk.
    std::thread::sleep(Duration::from_millis(300));
    let filler = disk.fill();
    add_links(&lab.host, "full", 20);
    // Some may fit in the last page of the segment; most wait in memory.
    std::thread::sleep(Duration::from_secs(2));
    let while_full = link_added(&receiver, "full");
    std::fs::remove_file(&filler).unwrap();
    add_links(&lab.host, "after", 6);
    wait_until(
        "not every alert arrived after space returned",
        Duration::from_secs(15),
        || link_added(&receiver, "full") == 40 && link_added(&receiver, "after") == 12,
        log,
    );
    eprintln!(
        "full disk: {while_full} of 40 alerts arrived while full, all 40 and 12 more after; log said: {:?}",
        log()
            .lines()
            .filter(|l| l.contains("spooled"))
            .map(|l| l
                .split_once("netsentry")
                .map(|x| x.1)
                .unwrap_or(l)
                .to_string())
            .collect::<Vec<_>>()
    );
    assert!(log().contains("cannot be spooled"), "{}", log());
    // Exactly once each, also across a restart (cursor saved in place) —
    // once the cursor is written: an alert whose delivery was acknowledged
    // but whose cursor was not yet saved is sent again (at-least-once by
    // design; it happened once under CI load when the kill came within
    // milliseconds of the last delivery).
    std::thread::sleep(Duration::from_millis(500));
    agent.kill9();
    let _again = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_for("a second agent_started", WAIT, |b| {
        b["kind"] == "agent_started" && b["details"]["baseline"] == "loaded"
    });
    std::thread::sleep(Duration::from_secs(1));
    let twice: Vec<_> = ids_seen(&receiver)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    assert_eq!(link_added(&receiver, "full"), 40);
    assert_eq!(link_added(&receiver, "after"), 12);
    assert!(!log().contains("half-written"), "{}", log());
}

fn agent_log(lab: &Lab) -> String {
    std::fs::read_to_string(lab.path("agent.log")).unwrap_or_default()
}

/// An HTTP server that answers every request with `answer` (then closes),
/// counting requests by method and path.
struct Hostile {
    port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Hostile {
    fn start(
        ns: &str,
        answer: impl Fn(&mut std::net::TcpStream) + Send + Sync + 'static,
    ) -> Hostile {
        let listener = in_netns(ns, || TcpListener::bind("127.0.0.1:0").unwrap());
        let port = listener.local_addr().unwrap().port();
        let requests: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let seen = requests.clone();
        let answer = std::sync::Arc::new(answer);
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let (seen, answer) = (seen.clone(), answer.clone());
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
                        head.push(byte[0]);
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let len: usize = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    let mut body = vec![0u8; len];
                    let _ = conn.read_exact(&mut body);
                    let line = text.lines().next().unwrap_or("").to_string();
                    seen.lock().unwrap().push(line);
                    answer(&mut conn);
                });
            }
        });
        Hostile { port, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// The agent's resident memory in KiB.
fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn hostile_receivers_cannot_exhaust_memory_or_fake_a_delivery() {
    let Some((lab, receiver, _)) = prepare("") else {
        return;
    };
    // 500 with a body that never ends.
    let endless = Hostile::start(&lab.host, |conn| {
        let _ = conn.write_all(b"HTTP/1.1 500 Oops\r\ncontent-type: text/plain\r\n\r\n");
        let chunk = vec![b'x'; 64 << 10];
        while conn.write_all(&chunk).is_ok() {}
    });
    // 302 to a path that answers 200 (a GET would "deliver" nothing).
    let redirect = Hostile::start(&lab.host, |conn| {
        let _ = conn.write_all(
            b"HTTP/1.1 302 Found\r\nlocation: /elsewhere\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
    });
    // 307 to another origin: the body must not be re-posted there.
    let other = receiver.url();
    let temporary = Hostile::start(&lab.host, move |conn| {
        let reply = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: {other}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        let _ = conn.write_all(reply.as_bytes());
    });
    // 500 with a body trickling in a byte at a time, never ending.
    let slow = Hostile::start(&lab.host, |conn| {
        let _ = conn.write_all(b"HTTP/1.1 500 Slow\r\ncontent-length: 1000000\r\n\r\n");
        while conn.write_all(b"x").is_ok() {
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let config = lab.path("hostile.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nhost_id = \"testhost\"\nstate_dir = \"{}\"\nheartbeat_interval = \"0s\"\n[log]\njournald = \"off\"\n\n\
             [[webhook]]\nname = \"endless\"\nurl = \"{}\"\ntimeout = \"5s\"\n\n\
             [[webhook]]\nname = \"found\"\nurl = \"{}\"\ntimeout = \"2s\"\n\n\
             [[webhook]]\nname = \"temporary\"\nurl = \"{}\"\ntimeout = \"2s\"\n\n\
             [[webhook]]\nname = \"slow\"\nurl = \"{}\"\ntimeout = \"2s\"\n",
            lab.path("state").display(),
            endless.url("/hook"),
            redirect.url("/hook"),
            temporary.url("/hook"),
            slow.url("/hook"),
        ),
    )
    .unwrap();
    let agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    let log = || agent_log(&lab);
    wait_until(
        "no attempt at every receiver",
        WAIT,
        || {
            endless.requests().len() >= 2
                && !redirect.requests().is_empty()
                && !temporary.requests().is_empty()
                && slow.requests().len() >= 2
        },
        log,
    );
    let rss = rss_kib(agent.pid());
    eprintln!("hostile receivers: agent RSS {rss} KiB after two endless 500 answers");
    assert!(rss < 100 << 10, "the agent grew to {rss} KiB");
    // No request ever left the receiver it was meant for.
    std::thread::sleep(Duration::from_millis(500));
    for r in redirect.requests() {
        assert!(r.starts_with("POST /hook "), "followed a redirect: {r}");
    }
    assert!(
        receiver.all().is_empty(),
        "a 307 re-posted the alert to another origin"
    );
    // The redirects are failures the operator can read about.
    assert!(log().contains("redirect (HTTP 302"), "{}", log());
    assert!(log().contains("redirect (HTTP 307"), "{}", log());
    assert!(
        log().contains("HTTP 500 Internal Server Error") || log().contains("HTTP 500"),
        "{}",
        log()
    );
}

/// Requests `/metrics` once, returns the status line.
fn get_metrics(ns: &str, port: u16) -> Option<String> {
    in_netns(ns, move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.lines().next().map(str::to_string)
    })
}

#[test]
fn a_connection_flood_on_metrics_does_not_delay_alerts() {
    let Some((lab, receiver, _)) = prepare("") else {
        return;
    };
    let port = {
        let l = in_netns(&lab.host, || TcpListener::bind("127.0.0.1:0").unwrap());
        l.local_addr().unwrap().port()
    };
    let config = write_config(&lab, &receiver, "ignore_links = []");
    append_config(
        &config,
        &format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", WAIT, |_| true);
    assert!(get_metrics(&lab.host, port).is_some_and(|l| l.contains("200")));
    // 1,500 connections that never send a request, held open.
    let flood: Vec<std::net::TcpStream> = in_netns(&lab.host, move || {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        // Past the listen backlog a connect waits for SYN retries: give up fast.
        let mut held = Vec::new();
        let mut failed = 0;
        while held.len() < 1500 && failed < 3 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(1000)) {
                Ok(s) => held.push(s),
                Err(_) => failed += 1,
            }
        }
        held
    });
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    ip(&lab.host, "link add flood0 type veth peer name flood1");
    receiver.wait_kind("link_added", Duration::from_secs(5), |d| {
        d["interface"] == "flood0"
    });
    let delivered = t0.elapsed();
    let fds = std::fs::read_dir(format!("/proc/{}/fd", agent.pid()))
        .map(|d| d.count())
        .unwrap_or(0);
    eprintln!(
        "metrics flood: {} connections held; alert delivered in {} ms; agent has {fds} descriptors open",
        flood.len(),
        delivered.as_millis()
    );
    assert!(fds < 512, "{fds} descriptors open");
    drop(flood);
    // And it serves again once the flood is gone.
    std::thread::sleep(Duration::from_millis(500));
    assert!(get_metrics(&lab.host, port).is_some_and(|l| l.contains("200")));
}

#[test]
fn a_broken_spool_is_moved_aside_and_the_agent_starts() {
    let Some((lab, receiver, config)) = prepare("") else {
        return;
    };
    std::fs::create_dir_all(lab.path("state")).unwrap();
    // Where the spool directory should be, a file.
    std::fs::write(lab.path("state/spool"), b"not a directory").unwrap();
    let agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", WAIT, |_| true);
    let log = agent.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("moved to"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("spool.broken-"), "{line}");
    // The system's error is said once, not twice.
    assert_eq!(line.matches("os error").count(), 1, "{line}");
    let aside: Vec<_> = std::fs::read_dir(lab.path("state"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("spool.broken-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert!(lab.path("state/spool").is_dir());
    // The log is a file, not a terminal: no colour codes in it.
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a log file:\n{log}"
    );
}

#[test]
fn alerts_written_with_the_baseline_before_a_kill_are_spooled_once_under_their_ids() {
    let Some((lab, receiver, config)) = prepare("") else {
        return;
    };
    let mut agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    let started = receiver.wait_for("agent_started", WAIT, |b| b["kind"] == "agent_started");
    assert_eq!(agent.stop(), Some(0));
    // As a kill between writing the baseline and spooling leaves it: one
    // alert that reached the spool (agent_started), one that did not.
    let path = lab.path("state/baseline.json");
    let mut baseline: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut lost = started.body.clone();
    lost["id"] = "01M8W0000000000000000LOST1".into();
    lost["kind"] = "link_removed".into();
    lost["severity"] = "warning".into();
    lost["summary"] = "link chn7 was removed".into();
    lost["details"] = serde_json::json!({"interface": "chn7"});
    baseline["pending"] = serde_json::json!([started.body, lost]);
    std::fs::write(&path, baseline.to_string()).unwrap();
    let _again = Agent::start(&lab.host, &config, &lab.path("agent2.log"));
    let got = receiver.wait_for("the pending alert", WAIT, |b| b["id"] == lost["id"]);
    assert_eq!(got.body, lost, "spooled as it was written");
    receiver.wait_for("the second agent_started", WAIT, |b| {
        b["kind"] == "agent_started" && b["details"]["baseline"] == "loaded"
    });
    std::thread::sleep(Duration::from_millis(500));
    let ids = ids_seen(&receiver);
    assert_eq!(ids[lost["id"].as_str().unwrap()], 1);
    assert_eq!(
        ids[started.body["id"].as_str().unwrap()],
        1,
        "the spooled one is not sent again"
    );
    // And the baseline is written again without them.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("LOST1"), "{text}");
}

#[test]
fn a_spool_read_error_is_retried_without_waiting_for_the_next_alert() {
    let Some((lab, receiver, config)) = prepare("heartbeat_interval = \"0s\"") else {
        return;
    };
    let agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", WAIT, |_| true);
    std::thread::sleep(Duration::from_millis(300));
    // The segment's path stops being readable (the writer keeps its file).
    let segment = lab.path("state/spool/0000000000000001.seg");
    let aside = lab.path("state/spool/aside");
    std::fs::rename(&segment, &aside).unwrap();
    std::fs::create_dir(&segment).unwrap();
    // One alert, so that no second append wakes the receiver's task.
    ip(&lab.host, "link set eth0 mtu 1400");
    agent.wait_for_log("cannot read the spool", 1);
    // Readable again; no other alert comes, the retry must find it.
    std::fs::remove_dir(&segment).unwrap();
    std::fs::rename(&aside, &segment).unwrap();
    let t0 = Instant::now();
    receiver.wait_kind("link_mtu_changed", WAIT, |d| d["interface"] == "eth0");
    eprintln!(
        "delivered {} ms after the spool became readable",
        t0.elapsed().as_millis()
    );
}
