//! Correlation (pure): a certificate on the wire that is not ours, close in time
//! to something changing on our network path, is what an interception looks
//! like (jabber.ru: a short link flap, then foreign certificates on port 5222).
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
            | Kind::LinkDown
            | Kind::LinkRemoved
            | Kind::LinkMacChanged
            | Kind::ArpGatewayConflict
            | Kind::NdpRouterNew
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

#[derive(Debug)]
pub struct Correlator {
    window: Duration,
    anomalies: VecDeque<Evidence>,
    mismatches: VecDeque<Evidence>,
    /// When the last interception_suspected was raised.
    last_raised: Option<DateTime<Utc>>,
}

impl Correlator {
    pub fn new(window: std::time::Duration) -> Correlator {
        Correlator {
            window: Duration::from_std(window).unwrap_or(Duration::days(365)),
            anomalies: VecDeque::new(),
            mismatches: VecDeque::new(),
            last_raised: None,
        }
    }

    /// A new window (configuration reload); what is remembered stays.
    pub fn set_window(&mut self, window: std::time::Duration) {
        self.window = Duration::from_std(window).unwrap_or(Duration::days(365));
    }

    pub fn observe(&mut self, alert: &Alert) -> Option<Finding> {
        let evidence = |a: &Alert| Evidence {
            id: a.id.clone(),
            kind: a.kind,
            time: a.time,
            summary: a.summary.clone(),
            target: a
                .details
                .get("target")
                .and_then(|v| v.as_str())
                .map(str::to_string),
        };
        let now = alert.time;
        let window = self.window;
        let within = |e: &Evidence| (now - e.time).abs() <= window;
        self.anomalies.retain(within);
        self.mismatches.retain(within);
        let list = if alert.kind == Kind::TlsMismatch {
            &mut self.mismatches
        } else if is_path_anomaly(alert.kind) {
            &mut self.anomalies
        } else {
            return None;
        };
        if list.len() >= MAX_REMEMBERED {
            list.pop_front();
        }
        list.push_back(evidence(alert));

        let targets: Vec<&str> = {
            let mut t: Vec<&str> = self
                .mismatches
                .iter()
                .filter_map(|m| m.target.as_deref())
                .collect();
            t.sort();
            t.dedup();
            t
        };
        let suspicious =
            !self.mismatches.is_empty() && (!self.anomalies.is_empty() || targets.len() >= 2);
        if !suspicious || self.last_raised.is_some_and(|t| now - t <= window) {
            return None;
        }
        self.last_raised = Some(now);

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
        if targets.len() >= 2 {
            reasons.push(format!(
                "{} services present foreign certificates within {} minutes: {}",
                targets.len(),
                window.num_minutes(),
                targets.join(", ")
            ));
        }
        let mut all: Vec<&Evidence> = self.anomalies.iter().chain(&self.mismatches).collect();
        all.sort_by_key(|e| e.time);
        let ids: Vec<&str> = all.iter().map(|e| e.id.as_str()).collect();
        let kinds: Vec<&str> = all.iter().map(|e| e.kind.as_str()).collect();
        let summary = if self.anomalies.is_empty() {
            format!(
                "interception suspected: {} services present certificates that are not ours ({})",
                targets.len(),
                targets.join(", ")
            )
        } else {
            let first = &self.anomalies[0];
            format!(
                "interception suspected: {} presents a certificate that is not ours, within {} minutes of a network path change ({})",
                targets.join(", "),
                window.num_minutes(),
                first.kind.as_str()
            )
        };
        Some(Finding::new(
            Kind::InterceptionSuspected,
            now,
            summary,
            json!({
                "evidence": ids,
                "evidence_kinds": kinds,
                "targets": targets,
                "window_s": window.num_seconds(),
                "reasons": reasons,
            }),
        ))
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
