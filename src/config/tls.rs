//! `[tls]`, `[[tls.target]]` and `[correlation]`: certificate checks of our own
//! services from the outside, and how they are tied to network anomalies.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use super::Interval;
use crate::cert::Sha256;

/// `[tls]`: the checks of our services from outside, and their targets.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Checks in flight at once (each holds one connection).
    pub concurrency: usize,
    /// Consecutive failed checks of one target before `tls_probe_failed`.
    pub failures_before_alert: u32,
    /// A manifest (`expect.manifest`) is fetched again at most this often.
    pub manifest_refresh: Interval,
    /// DNS servers for `srv` targets and `addresses = "all"` (as "ip" or
    /// "ip:port"); empty: the system resolver (/etc/resolv.conf).
    pub nameservers: Vec<String>,
    /// DNSKEY records trusted for DNSSEC validation (`expect.dane`); unset:
    /// the root zone's KSKs built in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dnssec_trust_anchor: Option<PathBuf>,
    #[serde(rename = "target")]
    pub targets: Vec<TlsTarget>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            concurrency: 64,
            failures_before_alert: 3,
            manifest_refresh: Interval(Duration::from_secs(300)),
            nameservers: Vec::new(),
            dnssec_trust_anchor: None,
            targets: Vec::new(),
        }
    }
}

/// One service whose certificate is checked.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsTarget {
    pub name: String,
    /// `host:port`; a host name is checked at each of its addresses (see `addresses`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<TargetAddress>,
    /// A service instead of an address: `_xmpp-client._tcp.example.org`; every
    /// address of every SRV target is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srv: Option<String>,
    /// `all` (default): each A/AAAA of a host name is checked on its own;
    /// `first`: the first address that answers (one check).
    #[serde(default)]
    pub addresses: Addresses,
    /// SNI and the name verified; default: the host part of `address`, or the
    /// domain of `srv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(default)]
    pub starttls: StartTls,
    #[serde(default = "default_interval")]
    pub interval: Interval,
    /// A SOCKS5 proxy to check through (an outside vantage point such as Tor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<SocksProxy>,
    /// Trust anchors for `chain_valid`; default: the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// What the certificate must be; empty: the endpoints of the server name
    /// are only compared with each other (`tls_inconsistent`).
    #[serde(default)]
    pub expect: Expect,
    #[serde(default = "default_expiry_warning")]
    pub expiry_warning: Interval,
    /// A certificate replaced in `expect.cert_files` stays accepted this long.
    #[serde(default = "default_rotation_grace")]
    pub rotation_grace: Interval,
    /// The whole check (resolve, connect, STARTTLS, handshake) must end within this.
    #[serde(default = "default_probe_timeout")]
    pub timeout: Interval,
    /// Measure at which hop the port answers (TTL-limited connects) and
    /// compare with the other ports of the same address.
    #[serde(default = "default_true")]
    pub path_check: bool,
    /// Another port of the same address to compare the path length with
    /// (e.g. 22, which an interceptor of 5222 leaves alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_port: Option<u16>,
}

fn default_true() -> bool {
    true
}

fn default_interval() -> Interval {
    Interval(Duration::from_secs(300))
}
fn default_expiry_warning() -> Interval {
    Interval(Duration::from_secs(14 * 86_400))
}
fn default_rotation_grace() -> Interval {
    Interval(Duration::from_secs(86_400))
}
fn default_probe_timeout() -> Interval {
    Interval(Duration::from_secs(10))
}

impl TlsTarget {
    /// The name sent as SNI and verified against the certificate.
    pub fn server_name(&self) -> &str {
        if let Some(name) = &self.server_name {
            return name;
        }
        match (&self.address, &self.srv) {
            (Some(a), _) => &a.host,
            (None, Some(srv)) => srv_domain(srv),
            (None, None) => "",
        }
    }

    /// What is checked, as messages say it: the address, or `srv NAME`.
    pub fn service(&self) -> String {
        match (&self.address, &self.srv) {
            (Some(a), _) => a.to_string(),
            (None, Some(srv)) => format!("srv {srv}"),
            (None, None) => String::new(),
        }
    }

