//! The sections of the configuration besides `[tls]`, `[ct]`, `[caa]` and
//! `[correlation]` (in `tls.rs`): their fields, defaults and value types.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{Cidr, GatewaySpec, Glob, InterfaceName, Interval, WebhookUrl};
use crate::alert::Severity;

/// Prometheus metrics: a node_exporter textfile and/or an HTTP endpoint (both off by default).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// A `.prom` file for node_exporter's textfile collector; empty: none.
    pub textfile: PathBuf,
    /// `host:port` for an HTTP `/metrics` endpoint; empty: none (no listening socket).
    pub listen: String,
    /// How often the metrics are refreshed.
    pub interval: Interval,
}

impl MetricsConfig {
    /// True when metrics go anywhere.
    pub fn enabled(&self) -> bool {
        !self.textfile.as_os_str().is_empty() || !self.listen.is_empty()
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            textfile: PathBuf::new(),
            listen: String::new(),
            interval: Interval(Duration::from_secs(15)),
        }
    }
}

/// `[agent]`: identity, state, which links matter, netlink and spool sizes, coalescing.
/// The heartbeat when receivers are configured and `heartbeat_interval` is not
/// set: Alertmanager keeps a beat firing for three beats (15 minutes).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Name in every alert; empty means the hostname.
    pub host_id: String,
    pub state_dir: PathBuf,
    pub interfaces: Vec<InterfaceName>,
    pub ignore_links: Vec<Glob>,
    /// Links of these kinds (`ip -d link`: veth, vxlan, ...) produce no alerts.
    pub ignore_link_kinds: Vec<String>,
    /// `agent_heartbeat` this often; `None`: [`DEFAULT_HEARTBEAT`] when any
    /// receiver is configured, else off; zero: off (see
    /// [`super::Config::heartbeat_every`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<Interval>,
    /// Full netlink dump and reconcile this often, besides after lost events.
    pub reconcile_interval: Interval,
    /// A changed gateway MAC stays "suspect" in the baseline (reported once,
    /// not trusted) until it has been stable this long; zero: only
    /// `netsentry baseline accept` makes it trusted.
    pub gateway_adopt_after: Interval,
    /// Three downs of a link within this are one `link_flapping` episode,
    /// which ends when the link has been up this long.
    pub link_flap_window: Interval,
    /// Bytes of kernel buffer for netlink events. A burst larger than this makes
    /// the kernel drop events; the agent then re-dumps everything (and a change
    /// that came and went inside the burst can be missed).
    pub netlink_receive_buffer: usize,
    /// Bytes of undelivered alerts kept in `state_dir/spool`; beyond this the
    /// oldest are dropped (and the drop is logged).
    pub max_spool_bytes: u64,
    /// Identical alerts (same kind and details) allowed per `coalesce_window` before
    /// they are counted and summarised in one `alerts_suppressed`.
    pub coalesce_burst: u32,
    pub coalesce_window: Interval,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            host_id: String::new(),
            state_dir: PathBuf::from("/var/lib/netsentry"),
            interfaces: Vec::new(),
            ignore_links: [
                "veth*",
                "docker*",
                "br-*",
                "cni*",
                "virbr*",
                "tap*",
                // Kubernetes CNIs: Calico, Cilium, Flannel, kube-proxy (IPVS), Weave.
                "cali*",
                "lxc*",
                "cilium*",
                "flannel*",
                "kube-*",
                "vxlan.calico",
                "tunl0",
                "weave*",
                "vethwe*",
            ]
            .iter()
            .map(|p| Glob(p.to_string()))
            .collect(),
            ignore_link_kinds: Vec::new(),
            heartbeat_interval: None,
            reconcile_interval: Interval(Duration::from_secs(300)),
            gateway_adopt_after: Interval(Duration::from_secs(7 * 86_400)),
            link_flap_window: Interval(Duration::from_secs(60)),
            netlink_receive_buffer: 8 << 20,
            max_spool_bytes: 64 << 20,
            coalesce_burst: 3,
            coalesce_window: Interval(Duration::from_secs(60)),
        }
    }
}

/// `[log]`: where log lines go and how many.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub journald: JournaldMode,
    pub level: LogLevel,
}

/// Whether log lines and alerts go to journald.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JournaldMode {
    /// journald when its socket exists, else stderr.
    #[default]
    Auto,
    On,
    Off,
}

/// The least important log lines written.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The name as `tracing` filters take it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// One `[[webhook]]` receiver.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: WebhookUrl,
    /// How the receiver is named in logs, metrics and `status` (the URL is
    /// never shown whole there); default: the URL without path and query.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub format: WebhookFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
    #[serde(default = "default_timeout")]
    pub timeout: Interval,
    /// `format = "alertmanager"`: events are resolved (`endsAt`) this long after they fired.
    #[serde(default = "default_resolve_after")]
    pub resolve_after: Interval,
    /// `format = "alertmanager"`: the `runbook_url` annotation is this
    /// followed by `#kind` (docs/ALERTS.md has an anchor per kind).
    #[serde(default = "default_runbook_base")]
    pub runbook_base: String,
}

fn default_runbook_base() -> String {
    "file:///usr/share/doc/netsentry/ALERTS.md".into()
}

impl WebhookConfig {
    /// The receiver's name for people: `name`, else the redacted URL.
    pub fn display_name(&self) -> String {
        match self.name.is_empty() {
            true => self.url.redacted(),
            false => self.name.clone(),
        }
    }
}

fn default_min_severity() -> Severity {
    Severity::Info
}
fn default_timeout() -> Interval {
    Interval(Duration::from_secs(10))
}
fn default_resolve_after() -> Interval {
    Interval(Duration::from_secs(3600))
}

