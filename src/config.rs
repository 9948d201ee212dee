//! Configuration: TOML text -> validated [`Config`].
//!
//! Parsing is a pure function from a string, so every error path is a unit test.
//! All value checks run inside `Deserialize`, which lets the TOML parser attach the
//! position of the offending value: errors print as `FILE:LINE:COL: message`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use crate::alert::Severity;

mod tls;
pub use tls::{
    CaaConfig, CorrelationConfig, CtConfig, Expect, SocksProxy, StartTls, TargetAddress, TlsConfig,
    TlsTarget,
};

/// Where `netsentry run` looks when no `-c` is given.
pub const DEFAULT_PATH: &str = "/etc/netsentry/netsentry.toml";

/// The whole configuration, with every default applied.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub agent: AgentConfig,
    pub log: LogConfig,
    #[serde(rename = "webhook")]
    pub webhooks: Vec<WebhookConfig>,
    pub arp: ArpConfig,
    pub tls: TlsConfig,
    pub correlation: CorrelationConfig,
    pub metrics: MetricsConfig,
    pub ct: CtConfig,
    pub caa: CaaConfig,
}

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

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Name in every alert; empty means the hostname.
    pub host_id: String,
    pub state_dir: PathBuf,
    pub interfaces: Vec<InterfaceName>,
    pub ignore_links: Vec<Glob>,
    pub heartbeat_interval: Interval,
    /// Full netlink dump and reconcile this often, besides after lost events.
    pub reconcile_interval: Interval,
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
            ignore_links: ["veth*", "docker*", "br-*", "cni*", "virbr*", "tap*"]
                .iter()
                .map(|p| Glob(p.to_string()))
                .collect(),
            heartbeat_interval: Interval(Duration::ZERO),
            reconcile_interval: Interval(Duration::from_secs(300)),
            netlink_receive_buffer: 8 << 20,
            max_spool_bytes: 64 << 20,
            coalesce_burst: 3,
            coalesce_window: Interval(Duration::from_secs(60)),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub journald: JournaldMode,
    pub level: LogLevel,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JournaldMode {
    /// journald when its socket exists, else stderr.
    #[default]
    Auto,
    On,
    Off,
}

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

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: WebhookUrl,
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

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    #[default]
    Netsentry,
    Alertmanager,
    Slack,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ArpConfig {
    /// Capture ARP and neighbour discovery (needs CAP_NET_RAW).
    pub enabled: bool,
    /// Interfaces to capture on; empty: the watched interfaces (default routes).
    pub interfaces: Vec<InterfaceName>,
    /// Extra gateway addresses to guard (besides the default routes' next hops);
    /// with `replay` the only ones, their MAC learned from the first frame unless
    /// the baseline knows it.
    pub gateways: Vec<std::net::IpAddr>,
    /// Stations remembered (least recently seen evicted beyond this).
    pub max_stations: usize,
    /// ARP+NDP frames per second on one interface that make an `arp_storm`.
    pub storm_pps: u32,
    /// Two MACs claiming a gateway within this time: `arp_gateway_conflict`.
    pub conflict_window: Interval,
    /// VRRP/CARP virtual MACs taking over a gateway are failovers, not attacks.
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

/// A duration written as `"30s"`, `"5m"`, `"24h"`, `"1h30m"`, `"250ms"`, `"7d"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval(pub Duration);

impl Interval {
    pub fn parse(text: &str) -> Result<Interval, String> {
        let bad = || {
            format!(
                "invalid duration {text:?}: write a number followed by ms, s, m, h or d, e.g. \"30s\" or \"1h30m\""
            )
        };
        let text_trim = text.trim();
        if text_trim.is_empty() {
            return Err(bad());
        }
        let mut total: u128 = 0;
        let mut rest = text_trim;
        while !rest.is_empty() {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits == 0 {
                return Err(bad());
            }
            let number: u128 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.len()
                - rest
                    .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                    .len();
            let millis_per_unit: u128 = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total = number
                .checked_mul(millis_per_unit)
                .and_then(|v| total.checked_add(v))
                .filter(|v| *v <= u64::MAX as u128)
                .ok_or_else(|| format!("duration {text:?} is too long"))?;
        }
        Ok(Interval(Duration::from_millis(total as u64)))
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let units = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1_000, "s"),
            (1, "ms"),
        ];
        if ms == 0 {
            return write!(f, "0s");
        }
        let mut rest = ms;
        for (size, name) in units {
            if rest >= size {
                write!(f, "{}{}", rest / size, name)?;
                rest %= size;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Interval::parse(&text).map_err(de::Error::custom)
    }
}

impl Serialize for Interval {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// An interface name as the kernel accepts it (1..=15 bytes, no `/`, no whitespace).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct InterfaceName(pub String);

impl<'de> Deserialize<'de> for InterfaceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        let ok = !name.is_empty()
            && name.len() <= 15
            && name != "."
            && name != ".."
            && !name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace());
        if ok {
            Ok(InterfaceName(name))
        } else {
            Err(de::Error::custom(format!(
                "{name:?} is not an interface name: use 1 to 15 characters without '/', ':' or spaces, as `ip link` shows them"
            )))
        }
    }
}

