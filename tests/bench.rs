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
