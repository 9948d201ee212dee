//! Correlation (pure): a certificate on the wire that is not ours, close in time
//! to something changing on our network path, is what an interception looks
//! like (jabber.ru: a short link flap, then foreign certificates on port 5222).
//!
//! Evidence of four sorts: a foreign certificate on the wire (`tls_mismatch`),
//! a foreign certificate in CT for a name we serve (`ct_unknown_certificate`),
//! a change on this host's network path (a link flap, a new gateway MAC, ...),
//! and path evidence about one service (`inbound_path_changed` on the server,
//! `path_length_mismatch` and `tls_inconsistent` from outside). Any two sorts within `window` — or a
//! mismatch on two targets, or two pieces of path evidence — make one
//! `interception_suspected`. CT evidence pairs over `ct_window` (48 h): the
//! certificate reaches a CT monitor hours after the flap that came with it.
//!
//! Input: every alert the agent sent (with its id). Output: at most one
//! `interception_suspected` per window, listing the alerts that make it.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::alert::{Alert, Finding, Kind, format_time};

/// Alerts remembered per list (the window normally holds far fewer).
const MAX_REMEMBERED: usize = 256;

/// Kinds that say the path to or from this host changed.
pub fn is_path_anomaly(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::GatewayMacChanged
            | Kind::GatewayChanged
            | Kind::GatewayUnreachable
            | Kind::RouteDiverted
            | Kind::LinkDown
            | Kind::LinkFlapping
            | Kind::LinkRemoved
            | Kind::LinkMacChanged
            | Kind::ArpGatewayConflict
            | Kind::NdpRouterNew
            | Kind::NdpRouterChanged
            | Kind::ArpOwnAddressClaimed
            | Kind::NdpRedirect
            | Kind::IcmpRedirect
    )
}

/// Kinds that say one service is reached over another path.
pub fn is_service_path_evidence(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::InboundPathChanged
            | Kind::PathLengthMismatch
            | Kind::TlsInconsistent
            | Kind::DaneMismatch
    )
}

#[derive(Clone, Debug)]
struct Evidence {
    id: String,
    kind: Kind,
    time: DateTime<Utc>,
    summary: String,
    /// For tls_mismatch: the target.
    target: Option<String>,
}

/// Joins TLS mismatches, CT issuances and path anomalies that come close in time into `interception_suspected`.
#[derive(Clone, Debug)]
pub struct Correlator {
    window: Duration,
    /// How far apart CT evidence and the rest may be.
    ct_window: Duration,
    /// inbound_path_changed, path_length_mismatch.
    service_paths: VecDeque<Evidence>,
    anomalies: VecDeque<Evidence>,
    mismatches: VecDeque<Evidence>,
    /// ct_unknown_certificate alerts for names our TLS targets serve.
    foreign_issuances: VecDeque<Evidence>,
    /// The names our TLS targets serve (lowercase).
    served: Vec<String>,
    /// When the last interception_suspected was raised.
    last_raised: Option<DateTime<Utc>>,
}

impl Correlator {
    /// A correlator over `window` (before or after).
    pub fn new(window: std::time::Duration) -> Correlator {
        Correlator {
            window: Duration::from_std(window).unwrap_or(Duration::days(365)),
            ct_window: Duration::hours(48),
            service_paths: VecDeque::new(),
            anomalies: VecDeque::new(),
            mismatches: VecDeque::new(),
            foreign_issuances: VecDeque::new(),
            served: Vec::new(),
            last_raised: None,
        }
    }

    /// The names our TLS targets serve: a CT issuance for one of them is evidence.
    pub fn set_served_names(&mut self, names: Vec<String>) {
        self.served = names.into_iter().map(|n| n.to_ascii_lowercase()).collect();
    }

    /// True when a certificate name (possibly `*.example.org`) covers a served name.
    fn covers_served(&self, cert_name: &str) -> bool {
        let cert_name = cert_name.to_ascii_lowercase();
        self.served.iter().any(|s| {
            *s == cert_name
                || cert_name
                    .strip_prefix("*.")
                    .is_some_and(|base| s.split_once('.').is_some_and(|(_, parent)| parent == base))
        })
    }