/// A shell-style pattern over interface names: `*` any run, `?` one character.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Glob(pub String);

impl Glob {
    pub fn matches(&self, name: &str) -> bool {
        glob_match(self.0.as_bytes(), name.as_bytes())
    }
}

fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative matcher with one backtrack point: linear in practice, no recursion.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

impl<'de> Deserialize<'de> for Glob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pattern = String::deserialize(d)?;
        if pattern.is_empty() || pattern.len() > 64 || pattern.chars().any(char::is_whitespace) {
            return Err(de::Error::custom(format!(
                "{pattern:?} is not a link pattern: use an interface name with * and ? wildcards, e.g. \"veth*\""
            )));
        }
        Ok(Glob(pattern))
    }
}

/// A receiver URL: `http` or `https`, with a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookUrl(pub reqwest::Url);

impl WebhookUrl {
    /// True when plain http goes somewhere other than this host (worth a warning).
    pub fn is_cleartext_remote(&self) -> bool {
        if self.0.scheme() != "http" {
            return false;
        }
        match self.0.host() {
            Some(url::Host::Domain(d)) => d != "localhost",
            Some(url::Host::Ipv4(ip)) => !ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => !ip.is_loopback(),
            None => true,
        }
    }
}

impl<'de> Deserialize<'de> for WebhookUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let url = reqwest::Url::parse(&text).map_err(|e| {
            de::Error::custom(format!(
                "invalid url {text:?} ({e}): write it like \"https://alerts.example.net/netsentry\""
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(de::Error::custom(format!(
                "url {text:?} must start with https:// (or http://) and name a host"
            )));
        }
        Ok(WebhookUrl(url))
    }
}

impl Serialize for WebhookUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

/// A configuration error a user can fix; `Display` is `FILE:LINE:COL: message`
/// (or `FILE: message` when there is no position).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{}:{}:{}: {}", self.file, line, col, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl Config {
    /// Parses and validates configuration text. `file` is only used in messages.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let position = e.span().map(|span| line_col(text, span.start));
            ConfigError {
                file: file.to_string(),
                position,
                message: tidy_message(e.message()),
            }
        })?;
        let position_of = |key: &str| key_position(text, key);
        if config.agent.coalesce_burst == 0 {
            return Err(ConfigError {
                file: file.to_string(),
                position: position_of("coalesce_burst"),
                message: "coalesce_burst must be at least 1 (alerts allowed per window before coalescing)".into(),
            });
        }
        if config.agent.reconcile_interval.0 < Duration::from_secs(1) {
            return Err(ConfigError {
                file: file.to_string(),
                position: position_of("reconcile_interval"),
                message:
                    "reconcile_interval must be at least \"1s\" (a full netlink dump is not free)"
                        .into(),
            });
        }
        if config.arp.max_stations == 0
            || config.arp.storm_pps == 0
            || config.arp.alerts_per_kind == 0
        {
            let key = ["max_stations", "storm_pps", "alerts_per_kind"]
                .into_iter()
                .find(|k| key_position(text, k).is_some())
                .unwrap_or("max_stations");
            return Err(ConfigError {
                file: file.to_string(),
                position: position_of(key),
                message: "[arp] max_stations, storm_pps and alerts_per_kind must be at least 1"
                    .into(),
            });
        }
        if config.arp.receive_buffer < 65536 {
            return Err(ConfigError {
                file: file.to_string(),
                position: position_of("receive_buffer"),
                message: "[arp] receive_buffer must be at least 65536 (bytes)".into(),
            });
        }
        if config.agent.max_spool_bytes < 2 << 20 {
            return Err(ConfigError {
                file: file.to_string(),
                position: position_of("max_spool_bytes"),
                message: "max_spool_bytes must be at least 2097152 (2 MiB: two spool segments)"
                    .into(),
            });
        }
        if config.agent.netlink_receive_buffer < 4096 {
            return Err(ConfigError {
                file: file.to_string(),
                position: position_of("netlink_receive_buffer"),
                message: "netlink_receive_buffer must be at least 4096 (bytes)".into(),
            });
        }
        for hook in &config.webhooks {
            if hook.timeout.0.is_zero() {
                return Err(ConfigError {
                    file: file.to_string(),
                    position: position_of(hook.url.0.as_str())
                        .or_else(|| position_of("[[webhook]]")),
                    message: format!("webhook {}: timeout must be greater than zero", hook.url.0),
                });
            }
        }
        if !config.metrics.listen.is_empty()
            && config
                .metrics
                .listen
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(ConfigError {
                file: file.to_string(),
                position: position_of("listen"),
                message: format!(
                    "[metrics] listen {:?} is not an address: write ip:port, e.g. \"127.0.0.1:9469\"",
                    config.metrics.listen
                ),
            });
        }
        if config.metrics.interval.0 < Duration::from_secs(1) {
            return Err(ConfigError {
                file: file.to_string(),
                position: position_of("interval"),
                message: "[metrics] interval must be at least \"1s\"".into(),
            });
        }
        if !config.metrics.textfile.as_os_str().is_empty()
            && config
                .metrics
                .textfile
                .extension()
                .is_none_or(|e| e != "prom")
        {
            return Err(ConfigError {
                file: file.to_string(),
                position: position_of("textfile"),
                message: "[metrics] textfile must end in .prom (node_exporter reads only those)"
                    .into(),
            });
        }
        check_ct_caa(&config, text).map_err(|(position, message)| ConfigError {
            file: file.to_string(),
            position,
            message,
        })?;
        check_tls(&config, text).map_err(|(position, message)| ConfigError {
            file: file.to_string(),
            position,
            message,
        })?;
        config.agent.host_id = config.agent.host_id.trim().to_string();
        Ok(config)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            position: None,
            message: format!("cannot read the configuration: {e}"),
        })?;
        let config = Config::parse(&text, &file)?;
        config.check_cert_files(&text, &file)?;
        Ok(config)
    }

    /// Every `expect.cert_files` entry must hold a readable certificate (checked
    /// when loading, so `check-config` catches a typo before the agent runs).
    fn check_cert_files(&self, text: &str, file: &str) -> Result<(), ConfigError> {
        for path in &self.ct.authorized_cert_files {
            if let Err(e) = crate::cert::read_pem_file(path) {
                return Err(ConfigError {
                    file: file.to_string(),
                    position: key_position(text, &path.display().to_string()),
                    message: format!("[ct] authorized_cert_files: {e}"),
                });
            }
        }
        for target in &self.tls.targets {
            for path in &target.expect.cert_files {
                if let Err(e) = crate::cert::read_leaf(path) {
                    return Err(ConfigError {
                        file: file.to_string(),
                        position: key_position(text, &path.display().to_string()),
                        message: format!("tls target {:?}: {e}", target.name),
                    });
                }
            }
        }
        Ok(())
    }

    /// The host name used in alerts: `host_id`, else the machine's hostname.
    pub fn host_id(&self) -> String {
        if !self.agent.host_id.is_empty() {
            return self.agent.host_id.clone();
        }
        hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown-host".to_string())
    }

    /// True when `name` matches one of `ignore_links`.
    pub fn is_ignored_link(&self, name: &str) -> bool {
        self.agent.ignore_links.iter().any(|g| g.matches(name))
    }

    /// The effective configuration as TOML (what `check-config` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

