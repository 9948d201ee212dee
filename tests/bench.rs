//! Benchmarks (not timed tests): run them with
//!
//!     cargo test --release --test bench -- --ignored --nocapture --test-threads=1
//!
//! and copy the printed figures into docs/BENCHMARKS.md. They need root (namespaces).

mod common;

use std::time::{Duration, Instant};

use common::*;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// CPU time (user + system, all threads) of a process in nanoseconds, from schedstat.
fn cpu_ns(pid: i32) -> u64 {
    let mut total = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            total += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

fn status_kib(pid: i32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn running_agent(extra: &str) -> Option<(Lab, Receiver, Agent)> {
    let Running {
        lab,
        receiver,
        agent,
    } = start_agent(extra)?;
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{}/comm", agent.pid()))
            .unwrap()
            .trim(),
        "netsentry"
    );
    Some((lab, receiver, agent))
}

#[test]
#[ignore]
fn bench_gratuitous_arp_to_webhook_latency() {
    let trials: usize = std::env::var("NETSENTRY_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let Some((lab, receiver, _agent)) = running_agent("coalesce_burst = 1000") else {
        return;
    };
    let mut ms = Vec::with_capacity(trials);
    for n in 0..trials {
        let mac = format!("02:be:00:00:{:02x}:{:02x}", n / 256, n % 256);
        let sent = Instant::now();
        send_gratuitous_arp(&lab.gw, "eth0", GW_IP.parse().unwrap(), mac_bytes(&mac));
        let got = receiver.wait_for(&mac, Duration::from_secs(5), |b| {
            b["details"]["new_mac"] == mac.as_str()
        });
        ms.push(got.at.duration_since(sent).as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(20));
    }
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "BENCH latency gratuitous ARP -> webhook: n={trials} median={:.2} ms p90={:.2} ms p99={:.2} ms min={:.2} ms max={:.2} ms",
        percentile(&ms, 0.5),
        percentile(&ms, 0.9),
        percentile(&ms, 0.99),
        ms[0],
        ms[ms.len() - 1]
    );
}

#[test]
#[ignore]
fn bench_idle_cost() {
    let secs: u64 = std::env::var("NETSENTRY_BENCH_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let Some((_lab, _receiver, agent)) = running_agent("") else {
        return;
    };
    std::thread::sleep(Duration::from_secs(1));
    let pid = agent.pid();
    let cpu0 = cpu_ns(pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let cpu = cpu_ns(pid) - cpu0;
    let wall = t0.elapsed();
    println!(
        "BENCH idle {secs} s: cpu={:.3} ms ({:.5}% of a core) peak_rss={} KiB rss={} KiB threads={}",
        cpu as f64 / 1e6,
        cpu as f64 / wall.as_nanos() as f64 * 100.0,
        status_kib(pid, "VmHWM:"),
        status_kib(pid, "VmRSS:"),
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count())
            .unwrap_or(0)
    );
}

#[test]
#[ignore]
fn bench_neighbour_churn() {
    let Some((lab, receiver, agent)) = running_agent("") else {
        return;
    };
    let batch = write_burst(&lab, "02:de:ad:be:ef:99");
    let pid = agent.pid();
    let cpu0 = cpu_ns(pid);
    let t0 = Instant::now();
    lab.ip(&lab.host, &["-batch", batch.to_str().unwrap()]);
    let burst = t0.elapsed();
    let got = receiver.wait_for("gateway_mac_changed", Duration::from_secs(30), |b| {
        b["kind"] == "gateway_mac_changed"
    });
    // Let the agent finish the queue before reading its CPU time.
    std::thread::sleep(Duration::from_millis(500));
    let cpu = cpu_ns(pid) - cpu0;
    let log = agent.log_text();
    println!(
        "BENCH churn {BURST_UPDATES} neighbour updates: burst={:.2} s ({:.0}/s) reported_at={:.2} s after start agent_cpu={:.2} s ({:.2} us/update) overrun_redumps={} peak_rss={} KiB",
        burst.as_secs_f64(),
        BURST_UPDATES as f64 / burst.as_secs_f64(),
        got.at.duration_since(t0).as_secs_f64(),
        cpu as f64 / 1e9,
        cpu as f64 / 1e3 / BURST_UPDATES as f64,
        log.matches("full dump after overrun").count(),
        status_kib(pid, "VmHWM:")
    );
}

