//! Prometheus metrics in the text exposition format, for node_exporter's
//! textfile collector (written atomically) and an optional `/metrics` endpoint.
//! The agent feeds [`Metrics`]; [`Metrics::render`] is pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::alert::{Alert, Kind, Severity};

/// A gateway as the agent knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayInfo {
    pub interface: String,
    pub family: String,
    pub ip: String,
    pub mac: String,
    /// VRRP failovers that moved the MAC held for it since the agent started.
    pub failovers: u64,
}

/// `target="x"`, with `endpoint="192.0.2.10:5222"` for one endpoint of it.
fn tls_labels(t: &TlsInfo) -> String {
    match &t.endpoint {
        Some(e) => format!("target=\"{}\",endpoint=\"{}\"", label(&t.target), label(e)),
        None => format!("target=\"{}\"", label(&t.target)),
    }
}

/// The last check of a TLS target.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsInfo {
    pub target: String,
    /// One endpoint of the target (`192.0.2.10:5222`), when it has several.
    pub endpoint: Option<String>,
    /// The check completed (a certificate was received).
    pub up: bool,
    /// The certificate was ours (None: no certificate).
    pub ours: Option<bool>,
    /// Unix time the certificate ends (None: no certificate).
    pub not_after: Option<i64>,
    /// Unix time of the check.
    pub checked: i64,
    /// How long the check took, in seconds.
    pub duration: f64,
    /// The address checked (the endpoint, or the configured address).
    pub address: String,
    /// The certificate received: SHA-256 of it and of its key, issuer, subject.
    pub cert: Option<CertLabels>,
}

/// The labels of `netsentry_tls_certificate_info`.
#[derive(Clone, Debug, PartialEq)]
pub struct CertLabels {
    pub cert_sha256: String,
    pub spki_sha256: String,
    pub issuer: String,
    pub subject: String,
}

/// Inbound connections to one watched port and family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundInfo {
    pub port: u16,
    pub family: u8,
    /// SYNs counted since start (after sampling, from clients elsewhere).
    pub syns: u64,
    /// Median hop distance of the last judged window.
    pub median_hops: Option<u8>,
}

/// Everything the metrics show; counters only grow while the agent runs.
#[derive(Debug, Default)]
pub struct Metrics {
    pub alerts: BTreeMap<(Kind, Severity), u64>,
    /// Carrier losses per interface seen by the agent (each link_down, and each
    /// flap folded into one notification).
    pub carrier_losses: BTreeMap<String, u64>,
    pub capture_packets: u64,
    pub capture_drops: u64,
    /// SYNs handed over by the capture filter.
    pub capture_syns: u64,
    /// Share of SYNs the filter passes now (1: all; lower during a flood).
    pub syn_sampling: f64,
    pub inbound: Vec<InboundInfo>,
    pub gateways: Vec<GatewayInfo>,
    pub tls: Vec<TlsInfo>,
    /// Per receiver URL: alerts waiting in the spool.
    pub spool_pending: Vec<(String, u64)>,
    /// Per receiver: delivery errors and the last success.
    pub delivery: Vec<(String, crate::sink::webhook::DeliveryHealth)>,
    /// Stations (IP, MAC) in the station table, per interface.
    pub stations: Vec<(String, usize)>,
    pub start_time: i64,
}

/// `inet` / `inet6`, as the gateway metrics name families.
fn family_label(family: u8) -> &'static str {
    if family == 4 { "inet" } else { "inet6" }
}