/// Checks of `[ct]` and `[caa]`: (position, message) on error.
fn check_ct_caa(config: &Config, text: &str) -> Result<(), (Option<(usize, usize)>, String)> {
    let domain_ok = |d: &str| {
        let d = d.trim_end_matches('.');
        !d.is_empty()
            && d.len() <= 253
            && d.contains('.')
            && d.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
            })
    };
    for d in config.ct.domains.iter().chain(&config.caa.domains) {
        if !domain_ok(d) {
            return Err((
                key_position(text, &format!("{d:?}")),
                format!(
                    "{d:?} is not a domain name: write it like \"example.org\" (subdomains are included)"
                ),
            ));
        }
    }
    let ct = &config.ct;
    match url::Url::parse(&ct.api_url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
        _ => {
            return Err((
                key_position(text, "api_url"),
                format!("[ct] api_url {:?} is not an http(s) URL", ct.api_url),
            ));
        }
    }
    if ct.interval.0 < Duration::from_secs(1) || ct.timeout.0.is_zero() {
        return Err((
            key_position(text, "[ct]"),
            "[ct] interval must be at least \"1s\" and timeout greater than zero".into(),
        ));
    }
    if config.caa.interval.0 < Duration::from_secs(1) {
        return Err((
            key_position(text, "[caa]"),
            "[caa] interval must be at least \"1s\"".into(),
        ));
    }
    for ns in &config.caa.nameservers {
        let ok =
            ns.parse::<std::net::SocketAddr>().is_ok() || ns.parse::<std::net::IpAddr>().is_ok();
        if !ok {
            return Err((
                key_position(text, &format!("{ns:?}")),
                format!(
                    "[caa] nameserver {ns:?} is not an address: write \"192.0.2.53\" or \"192.0.2.53:53\""
                ),
            ));
        }
    }
    Ok(())
}