    /// The host names this target resolves (for correlating CT issuances).
    pub fn host_names(&self) -> Vec<String> {
        let mut out = vec![self.server_name().to_string()];
        if let Some(a) = &self.address {
            out.push(a.host.clone());
        }
        out
    }

    /// Where the check comes from, as alerts say it.
    pub fn vantage(&self) -> String {
        match &self.via {
            Some(p) => format!("via {p}"),
            None => "direct".to_string(),
        }
    }
}

/// The domain of an SRV name: `_xmpp-client._tcp.example.org` → `example.org`.
pub fn srv_domain(srv: &str) -> &str {
    let mut rest = srv.trim_end_matches('.');
    for _ in 0..2 {
        match rest.split_once('.') {
            Some((label, tail)) if label.starts_with('_') => rest = tail,
            _ => break,
        }
    }
    rest
}

/// Checks an SRV name: `_service._tcp.domain`.
pub fn check_srv(srv: &str) -> Result<(), String> {
    let labels: Vec<&str> = srv.trim_end_matches('.').split('.').collect();
    let ok = labels.len() >= 3
        && labels[0].len() > 1
        && labels[0].starts_with('_')
        && labels[1] == "_tcp"
        && srv.len() <= 253
        && labels[2..].iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    match ok {
        true => Ok(()),
        false => Err(format!(
            "{srv:?} is not an SRV name: write _service._tcp.domain, e.g. \"_xmpp-client._tcp.example.org\""
        )),
    }
}

/// How the addresses of a host name are checked.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Addresses {
    /// Each address on its own (an interceptor may sit in front of one).
    #[default]
    All,
    /// The first address that answers, as a client would connect.
    First,
}

/// The certificates a target may present.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Expect {
    /// PEM files; the first certificate of each is the server's. Re-read when they change.
    pub cert_files: Vec<PathBuf>,
    pub spki_sha256: Vec<Sha256>,
    pub cert_sha256: Vec<Sha256>,
    /// A signed fingerprint manifest (`[publish]` of the server), http(s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// The minisign public key that signs it (`RW...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_key: Option<String>,
    /// Check the certificate against the endpoint's DNSSEC-validated TLSA
    /// records (usages 2 and 3): `dane_mismatch`, `dane_unavailable`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dane: bool,
}

impl Expect {
    /// True when no certificate is named at all.
    pub fn is_empty(&self) -> bool {
        self.cert_files.is_empty()
            && self.spki_sha256.is_empty()
            && self.cert_sha256.is_empty()
            && self.manifest.is_none()
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Sha256::parse_hex(&text).map_err(de::Error::custom)
    }
}

/// The STARTTLS dialogue before the handshake, if any.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StartTls {
    /// TLS from the first byte.
    #[default]
    None,
    Xmpp,
    XmppServer,
    Smtp,
    Imap,
    Pop3,
    Ldap,
    Postgres,
}

impl StartTls {
    /// The name used in the configuration and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            StartTls::None => "none",
            StartTls::Xmpp => "xmpp",
            StartTls::XmppServer => "xmpp-server",
            StartTls::Smtp => "smtp",
            StartTls::Imap => "imap",
            StartTls::Pop3 => "pop3",
            StartTls::Ldap => "ldap",
            StartTls::Postgres => "postgres",
        }
    }
}

/// `host:port`, `[v6]:port`; names are resolved at each check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetAddress {
    pub host: String,
    pub port: u16,
}

