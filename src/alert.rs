//! Alerts: the kinds and severities of docs/ALERTS.md and the JSON a receiver gets.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

/// How bad an alert is. Ordered: `Info < Warning < Critical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    /// The name in alerts, the journal and metrics (`gateway_mac_changed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// syslog priority as journald wants it (crit, warning, info).
    pub fn syslog_priority(self) -> u8 {
        match self {
            Severity::Critical => 2,
            Severity::Warning => 4,
            Severity::Info => 6,
        }
    }
}

macro_rules! kinds {
    ($($variant:ident => $name:literal, $sev:ident;)*) => {
        /// Every alert kind of docs/ALERTS.md. The names are part of the contract.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Kind { $($variant,)* }

        impl Kind {
            /// Every kind, in the order of this list.
            pub const ALL: &'static [Kind] = &[$(Kind::$variant,)*];

            /// The name on the wire (`gateway_mac_changed`, ...).
            pub fn as_str(self) -> &'static str {
                match self { $(Kind::$variant => $name,)* }
            }
            /// A state that holds until it clears (rather than an event): kept
            /// alive in Alertmanager while it holds, resolved when it clears.
            pub fn is_condition(self) -> bool {
                matches!(
                    self,
                    Kind::GatewayUnreachable
                        | Kind::LinkDown
                        | Kind::LinkFlapping
                        | Kind::TlsMismatch
                        | Kind::TlsProbeFailed
                        | Kind::PathLengthMismatch
                        | Kind::ManifestUnavailable
                        | Kind::TlsInconsistent
                        | Kind::DaneMismatch
                        | Kind::DaneUnavailable
                        | Kind::DaneStale
                )
            }
            /// The fixed severity of this kind.
            pub fn severity(self) -> Severity {
                match self { $(Kind::$variant => Severity::$sev,)* }
            }
        }
    };
}

kinds! {
    AgentStarted => "agent_started", Info;
    AgentStopping => "agent_stopping", Info;
    AgentHeartbeat => "agent_heartbeat", Info;
    GatewayMacChanged => "gateway_mac_changed", Critical;
    GatewayMacTrusted => "gateway_mac_trusted", Info;
    GatewayFailover => "gateway_failover", Info;
    GatewayChanged => "gateway_changed", Warning;
    GatewayUnreachable => "gateway_unreachable", Warning;
    RouteDiverted => "route_diverted", Warning;
    LinkDown => "link_down", Warning;
    LinkUp => "link_up", Info;
    LinkFlapping => "link_flapping", Warning;
    LinkAdded => "link_added", Warning;
    LinkRemoved => "link_removed", Warning;
    LinkMacChanged => "link_mac_changed", Warning;
    LinkPromisc => "link_promisc", Warning;
    LinkMtuChanged => "link_mtu_changed", Info;
    ArpNewStation => "arp_new_station", Info;
    ArpMacChanged => "arp_mac_changed", Warning;
    ArpFlipFlop => "arp_flip_flop", Warning;
    ArpReusedMac => "arp_reused_mac", Warning;
    ArpEthernetMismatch => "arp_ethernet_mismatch", Warning;
    ArpBogon => "arp_bogon", Info;
    ArpBadMac => "arp_bad_mac", Warning;
    ArpGatewayConflict => "arp_gateway_conflict", Critical;
    ArpStorm => "arp_storm", Warning;
    NdpRouterNew => "ndp_router_new", Warning;
    NdpRouterChanged => "ndp_router_changed", Warning;
    ArpOwnAddressClaimed => "arp_own_address_claimed", Critical;
    NdpRedirect => "ndp_redirect", Warning;
    IcmpRedirect => "icmp_redirect", Warning;
    InboundPathChanged => "inbound_path_changed", Critical;
    InboundPathRestored => "inbound_path_restored", Info;
    PathLengthMismatch => "path_length_mismatch", Critical;
    PathChanged => "path_changed", Warning;
    ManifestPublished => "manifest_published", Info;
    PublishFailed => "publish_failed", Warning;
    ManifestInvalid => "manifest_invalid", Critical;
    ManifestUnavailable => "manifest_unavailable", Warning;
    TlsInconsistent => "tls_inconsistent", Critical;
    DaneMismatch => "dane_mismatch", Critical;
    DaneUnavailable => "dane_unavailable", Warning;
    DaneStale => "dane_stale", Warning;
    AlertsSuppressed => "alerts_suppressed", Warning;
    TlsMismatch => "tls_mismatch", Critical;
    TlsProbeFailed => "tls_probe_failed", Warning;
    TlsRecovered => "tls_recovered", Info;
    TlsExpiring => "tls_expiring", Warning;
    InterceptionSuspected => "interception_suspected", Critical;
    CtUnknownCertificate => "ct_unknown_certificate", Critical;
    CaaWeak => "caa_weak", Warning;
    ConfigReloaded => "config_reloaded", Info;
    Test => "test", Info;
    ConfigRejected => "config_rejected", Warning;
}