/// The capture of the replay benchmark: 1,000 stations in 198.18.0.0/15 taking
/// turns (one ARP request each per round, 1 ms apart), 2,000 rounds = 2,000,000
/// frames, with 200 MAC changes: stations 0-99 move to a new MAC at round 500;
/// stations 100-149 move at round 700 and flip back at round 1400.
fn write_replay_capture(path: &std::path::Path) {
    use pcap_file::pcap::{PcapPacket, PcapWriter};
    use std::net::Ipv4Addr;
    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut w = PcapWriter::new(file).unwrap();
    let target = Ipv4Addr::new(198, 18, 0, 254);
    for round in 0..2000u32 {
        for s in 0..1000u32 {
            let moved = (s < 100 && round >= 500)
                || ((100..150).contains(&s) && (700..1400).contains(&round));
            let mac = [
                0x02,
                0x00,
                if moved { 0xbb } else { 0xaa },
                0x00,
                (s >> 8) as u8,
                s as u8,
            ];
            let ip = Ipv4Addr::new(198, 18, (s / 250) as u8, (s % 250 + 1) as u8);
            let frame = netsentry::wire::build::arp(mac, [0xff; 6], false, mac, ip, [0; 6], target);
            let k = round as u64 * 1000 + s as u64;
            let ts = Duration::from_secs(1_800_000_000) + Duration::from_millis(k);
            w.write_packet(&PcapPacket::new(ts, frame.len() as u32, &frame))
                .unwrap();
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// `netsentry replay` vs `arpwatch -r` on the same capture (Debian's arpwatch,
/// run in an empty network namespace so that its reverse DNS fails at once).
#[test]
#[ignore]
fn bench_replay_vs_arpwatch() {
    if !have_root() {
        return;
    }
    assert!(
        std::path::Path::new("/usr/sbin/arpwatch").exists(),
        "install Debian's arpwatch"
    );
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("stations.pcap");
    let t = Instant::now();
    write_replay_capture(&pcap);
    println!(
        "generated {} ({} MB) in {:.1} s",
        pcap.display(),
        std::fs::metadata(&pcap).unwrap().len() >> 20,
        t.elapsed().as_secs_f64()
    );
    let ns = format!("nsbench{}", std::process::id());
    common::run("ip", &["netns", "add", &ns]);
    struct DropNs(String);
    impl Drop for DropNs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
        }
    }
    let _ns = DropNs(ns.clone());
    let runs = 3;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut our_out, mut their_out) = (String::new(), String::new());
    for _ in 0..runs {
        let t = Instant::now();
        let out = std::process::Command::new(agent_binary())
            .args(["replay", pcap.to_str().unwrap(), "--json"])
            .output()
            .unwrap();
        ours.push(t.elapsed().as_secs_f64());
        assert!(out.status.success());
        our_out = String::from_utf8_lossy(&out.stdout).into_owned();

        let dat = dir.path().join("arp.dat");
        std::fs::write(&dat, "").unwrap();
        let t = Instant::now();
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "arpwatch",
                "-d",
                "-N",
                "-Q",
                "-n",
                "198.18.0.0/15",
                "-f",
                dat.to_str().unwrap(),
                "-r",
                pcap.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        theirs.push(t.elapsed().as_secs_f64());
        their_out = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
    }
    // arpwatch's changes: "Subject: changed ethernet address (IP)" and "flip flop (IP)".
    let mut theirs_changes: Vec<(String, String)> = their_out
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("Subject: ")?;
            let (what, ip) = if let Some(r) = rest.strip_prefix("changed ethernet address (") {
                ("changed", r)
            } else if let Some(r) = rest.strip_prefix("flip flop (") {
                ("flip flop", r)
            } else {
                return None;
            };
            Some((what.to_string(), ip.split(')').next()?.to_string()))
        })
        .collect();
    let mut our_changes: Vec<(String, String)> = our_out
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let what = match v["kind"].as_str()? {
                "arp_mac_changed" => "changed",
                "arp_flip_flop" => "flip flop",
                _ => return None,
            };
            Some((what.to_string(), v["details"]["ip"].as_str()?.to_string()))
        })
        .collect();
    theirs_changes.sort();
    our_changes.sort();
    let missing: Vec<_> = theirs_changes
        .iter()
        .filter(|c| !our_changes.contains(c))
        .collect();
    assert!(
        missing.is_empty(),
        "netsentry missed what arpwatch reported: {missing:?}"
    );
    let (o, t) = (median(ours.clone()), median(theirs.clone()));
    println!(
        "BENCH replay 2,000,000 frames / 1,000 stations / 200 changes: netsentry median {o:.3} s (runs {}), arpwatch median {t:.3} s (runs {}), ratio {:.1}x; changes reported: netsentry {} (changed {}, flip flop {}), arpwatch {}",
        secs(&ours),
        secs(&theirs),
        t / o,
        our_changes.len(),
        our_changes.iter().filter(|c| c.0 == "changed").count(),
        our_changes.iter().filter(|c| c.0 == "flip flop").count(),
        theirs_changes.len()
    );
}