/// The request body a receiver gets.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    #[default]
    Netsentry,
    Alertmanager,
    Slack,
}

/// `[arp]`: packet capture of ARP and neighbour discovery.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ArpConfig {
    /// Capture ARP and neighbour discovery (needs CAP_NET_RAW).
    pub enabled: bool,
    /// Interfaces to capture on; empty: the watched interfaces (default routes).
    pub interfaces: Vec<InterfaceName>,
    /// Extra gateways to guard (besides the default routes' next hops), each
    /// with the MAC it is known at when given; with `replay` the only ones,
    /// their MAC otherwise learned from the baseline or the first frame.
    pub gateways: Vec<GatewaySpec>,
    /// Stations remembered (least recently seen evicted beyond this).
    pub max_stations: usize,
    /// ARP+NDP frames per second on one interface that make an `arp_storm`.
    pub storm_pps: u32,
    /// Two MACs claiming a gateway within this time: `arp_gateway_conflict`.
    pub conflict_window: Interval,
    /// A gateway moving within its advertising VRRP group is a failover
    /// (`gateway_failover`), not an attack.
    pub vrrp_is_normal: bool,
    /// Station alerts (arp_new_station, arp_mac_changed, ...) let through per kind
    /// per `[agent] coalesce_window`; the rest are counted in `alerts_suppressed`.
    /// Gateway alerts are never limited this way.
    pub alerts_per_kind: u32,
    /// Bytes of kernel buffer for captured frames: how big a burst is absorbed
    /// while the agent catches up (drops are counted and logged).
    pub receive_buffer: usize,
}

impl Default for ArpConfig {
    fn default() -> Self {
        ArpConfig {
            enabled: true,
            interfaces: Vec::new(),
            gateways: Vec::new(),
            max_stations: 65_536,
            storm_pps: 1000,
            conflict_window: Interval(Duration::from_secs(60)),
            vrrp_is_normal: true,
            alerts_per_kind: 20,
            receive_buffer: 32 << 20,
        }
    }
}

/// `[route]`: where traffic goes. The kernel is asked (a route lookup, no
/// packet) for the next hop of each watched destination after every route,
/// rule, address or link change and every 2 s; a move that the main table's
/// default route does not explain is `route_diverted`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// Watch paths at all.
    pub enabled: bool,
    /// Destinations watched besides the built-in ones (an address in each
    /// half of the IPv4 and IPv6 space, the TLS targets' address literals,
    /// the DNS servers): a backup server, a peer, a payment API.
    pub watch_destinations: Vec<IpAddr>,
}

impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig {
            enabled: true,
            watch_destinations: Vec::new(),
        }
    }
}

/// `[inbound]`: the path inbound connections take, per local port (SYNs from
/// the capture socket).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InboundConfig {
    /// Watch inbound SYNs (needs CAP_NET_RAW and `[arp] enabled`, whose
    /// capture socket it shares).
    pub enabled: bool,
    /// Ports to watch; empty: every TCP port listening on a non-loopback address.
    pub ports: Vec<u16>,
    /// Ports never watched.
    pub ignore_ports: Vec<u16>,
    /// Sources never counted (health checkers, a local reverse proxy).
    pub ignore_sources: Vec<Cidr>,
    /// Distributions are compared per window.
    pub window: Interval,
    /// SYNs per port and window before it is judged.
    pub min_samples: u32,
    /// Share of a window from a new distance or stack that is a changed path.
    pub share: f64,
    /// SYNs per second the kernel hands over at most (sampled beyond it).
    pub max_syn_rate: u32,
}

impl Default for InboundConfig {
    fn default() -> Self {
        InboundConfig {
            enabled: true,
            ports: Vec::new(),
            ignore_ports: Vec::new(),
            ignore_sources: Vec::new(),
            window: Interval(Duration::from_secs(600)),
            min_samples: 30,
            share: 0.8,
            max_syn_rate: 2000,
        }
    }
}

/// `[publish]`: a signed manifest of our certificates for probers elsewhere
/// (off unless `key_file` and `path` are set).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PublishConfig {
    /// The minisign secret key (`netsentry keygen`), unencrypted, mode 0600.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Where the web server serves the manifest from; `.minisig` and `.txt`
    /// are written next to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Server names to publish; empty: every DNS name of the certificates.
    pub names: Vec<String>,
    /// Certificate files; empty: every `expect.cert_files` of the TLS targets
    /// and `[ct] authorized_cert_files`.
    pub cert_files: Vec<PathBuf>,
    /// How long a manifest is valid; it is signed again at half of it.
    pub validity: Interval,
    /// A certificate that left the files stays listed (`retired`) this long.
    pub rotation_grace: Interval,
    /// TLSA names (`_5222._tcp.xmpp.example.org`) whose records must cover
    /// the certificates on disk (`dane_stale`); empty: not checked.
    pub tlsa_names: Vec<String>,
    /// How often the TLSA records are looked up.
    pub tlsa_refresh: Interval,
}

impl PublishConfig {
    /// Publishing is on.
    pub fn enabled(&self) -> bool {
        self.key_file.is_some() && self.path.is_some()
    }
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            key_file: None,
            path: None,
            names: Vec::new(),
            cert_files: Vec::new(),
            validity: Interval(Duration::from_secs(7 * 86_400)),
            rotation_grace: Interval(Duration::from_secs(86_400)),
            tlsa_names: Vec::new(),
            tlsa_refresh: Interval(Duration::from_secs(600)),
        }
    }
}
