//! Configuration: TOML text -> validated [`Config`].
//!
//! Parsing is a pure function from a string, so every error path is a unit test.
//! Value checks run inside `Deserialize` where a value can be judged alone
//! (`values.rs`), so the TOML parser attaches its position; checks that span
//! values (`check.rs`) take the position from the parser's spans
//! (`positions.rs`). Errors print as `FILE:LINE:COL: message`.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

mod check;
mod positions;
mod sections;
mod source;
mod tls;
mod values;

pub use check::publish_files;
pub use sections::{
    AgentConfig, ArpConfig, DEFAULT_HEARTBEAT, InboundConfig, JournaldMode, LogConfig, LogLevel,
    MetricsConfig, PublishConfig, RouteConfig, WebhookConfig, WebhookFormat,
};
pub use source::ConfigSource;
pub use tls::{
    Addresses, AuthorizedManifest, CaaConfig, CorrelationConfig, CtConfig, Expect, SocksProxy,
    StartTls, TargetAddress, TlsConfig, TlsTarget,
};
pub use tls::{check_srv, srv_domain};
pub use values::{Cidr, GatewaySpec, Glob, InterfaceName, Interval, WebhookUrl};

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
    pub inbound: InboundConfig,
    pub route: RouteConfig,
    pub tls: TlsConfig,
    pub correlation: CorrelationConfig,
    pub metrics: MetricsConfig,
    pub ct: CtConfig,
    pub caa: CaaConfig,
    pub publish: PublishConfig,
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
            let position = e.span().map(|span| positions::line_col(text, span.start));
            ConfigError {
                file: file.to_string(),
                position,
                message: tidy_message(e.message()),
            }
        })?;
        check::all(&config, &positions::Positions::new(text)).map_err(|(position, message)| {
            ConfigError {
                file: file.to_string(),
                position,
                message,
            }
        })?;
        config.agent.host_id = config.agent.host_id.trim().to_string();
        Ok(config)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = crate::files::read_regular_text(path).map_err(|e| ConfigError {
            file: file.clone(),
            position: None,
            message: format!("cannot read the configuration: {e}"),
        })?;
        let config = Config::parse(&text, &file)?;
        check::cert_files(&config, &positions::Positions::new(&text)).map_err(
            |(position, message)| ConfigError {
                file: file.clone(),
                position,
                message,
            },
        )?;
        Ok(config)
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
    pub fn is_ignored_link(
        &self,
        view: &crate::kernel::KernelView,
        link: &crate::kernel::Link,
    ) -> bool {
        view.is_ignored(
            link,
            &self.agent.ignore_links,
            &self.agent.ignore_link_kinds,
        )
    }

    /// The effective configuration as TOML (what `check-config` prints), with
    /// the heartbeat it implies.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        let every = self.heartbeat_every().unwrap_or_default();
        shown.agent.heartbeat_interval = Some(Interval(every));
        toml::to_string_pretty(&shown).unwrap_or_default()
    }

    /// How often `agent_heartbeat` is sent: `heartbeat_interval` when set
    /// (zero: never); not set, [`sections::DEFAULT_HEARTBEAT`] when any
    /// receiver is configured (a killed agent must not go unnoticed), else never.
    pub fn heartbeat_every(&self) -> Option<std::time::Duration> {
        match self.agent.heartbeat_interval {
            Some(i) if i.0.is_zero() => None,
            Some(i) => Some(i.0),
            None if !self.webhooks.is_empty() => Some(sections::DEFAULT_HEARTBEAT),
            None => None,
        }
    }
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
    use crate::alert::Severity;
    use std::path::PathBuf;
    use std::time::Duration;

    #[test]
    fn empty_text_is_the_defaults() {
        let c = Config::parse("", "x.toml").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.agent.state_dir, PathBuf::from("/var/lib/netsentry"));
        let names = &c.agent.ignore_links;
        for cni in [
            "veth12ab",
            "cali3f",
            "lxc9",
            "cilium_host",
            "flannel.1",
            "kube-ipvs0",
            "vxlan.calico",
            "tunl0",
        ] {
            assert!(names.iter().any(|g| g.matches(cni)), "{cni}");
        }
        assert!(!names.iter().any(|g| g.matches("eth0")));
        assert_eq!(c.agent.reconcile_interval.0, Duration::from_secs(300));
    }

    #[test]
    fn inbound_values_are_checked_with_their_position() {
        let ok = Config::parse(
            "[inbound]\nports = [22, 5222]\nignore_sources = [\"198.51.100.0/24\", \"2001:db8::7\"]\nshare = 0.9\n",
            "f",
        )
        .unwrap();
        assert_eq!(ok.inbound.ignore_sources[1].prefix, 128);
        assert!(ok.inbound.ignore_sources[0].contains(&"198.51.100.77".parse().unwrap()));
        assert!(!ok.inbound.ignore_sources[0].contains(&"198.51.101.1".parse().unwrap()));
        for (text, want) in [
            (
                "[inbound]\nshare = 0.4\n",
                "f:2:1: [inbound] share = 0.4: give a fraction above 0.5",
            ),
            ("[inbound]\nshare = 1.5\n", "f:2:1: [inbound] share = 1.5"),
            (
                "[inbound]\nports = [22, 0]\n",
                "f:2:14: [inbound] ports: 0 is not a port",
            ),
            ("[inbound]\nports = [70000]\n", "f:2:10:"),
            (
                "[inbound]\nmin_samples = 0\n",
                "f:2:1: [inbound] min_samples and max_syn_rate",
            ),
            (
                "[inbound]\nwindow = \"0s\"\n",
                "f:2:1: [inbound] window must be at least",
            ),
            (
                "[inbound]\nignore_sources = [\"10.0.0.0/33\"]\n",
                "is not an address block",
            ),
            (
                "[inbound]\nignore_sources = [\"example.org\"]\n",
                "is not an address block",
            ),
        ] {
            let e = Config::parse(text, "f").unwrap_err().to_string();
            assert!(e.starts_with(want) || e.contains(want), "{text:?}: {e}");
        }
        let many: Vec<String> = (1..=65).map(|p| p.to_string()).collect();
        let e = Config::parse(&format!("[inbound]\nports = [{}]\n", many.join(",")), "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("names 65 ports: at most 64"), "{e}");
    }

    #[test]
    fn publish_needs_a_key_a_path_and_certificates() {
        for (text, want) in [
            (
                "[publish]\nkey_file = \"/k\"\n",
                "has a key_file but no path",
            ),
            (
                "[publish]\npath = \"/p.json\"\n",
                "has a path but no key_file",
            ),
            (
                "[publish]\nkey_file = \"/k\"\npath = \"/p.json\"\n",
                "has no certificate to publish",
            ),
            (
                "[publish]\nvalidity = \"10s\"\n",
                "validity must be at least",
            ),
        ] {
            let e = Config::parse(text, "f").unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let ok = Config::parse(
            "[publish]\nkey_file = \"/k\"\npath = \"/p.json\"\ncert_files = [\"/c.pem\"]\n",
            "f",
        )
        .unwrap();
        assert!(ok.publish.enabled());
        assert_eq!(publish_files(&ok), vec![PathBuf::from("/c.pem")]);
    }

    #[test]
    fn the_shipped_example_config_parses() {
        let text = include_str!("../../config/netsentry.toml");
        let c = Config::parse(text, "config/netsentry.toml").unwrap();
        // No receivers in the shipped file: no heartbeat until one is added.
        assert_eq!(c.agent.heartbeat_interval, None);
        assert_eq!(c.heartbeat_every(), None);
    }

    /// A killed agent must be noticed: with a receiver, heartbeats are on
    /// unless turned off.
    #[test]
    fn heartbeats_are_on_by_default_with_a_receiver() {
        let hook = "[[webhook]]\nurl = \"https://a.example/\"\n";
        let c = Config::parse(hook, "f").unwrap();
        assert_eq!(c.heartbeat_every(), Some(DEFAULT_HEARTBEAT));
        assert!(
            c.to_toml().contains("heartbeat_interval = \"5m\""),
            "{}",
            c.to_toml()
        );
        let c = Config::parse(
            &format!("[agent]\nheartbeat_interval = \"0s\"\n{hook}"),
            "f",
        )
        .unwrap();
        assert_eq!(c.heartbeat_every(), None);
        let c = Config::parse(
            &format!("[agent]\nheartbeat_interval = \"30s\"\n{hook}"),
            "f",
        )
        .unwrap();
        assert_eq!(c.heartbeat_every(), Some(Duration::from_secs(30)));
        assert_eq!(Config::parse("", "f").unwrap().heartbeat_every(), None);
    }

    /// The commented `[[tls.target]]` example of the shipped config, uncommented.
    #[test]
    fn the_shipped_tls_target_example_parses() {
        let text = include_str!("../../config/netsentry.toml");
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
        assert_eq!(c.heartbeat_every(), Some(Duration::from_secs(60)));
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
                "f:3:1: webhook https://a.example/: timeout must be greater than zero",
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
                format!("[[tls.target]]\nname = \"a\"\n{expect}\n"),
                "f:2:1: tls target \"a\": give exactly one of address",
            ),
            (
                format!("[[tls.target]]\nname = \"a\"\naddress = \"h:1\"\nsrv = \"_x._tcp.h\"\n{expect}\n"),
                "f:2:1: tls target \"a\": give exactly one of address",
            ),
            (
                "[[tls.target]]\nname = \"a\"\nsrv = \"xmpp.example.org\"\n".to_string(),
                "f:3:1: tls target \"a\": \"xmpp.example.org\" is not an SRV name",
            ),
            (
                "[tls]\nnameservers = [\"dns\"]\n".to_string(),
                "f:2:16: [tls] nameserver \"dns\" is not an address",
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
                "f:4:1: tls target \"a\": interval must be at least",
            ),
            (
                format!("[[tls.target]]\nname = \"a b\"\naddress = \"h:1\"\n{expect}\n"),
                "f:2:1: tls target name \"a b\"",
            ),
            (
                format!("[[tls.target]]\nname = \"a\"\naddress = \"h:1\"\n{expect}\n[[tls.target]]\nname = \"a\"\naddress = \"h:2\"\n{expect}\n"),
                "f:6:1: tls target name \"a\" is used twice",
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
    fn a_key_shared_by_two_sections_is_reported_where_it_is_wrong() {
        let text = r#"[agent]
host_id = "h"

[[tls.target]]
name = "xmpp"
address = "xmpp.example.net:5222"
interval = "5m"
starttls = "xmpp"
expect = { spki_sha256 = ["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"] }

[metrics]
textfile = "/tmp/x.prom"
interval = "0s"
"#;
        let err = Config::parse(text, "f").unwrap_err().to_string();
        assert_eq!(err, "f:13:1: [metrics] interval must be at least \"1s\"");
        // And the other way round: the target's interval, not the metrics one.
        let text = text
            .replace("interval = \"5m\"", "interval = \"10ms\"")
            .replace("interval = \"0s\"", "interval = \"15s\"");
        let err = Config::parse(&text, "f").unwrap_err().to_string();
        assert!(
            err.starts_with("f:7:1: tls target \"xmpp\": interval"),
            "{err}"
        );
        // `window`, `listen`, `timeout` and `receive_buffer` the same way.
        let text =
            "[[webhook]]\nurl = \"https://a.example/\"\ntimeout = \"5s\"\n[ct]\ntimeout = \"0s\"\n";
        let err = Config::parse(text, "f").unwrap_err().to_string();
        assert!(err.starts_with("f:5:1: [ct]"), "{err}");
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
            err.ends_with("c.toml:4:26: tls target \"a\": cannot read /nonexistent/cert.pem: No such file or directory (os error 2)"),
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