    /// A new window (configuration reload); what is remembered stays.
    pub fn set_window(&mut self, window: std::time::Duration) {
        self.window = Duration::from_std(window).unwrap_or(Duration::days(365));
    }

    /// How far apart CT evidence and the rest may be (`[correlation] ct_window`).
    pub fn set_ct_window(&mut self, window: std::time::Duration) {
        self.ct_window = Duration::from_std(window).unwrap_or(Duration::days(365));
    }

    /// Sees an alert after it got its id; returns an `interception_suspected`
    /// when the evidence in the window is enough (at most one per window).
    pub fn observe(&mut self, alert: &Alert) -> Option<Finding> {
        let now = alert.time;
        let keep = self.window.max(self.ct_window);
        for list in self.lists_mut() {
            list.retain(|e| (now - e.time).abs() <= keep);
        }
        if !self.remember(alert) {
            return None;
        }
        let view = self.in_play(now);
        let targets = view.targets();
        let (m, a, p, c) = (
            !view.mismatches.is_empty(),
            !view.anomalies.is_empty(),
            !view.service_paths.is_empty(),
            !view.foreign_issuances.is_empty(),
        );
        let suspicious = (m && (a || p || c || targets.len() >= 2))
            || (c && (a || p))
            || (p && (a || view.service_paths.len() >= 2));
        if !suspicious || self.last_raised.is_some_and(|t| now - t <= self.window) {
            return None;
        }
        self.last_raised = Some(now);
        Some(view.suspicion(now, &targets))
    }

    fn lists_mut(&mut self) -> [&mut VecDeque<Evidence>; 4] {
        [
            &mut self.anomalies,
            &mut self.mismatches,
            &mut self.foreign_issuances,
            &mut self.service_paths,
        ]
    }

    /// The evidence that counts at `now`: within `window`, or, when CT
    /// evidence is within `ct_window`, everything within `ct_window`.
    fn in_play(&self, now: DateTime<Utc>) -> Correlator {
        let mut view = self.clone();
        let ct = view.ct_window;
        view.foreign_issuances
            .retain(|e| (now - e.time).abs() <= ct);
        let span = match view.foreign_issuances.is_empty() {
            true => view.window,
            false => ct.max(view.window),
        };
        for list in [
            &mut view.anomalies,
            &mut view.mismatches,
            &mut view.service_paths,
        ] {
            list.retain(|e| (now - e.time).abs() <= span);
        }
        view
    }

    /// Keeps `alert` as evidence of its sort; false when it is no evidence.
    fn remember(&mut self, alert: &Alert) -> bool {
        let served = alert.kind == Kind::CtUnknownCertificate
            && alert
                .details
                .get("dns_names")
                .and_then(|v| v.as_array())
                .is_some_and(|names| {
                    names
                        .iter()
                        .filter_map(|n| n.as_str())
                        .any(|n| self.covers_served(n))
                });
        let list = if alert.kind == Kind::TlsMismatch {
            &mut self.mismatches
        } else if served {
            &mut self.foreign_issuances
        } else if is_path_anomaly(alert.kind) {
            &mut self.anomalies
        } else if is_service_path_evidence(alert.kind) {
            &mut self.service_paths
        } else {
            return false;
        };
        if list.len() >= MAX_REMEMBERED {
            list.pop_front();
        }
        list.push_back(Evidence {
            id: alert.id.clone(),
            kind: alert.kind,
            time: alert.time,
            summary: alert.summary.clone(),
            target: alert
                .details
                .get("target")
                .and_then(|v| v.as_str())
                .map(str::to_string),
        });
        true
    }

    /// The targets with a foreign certificate in the window, sorted.
    fn targets(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .mismatches
            .iter()
            .filter_map(|m| m.target.clone())
            .collect();
        t.sort();
        t.dedup();
        t
    }