/// Escapes a label value (backslash, double quote, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Counts an alert that was sent.
    pub fn count(&mut self, alert: &Alert) {
        *self.alerts.entry((alert.kind, alert.severity)).or_default() += 1;
        if alert.kind == Kind::LinkDown
            && let Some(name) = alert.details.get("interface").and_then(|v| v.as_str())
        {
            let flaps = alert
                .details
                .get("flaps")
                .and_then(|v| v.as_u64())
                .unwrap_or(1);
            *self.carrier_losses.entry(name.to_string()).or_default() += flaps;
        }
    }

    /// The exposition text. Long (~160 lines) on purpose: one block per metric
    /// family (HELP, TYPE, samples), in the order they are exposed.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let section = |s: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        section(
            &mut s,
            "netsentry_build_info",
            "gauge",
            "netsentry version (always 1).",
        );
        let _ = writeln!(
            s,
            "netsentry_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        section(
            &mut s,
            "netsentry_start_time_seconds",
            "gauge",
            "When the agent started (unix time).",
        );
        let _ = writeln!(s, "netsentry_start_time_seconds {}", self.start_time);
        section(
            &mut s,
            "netsentry_gateway_info",
            "gauge",
            "Each default gateway with the MAC the agent holds for it (always 1).",
        );
        for g in &self.gateways {
            let _ = writeln!(
                s,
                "netsentry_gateway_info{{interface=\"{}\",family=\"{}\",ip=\"{}\",mac=\"{}\"}} 1",
                label(&g.interface),
                label(&g.family),
                label(&g.ip),
                label(&g.mac)
            );
        }
        section(
            &mut s,
            "netsentry_gateway_failovers_total",
            "counter",
            "VRRP failovers that moved a gateway's MAC (gateway_failover), since the agent started.",
        );
        for g in &self.gateways {
            let _ = writeln!(
                s,
                "netsentry_gateway_failovers_total{{interface=\"{}\",family=\"{}\",ip=\"{}\"}} {}",
                label(&g.interface),
                label(&g.family),
                label(&g.ip),
                g.failovers
            );
        }
        section(
            &mut s,
            "netsentry_alerts_total",
            "counter",
            "Alerts sent since the agent started, by kind and severity.",
        );
        for ((kind, severity), n) in &self.alerts {
            let _ = writeln!(
                s,
                "netsentry_alerts_total{{kind=\"{}\",severity=\"{}\"}} {n}",
                kind.as_str(),
                severity.as_str()
            );
        }
        section(
            &mut s,
            "netsentry_link_carrier_losses_total",
            "counter",
            "Carrier losses (link_down, including folded flaps) since the agent started, by interface.",
        );
        for (name, n) in &self.carrier_losses {
            let _ = writeln!(
                s,
                "netsentry_link_carrier_losses_total{{interface=\"{}\"}} {n}",
                label(name)
            );
        }
        section(
            &mut s,
            "netsentry_capture_packets_total",
            "counter",
            "Frames that passed the kernel filter (ARP and neighbour discovery).",
        );
        let _ = writeln!(
            s,
            "netsentry_capture_packets_total {}",
            self.capture_packets
        );
        section(
            &mut s,
            "netsentry_capture_drops_total",
            "counter",
            "Frames the kernel dropped because the agent did not keep up.",
        );
        let _ = writeln!(s, "netsentry_capture_drops_total {}", self.capture_drops);
        section(
            &mut s,
            "netsentry_inbound_syn_sampling_ratio",
            "gauge",
            "Share of inbound SYNs the kernel filter passes now (1: all; lower under a SYN flood).",
        );
        let _ = writeln!(
            s,
            "netsentry_inbound_syn_sampling_ratio {}",
            if self.syn_sampling > 0.0 {
                self.syn_sampling
            } else {
                1.0
            }
        );
        section(
            &mut s,
            "netsentry_inbound_connections_total",
            "counter",
            "Inbound connection attempts (SYNs) from clients elsewhere, per watched port (sampled under a flood).",
        );
        for i in &self.inbound {
            let _ = writeln!(
                s,
                "netsentry_inbound_connections_total{{port=\"{}\",family=\"{}\"}} {}",
                i.port,
                family_label(i.family),
                i.syns
            );
        }
        section(
            &mut s,
            "netsentry_inbound_median_hops",
            "gauge",
            "Median hop distance of a port's clients in the last judged window.",
        );
        for i in &self.inbound {
            if let Some(h) = i.median_hops {
                let _ = writeln!(
                    s,
                    "netsentry_inbound_median_hops{{port=\"{}\",family=\"{}\"}} {h}",
                    i.port,
                    family_label(i.family)
                );
            }
        }
        section(
            &mut s,
            "netsentry_tls_probe_success",
            "gauge",
            "1 when the last TLS check of a target received a certificate.",
        );
        for t in &self.tls {
            let _ = writeln!(
                s,
                "netsentry_tls_probe_success{{{}}} {}",
                tls_labels(t),
                u8::from(t.up)
            );
        }
        section(
            &mut s,
            "netsentry_tls_certificate_expected",
            "gauge",
            "1 when the certificate of the last check was ours, 0 when not (absent without a certificate).",
        );
        for t in &self.tls {
            if let Some(ours) = t.ours {
                let _ = writeln!(
                    s,
                    "netsentry_tls_certificate_expected{{{}}} {}",
                    tls_labels(t),
                    u8::from(ours)
                );
            }
        }
        // The *_timestamp_seconds names follow Prometheus' conventions; the
        // old names stay one release (deprecated, see CHANGELOG.md).
        for (name, help) in [
            (
                "netsentry_tls_certificate_not_after_timestamp_seconds",
                "When the certificate of the last check ends (unix time).",
            ),
            (
                "netsentry_tls_certificate_not_after_seconds",
                "Deprecated (removed in the next release): netsentry_tls_certificate_not_after_timestamp_seconds.",
            ),
        ] {
            section(&mut s, name, "gauge", help);
            for t in &self.tls {
                if let Some(end) = t.not_after {
                    let _ = writeln!(s, "{name}{{{}}} {end}", tls_labels(t));
                }
            }
        }
        for (name, help) in [
            (
                "netsentry_tls_last_check_timestamp_seconds",
                "When the target was last checked (unix time).",
            ),
            (
                "netsentry_tls_last_check_seconds",
                "Deprecated (removed in the next release): netsentry_tls_last_check_timestamp_seconds.",
            ),
        ] {
            section(&mut s, name, "gauge", help);
            for t in &self.tls {
                let _ = writeln!(s, "{name}{{{}}} {}", tls_labels(t), t.checked);
            }
        }
        section(
            &mut s,
            "netsentry_tls_probe_duration_seconds",
            "gauge",
            "How long the last check of a target took (connect, STARTTLS, handshake).",
        );
        for t in &self.tls {
            let _ = writeln!(
                s,
                "netsentry_tls_probe_duration_seconds{{{}}} {:.6}",
                tls_labels(t),
                t.duration
            );
        }
        section(
            &mut s,
            "netsentry_tls_certificate_info",
            "gauge",
            "The certificate the last check received (always 1; the hashes are in the labels, like blackbox_exporter's probe_ssl_last_chain_info).",
        );
        for t in &self.tls {
            if let Some(c) = &t.cert {
                let _ = writeln!(
                    s,
                    "netsentry_tls_certificate_info{{{},address=\"{}\",cert_sha256=\"{}\",spki_sha256=\"{}\",issuer=\"{}\",subject=\"{}\"}} 1",
                    tls_labels(t),
                    label(&t.address),
                    label(&c.cert_sha256),
                    label(&c.spki_sha256),
                    label(&c.issuer),
                    label(&c.subject)
                );
            }
        }
        section(
            &mut s,
            "netsentry_arp_stations",
            "gauge",
            "Stations (IP and MAC pairs) in the station table, per interface.",
        );
        for (interface, n) in &self.stations {
            let _ = writeln!(
                s,
                "netsentry_arp_stations{{interface=\"{}\"}} {n}",
                label(interface)
            );
        }
        section(
            &mut s,
            "netsentry_delivery_errors_total",
            "counter",
            "Failed delivery attempts per receiver since the agent started (each retry counts).",
        );
        for (name, h) in &self.delivery {
            let _ = writeln!(
                s,
                "netsentry_delivery_errors_total{{receiver=\"{}\"}} {}",
                label(name),
                h.errors
            );
        }
        section(
            &mut s,
            "netsentry_delivery_last_success_timestamp_seconds",
            "gauge",
            "When a receiver last took an alert (unix time; absent before the first).",
        );
        for (name, h) in &self.delivery {
            if let Some(t) = h.last_success {
                let _ = writeln!(
                    s,
                    "netsentry_delivery_last_success_timestamp_seconds{{receiver=\"{}\"}} {t}",
                    label(name)
                );
            }
        }
        section(
            &mut s,
            "netsentry_spool_pending_alerts",
            "gauge",
            "Alerts in the spool not yet delivered to a receiver.",
        );
        for (url, n) in &self.spool_pending {
            let _ = writeln!(
                s,
                "netsentry_spool_pending_alerts{{receiver=\"{}\"}} {n}",
                label(url)
            );
        }
        s
    }
}

