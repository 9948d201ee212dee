//! Value types of the configuration, each checked as it is deserialized (so
//! the TOML parser attaches the position of a bad value).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written as `"30s"`, `"5m"`, `"24h"`, `"1h30m"`, `"250ms"`, `"7d"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval(pub Duration);

/// The longest duration any setting takes: every date the agent computes
/// from one (window ends, `endsAt`) stays far from the end of the calendar.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3650 * 86_400);

impl Interval {
    /// Parses `"30s"`, `"1h30m"`, ...; the message says how to write it.
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
                .filter(|v| *v <= MAX_INTERVAL.as_millis())
                .ok_or_else(|| {
                    format!("duration {text:?} is too long: at most \"3650d\" (ten years)")
                })?;
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
    /// True when `name` matches the pattern.
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
    /// The URL as it may be shown anywhere but in the configuration file (logs,
    /// metrics, `status`, alerts): scheme, host and port. A path, query, user
    /// info or fragment becomes `…`, since receivers such as Slack, Mattermost
    /// or Teams carry their token there.
    pub fn redacted(&self) -> String {
        let u = &self.0;
        let mut shown = format!("{}://{}", u.scheme(), u.host_str().unwrap_or_default());
        if let Some(port) = u.port() {
            shown.push_str(&format!(":{port}"));
        }
        let hidden = u.path() != "/"
            || u.query().is_some()
            || u.fragment().is_some()
            || !u.username().is_empty()
            || u.password().is_some();
        shown.push_str(if hidden { "/…" } else { "/" });
        shown
    }

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

/// Whole: this is the configuration itself (`check-config` prints it as a file
/// that parses back to the same configuration). Everywhere else the URL is
/// [`WebhookUrl::redacted`].
impl Serialize for WebhookUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

/// A gateway to guard: `"192.0.2.1"` (its MAC learned) or
/// `"192.0.2.1=02:00:00:00:00:01"` (the MAC it is known at: a capture that
/// starts in the middle of an attack then cannot teach the attacker's MAC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewaySpec {
    /// The gateway's address.
    pub ip: std::net::IpAddr,
    /// The MAC it is known at, when given.
    pub mac: Option<crate::kernel::Mac>,
}

impl GatewaySpec {
    /// Parses `IP` or `IP=MAC`; the message says how to write it.
    pub fn parse(text: &str) -> Result<GatewaySpec, String> {
        let bad = || {
            format!(
                "{text:?} is not a gateway: write an address, or address=MAC, e.g. \"192.0.2.1\" or \"192.0.2.1=02:00:00:00:00:01\""
            )
        };
        let (ip, mac) = match text.split_once('=') {
            Some((ip, mac)) => (ip, Some(mac)),
            None => (text, None),
        };
        let ip = ip.trim().parse().map_err(|_| bad())?;
        let mac = match mac {
            Some(m) => Some(crate::kernel::Mac::parse(m.trim()).ok_or_else(bad)?),
            None => None,
        };
        Ok(GatewaySpec { ip, mac })
    }
}

impl fmt::Display for GatewaySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.mac {
            Some(mac) => write!(f, "{}={mac}", self.ip),
            None => write!(f, "{}", self.ip),
        }
    }
}

impl<'de> Deserialize<'de> for GatewaySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        GatewaySpec::parse(&text).map_err(de::Error::custom)
    }
}

impl Serialize for GatewaySpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// An address block, `"198.51.100.0/24"` or `"2001:db8::/32"` (a bare address
/// is the block of that one address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub net: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `ADDRESS[/PREFIX]`; the message says how to write it.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let bad = || {
            format!(
                "{text:?} is not an address block: write ADDRESS/PREFIX, e.g. \"198.51.100.0/24\" or \"2001:db8::/32\""
            )
        };
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (text, None),
        };
        let net: std::net::IpAddr = ip.trim().parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { net, prefix })
    }

    /// Whether `ip` is inside the block.
    pub fn contains(&self, ip: &std::net::IpAddr) -> bool {
        crate::kernel::in_subnet(*ip, self.net, self.prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Cidr::parse(&text).map_err(de::Error::custom)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}