impl TargetAddress {
    /// Parses `host:port` or `[v6]:port`; the message says what is wrong.
    pub fn parse(text: &str) -> Result<TargetAddress, String> {
        let bad = |why: &str| {
            format!(
                "{text:?} is not a service address ({why}): write host:port, e.g. \"xmpp.example.org:5222\" or \"[2001:db8::1]:443\""
            )
        };
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (h, p) = rest.split_once("]:").ok_or_else(|| bad("no port"))?;
            h.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("bad IPv6 address"))?;
            (h, p)
        } else {
            let (h, p) = text.rsplit_once(':').ok_or_else(|| bad("no port"))?;
            if h.contains(':') {
                return Err(bad("put an IPv6 address in brackets"));
            }
            (h, p)
        };
        let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
        if !host_ok {
            return Err(bad("bad host name"));
        }
        if port == 0 {
            return Err(bad("port 0"));
        }
        Ok(TargetAddress {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for TargetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl<'de> Deserialize<'de> for TargetAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        TargetAddress::parse(&text).map_err(de::Error::custom)
    }
}

impl Serialize for TargetAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `socks5://[user:password@]host:port` (or `socks5h://`: the same here, names are
/// always resolved by the proxy so that no DNS query leaves from this host).
#[derive(Clone, PartialEq, Eq)]
pub struct SocksProxy {
    pub address: TargetAddress,
    /// RFC 1929 credentials (Tor uses them to keep circuits apart).
    pub credentials: Option<(String, String)>,
}

impl SocksProxy {
    /// Parses `socks5://[user:pass@]host:port`; the message says what is wrong.
    pub fn parse(text: &str) -> Result<SocksProxy, String> {
        let bad = |why: String| {
            format!(
                "{text:?} is not a SOCKS5 proxy ({why}): write it like \"socks5://127.0.0.1:9050\""
            )
        };
        let url = url::Url::parse(text).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "socks5" | "socks5h") {
            return Err(bad("only socks5:// is supported".into()));
        }
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(h) => h.to_string(),
            None => return Err(bad("no host".into())),
        };
        let port = url.port().ok_or_else(|| bad("no port".into()))?;
        if !(url.path().is_empty() || url.path() == "/") || url.query().is_some() {
            return Err(bad("no path allowed".into()));
        }
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let credentials = (!url.username().is_empty())
            .then(|| (decode(url.username()), decode(url.password().unwrap_or(""))));
        if let Some((u, p)) = &credentials
            && (u.len() > 255 || p.len() > 255)
        {
            return Err(bad("user name and password are at most 255 bytes".into()));
        }
        Ok(SocksProxy {
            address: TargetAddress { host, port },
            credentials,
        })
    }
}

/// Shown without the password.
impl fmt::Display for SocksProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.credentials {
            Some((user, _)) => write!(f, "socks5://{user}:***@{}", self.address),
            None => write!(f, "socks5://{}", self.address),
        }
    }
}

impl fmt::Debug for SocksProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<'de> Deserialize<'de> for SocksProxy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        SocksProxy::parse(&text).map_err(de::Error::custom)
    }
}