    /// The finding, with every piece of evidence in the window.
    fn suspicion(&self, now: DateTime<Utc>, targets: &[String]) -> Finding {
        let window = self.window;
        let mut all: Vec<&Evidence> = self
            .anomalies
            .iter()
            .chain(&self.mismatches)
            .chain(&self.foreign_issuances)
            .chain(&self.service_paths)
            .collect();
        all.sort_by_key(|e| e.time);
        let ids: Vec<&str> = all.iter().map(|e| e.id.as_str()).collect();
        let kinds: Vec<&str> = all.iter().map(|e| e.kind.as_str()).collect();
        Finding::new(
            Kind::InterceptionSuspected,
            now,
            self.summary(targets),
            json!({
                "evidence": ids,
                "evidence_kinds": kinds,
                "targets": targets,
                "window_s": window.num_seconds(),
                "reasons": self.reasons(targets),
            }),
        )
    }

    /// One sentence per pair of a mismatch (or CT issuance) and an anomaly,
    /// and one for several targets.
    fn reasons(&self, targets: &[String]) -> Vec<String> {
        let window = self.window;
        let mut reasons = Vec::new();
        for m in &self.mismatches {
            let target = m.target.as_deref().unwrap_or("?");
            for a in &self.anomalies {
                let gap = (m.time - a.time).num_seconds();
                let when = if gap >= 0 {
                    format!("{gap} s after")
                } else {
                    format!("{} s before", -gap)
                };
                reasons.push(format!(
                    "the certificate served for {target} is not ours ({}), {when} a change on the network path: {} ({})",
                    format_time(&m.time),
                    a.summary,
                    a.kind.as_str()
                ));
            }
        }
        for c in &self.foreign_issuances {
            if let Some(other) = self.mismatches.iter().chain(&self.anomalies).next() {
                let gap = (c.time - other.time).num_seconds();
                reasons.push(format!(
                    "a certificate for a name we serve that we never held appeared in Certificate Transparency ({}), {} s {} {} ({})",
                    c.summary,
                    gap.abs(),
                    if gap >= 0 { "after" } else { "before" },
                    other.summary,
                    other.kind.as_str()
                ));
            }
        }
        for p in &self.service_paths {
            reasons.push(format!(
                "a service is reached over another path ({}): {}",
                p.kind.as_str(),
                p.summary
            ));
        }
        if targets.len() >= 2 {
            reasons.push(format!(
                "{} services present foreign certificates within {} minutes: {}",
                targets.len(),
                window.num_minutes(),
                targets.join(", ")
            ));
        }
        reasons
    }

