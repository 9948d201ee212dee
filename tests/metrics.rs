//! Metrics as Prometheus gets them: the textfile read by a real node_exporter
//! (Debian's prometheus-node-exporter), and the agent's own /metrics endpoint.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;

/// `GET /metrics` on `addr` from inside namespace `ns`.
fn scrape(ns: &str, addr: &str) -> Option<String> {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    in_netns(ns, move || {
        let mut conn =
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        conn.read_to_string(&mut text).ok()?;
        Some(text)
    })
}

/// Scrapes until every line of `want` is there (the agent writes every second).
fn wait_for_lines(ns: &str, addr: &str, want: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page = scrape(ns, addr).unwrap_or_default();
        if want.iter().all(|w| page.lines().any(|l| l == *w)) {
            return page;
        }
        assert!(Instant::now() < deadline, "missing {want:?} in:\n{page}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct NodeExporter(std::process::Child);

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn node_exporter_serves_the_textfile_and_the_agent_serves_metrics() {
    let Some((lab, receiver, config)) = prepare("") else {
        return;
    };
    let textfiles = lab.path("textfile");
    std::fs::create_dir_all(&textfiles).unwrap();
    append_config(
        &config,
        &format!(
            "\n[metrics]\ntextfile = \"{}/netsentry.prom\"\nlisten = \"127.0.0.1:9469\"\ninterval = \"1s\"\n",
            textfiles.display()
        ),
    );
    let exporter = NodeExporter(
        std::process::Command::new("ip")
            .args(["netns", "exec", &lab.host, "prometheus-node-exporter"])
            .arg("--collector.disable-defaults")
            .arg("--collector.textfile")
            .arg(format!(
                "--collector.textfile.directory={}",
                textfiles.display()
            ))
            .arg("--web.listen-address=127.0.0.1:9100")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus-node-exporter (apt-get install prometheus-node-exporter)"),
    );
    let mut agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", Duration::from_secs(10), |_| true);
    ip(&lab.lan, "link set phost down");
    std::thread::sleep(Duration::from_millis(300));
    ip(&lab.lan, "link set phost up");
    receiver.wait_kind("link_down", Duration::from_secs(10), |_| true);

    // node_exporter sorts labels by name.
    let page = wait_for_lines(
        &lab.host,
        "127.0.0.1:9100",
        &[
            "netsentry_gateway_info{family=\"inet\",interface=\"eth0\",ip=\"192.0.2.1\",mac=\"02:00:00:00:00:01\"} 1",
            "netsentry_gateway_failovers_total{family=\"inet\",interface=\"eth0\",ip=\"192.0.2.1\"} 0",
            "netsentry_alerts_total{kind=\"agent_started\",severity=\"info\"} 1",
            "netsentry_alerts_total{kind=\"link_down\",severity=\"warning\"} 1",
            "netsentry_link_carrier_losses_total{interface=\"eth0\"} 1",
        ],
    );
    assert!(
        // Named by the URL without its path (which may carry a token).
        page.contains(&format!(
            "netsentry_spool_pending_alerts{{receiver=\"http://127.0.0.1:{}/…\"}} ",
            receiver.port
        )),
        "{page}"
    );
    assert!(
        page.contains("# TYPE netsentry_capture_drops_total counter"),
        "{page}"
    );
    // The textfile was parsed without errors.
    assert!(
        page.lines()
            .any(|l| l.starts_with("node_textfile_scrape_error 0")),
        "{page}"
    );
    // The agent's own endpoint, in the agent's order.
    wait_for_lines(
        &lab.host,
        "127.0.0.1:9469",
        &[
            "netsentry_gateway_info{interface=\"eth0\",family=\"inet\",ip=\"192.0.2.1\",mac=\"02:00:00:00:00:01\"} 1",
        ],
    );
    let request = |raw: &'static str| {
        in_netns(&lab.host, move || {
            let mut c = std::net::TcpStream::connect("127.0.0.1:9469").unwrap();
            c.write_all(raw.as_bytes()).unwrap();
            let mut t = String::new();
            c.read_to_string(&mut t).unwrap();
            t
        })
    };
    // What Prometheus and people send: query strings, HEAD, the landing page.
    let with_query = request("GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(with_query.starts_with("HTTP/1.1 200"), "{with_query}");
    assert!(
        with_query
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{with_query}"
    );
    assert!(with_query.contains("netsentry_build_info"), "{with_query}");
    let head = request("HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.contains("netsentry_build_info"), "no body: {head}");
    let landing = request("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        landing.starts_with("HTTP/1.1 200") && landing.contains("href=\"/metrics\""),
        "{landing}"
    );
    let other = request("GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    let post = request("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    // Delivery health and the station table.
    wait_for_lines(
        &lab.host,
        "127.0.0.1:9469",
        &[&format!(
            "netsentry_delivery_errors_total{{receiver=\"http://127.0.0.1:{}/…\"}} 0",
            receiver.port
        )],
    );
    let page = scrape(&lab.host, "127.0.0.1:9469").unwrap();
    assert!(
        page.contains(&format!(
            "netsentry_delivery_last_success_timestamp_seconds{{receiver=\"http://127.0.0.1:{}/…\"}} ",
            receiver.port
        )),
        "{page}"
    );
    // Stopped: the textfile goes, node_exporter serves no stale gateway MAC.
    agent.stop();
    assert!(!textfiles.join("netsentry.prom").exists());
    let page = scrape(&lab.host, "127.0.0.1:9100").expect("node_exporter answers");
    assert!(page.contains("node_textfile_scrape_error"), "{page}");
    assert!(!page.contains("netsentry_gateway_info"), "{page}");
    drop(exporter);
}