impl Serialize for SocksProxy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `[correlation]`: how close in time evidence must be for `interception_suspected`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelationConfig {
    /// A certificate mismatch and a path anomaly this close together make one
    /// `interception_suspected`.
    pub window: Interval,
    /// A CT issuance pairs with the other evidence over this (CT monitors
    /// see a certificate hours after the flap that came with it).
    pub ct_window: Interval,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        CorrelationConfig {
            window: Interval(Duration::from_secs(1800)),
            ct_window: Interval(Duration::from_secs(48 * 3600)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a = TargetAddress::parse("xmpp.example.org:5222").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("xmpp.example.org", 5222));
        let b = TargetAddress::parse("[2001:db8::1]:443").unwrap();
        assert_eq!(b.host, "2001:db8::1");
        assert_eq!(b.to_string(), "[2001:db8::1]:443");
        for bad in [
            "example.org",
            "example.org:0",
            "example.org:99999",
            "2001:db8::1:443",
            ":443",
            "a b:1",
            "[zz]:1",
        ] {
            assert!(TargetAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn srv_names() {
        assert_eq!(srv_domain("_xmpp-client._tcp.example.org"), "example.org");
        assert_eq!(
            srv_domain("_imaps._tcp.mail.example.org."),
            "mail.example.org"
        );
        assert!(check_srv("_xmpps-client._tcp.example.org").is_ok());
        for bad in [
            "example.org",
            "_xmpp._udp.example.org",
            "_._tcp.example.org",
            "_x._tcp.",
        ] {
            assert!(check_srv(bad).is_err(), "{bad}");
        }
        let c = crate::config::Config::parse(
            "[[tls.target]]\nname = \"svc\"\nsrv = \"_xmpp-client._tcp.example.org\"\n",
            "t",
        )
        .unwrap();
        let t = &c.tls.targets[0];
        assert_eq!(t.server_name(), "example.org");
        assert!(t.expect.is_empty());
        assert_eq!(t.addresses, Addresses::All);
        assert_eq!(t.service(), "srv _xmpp-client._tcp.example.org");
    }

    #[test]
    fn proxies() {
        let p = SocksProxy::parse("socks5://127.0.0.1:9050").unwrap();
        assert_eq!(p.address.to_string(), "127.0.0.1:9050");
        assert_eq!(p.credentials, None);
        let q = SocksProxy::parse("socks5h://alice:s%40cret@[::1]:1080").unwrap();
        assert_eq!(q.credentials, Some(("alice".into(), "s@cret".into())));
        assert_eq!(q.to_string(), "socks5://alice:***@[::1]:1080");
        for bad in [
            "http://127.0.0.1:8080",
            "socks5://127.0.0.1",
            "socks4://h:1",
            "nonsense",
        ] {
            assert!(SocksProxy::parse(bad).is_err(), "{bad}");
        }
    }
}

/// `[ct]`: Certificate Transparency monitoring of our domains.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CtConfig {
    /// Domains watched, each with its subdomains; empty: CT monitoring off.
    pub domains: Vec<String>,
    /// Cert Spotter's issuances API (or anything that speaks its format).
    pub api_url: String,
    /// A file holding a Cert Spotter API key (sent as a bearer token); optional.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    pub interval: Interval,
    /// Certificates that are ours although no TLS target serves them (PEM files).
    pub authorized_cert_files: Vec<PathBuf>,
    /// Keys that are ours (hex SHA-256 of the SPKI).
    pub authorized_spki_sha256: Vec<Sha256>,
    /// Signed manifests (`[publish]` of our other servers) whose
    /// certificates are ours: one server's renewal alerts no peer.
    pub authorized_manifests: Vec<AuthorizedManifest>,
    /// Each request (and each page) must end within this.
    pub timeout: Interval,
}

impl Default for CtConfig {
    fn default() -> Self {
        CtConfig {
            domains: Vec::new(),
            api_url: "https://api.certspotter.com/v1/issuances".into(),
            api_key_file: None,
            interval: Interval(Duration::from_secs(3600)),
            authorized_cert_files: Vec::new(),
            authorized_spki_sha256: Vec::new(),
            authorized_manifests: Vec::new(),
            timeout: Interval(Duration::from_secs(30)),
        }
    }
}

/// One `[ct] authorized_manifests` entry.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthorizedManifest {
    /// http(s) URL of `fingerprints.json`.
    pub url: String,
    /// The minisign public key (`RW...`) that signs it.
    pub key: String,
}

/// `[caa]`: the CAA policy of our domains.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CaaConfig {
    /// Domains audited; empty: the audit is off.
    pub domains: Vec<String>,
    /// DNS servers as "ip" or "ip:port"; empty: the system resolver (/etc/resolv.conf).
    pub nameservers: Vec<String>,
    pub interval: Interval,
    /// An `issue` property without RFC 8657 `accounturi` is weak.
    pub require_accounturi: bool,
    /// An `issue` property without RFC 8657 `validationmethods` is weak.
    pub require_validationmethods: bool,
}

impl Default for CaaConfig {
    fn default() -> Self {
        CaaConfig {
            domains: Vec::new(),
            nameservers: Vec::new(),
            interval: Interval(Duration::from_secs(6 * 3600)),
            require_accounturi: true,
            require_validationmethods: true,
        }
    }
}