/// Serves the latest `page` on `listen` (only when configured: the agent
/// opens no listening socket otherwise), with hyper: `GET`/`HEAD /metrics`
/// (query strings ignored, as Prometheus may send them), a landing page at
/// `/`, 404 elsewhere, 405 for other methods. Bounded: at most
/// [`MAX_METRICS_CONNECTIONS`] at once, 8 KiB of request head, a few seconds
/// per exchange, no keep-alive.
pub async fn serve(
    listen: &str,
    page: std::sync::Arc<std::sync::Mutex<String>>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("[metrics] listen {listen}: {e}")))?;
    tracing::info!("metrics on http://{listen}/metrics");
    // At most this many connections at once; more wait in the kernel's
    // backlog (no descriptor of ours), so a flood cannot take the
    // descriptors the spool, the state files and the probes need.
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_METRICS_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let conn = match listener.accept().await {
                Ok((conn, _)) => conn,
                Err(e) => {
                    // Out of descriptors, or the like: do not spin.
                    tracing::debug!("metrics: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let page = page.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |req| {
                    let page = page.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(&req, &page)) }
                });
                let mut http = hyper::server::conn::http1::Builder::new();
                http.keep_alive(false)
                    .max_buf_size(8192)
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(METRICS_EXCHANGE_TIMEOUT);
                let exchange = http.serve_connection(hyper_util::rt::TokioIo::new(conn), service);
                // The whole exchange is bounded in time: a client that reads
                // nothing holds its slot for at most this long.
                let _ = tokio::time::timeout(METRICS_EXCHANGE_TIMEOUT, exchange).await;
            });
        }
    });
    Ok(())
}