/// docs/ALERTS.md, compiled in: the reference is the one place each kind
/// is explained (Alertmanager's `description`, the journal catalog).
const ALERTS_MD: &str = include_str!("../docs/ALERTS.md");

impl Kind {
    /// The journal's `MESSAGE_ID` of this kind: 128 bits derived from its
    /// name, stable across versions (`journalctl MESSAGE_ID=...`, and the
    /// catalog that `journalctl -x` shows).
    pub fn message_id(self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("netsentry alert {}", self.as_str()).as_bytes());
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// What to check and do first, for the kinds that call for it.
    fn first_steps(self) -> &'static str {
        match self {
            Kind::GatewayMacChanged | Kind::ArpGatewayConflict => {
                "Check: `netsentry baseline` (the trusted MAC and the suspect one), `ip neigh show`, the switch's MAC table for the new MAC's port.\nDo: if the change is yours (a new router, a failover), `netsentry baseline accept IP`; if not, someone on the LAN answers for the gateway: isolate that port, then check TLS and SSH host keys of what was reached meanwhile."
            }
            Kind::TlsMismatch | Kind::TlsInconsistent | Kind::DaneMismatch => {
                "Check: `netsentry probe NAME` from here and from another network (or through Tor), `netsentry fingerprints` on the server, the CT logs for the served certificate.\nDo: a certificate that is not on your server's disk, served to clients, is an interception until proven otherwise (jabber.ru): keep the evidence (the alert's fields), tell your provider, rotate credentials used over the path, revoke rogue certificates through the CA."
            }
            Kind::InterceptionSuspected => {
                "Check: the alerts listed in NETSENTRY_EVIDENCE (journalctl NETSENTRY_ALERT_ID=...), `netsentry status`, `netsentry probe`.\nDo: treat as an incident: several independent signs point at traffic to this host being redirected."
            }
            Kind::InboundPathChanged | Kind::PathLengthMismatch => {
                "Check: `netsentry status` (hops per port, before and now), a TCP traceroute to the port from outside against another port of the same address.\nDo: one port reached over a shorter or different path than its siblings is what a transparent redirect in the provider's network looks like (jabber.ru: 5222 at hop 13, 22 at hop 14)."
            }
            Kind::CtUnknownCertificate => {
                "Check: the issuance in the CT logs (NETSENTRY_TBS_SHA256, the issuer), your ACME clients' logs.\nDo: a certificate for your names that you did not request: revoke it through the CA, tighten CAA (accounturi, validationmethods)."
            }
            Kind::LinkDown | Kind::LinkRemoved => {
                "Check: the NIC, cable and switch port; `ip -s link`.\nDo: a short carrier loss on a server is rare; at jabber.ru a 19 s link-down came with the first rogue issuance: check the TLS and CT alerts around it."
            }
            _ => {
                "Check: the alert's fields (journalctl -o verbose MESSAGE_ID=...), `netsentry status`."
            }
        }
    }

    /// When this alert is sent, from its row in docs/ALERTS.md (the "when"
    /// column, markdown as written).
    pub fn description(self) -> &'static str {
        static TABLE: std::sync::OnceLock<std::collections::HashMap<&'static str, &'static str>> =
            std::sync::OnceLock::new();
        let table = TABLE.get_or_init(|| {
            ALERTS_MD
                .lines()
                .filter_map(|line| {
                    let rest = line.strip_prefix("| <a id=\"")?;
                    let (kind, rest) = rest.split_once("\"></a>")?;
                    let when = rest.split(" | ").nth(2)?;
                    Some((kind, when.trim()))
                })
                .collect()
        });
        table.get(self.as_str()).copied().unwrap_or("")
    }
}