fn secs(v: &[f64]) -> String {
    v.iter()
        .map(|s| format!("{s:.3}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Sends `frames` from `ns` at `fps` (in 1 ms batches); returns the time just
/// before frame `mark` was handed to the kernel.
fn send_paced(ns: &str, frames: Vec<Vec<u8>>, fps: u32, mark: usize) -> Instant {
    in_netns(ns, move || unsafe {
        let iface = std::ffi::CString::new("eth0").unwrap();
        let index = libc::if_nametoindex(iface.as_ptr());
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(fd >= 0);
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        let per_ms = (fps / 1000).max(1) as usize;
        let start = Instant::now();
        let mut marked = start;
        for (i, frame) in frames.iter().enumerate() {
            if i % per_ms == 0 {
                let due = start + Duration::from_micros((i / per_ms) as u64 * 1000);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            addr.sll_addr[..6].copy_from_slice(&frame[..6]);
            if i == mark {
                marked = Instant::now();
            }
            while libc::sendto(
                fd,
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            ) < 0
            {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        libc::close(fd);
        marked
    })
}

/// 100,000 random ARP frames at 50,000 frames/s with a gateway spoof in the middle.
#[test]
#[ignore]
fn bench_arp_flood() {
    let Some((lab, receiver, agent)) = running_agent("coalesce_window = \"5s\"") else {
        return;
    };
    std::thread::sleep(Duration::from_millis(200));
    let host = mac_bytes(&lab.host_mac());
    let n = 100_000u32;
    let spoof = [2, 0xde, 0xad, 0xbe, 0xef, 0x51];
    let frames = flood_frames(n, spoof, host);
    let pid = agent.pid();
    let cpu0 = cpu_ns(pid);
    let t0 = Instant::now();
    let spoof_sent = send_paced(&lab.mitm, frames, 50_000, (n / 2) as usize);
    let flood_s = t0.elapsed().as_secs_f64();
    let got = receiver.wait_for("spoof", Duration::from_secs(10), |b| {
        b["kind"] == "gateway_mac_changed" && b["details"]["new_mac"] == "02:de:ad:be:ef:51"
    });
    std::thread::sleep(Duration::from_secs(6));
    let cpu = cpu_ns(pid) - cpu0;
    let alerts = receiver.all();
    let suppressed: u64 = alerts
        .iter()
        .filter(|a| a.body["kind"] == "alerts_suppressed")
        .map(|a| a.body["details"]["count"].as_u64().unwrap_or(0))
        .sum();
    let log = agent.log_text();
    println!(
        "BENCH flood {n} frames at 50k/s ({flood_s:.2} s): agent CPU {:.2} s = {:.0}% of a core during the flood; peak RSS {} KiB; alerts sent {} ({} held back in alerts_suppressed); spoof alert {:.1} ms after the spoof frame; kernel drops logged: {}",
        cpu as f64 / 1e9,
        cpu as f64 / 1e9 / flood_s * 100.0,
        status_kib(pid, "VmHWM:"),
        alerts.len(),
        suppressed,
        got.at.duration_since(spoof_sent).as_secs_f64() * 1000.0,
        log.contains("kernel dropped")
    );
}

/// Agent CPU while iperf3 pushes TCP at full speed across the watched interface.
#[test]
#[ignore]
fn bench_cpu_under_tcp_load() {
    assert!(
        std::path::Path::new("/usr/bin/iperf3").exists(),
        "install Debian's iperf3"
    );
    let Some((lab, _receiver, agent)) = running_agent("") else {
        return;
    };
    let mut server = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.host,
            "iperf3",
            "-s",
            "-1",
            "-B",
            "192.0.2.10",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let pid = agent.pid();
    let cpu0 = cpu_ns(pid);
    let t0 = Instant::now();
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.gw,
            "iperf3",
            "-c",
            "192.0.2.10",
            "-t",
            "10",
            "-f",
            "g",
        ])
        .output()
        .unwrap();
    let wall = t0.elapsed();
    let cpu = cpu_ns(pid) - cpu0;
    let _ = server.kill();
    let _ = server.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text
        .lines()
        .find(|l| l.contains("receiver"))
        .unwrap_or("?")
        .split_whitespace()
        .skip_while(|w| !w.ends_with("Bytes"))
        .nth(1)
        .unwrap_or("?")
        .to_string();
    println!(
        "BENCH tcp load: iperf3 {rate} Gbit/s for {:.1} s; agent CPU {:.1} ms = {:.3}% of one core",
        wall.as_secs_f64(),
        cpu as f64 / 1e6,
        cpu as f64 / wall.as_nanos() as f64 * 100.0
    );
}

/// 10,000 alerts spooled while the receiver answers 503, then how fast they drain
/// once it answers 200 (one receiver, keep-alive HTTP on loopback).
#[test]
#[ignore]
fn bench_spool_drain() {
    let extra = "coalesce_burst = 1000000\n[arp]\nalerts_per_kind = 1000000\nstorm_pps = 1000000";
    if !have_root() {
        return;
    }
    let lab = Lab::new();
    lab.resolve_gateway(GW_IP);
    let receiver = Receiver::start(&lab.host);
    let config = write_config(&lab, &receiver, extra);
    let agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", Duration::from_secs(10), |_| true);
    receiver.set_status(503);
    std::thread::sleep(Duration::from_millis(200));
    let host = mac_bytes(&lab.host_mac());
    // Every frame a station alert of its own (a new MAC for one of 150 addresses).
    send_paced(
        &lab.mitm,
        flood_frames(10_000, [2, 0xde, 0xad, 0xbe, 0xef, 0x52], host),
        20_000,
        0,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut spooled = 0;
    while Instant::now() < deadline {
        let now = agent.log_text().matches("[id=").count();
        if now == spooled && now >= 10_000 {
            break;
        }
        spooled = now;
        std::thread::sleep(Duration::from_millis(500));
    }
    let before = receiver.all().len();
    let t0 = Instant::now();
    receiver.set_status(200);
    let target = spooled.saturating_sub(5);
    let deadline = Instant::now() + Duration::from_secs(120);
    while receiver.all().len() - before < target && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let all = receiver.all();
    let drained = all.len() - before;
    let secs = t0.elapsed().as_secs_f64();
    let (first, last) = (all[before].at, all[all.len() - 1].at);
    let flowing = last.duration_since(first).as_secs_f64();
    println!(
        "BENCH spool drain: {spooled} alerts spooled during the outage; {drained} delivered {secs:.2} s after recovery (incl. the pending backoff); once flowing {:.0} alerts/s ({flowing:.2} s)",
        (drained - 1) as f64 / flowing
    );
}

/// Alerts lost across a 30 s outage and three kill -9 cycles (issue 4's figure):
/// four agent lives produce ~1,000 alerts, the first three end with SIGKILL
/// right after their frames; then the receiver comes back.
#[test]
#[ignore]
fn bench_no_loss_across_kill9() {
    if !have_root() {
        return;
    }
    let lab = Lab::new();
    lab.resolve_gateway(GW_IP);
    let receiver = Receiver::start(&lab.host);
    receiver.set_status(503);
    let outage_ends = Instant::now() + Duration::from_secs(30);
    let extra = "coalesce_burst = 1000000\n[arp]\nalerts_per_kind = 1000000\nstorm_pps = 1000000";
    let config = write_config(&lab, &receiver, extra);
    let host = mac_bytes(&lab.host_mac());
    let mut produced = std::collections::HashSet::new();
    let mut last = None;
    for life in 0..4u8 {
        let mut agent = Agent::start(&lab.host, &config, &lab.path(&format!("life{life}.log")));
        agent.wait_for_log("agent_started:", 1);
        std::thread::sleep(Duration::from_millis(200));
        send_frames(
            &lab.mitm,
            "eth0",
            flood_frames(310, [2, 0xde, 0xad, 0xbe, 0xef, 0x60 + life], host),
        );
        std::thread::sleep(Duration::from_millis(50));
        if life < 3 {
            agent.kill9();
        } else {
            std::thread::sleep(Duration::from_millis(500));
        }
        produced.extend(agent.alert_ids());
        last = Some(agent);
    }
    std::thread::sleep(outage_ends.saturating_duration_since(Instant::now()));
    receiver.set_status(200);
    let t0 = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    let missing = loop {
        let got: std::collections::HashSet<String> = receiver
            .all()
            .iter()
            .filter_map(|r| r.body["id"].as_str().map(str::to_string))
            .collect();
        let missing = produced.iter().filter(|id| !got.contains(*id)).count();
        if missing == 0 || Instant::now() > deadline {
            break missing;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let all = receiver.all();
    let unique: std::collections::HashSet<&str> =
        all.iter().filter_map(|r| r.body["id"].as_str()).collect();
    println!(
        "BENCH kill -9: {} alerts produced over 4 lives (3 ended by SIGKILL) during a 30 s outage; lost {missing}; delivered {} ({} duplicates) {:.1} s after recovery",
        produced.len(),
        all.len(),
        all.len() - unique.len(),
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(
        missing,
        0,
        "{}",
        last.map(|a| a.log_text()).unwrap_or_default()
    );
}

/// CPU seconds (user + system) of finished children of this process so far.
fn children_cpu_s() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// One round of 1,000 TLS checks against a real TLS server on loopback (in a
/// namespace of its own), at several `[tls] concurrency` settings; as a
/// reference, 100 sequential `openssl s_client` runs (a shell loop's way).
#[test]
#[ignore]
fn bench_tls_round_1000_targets() {
    use common::tls::{Dialogue, Pki, TlsServer};
    if !have_root() {
        return;
    }
    let lab = Lab::new();
    let dir = lab.dir.path();
    let pki = Pki::new(dir, "bench CA");
    let ca_file = &pki.ca_file;
    let _server = TlsServer::start(&lab.host, "127.0.0.1:4443", Dialogue::Direct, &pki.ours);
    let run_round = |concurrency: usize| -> (f64, f64) {
        let mut text = format!("[tls]\nconcurrency = {concurrency}\n");
        for i in 0..1000 {
            text.push_str(&pki.target(
                &format!("t{i}"),
                "127.0.0.1:4443",
                "example.org",
                &pki.ours_file,
                "",
            ));
        }
        let config = dir.join(format!("round{concurrency}.toml"));
        std::fs::write(&config, text).unwrap();
        timed_probe(&lab, &config, 1000)
    };
    for concurrency in [16, 64, 256] {
        let mut walls = Vec::new();
        let mut cpus = Vec::new();
        for _ in 0..5 {
            let (w, c) = run_round(concurrency);
            walls.push(w);
            cpus.push(c);
        }
        println!(
            "1000 targets, concurrency {concurrency}: wall median {:.3} s ({}), netsentry CPU median {:.3} s ({})",
            median(walls.clone()),
            secs(&walls),
            median(cpus.clone()),
            secs(&cpus)
        );
    }
    // Reference: openssl s_client, one process per check, 100 checks.
    let t0 = Instant::now();
    for _ in 0..100 {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.host,
                "openssl",
                "s_client",
                "-connect",
                "127.0.0.1:4443",
                "-servername",
                "example.org",
                "-CAfile",
            ])
            .arg(ca_file)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let per = t0.elapsed().as_secs_f64() / 100.0;
    println!(
        "openssl s_client sequential: {:.1} ms per check, i.e. {:.1} s for 1000",
        per * 1000.0,
        per * 1000.0
    );
}

/// One `netsentry probe -c config` in the lab's host namespace: its wall
/// time and CPU (seconds); every one of `endpoints` must be OK.
fn timed_probe(lab: &Lab, config: &std::path::Path, endpoints: usize) -> (f64, f64) {
    let cpu0 = children_cpu_s();
    let t0 = Instant::now();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.host, &agent_binary(), "probe", "-c"])
        .arg(config)
        .output()
        .unwrap();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = children_cpu_s() - cpu0;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("OK ")).count(),
        endpoints,
        "{}",
        config.display()
    );
    (wall, cpu)
}

/// Issue 17's figure: one round of 1,000 endpoints found through SRV (20
/// `srv` targets × 10 SRV records × 5 addresses, served by Debian's
/// dnsmasq) against 1,000 address targets, side by side in one run; the
/// same TLS server answers every address (198.18.0.0/22 on the namespace's
/// loopback). Five rounds each, concurrency 64.
#[test]
#[ignore]
fn bench_tls_round_1000_srv_endpoints() {
    use common::tls::{Dialogue, Pki, TlsServer};
    if !have_root() {
        return;
    }
    let lab = Lab::new();
    let dir = lab.dir.path();
    let pki = Pki::new(dir, "bench CA");
    ip(&lab.host, "addr add 198.18.0.1/22 dev lo");
    let _server = TlsServer::start(&lab.host, "0.0.0.0:4443", Dialogue::Direct, &pki.ours);
    let addr = |n: usize| format!("198.18.{}.{}", n / 250, n % 250 + 1);
    let mut records = vec!["--local=/example.org/".to_string()];
    for s in 0..20 {
        for h in 0..10 {
            let host = format!("h{s}-{h}.example.org");
            records.push(format!("--srv-host=_s{s}._tcp.example.org,{host},4443,0,1"));
            for a in 0..5 {
                records.push(format!("--host-record={host},{}", addr(s * 50 + h * 5 + a)));
            }
        }
    }
    let _dns = Dnsmasq::start(&lab.host, &records);
    let ca = pki.ca_file.display();
    let ours = pki.ours_file.display();
    let target = |name: String, key: &str, value: String| {
        format!(
            "\n[[tls.target]]\nname = \"{name}\"\n{key} = \"{value}\"\nserver_name = \"example.org\"\nca_file = \"{ca}\"\nexpect = {{ cert_files = [\"{ours}\"] }}\n"
        )
    };
    let head = "[tls]\nconcurrency = 64\nnameservers = [\"127.0.0.1:5353\"]\n".to_string();
    let addresses = (0..1000).fold(head.clone(), |t, i| {
        t + &target(format!("t{i}"), "address", format!("{}:4443", addr(i)))
    });
    let services = (0..20).fold(head, |t, s| {
        t + &target(format!("s{s}"), "srv", format!("_s{s}._tcp.example.org"))
    });
    let run = |name: &str, text: &str| -> (f64, f64) {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        timed_probe(&lab, &config, 1000)
    };
    let mut results: Vec<(&str, Vec<f64>, Vec<f64>)> = vec![
        ("1000 address targets", vec![], vec![]),
        ("20 srv targets, 1000 endpoints", vec![], vec![]),
    ];
    for _ in 0..5 {
        for (i, text) in [&addresses, &services].into_iter().enumerate() {
            let (w, c) = run(&format!("r{i}"), text);
            results[i].1.push(w);
            results[i].2.push(c);
        }
    }
    for (name, walls, cpus) in results {
        println!(
            "{name}: wall median {:.3} s ({}), netsentry CPU median {:.3} s ({})",
            median(walls.clone()),
            secs(&walls),
            median(cpus.clone()),
            secs(&cpus)
        );
    }
}

/// Time from an interceptor taking over the service's address on the path to
/// `tls_mismatch` at the webhook, with `interval = "2s"`; 10 takeovers.
#[test]
#[ignore]
fn bench_tls_interception_to_webhook() {
    use common::tls::{Dialogue, TlsServer, service_lab};
    if !have_root() {
        return;
    }
    let (lab, receiver, pki) = service_lab("bench CA");
    let rogue = pki.ca.issue(&["example.org"], 90);
    let _service = TlsServer::start(lab.svc(), "198.51.100.10:443", Dialogue::Direct, &pki.ours);
    let _interceptor = TlsServer::start(&lab.mitm, "0.0.0.0:443", Dialogue::Direct, &rogue);
    // The same foreign certificate ten times a minute would be coalesced
    // (alerts_suppressed) after three: allow them all here.
    let config = write_config(&lab, &receiver, "coalesce_burst = 100");
    append_config(
        &config,
        &pki.target(
            "web",
            "198.51.100.10:443",
            "example.org",
            &pki.ours_file,
            "interval = \"2s\"",
        ),
    );
    let _agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", Duration::from_secs(10), |_| true);
    let mut latencies = Vec::new();
    for round in 1..=10 {
        // Take over at a random point of the check interval.
        std::thread::sleep(Duration::from_millis(500 + (round * 337 % 2000) as u64));
        lab.intercept_service();
        let t0 = Instant::now();
        while receiver.count_kind("tls_mismatch") < round {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no tls_mismatch in round {round}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let at = receiver
            .all()
            .into_iter()
            .filter(|r| r.body["kind"] == "tls_mismatch")
            .nth(round - 1)
            .map(|r| r.at)
            .unwrap();
        latencies.push(at.duration_since(t0).as_secs_f64());
        lab.restore_service();
        while receiver.count_kind("tls_recovered") < round {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "interceptor takeover -> tls_mismatch at the webhook (interval 2s): median {:.2} s, min {:.2} s, max {:.2} s (10 takeovers)",
        median(latencies.clone()),
        latencies[0],
        latencies[latencies.len() - 1]
    );
}

/// Issue 19: SIGKILL during netlink churn. 150 veth pairs (300 links) are
/// created and deleted in a loop while the agent is killed and restarted 8
/// times. Counts: alerts lost (ids an agent printed, hence spooled, that never
/// arrived), duplicated by id, re-reported under a new id (the same link
/// event twice in a row), and invented (anything about eth0 or the gateway).
#[test]
#[ignore]
fn bench_kill9_during_netlink_churn() {
    let Some((lab, receiver, _)) = prepare("") else {
        return;
    };
    let config = write_config(
        &lab,
        &receiver,
        "ignore_links = [\"veth*\"]\ncoalesce_burst = 1000000\nheartbeat_interval = \"0s\"",
    );
    // The churn: `ch*` veth pairs, added and deleted in batches.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut churn = Some(churn_links(
        lab.host.clone(),
        "ch",
        150,
        stop.clone(),
        lab.path(""),
    ));
    let mut logs = Vec::new();
    let mut kills = 0;
    for life in 0..9 {
        let log = lab.path(&format!("agent{life}.log"));
        let mut agent = Agent::start(&lab.host, &config, &log);
        logs.push(log);
        std::thread::sleep(Duration::from_millis(1500));
        if life < 8 {
            agent.kill9();
            kills += 1;
        } else {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            let rounds = churn.take().map(|c| c.join().unwrap()).unwrap_or(0);
            std::thread::sleep(Duration::from_secs(2));
            agent.stop();
            eprintln!("churn: {rounds} rounds of 300 links, {kills} kills");
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let mut printed = std::collections::HashSet::new();
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            if let Some((_, id)) = line.rsplit_once("[id=") {
                printed.insert(id.trim_end_matches(']').to_string());
            }
        }
    }
    let got = receiver.all();
    let mut by_id: std::collections::HashMap<String, usize> = Default::default();
    for r in &got {
        *by_id
            .entry(r.body["id"].as_str().unwrap_or("").into())
            .or_default() += 1;
    }
    let lost = printed.iter().filter(|id| !by_id.contains_key(*id)).count();
    let duplicated = by_id.values().filter(|n| **n > 1).count();
    // The same link event twice in a row for one link is a re-report.
    let mut last: std::collections::HashMap<String, (String, String)> = Default::default();
    let mut re_reported = 0;
    let mut invented = Vec::new();
    let mut seen_ids = std::collections::HashSet::new();
    // Each alert once (a duplicate by id is counted above), in arrival order.
    for r in got
        .iter()
        .filter(|r| seen_ids.insert(r.body["id"].to_string()))
    {
        let kind = r.body["kind"].as_str().unwrap_or("").to_string();
        let d = &r.body["details"];
        let iface = d["interface"].as_str().unwrap_or("").to_string();
        if kind.starts_with("agent_") || kind == "alerts_suppressed" {
            continue;
        }
        if !iface.starts_with("ch") {
            invented.push(r.body.to_string());
            continue;
        }
        let event = (kind, d["mac"].as_str().unwrap_or("").to_string());
        if last.get(&iface) == Some(&event) {
            re_reported += 1;
            eprintln!("  again: {}", r.body);
        }
        last.insert(iface, event);
    }
    eprintln!(
        "kill -9 during churn: {} alerts printed, {} delivered; lost {lost}, duplicated by id {duplicated}, re-reported under new ids {re_reported}, invented {}",
        printed.len(),
        got.len(),
        invented.len()
    );
    for i in invented.iter().take(5) {
        eprintln!("  invented: {i}");
    }
}

/// Issue 19: alerts made while the disk under `state_dir` is full. A 256 KiB
/// tmpfs is filled to the last byte; 20 veth pairs (40 `link_added`) are made;
/// space is freed and 6 more pairs (12 alerts) are made. Counts what arrives.
#[test]
#[ignore]
fn bench_full_disk() {
    let Some((lab, receiver, _)) = prepare("") else {
        return;
    };
    let (disk, _config, _agent) = agent_on_a_small_disk(&lab, &receiver);
    let count = |prefix: &str| link_added(&receiver, prefix);
    let filler = disk.fill();
    add_links(&lab.host, "full", 20);
    std::thread::sleep(Duration::from_secs(2));
    let while_full = count("full");
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    add_links(&lab.host, "after", 6);
    let deadline = Instant::now() + Duration::from_secs(15);
    while (count("full") < 40 || count("after") < 12) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut ids = std::collections::HashMap::<String, usize>::new();
    for r in receiver.all() {
        *ids.entry(r.body["id"].as_str().unwrap_or("").into())
            .or_default() += 1;
    }
    eprintln!(
        "full disk: made while full 40, delivered while full {while_full}, delivered after space returned {} of 40 (+ {} of 12 made after) in {} ms; duplicates by id {}",
        count("full"),
        count("after"),
        freed.elapsed().as_millis(),
        ids.values().filter(|n| **n > 1).count()
    );
}

/// A TCP SYN from `src` to 192.0.2.10:`port` addressed to `host` on the wire
/// (valid IPv4 header checksum, Linux's option layout; the TCP checksum is
/// left zero, so the host's stack drops it after the capture saw it).
fn syn_frame(host: [u8; 6], src: [u8; 4], port: u16, ttl: u8) -> Vec<u8> {
    let mut f =
        netsentry::wire::build::tcp_v4(ttl, 0x02, port, netsentry::wire::build::LINUX_SYN_OPTIONS);
    f[..6].copy_from_slice(&host);
    f[6..12].copy_from_slice(&[2, 0, 0, 0xaa, 0xbb, 0xcc]);
    f[26..30].copy_from_slice(&src);
    set_ipv4_header_checksum(&mut f[14..34]);
    f
}

/// CPU (s), peak RSS (KiB) and the spoof alert latency (ms) of an agent in
/// the host namespace while `n` SYNs at `fps` hit a listening port, with a
/// gateway spoof in the middle; `[inbound]` on or off.
fn syn_flood_run(inbound: bool, n: u32, fps: u32) -> (f64, f64, u64, f64, u64) {
    let extra = format!("coalesce_window = \"5s\"\n[inbound]\nenabled = {inbound}\n");
    let (lab, receiver, agent) = running_agent(&extra).expect("root");
    let _listener = common::inbound::Listeners::start(&lab.host, &["192.0.2.10:8443"]);
    if inbound {
        agent.wait_for_log("watching the SYNs to TCP port 8443", 1);
    }
    std::thread::sleep(Duration::from_millis(300));
    let host = mac_bytes(&lab.host_mac());
    let spoof = [2, 0xde, 0xad, 0xbe, 0xef, 0x52];
    let mut frames: Vec<Vec<u8>> = (0..n)
        .map(|i| syn_frame(host, [198, 18, (i >> 8) as u8, i as u8], 8443, 50))
        .collect();
    let mark = (n / 2) as usize;
    frames[mark] = build_arp_reply(spoof, host);
    let pid = agent.pid();
    let cpu0 = cpu_ns(pid);
    let t0 = Instant::now();
    let spoof_sent = send_paced(&lab.mitm, frames, fps, mark);
    let flood_s = t0.elapsed().as_secs_f64();
    let got = receiver.wait_for("spoof", Duration::from_secs(10), |b| {
        b["kind"] == "gateway_mac_changed" && b["details"]["new_mac"] == "02:de:ad:be:ef:52"
    });
    let cpu = (cpu_ns(pid) - cpu0) as f64 / 1e9;
    // The capture's counters reach capture.json every 10 s.
    std::thread::sleep(Duration::from_secs(10));
    let stats: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(lab.path("state/capture.json")).unwrap_or_else(|_| "{}".into()),
    )
    .unwrap_or_default();
    (
        flood_s,
        cpu,
        status_kib(pid, "VmHWM:"),
        got.at.duration_since(spoof_sent).as_secs_f64() * 1000.0,
        stats["syns"].as_u64().unwrap_or(0),
    )
}

fn build_arp_reply(spoof: [u8; 6], host: [u8; 6]) -> Vec<u8> {
    netsentry::wire::build::arp(
        spoof,
        host,
        true,
        spoof,
        std::net::Ipv4Addr::new(192, 0, 2, 1),
        host,
        std::net::Ipv4Addr::new(192, 0, 2, 10),
    )
}

/// 600,000 SYNs at 100,000/s to a watched port, a gateway spoof inside;
/// the same with `[inbound] enabled = false` side by side (3 runs each).
#[test]
#[ignore]
fn bench_syn_flood() {
    if !have_root() {
        return;
    }
    for inbound in [true, false] {
        let mut cpus = Vec::new();
        let mut rss = Vec::new();
        let mut spoof = Vec::new();
        let mut handed = Vec::new();
        let mut secs_flood = Vec::new();
        for _ in 0..3 {
            let (flood_s, cpu, peak, spoof_ms, syns) = syn_flood_run(inbound, 600_000, 100_000);
            secs_flood.push(flood_s);
            cpus.push(cpu / flood_s * 100.0);
            rss.push(peak as f64);
            spoof.push(spoof_ms);
            handed.push(syns as f64);
        }
        println!(
            "BENCH syn flood 600k at 100k/s, inbound {}: flood took {} s; agent CPU median {:.1} % of a core ({}); peak RSS median {:.0} KiB; SYNs handed to the agent median {:.0}; spoof alert median {:.1} ms ({})",
            if inbound { "on " } else { "off" },
            secs(&secs_flood),
            median(cpus.clone()),
            secs(&cpus),
            median(rss),
            median(handed),
            median(spoof.clone()),
            secs(&spoof)
        );
    }
}

/// Real connections at ~1,000/s to a watched port for 10 s: agent CPU with
/// `[inbound]` on and off, side by side.
#[test]
#[ignore]
fn bench_inbound_ordinary_connections() {
    if !have_root() {
        return;
    }
    for inbound in [true, false] {
        let mut cpus = Vec::new();
        let mut rates = Vec::new();
        for _ in 0..3 {
            let extra = format!("[inbound]\nenabled = {inbound}\n");
            let (lab, _receiver, agent) = running_agent(&extra).unwrap();
            let _listener = common::inbound::Listeners::start(&lab.host, &["192.0.2.10:8443"]);
            if inbound {
                agent.wait_for_log("watching the SYNs to TCP port 8443", 1);
            }
            ip(&lab.mitm, "route add default via 192.0.2.1");
            let target: std::net::SocketAddr = "192.0.2.10:8443".parse().unwrap();
            let pid = agent.pid();
            let cpu0 = cpu_ns(pid);
            let t0 = Instant::now();
            let clients: Vec<_> = (0..4)
                .map(|_| {
                    common::inbound::Clients::start(
                        &lab.mitm,
                        None,
                        &[target],
                        Duration::from_millis(4),
                    )
                })
                .collect();
            std::thread::sleep(Duration::from_secs(10));
            let made: u64 = clients
                .iter()
                .map(|c| c.connected.load(std::sync::atomic::Ordering::Relaxed))
                .sum();
            drop(clients);
            let wall = t0.elapsed().as_secs_f64();
            cpus.push((cpu_ns(pid) - cpu0) as f64 / 1e9 / wall * 100.0);
            rates.push(made as f64 / wall);
        }
        println!(
            "BENCH ordinary connections, inbound {}: {:.0} conn/s median; agent CPU median {:.3} % of a core ({})",
            if inbound { "on " } else { "off" },
            median(rates),
            median(cpus.clone()),
            secs(&cpus)
        );
    }
}

/// One path-length check of a port two hops away: a sweep (no remembered
/// count) and a confirmation (remembered), 20 of each.
#[test]
#[ignore]
fn bench_path_length_check() {
    if !have_root() {
        return;
    }
    let lab = Lab::with_service();
    let _listener = common::inbound::Listeners::start(lab.svc(), &["198.51.100.10:22"]);
    // The router's ICMP rate limit (about one error per second per
    // destination) would otherwise set the pace of back-to-back checks;
    // the agent's checks are minutes apart.
    run(
        "ip",
        &[
            "netns",
            "exec",
            &lab.gw,
            "sysctl",
            "-qw",
            "net.ipv4.icmp_ratelimit=0",
        ],
    );
    let results = in_netns(&lab.host, || {
        let addr: std::net::SocketAddr = "198.51.100.10:22".parse().unwrap();
        let mut out = Vec::new();
        for hint in [None, Some(2u8)] {
            let mut ms = Vec::new();
            let mut syns = 0;
            let mut hops = None;
            for _ in 0..20 {
                let m = netsentry::source::path_probe::measure(addr, hint, Duration::from_secs(2))
                    .unwrap();
                ms.push(m.took.as_secs_f64() * 1000.0);
                syns = m.syns;
                hops = m.hops;
                if std::env::var("NETSENTRY_BENCH_DEBUG").is_ok() {
                    eprintln!("{hint:?}: {m:?}");
                }
            }
            out.push((hint, hops, syns, ms));
        }
        out
    });
    for (hint, hops, syns, ms) in results {
        println!(
            "BENCH path length {}: hops {:?}, {syns} SYNs, median {:.2} ms (max {:.2} ms)",
            if hint.is_some() {
                "with a remembered count"
            } else {
                "without (sweep)"
            },
            hops,
            median(ms.clone()),
            ms.iter().cloned().fold(0.0, f64::max)
        );
    }
}

/// The figures behind the unit's `MemoryMax=` and `TasksMax=`: the agent's
/// peak RSS (VmHWM) and thread count while it checks 1,000 TLS targets
/// behind a router (path measurements included, `[tls] concurrency` 64,
/// every 5 s) for 20 s.
#[test]
#[ignore]
fn bench_agent_peaks_for_the_unit_limits() {
    use common::tls::{Dialogue, TlsServer, service_lab};
    if !have_root() {
        return;
    }
    let (lab, receiver, pki) = service_lab("bench CA");
    let _server = TlsServer::start(lab.svc(), "198.51.100.10:443", Dialogue::Direct, &pki.ours);
    let config = write_config(&lab, &receiver, "");
    let mut text = std::fs::read_to_string(&config).unwrap();
    for i in 0..1000 {
        text.push_str(&pki.target(
            &format!("t{i}"),
            "198.51.100.10:443",
            "example.org",
            &pki.ours_file,
            "interval = \"5s\"",
        ));
    }
    std::fs::write(&config, text).unwrap();
    let agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    let pid = agent.pid();
    let mut threads_peak = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let threads: u64 = status
            .lines()
            .find(|l| l.starts_with("Threads:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        threads_peak = threads_peak.max(threads);
        std::thread::sleep(Duration::from_millis(20));
    }
    let hwm = status_kib(pid, "VmHWM:");
    println!(
        "1000 TLS targets every 5 s for 20 s: peak RSS {:.1} MiB, peak threads {threads_peak}",
        hwm as f64 / 1024.0
    );
    assert!(receiver.count_kind("tls_probe_failed") == 0);
}