type Body = http_body_util::Full<hyper::body::Bytes>;

/// The answer to one request (pure but for reading the page).
fn answer<B>(req: &hyper::Request<B>, page: &std::sync::Mutex<String>) -> hyper::Response<Body> {
    use hyper::{Method, StatusCode, header};
    let head = req.method() == Method::HEAD;
    let reply = |status: StatusCode, kind: &str, body: String| {
        let length = body.len();
        let body = if head { String::new() } else { body };
        hyper::Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, kind)
            .header(header::CONTENT_LENGTH, length)
            .body(Body::new(body.into()))
            .unwrap_or_default()
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "GET or HEAD\n".into(),
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            page.lock().map(|p| p.clone()).unwrap_or_default(),
        ),
        "/" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            format!(
                "<!DOCTYPE html>\n<html><head><title>netsentry</title></head><body><h1>netsentry {}</h1><p><a href=\"/metrics\">Metrics</a></p></body></html>\n",
                env!("CARGO_PKG_VERSION")
            ),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try /metrics\n".into(),
        ),
    }
}

/// Connections to `/metrics` served at once.
pub const MAX_METRICS_CONNECTIONS: usize = 32;
/// Time a `/metrics` client has to send its request and take the answer.
const METRICS_EXCHANGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Writes `text` to `path` atomically (temporary file in the same directory,
/// then rename), mode 0644 so that node_exporter can read it.
pub fn write_textfile(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // node_exporter ignores files not ending in .prom: the temporary one is not read.
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    f.sync_data()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Finding;
    use serde_json::json;

    #[test]
    fn exposition_text() {
        let mut m = Metrics {
            start_time: 1_800_000_000,
            gateways: vec![GatewayInfo {
                interface: "eth0".into(),
                family: "inet".into(),
                ip: "192.0.2.1".into(),
                mac: "02:00:00:00:00:01".into(),
                failovers: 2,
            }],
            tls: vec![TlsInfo {
                endpoint: None,
                target: "xmpp \"main\"".into(),
                up: true,
                ours: Some(false),
                not_after: Some(1_900_000_000),
                checked: 1_800_000_100,
                duration: 0.25,
                address: "192.0.2.10:5222".into(),
                cert: Some(CertLabels {
                    cert_sha256: "ab".repeat(32),
                    spki_sha256: "cd".repeat(32),
                    issuer: "CN=R11, O=Let's Encrypt".into(),
                    subject: "CN=example.org".into(),
                }),
            }],
            spool_pending: vec![("https://a.example/x".into(), 3)],
            delivery: vec![(
                "alertmanager".into(),
                crate::sink::webhook::DeliveryHealth {
                    errors: 4,
                    last_success: Some(1_800_000_050),
                },
            )],
            stations: vec![("eth0".into(), 17)],
            ..Default::default()
        };
        let now = chrono::Utc::now();
        let down = Alert::from_finding(
            Finding::new(
                Kind::LinkDown,
                now,
                "",
                json!({"interface": "eth0", "flaps": 2}),
            ),
            "h",
        );
        m.count(&down);
        m.count(&down);
        let text = m.render();
        for line in [
            "netsentry_gateway_info{interface=\"eth0\",family=\"inet\",ip=\"192.0.2.1\",mac=\"02:00:00:00:00:01\"} 1",
            "netsentry_gateway_failovers_total{interface=\"eth0\",family=\"inet\",ip=\"192.0.2.1\"} 2",
            "netsentry_alerts_total{kind=\"link_down\",severity=\"warning\"} 2",
            "netsentry_link_carrier_losses_total{interface=\"eth0\"} 4",
            "netsentry_tls_probe_success{target=\"xmpp \\\"main\\\"\"} 1",
            "netsentry_tls_certificate_expected{target=\"xmpp \\\"main\\\"\"} 0",
            "netsentry_tls_certificate_not_after_seconds{target=\"xmpp \\\"main\\\"\"} 1900000000",
            "netsentry_tls_certificate_not_after_timestamp_seconds{target=\"xmpp \\\"main\\\"\"} 1900000000",
            "netsentry_tls_last_check_timestamp_seconds{target=\"xmpp \\\"main\\\"\"} 1800000100",
            "netsentry_tls_probe_duration_seconds{target=\"xmpp \\\"main\\\"\"} 0.250000",
            "netsentry_tls_certificate_info{target=\"xmpp \\\"main\\\"\",address=\"192.0.2.10:5222\",cert_sha256=\"abababababababababababababababababababababababababababababababab\",spki_sha256=\"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd\",issuer=\"CN=R11, O=Let's Encrypt\",subject=\"CN=example.org\"} 1",
            "netsentry_arp_stations{interface=\"eth0\"} 17",
            "netsentry_delivery_errors_total{receiver=\"alertmanager\"} 4",
            "netsentry_delivery_last_success_timestamp_seconds{receiver=\"alertmanager\"} 1800000050",
            "netsentry_spool_pending_alerts{receiver=\"https://a.example/x\"} 3",
            "# TYPE netsentry_alerts_total counter",
            "# TYPE netsentry_delivery_errors_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
    }

    #[test]
    fn the_alerting_rules_use_only_metrics_the_agent_exposes() {
        let rules = include_str!("../../packaging/prometheus/netsentry.rules.yml");
        let page = Metrics::default().render();
        let mut names: Vec<&str> = rules
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("netsentry_"))
            .collect();
        names.sort();
        names.dedup();
        assert!(names.len() >= 6, "{names:?}");
        for name in names {
            assert!(
                page.contains(&format!("# TYPE {name} ")),
                "{name} is in the rules but not in the metrics"
            );
        }
    }

    #[test]
    fn textfile_is_replaced_atomically_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("netsentry.prom");
        write_textfile(&p, "a 1\n").unwrap();
        write_textfile(&p, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a 2\n");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