/// The journal message catalog of every kind (installed as
/// /usr/lib/systemd/catalog/netsentry.catalog; `journalctl -x` shows the
/// entry of an alert's `MESSAGE_ID`).
pub fn journal_catalog() -> String {
    let mut out = String::from(
        "# netsentry's journal message catalog: one entry per alert kind (docs/ALERTS.md).\n\n",
    );
    for kind in Kind::ALL {
        out.push_str(&format!(
            "-- {}\nSubject: netsentry: {} ({})\nDefined-By: netsentry\nSupport: file:///usr/share/doc/netsentry/ALERTS.md#{}\n\n@MESSAGE@\n\nWhen netsentry sends {}: {}\n\n{}\n\n",
            kind.message_id(),
            kind.as_str(),
            kind.severity().as_str(),
            kind.as_str(),
            kind.as_str(),
            kind.description().replace('`', ""),
            kind.first_steps()
        ));
    }
    out
}

/// What a detector found: an alert before it gets an id and a host name.
/// Detectors are pure, so identity (random) and host are added by the agent.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub kind: Kind,
    pub time: DateTime<Utc>,
    pub summary: String,
    pub details: Map<String, Value>,
    /// Not an alert: the condition of this kind and identifying details is over
    /// (see [`Kind::is_condition`]). Receivers that track conditions
    /// (Alertmanager) resolve it; nobody gets it as a new alert.
    pub clears: bool,
    /// A severity other than the kind's usual one (see [`Finding::raised`]).
    pub severity: Option<Severity>,
}

impl Finding {
    /// The same finding at `severity` (for kinds whose severity depends on
    /// what was seen, e.g. a redirect to a router nobody knows is critical).
    pub fn raised(mut self, severity: Severity) -> Finding {
        self.severity = Some(severity);
        self
    }

    /// A finding of `kind` at `now`, with a one-line summary and its details.
    pub fn new(
        kind: Kind,
        time: DateTime<Utc>,
        summary: impl Into<String>,
        details: Value,
    ) -> Self {
        let details = match details {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Finding {
            kind,
            time,
            summary: summary.into(),
            details,
            clears: false,
            severity: None,
        }
    }

    /// The end of a condition (`kind` must be one, see [`Kind::is_condition`]).
    pub fn cleared(
        kind: Kind,
        time: DateTime<Utc>,
        summary: impl Into<String>,
        details: Value,
    ) -> Self {
        Finding {
            clears: true,
            ..Finding::new(kind, time, summary, details)
        }
    }

    /// A detail as text, for tests and messages.
    pub fn detail_str(&self, key: &str) -> Option<&str> {
        self.details.get(key).and_then(Value::as_str)
    }
}

/// One alert as docs/ALERTS.md defines it; serializes to exactly the JSON of `format = "netsentry"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    pub host: String,
    #[serde(serialize_with = "serialize_time")]
    pub time: DateTime<Utc>,
    pub kind: Kind,
    pub severity: Severity,
    pub summary: String,
    pub details: Map<String, Value>,
    /// For spooled copies that only condition-tracking receivers get; never part
    /// of an alert as docs/ALERTS.md defines it (absent for ordinary alerts).
    #[serde(default, skip_serializing_if = "Delivery::is_alert")]
    pub delivery: Delivery,
}

/// What a spooled record is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "what")]
pub enum Delivery {
    /// An alert, for every receiver.
    #[default]
    Alert,
    /// The condition still holds at `at`: extend it (Alertmanager only).
    Refresh { at: DateTime<Utc> },
    /// The condition cleared at `at` (Alertmanager only).
    Resolve { at: DateTime<Utc> },
}

impl Delivery {
    /// True for an alert as it fired (not a refresh or a resolution of a condition).
    pub fn is_alert(&self) -> bool {
        *self == Delivery::Alert
    }
}

impl Alert {
    /// Gives a finding its identity: a fresh ULID (sortable, unique) and the host name.
    pub fn from_finding(finding: Finding, host: &str) -> Alert {
        Alert {
            id: ulid::Ulid::generate().to_string(),
            host: host.to_string(),
            time: finding.time,
            kind: finding.kind,
            severity: finding.severity.unwrap_or(finding.kind.severity()),
            summary: finding.summary,
            details: finding.details,
            delivery: Delivery::Alert,
        }
    }

    /// The alert as the JSON of docs/ALERTS.md (one line).
    pub fn to_json(&self) -> String {
        // Serializing plain maps and strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// RFC 3339 UTC with microseconds, as in docs/ALERTS.md (`2026-11-28T12:00:00.123456Z`).
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Serde helper: a time as [`format_time`] writes it.
pub fn serialize_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(t))
}