    /// The one-line summary, by which evidence there is.
    fn summary(&self, targets: &[String]) -> String {
        let window = self.window;
        let issued = !self.foreign_issuances.is_empty();
        if self.mismatches.is_empty() && !self.service_paths.is_empty() {
            let with: Vec<&str> = self
                .anomalies
                .iter()
                .chain(&self.foreign_issuances)
                .chain(self.service_paths.iter().skip(1))
                .map(|e| e.kind.as_str())
                .collect();
            return format!(
                "interception suspected: {} together with {}",
                self.service_paths[0].summary,
                with.join(", ")
            );
        }
        if self.mismatches.is_empty() {
            format!(
                "interception suspected: a certificate we never held was issued for a name we serve, within {} minutes of a network path change ({})",
                window.num_minutes(),
                self.anomalies
                    .front()
                    .map(|a| a.kind.as_str())
                    .unwrap_or("?")
            )
        } else if self.anomalies.is_empty() && !issued && self.service_paths.is_empty() {
            format!(
                "interception suspected: {} services present certificates that are not ours ({})",
                targets.len(),
                targets.join(", ")
            )
        } else {
            let with = match (self.anomalies.front(), self.service_paths.front()) {
                (Some(a), _) => format!("a network path change ({})", a.kind.as_str()),
                (None, Some(p)) => format!("a changed path to the service ({})", p.kind.as_str()),
                (None, None) => "a certificate for it in CT that we never held".to_string(),
            };
            format!(
                "interception suspected: {} presents a certificate that is not ours, within {} minutes of {with}",
                targets.join(", "),
                window.num_minutes(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::tls::tests::t0;

    fn alert(id: &str, kind: Kind, at: DateTime<Utc>, target: Option<&str>) -> Alert {
        let details = match target {
            Some(t) => json!({"target": t}),
            None => json!({"interface": "eth0"}),
        };
        let mut a = Alert::from_finding(
            Finding::new(kind, at, format!("{id} happened"), details),
            "h",
        );
        a.id = id.into();
        a
    }

    fn minutes(m: i64) -> DateTime<Utc> {
        t0() + Duration::minutes(m)
    }

    #[test]
    fn flap_then_mismatch_within_the_window() {
        let mut c = Correlator::new(std::time::Duration::from_secs(1800));
        assert!(
            c.observe(&alert("L", Kind::LinkDown, minutes(0), None))
                .is_none()
        );
        assert!(
            c.observe(&alert("U", Kind::LinkUp, minutes(0), None))
                .is_none()
        );
        let f = c
            .observe(&alert("M", Kind::TlsMismatch, minutes(10), Some("xmpp")))
            .expect("suspected");
        assert_eq!(f.kind, Kind::InterceptionSuspected);
        assert_eq!(f.details["evidence"], json!(["L", "M"]));
        assert_eq!(f.details["window_s"], 1800);
        let reason = f.details["reasons"][0].as_str().unwrap();
        assert!(reason.contains("600 s after"), "{reason}");
        assert!(reason.contains("L happened (link_down)"), "{reason}");
        // More of the same within the window: no second alert.
        assert!(
            c.observe(&alert("M2", Kind::TlsMismatch, minutes(12), Some("xmpp")))
                .is_none()
        );
    }

    #[test]
    fn mismatch_then_anomaly_also_counts() {
        let mut c = Correlator::new(std::time::Duration::from_secs(1800));
        assert!(
            c.observe(&alert("M", Kind::TlsMismatch, minutes(0), Some("xmpp")))
                .is_none()
        );
        let f = c
            .observe(&alert("G", Kind::GatewayMacChanged, minutes(29), None))
            .unwrap();
        assert!(
            f.details["reasons"][0]
                .as_str()
                .unwrap()
                .contains("1740 s before")
        );
    }

    #[test]
    fn outside_the_window_nothing() {
        let mut c = Correlator::new(std::time::Duration::from_secs(1800));
        assert!(
            c.observe(&alert("L", Kind::LinkDown, minutes(0), None))
                .is_none()
        );
        assert!(
            c.observe(&alert("M", Kind::TlsMismatch, minutes(31), Some("xmpp")))
                .is_none()
        );
        // Info-level noise never correlates.
        assert!(
            c.observe(&alert("N", Kind::ArpNewStation, minutes(32), None))
                .is_none()
        );
    }

    fn ct_alert(id: &str, at: DateTime<Utc>, names: &[&str]) -> Alert {
        let mut a = Alert::from_finding(
            Finding::new(
                Kind::CtUnknownCertificate,
                at,
                format!("{id} issued"),
                json!({"domain": "example.org", "dns_names": names}),
            ),
            "h",
        );
        a.id = id.into();
        a
    }

    #[test]
    fn a_foreign_issuance_for_a_served_name_joins_the_evidence() {
        let mut c = Correlator::new(std::time::Duration::from_secs(1800));
        c.set_served_names(vec!["xmpp.example.org".into()]);
        // For a name we do not serve: no evidence.
        assert!(
            c.observe(&ct_alert("C0", minutes(0), &["mail.example.org"]))
                .is_none()
        );
        assert!(
            c.observe(&ct_alert("C1", minutes(1), &["*.example.org"]))
                .is_none()
        );
        let f = c
            .observe(&alert("M", Kind::TlsMismatch, minutes(5), Some("xmpp")))
            .expect("mismatch + foreign issuance");
        assert_eq!(f.details["evidence"], json!(["C1", "M"]));
        assert!(
            f.details["reasons"][0]
                .as_str()
                .unwrap()
                .contains("appeared in Certificate Transparency"),
            "{}",
            f.details["reasons"]
        );
        // A foreign issuance with a path change (no mismatch) is also enough.
        let mut c = Correlator::new(std::time::Duration::from_secs(1800));
        c.set_served_names(vec!["xmpp.example.org".into()]);
        assert!(
            c.observe(&alert("L", Kind::LinkDown, minutes(0), None))
                .is_none()
        );
        let f = c
            .observe(&ct_alert("C", minutes(3), &["xmpp.example.org"]))
            .unwrap();
        assert_eq!(f.details["evidence"], json!(["L", "C"]));
        assert!(f.summary.contains("never held"), "{}", f.summary);
    }

    #[test]
    fn path_evidence_joins_a_flap_a_mismatch_or_ct_days_later() {
        // Server side: a link flap, then inbound_path_changed.
        let mut c = Correlator::new(std::time::Duration::from_secs(1800));
        assert!(
            c.observe(&alert("L", Kind::LinkDown, minutes(0), None))
                .is_none()
        );
        let f = c
            .observe(&alert("I", Kind::InboundPathChanged, minutes(20), None))
            .expect("suspected");
        assert_eq!(f.details["evidence"], json!(["L", "I"]));
        assert!(
            f.summary.contains("I happened together with link_down"),
            "{}",
            f.summary
        );
        // Prober side: tls_mismatch and path_length_mismatch of one target.
        let mut c = Correlator::new(std::time::Duration::from_secs(1800));
        assert!(
            c.observe(&alert(
                "P",
                Kind::PathLengthMismatch,
                minutes(0),
                Some("xmpp")
            ))
            .is_none()
        );
        let f = c
            .observe(&alert("M", Kind::TlsMismatch, minutes(1), Some("xmpp")))
            .expect("suspected");
        assert_eq!(
            f.details["evidence_kinds"],
            json!(["path_length_mismatch", "tls_mismatch"])
        );
        // Alone, path evidence is no suspicion, nor with a mismatch hours
        // later; a flap 40 hours before a CT issuance is (ct_window 48h).
        let mut c = Correlator::new(std::time::Duration::from_secs(1800));
        c.set_served_names(vec!["xmpp.example.org".into()]);
        assert!(
            c.observe(&alert("I", Kind::InboundPathChanged, minutes(0), None))
                .is_none()
        );
        assert!(
            c.observe(&alert(
                "M",
                Kind::TlsMismatch,
                minutes(0) + Duration::hours(3),
                Some("x")
            ))
            .is_none(),
            "hours apart without CT: no pair"
        );
        let mut c = Correlator::new(std::time::Duration::from_secs(1800));
        c.set_served_names(vec!["xmpp.example.org".into()]);
        assert!(
            c.observe(&alert("L", Kind::LinkDown, minutes(0), None))
                .is_none()
        );
        assert!(
            c.observe(&alert("M", Kind::TlsMismatch, minutes(40 * 60), Some("x")))
                .is_none()
        );
        let f = c
            .observe(&ct_alert("C", minutes(40 * 60 + 5), &["xmpp.example.org"]))
            .expect("CT pairs over 48 h");
        assert_eq!(f.details["evidence"], json!(["L", "M", "C"]));
    }

    #[test]
    fn two_targets_without_a_path_change() {
        let mut c = Correlator::new(std::time::Duration::from_secs(1800));
        assert!(
            c.observe(&alert("A", Kind::TlsMismatch, minutes(0), Some("xmpp")))
                .is_none()
        );
        assert!(
            c.observe(&alert("A2", Kind::TlsMismatch, minutes(1), Some("xmpp")))
                .is_none()
        );
        let f = c
            .observe(&alert("B", Kind::TlsMismatch, minutes(5), Some("smtp")))
            .unwrap();
        assert_eq!(f.details["targets"], json!(["smtp", "xmpp"]));
        assert!(f.summary.contains("2 services"), "{}", f.summary);
        // A new incident after the window has passed.
        assert!(
            c.observe(&alert("L", Kind::LinkDown, minutes(100), None))
                .is_none()
        );
        assert!(
            c.observe(&alert("C", Kind::TlsMismatch, minutes(101), Some("xmpp")))
                .is_some()
        );
    }
}