/// Cross-field checks of `[tls]` and `[correlation]`: (position, message) on error.
fn check_tls(config: &Config, text: &str) -> Result<(), (Option<(usize, usize)>, String)> {
    let tls = &config.tls;
    if tls.concurrency == 0 || tls.failures_before_alert == 0 {
        let key = ["concurrency", "failures_before_alert"]
            .into_iter()
            .find(|k| key_position(text, k).is_some())
            .unwrap_or("concurrency");
        return Err((
            key_position(text, key),
            "[tls] concurrency and failures_before_alert must be at least 1".into(),
        ));
    }
    if config.correlation.window.0.is_zero() {
        return Err((
            key_position(text, "window"),
            "[correlation] window must be greater than zero (e.g. \"30m\")".into(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for target in &tls.targets {
        let name = &target.name;
        let at = || {
            key_position(text, &format!("{name:?}"))
                .or_else(|| key_position(text, "[[tls.target]]"))
        };
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_name {
            return Err((
                at(),
                format!(
                    "tls target name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.' (it is used on the command line and in alerts)"
                ),
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err((
                at(),
                format!("tls target name {name:?} is used twice: names must be unique"),
            ));
        }
        if target.expect.is_empty() {
            return Err((
                at(),
                format!(
                    "tls target {name:?}: expect names no certificate: add cert_files, spki_sha256 or cert_sha256 (see `netsentry fingerprints`)"
                ),
            ));
        }
        if target.interval.0 < Duration::from_secs(1) || target.timeout.0.is_zero() {
            return Err((
                at(),
                format!(
                    "tls target {name:?}: interval must be at least \"1s\" and timeout greater than zero"
                ),
            ));
        }
        if target.server_name().is_empty() {
            return Err((at(), format!("tls target {name:?}: server_name is empty")));
        }
    }
    Ok(())
}

/// Where `key` is assigned (`key = ...` at the start of a line), or where the
/// text first mentions it outside comments. Used for checks that span values.
fn key_position(text: &str, key: &str) -> Option<(usize, usize)> {
    let mut offset = 0;
    let mut mention = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some(rest) = trimmed.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return Some(line_col(text, offset + indent));
        }
        if mention.is_none()
            && !trimmed.starts_with('#')
            && let Some(at) = line.find(key)
        {
            mention = Some(line_col(text, offset + at));
        }
        offset += line.len();
    }
    mention
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = text[line_start..offset].chars().count() + 1;
    (line, col)
}

fn tidy_message(message: &str) -> String {
    let msg = message.trim().trim_end_matches('.').to_string();
    if msg.starts_with("unknown field") {
        format!("{msg}; remove it or check its spelling (config/netsentry.toml lists every key)")
    } else if msg.starts_with("unknown variant") {
        format!("{msg}; use one of the listed values")
    } else {
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_is_the_defaults() {
        let c = Config::parse("", "x.toml").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.agent.state_dir, PathBuf::from("/var/lib/netsentry"));
        assert!(c.is_ignored_link("veth12ab"));
        assert!(!c.is_ignored_link("eth0"));
        assert_eq!(c.agent.reconcile_interval.0, Duration::from_secs(300));
    }

    #[test]
    fn the_shipped_example_config_parses() {
        let text = include_str!("../config/netsentry.toml");
        let c = Config::parse(text, "config/netsentry.toml").unwrap();
        assert_eq!(c.agent.heartbeat_interval.0, Duration::ZERO);
    }

    /// The commented `[[tls.target]]` example of the shipped config, uncommented.
    #[test]
    fn the_shipped_tls_target_example_parses() {
        let text = include_str!("../config/netsentry.toml");
        let start = text.find("# [[tls.target]]").unwrap();
        let block: String = text[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .filter(|l| !l.starts_with("# #") && l.len() > 2)
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let c = Config::parse(&block, "example").unwrap_or_else(|e| panic!("{e}\n{block}"));
        let t = &c.tls.targets[0];
        assert_eq!(t.name, "xmpp");
        assert_eq!(t.starttls, StartTls::Xmpp);
        assert_eq!(
            t.via.as_ref().unwrap().to_string(),
            "socks5://127.0.0.1:9050"
        );
        assert_eq!(t.expect.cert_files.len(), 1);
    }

    #[test]
    fn a_full_config_parses() {
        let c = Config::parse(
            r#"
[agent]
host_id = "web1"
state_dir = "/tmp/ns"
interfaces = ["eth0"]
ignore_links = ["veth*"]
heartbeat_interval = "1m"

[log]
journald = "off"
level = "debug"

[[webhook]]
url = "http://127.0.0.1:9000/hook"
min_severity = "warning"
timeout = "2s"

[[webhook]]
url = "https://am.example.net/api/v2/alerts"
format = "alertmanager"
"#,
            "f",
        )
        .unwrap();
        assert_eq!(c.host_id(), "web1");
        assert_eq!(c.webhooks.len(), 2);
        assert_eq!(c.webhooks[0].min_severity, Severity::Warning);
        assert_eq!(c.webhooks[1].format, WebhookFormat::Alertmanager);
        assert!(!c.webhooks[0].url.is_cleartext_remote());
        assert_eq!(c.agent.heartbeat_interval.0, Duration::from_secs(60));
        // The printed effective config parses back to the same thing.
        assert_eq!(Config::parse(&c.to_toml(), "again").unwrap(), c);
    }

    /// Each bad config with the exact position and the start of the message.
    #[test]
    fn bad_configs_point_at_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("[agent]\nbogus = 1\n", "f:2:1: unknown field `bogus`"),
            ("[agnet]\n", "f:1:2: unknown field `agnet`"),
            (
                "[agent]\nheartbeat_interval = \"5x\"\n",
                "f:2:22: invalid duration \"5x\"",
            ),
            (
                "[agent]\nheartbeat_interval = \"\"\n",
                "f:2:22: invalid duration",
            ),
            (
                "[agent]\nheartbeat_interval = 30\n",
                "f:2:22: invalid type: integer `30`",
            ),
            (
                "[agent]\nreconcile_interval = \"10ms\"\n",
                "f:2:1: reconcile_interval must be at least",
            ),
            (
                "[agent]\ninterfaces = [\"eth0\", \"this-name-is-too-long\"]\n",
                "f:2:14: \"this-name-is-too-long\" is not an interface name",
            ),
            (
                "[agent]\nignore_links = [\"\"]\n",
                "f:2:16: \"\" is not a link pattern",
            ),
            (
                "[agent]\ncoalesce_burst = 0\n",
                "f:2:1: coalesce_burst must be at least 1",
            ),
            (
                "# coalesce_burst is explained here\n[agent]\n  coalesce_burst = 0\n",
                "f:3:3: coalesce_burst must be at least 1",
            ),
            (
                "[agent]\nnetlink_receive_buffer = 100\n",
                "f:2:1: netlink_receive_buffer must be at least 4096",
            ),
            (
                "[log]\njournald = \"maybe\"\n",
                "f:2:12: unknown variant `maybe`",
            ),
            ("[log]\nlevel = \"loud\"\n", "f:2:9: unknown variant `loud`"),
            (
                "[[webhook]]\nformat = \"slack\"\n",
                "f:1:1: missing field `url`",
            ),
            (
                "[[webhook]]\nurl = \"ftp://x/\"\n",
                "f:2:7: url \"ftp://x/\" must start with https://",
            ),
            (
                "[[webhook]]\nurl = \"not a url\"\n",
                "f:2:7: invalid url \"not a url\"",
            ),
            (
                "[[webhook]]\nurl = \"https://a.example/\"\nmin_severity = \"urgent\"\n",
                "f:3:16: unknown variant `urgent`",
            ),
            (
                "[[webhook]]\nurl = \"https://a.example/\"\nformat = \"teams\"\n",
                "f:3:10: unknown variant `teams`",
            ),
            (
                "[[webhook]]\nurl = \"https://a.example/\"\ntimeout = \"0s\"\n",
                "f:2:8: webhook https://a.example/: timeout must be greater than zero",
            ),
            (
                "[[webhook]]\nurl = \"https://a.example/\"\nsecret = \"x\"\n",
                "f:3:1: unknown field `secret`",
            ),
            (
                "[arp]\nenabled = \"yes\"\n",
                "f:2:11: invalid type: string \"yes\", expected a boolean",
            ),
            ("[agent\n", "f:1:7: "),
            ("agent = 5\n", "f:1:9: invalid type: integer `5`"),
        ];
        for (text, expected) in cases {
            let err = Config::parse(text, "f").expect_err(text).to_string();
            assert!(
                err.starts_with(expected),
                "config {text:?}\n  got:  {err}\n  want: {expected}..."
            );
        }
    }

    #[test]
    fn tls_targets() {
        let c = Config::parse(
            r#"
[tls]
concurrency = 8
[[tls.target]]
name = "xmpp"
address = "xmpp.example.org:5222"
server_name = "example.org"
starttls = "xmpp-server"
interval = "1s"
via = "socks5://127.0.0.1:9050"
expect = { spki_sha256 = ["AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99"] }
[[tls.target]]
name = "web"
address = "192.0.2.10:443"
expect = { cert_sha256 = ["aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899"] }
[correlation]
window = "10m"
"#,
            "f",
        )
        .unwrap();
        let t = &c.tls.targets[0];
        assert_eq!(t.server_name(), "example.org");
        assert_eq!(t.starttls, StartTls::XmppServer);
        assert_eq!(t.vantage(), "via socks5://127.0.0.1:9050");
        assert_eq!(t.expiry_warning.0, Duration::from_secs(14 * 86400));
        let w = &c.tls.targets[1];
        assert_eq!(w.server_name(), "192.0.2.10");
        assert_eq!(w.interval.0, Duration::from_secs(300));
        assert_eq!(w.vantage(), "direct");
        assert_eq!(c.correlation.window.0, Duration::from_secs(600));
        assert!(c.to_toml().contains("starttls = \"xmpp-server\""));

        let expect = "expect = { cert_sha256 = [\"aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899\"] }";
        let cases: Vec<(String, &str)> = vec![
            (
                format!("[[tls.target]]\nname = \"a\"\naddress = \"h\"\n{expect}\n"),
                "f:3:11: \"h\" is not a service address (no port)",
            ),
            (
                "[[tls.target]]\nname = \"a\"\naddress = \"h:1\"\n".to_string(),
                "f:1:1: missing field `expect`",
            ),
            (
                "[[tls.target]]\nname = \"a\"\naddress = \"h:1\"\nexpect = {}\n".to_string(),
                "f:2:8: tls target \"a\": expect names no certificate",
            ),
            (
                "[[tls.target]]\nname = \"a\"\naddress = \"h:1\"\nexpect = { spki_sha256 = [\"12\"] }\n".to_string(),
                "f:4:26: \"12\" is not a SHA-256 value",
            ),
            (
                format!("[[tls.target]]\nname = \"a\"\naddress = \"h:1\"\nstarttls = \"ftp\"\n{expect}\n"),
                "f:4:12: unknown variant `ftp`",
            ),
            (
                format!("[[tls.target]]\nname = \"a\"\naddress = \"h:1\"\nvia = \"http://p:1\"\n{expect}\n"),
                "f:4:7: \"http://p:1\" is not a SOCKS5 proxy",
            ),
            (
                format!("[[tls.target]]\nname = \"a\"\naddress = \"h:1\"\ninterval = \"100ms\"\n{expect}\n"),
                "f:2:8: tls target \"a\": interval must be at least",
            ),
            (
                format!("[[tls.target]]\nname = \"a b\"\naddress = \"h:1\"\n{expect}\n"),
                "f:2:8: tls target name \"a b\"",
            ),
            (
                format!("[[tls.target]]\nname = \"a\"\naddress = \"h:1\"\n{expect}\n[[tls.target]]\nname = \"a\"\naddress = \"h:2\"\n{expect}\n"),
                "f:2:8: tls target name \"a\" is used twice",
            ),
            ("[tls]\nconcurrency = 0\n".to_string(), "f:2:1: [tls] concurrency"),
            ("[correlation]\nwindow = \"0s\"\n".to_string(), "f:2:1: [correlation] window"),
        ];
        for (text, expected) in &cases {
            let err = Config::parse(text, "f").expect_err(text).to_string();
            assert!(
                err.starts_with(expected),
                "config {text:?}\n  got:  {err}\n  want: {expected}..."
            );
        }
    }

    #[test]
    fn missing_certificate_files_are_caught_when_loading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[[tls.target]]\nname = \"a\"\naddress = \"h:1\"\nexpect = { cert_files = [\"/nonexistent/cert.pem\"] }\n",
        )
        .unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.ends_with("c.toml:4:27: tls target \"a\": cannot read /nonexistent/cert.pem: No such file or directory (os error 2)"),
            "{err}"
        );
    }

    #[test]
    fn durations() {
        let ok = [
            ("30s", 30_000),
            ("5m", 300_000),
            ("24h", 86_400_000),
            ("1h30m", 5_400_000),
            ("250ms", 250),
            ("0s", 0),
            ("7d", 604_800_000),
        ];
        for (text, ms) in ok {
            let i = Interval::parse(text).unwrap();
            assert_eq!(i.0.as_millis(), ms, "{text}");
            assert_eq!(Interval::parse(&i.to_string()).unwrap(), i);
        }
        for bad in [
            "",
            "5",
            "s",
            "5 s",
            "-1s",
            "1.5s",
            "5sec",
            "99999999999999999999999d",
        ] {
            assert!(Interval::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn globs() {
        let g = |p: &str, n: &str| Glob(p.into()).matches(n);
        assert!(g("veth*", "veth0"));
        assert!(g("veth*", "veth"));
        assert!(!g("veth*", "eth0"));
        assert!(g("br-*", "br-1234"));
        assert!(!g("br-*", "br0"));
        assert!(g("e?h*", "eth12"));
        assert!(g("*", ""));
        assert!(g("*a*b", "xxaxxb"));
        assert!(!g("*a*b", "xxaxxc"));
    }

    #[test]
    fn cleartext_warning_only_for_remote_http() {
        let u = |s: &str| WebhookUrl(reqwest::Url::parse(s).unwrap());
        assert!(u("http://alerts.example.net/").is_cleartext_remote());
        assert!(!u("http://127.0.0.1:8080/").is_cleartext_remote());
        assert!(!u("http://[::1]/").is_cleartext_remote());
        assert!(!u("http://localhost/").is_cleartext_remote());
        assert!(!u("https://alerts.example.net/").is_cleartext_remote());
    }
}