/// Formats a MAC address as docs/ALERTS.md shows it: lowercase, colon-separated.
pub fn format_mac(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Details that identify what an alert is about; they become Alertmanager labels
/// (so that different gateways or links are different alerts there).
pub const IDENTIFYING: &[&str] = &[
    "interface",
    "ip",
    "family",
    "target",
    "address",
    "endpoint",
    "tlsa_name",
    "domain",
    "router_ip",
];

/// What identifies the subject of an alert: its kind and identifying details
/// (the Alertmanager labels). Conditions are matched to their clearing by it.
pub fn identity(kind: Kind, details: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut key = kind.as_str().to_string();
    for k in IDENTIFYING {
        if let Some(serde_json::Value::String(v)) = details.get(*k) {
            key.push_str(&format!("|{k}={v}"));
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn each_kind_has_its_own_message_id_and_catalog_entry() {
        let ids: std::collections::HashSet<String> =
            Kind::ALL.iter().map(|k| k.message_id()).collect();
        assert_eq!(ids.len(), Kind::ALL.len());
        assert!(
            ids.iter()
                .all(|i| i.len() == 32 && i.bytes().all(|b| b.is_ascii_hexdigit()))
        );
        let catalog = journal_catalog();
        assert_eq!(catalog.matches("\n-- ").count(), Kind::ALL.len());
        assert!(catalog.contains(&format!(
            "-- {}\nSubject: netsentry: tls_mismatch (critical)",
            Kind::TlsMismatch.message_id()
        )));
    }

    #[test]
    fn every_kind_is_explained_in_the_reference() {
        for kind in Kind::ALL {
            assert!(
                kind.description().len() > 5,
                "{} has no row in docs/ALERTS.md",
                kind.as_str()
            );
        }
        assert!(
            Kind::LinkDown
                .description()
                .starts_with("a link lost carrier")
        );
    }

    #[test]
    fn each_endpoint_of_a_target_is_its_own_condition() {
        let d = |address: &str| {
            json!({"target": "xmpp", "address": address})
                .as_object()
                .unwrap()
                .clone()
        };
        let a = identity(Kind::TlsMismatch, &d("198.51.100.10:5222"));
        let b = identity(Kind::TlsMismatch, &d("198.51.100.11:5222"));
        assert_ne!(a, b);
        let e = |endpoint: &str| {
            json!({"server_name": "example.org", "endpoint": endpoint})
                .as_object()
                .unwrap()
                .clone()
        };
        assert_ne!(
            identity(Kind::TlsInconsistent, &e("c2s@198.51.100.11:5222")),
            identity(Kind::TlsInconsistent, &e("c2s@198.51.100.12:5222"))
        );
    }

    #[test]
    fn alert_json_has_the_fields_of_spec_in_order() {
        let t = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap()
            + chrono::Duration::microseconds(123_456);
        let f = Finding::new(
            Kind::GatewayMacChanged,
            t,
            "s",
            json!({"interface": "eth0"}),
        );
        let mut a = Alert::from_finding(f, "web1");
        a.id = "01JDZ9W5V6Q4S2K8M3T7R1X0AB".into();
        assert_eq!(
            a.to_json(),
            r#"{"id":"01JDZ9W5V6Q4S2K8M3T7R1X0AB","host":"web1","time":"2026-11-28T12:00:00.123456Z","kind":"gateway_mac_changed","severity":"critical","summary":"s","details":{"interface":"eth0"}}"#
        );
    }

    #[test]
    fn ids_are_unique() {
        let t = Utc::now();
        let a = Alert::from_finding(Finding::new(Kind::LinkUp, t, "", json!({})), "h");
        let b = Alert::from_finding(Finding::new(Kind::LinkUp, t, "", json!({})), "h");
        assert_ne!(a.id, b.id);
        assert_eq!(a.id.len(), 26);
    }

    #[test]
    fn severities_follow_spec() {
        assert_eq!(Kind::GatewayMacChanged.severity(), Severity::Critical);
        assert_eq!(Kind::LinkDown.severity(), Severity::Warning);
        assert_eq!(Kind::LinkMtuChanged.severity(), Severity::Info);
        assert_eq!(Kind::AlertsSuppressed.as_str(), "alerts_suppressed");
        assert!(Severity::Info < Severity::Critical);
    }

    #[test]
    fn macs_are_lowercase_with_colons() {
        assert_eq!(
            format_mac(&[0x02, 0xDE, 0xAD, 0xbe, 0xef, 1]),
            "02:de:ad:be:ef:01"
        );
    }
}
