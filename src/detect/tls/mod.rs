//! Certificate comparison (pure): what a client really got from one of our
//! services against the certificates the server holds.
//!
//! Input: one [`ProbeReport`] per check, and the certificates currently in the
//! expected files. Output: `tls_mismatch`, `tls_recovered`, `tls_expiring`,
//! `tls_probe_failed` (and the clearing of those conditions).

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::alert::{Finding, Kind, format_time};
use crate::cert::{CertIdentity, Sha256};
use crate::config::TlsTarget;

mod expected;
mod report;

use expected::MAX_FILE_CERTS;
pub use expected::{ExpectedSet, Match};
pub use report::{
    ManifestReport, ManifestState, PathReport, PortPath, ProbeError, ProbeReport, Seen,
};

/// A target's rules, from its configuration.
#[derive(Clone, Debug)]
pub struct TargetRules {
    pub name: String,
    pub address: String,
    pub server_name: String,
    pub vantage: String,
    pub expiry_warning: Duration,
    pub rotation_grace: Duration,
}

impl TargetRules {
    /// The rules of one `[[tls.target]]`.
    pub fn from_config(t: &TlsTarget) -> TargetRules {
        let dur = |d: std::time::Duration| Duration::from_std(d).unwrap_or(Duration::MAX);
        TargetRules {
            name: t.name.clone(),
            address: t.service(),
            server_name: t.server_name().to_string(),
            vantage: t.vantage(),
            expiry_warning: dur(t.expiry_warning.0),
            rotation_grace: dur(t.rotation_grace.0),
        }
    }
}

/// Monitoring-plugin states, ordered by how much they matter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    Unknown,
    Warning,
    Critical,
}

impl Verdict {
    /// `OK`, `WARNING`, `CRITICAL`, `UNKNOWN`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Warning => "WARNING",
            Verdict::Critical => "CRITICAL",
            Verdict::Unknown => "UNKNOWN",
        }
    }

    /// The exit code of the monitoring-plugin convention.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Ok => 0,
            Verdict::Warning => 1,
            Verdict::Critical => 2,
            Verdict::Unknown => 3,
        }
    }
}

/// One check judged on its own (what `netsentry probe` prints).
#[derive(Clone, Debug)]
pub struct Assessment {
    pub verdict: Verdict,
    pub matched: Option<Match>,
    /// One line for people.
    pub text: String,
    /// Days until the certificate seen expires.
    pub days_left: Option<i64>,
    /// Our certificate, expiring within `expiry_warning` (or expired).
    pub expiring: bool,
}

/// Judges one report against the expected set.
pub fn assess(
    rules: &TargetRules,
    expected: &ExpectedSet,
    report: &ProbeReport,
    now: DateTime<Utc>,
) -> Assessment {
    let seen = match &report.outcome {
        Err(e) => {
            return Assessment {
                verdict: Verdict::Unknown,
                matched: None,
                text: format!("check failed: {e}"),
                days_left: None,
                expiring: false,
            };
        }
        Ok(seen) => seen,
    };
    let id = &seen.facts.identity;
    let chain = match (&seen.chain_valid, &seen.chain_error) {
        (true, _) => "chain valid".to_string(),
        (false, Some(e)) => format!("chain does not verify: {e}"),
        (false, None) => "chain does not verify".to_string(),
    };
    let days_left = (seen.facts.not_after - now).num_days();
    // No expectation: the key is only compared with the other endpoints of
    // the name (tls_inconsistent); the chain still counts.
    if !expected.configured() {
        return Assessment {
            verdict: match seen.chain_valid {
                true => Verdict::Ok,
                false => Verdict::Warning,
            },
            matched: None,
            text: format!(
                "no expectation (compared with the other endpoints of {} only): sha256 {}, spki {}, expires {} ({days_left} days), {chain}",
                rules.server_name,
                id.cert_sha256,
                id.spki_sha256,
                format_time(&seen.facts.not_after)
            ),
            days_left: Some(days_left),
            expiring: false,
        };
    }
    // Only a manifest was to say what is ours, and none is usable: nothing
    // to compare with is no verdict (manifest_unavailable says why).
    if expected.is_empty() {
        return Assessment {
            verdict: Verdict::Unknown,
            matched: None,
            text: format!(
                "nothing to compare sha256 {} with: the manifest is not available",
                id.cert_sha256
            ),
            days_left: None,
            expiring: false,
        };
    }
    let matched = expected.matches(id, now, rules.rotation_grace);
    let ours = matches!(matched, Match::Current | Match::Replaced(_));
    let expiring = ours && seen.facts.not_after - now <= rules.expiry_warning;
    let (verdict, text) = match matched {
        Match::No | Match::Expired(_) => (
            Verdict::Critical,
            format!(
                "certificate is NOT ours: sha256 {} (spki {}), subject {}, issuer {}, {chain}{}",
                id.cert_sha256,
                id.spki_sha256,
                seen.facts.subject,
                seen.facts.issuer,
                match matched {
                    Match::Expired(t) => format!(
                        "; it is our previous certificate, replaced {}",
                        format_time(&t)
                    ),
                    _ => String::new(),
                }
            ),
        ),
        Match::Current | Match::Replaced(_) => {
            let verdict = if expiring || !seen.chain_valid {
                Verdict::Warning
            } else {
                Verdict::Ok
            };
            let note = match matched {
                Match::Replaced(t) => format!(
                    " (the previous one, replaced {}: inside rotation_grace)",
                    format_time(&t)
                ),
                _ => String::new(),
            };
            (
                verdict,
                format!(
                    "certificate is ours{note}: sha256 {}, expires {} ({days_left} days), {chain}",
                    id.cert_sha256,
                    format_time(&seen.facts.not_after),
                ),
            )
        }
    };
    Assessment {
        verdict,
        matched: Some(matched),
        text,
        days_left: Some(days_left),
        expiring,
    }
}

/// What the detector remembers per target.
#[derive(Clone, Debug, Default)]
struct TargetState {
    /// The foreign certificate last reported (a mismatch episode), if any.
    mismatch: Option<Sha256>,
    failures: u32,
    failure_reported: bool,
    /// The certificate whose expiry was reported.
    expiry_reported: Option<Sha256>,
}

/// The comparison detector for all targets.
#[derive(Debug)]
pub struct TlsDetector {
    failures_before_alert: u32,
    /// Per target: its rules, what it may present, and the state of each
    /// endpoint ("" for a target checked as one).
    targets: HashMap<String, (TargetRules, ExpectedSet, HashMap<String, TargetState>)>,
}

/// Endpoint states kept per target at most (as many as are checked).
const MAX_ENDPOINT_STATES: usize = crate::source::endpoints::MAX_ENDPOINTS + 1;

impl TlsDetector {
    /// A detector for `targets`; a failure is reported after `failures_before_alert` in a row.
    pub fn new(targets: &[TlsTarget], failures_before_alert: u32) -> TlsDetector {
        TlsDetector {
            failures_before_alert: failures_before_alert.max(1),
            targets: targets
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        (
                            TargetRules::from_config(t),
                            ExpectedSet::new(&t.expect),
                            HashMap::new(),
                        ),
                    )
                })
                .collect(),
        }
    }

    /// The expected files of `target` now hold these certificates. True when
    /// the set changed (worth saving).
    pub fn set_files(
        &mut self,
        target: &str,
        current: &[CertIdentity],
        now: DateTime<Utc>,
    ) -> bool {
        let Some((rules, expected, _)) = self.targets.get_mut(target) else {
            return false;
        };
        let changed = expected.set_files(current, now);
        expected.forget_before(now - rules.rotation_grace - Duration::days(30));
        changed
    }

    /// The last good manifest lists these certificates for `target`.
    pub fn set_manifest(&mut self, target: &str, ids: Vec<CertIdentity>) {
        if let Some((_, expected, _)) = self.targets.get_mut(target) {
            expected.set_manifest(ids);
        }
    }

    /// What to keep across restarts: per target, the file certificates and
    /// when they were replaced.
    pub fn saved_state(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (name, (_, expected, _)) in &self.targets {
            let certs: Vec<serde_json::Value> = expected
                .file_certs()
                .iter()
                .map(|(id, replaced)| {
                    json!({
                        "cert_sha256": id.cert_sha256.hex(),
                        "spki_sha256": id.spki_sha256.hex(),
                        "replaced": replaced.as_ref().map(format_time),
                    })
                })
                .collect();
            out.insert(name.clone(), json!(certs));
        }
        json!({ "expected_files": out })
    }

    /// Restores [`TlsDetector::saved_state`]; entries that do not parse, and
    /// targets no longer configured, are ignored.
    pub fn restore_state(&mut self, saved: &serde_json::Value) {
        let Some(targets) = saved.get("expected_files").and_then(|v| v.as_object()) else {
            return;
        };
        for (name, certs) in targets {
            let Some((_, expected, _)) = self.targets.get_mut(name) else {
                continue;
            };
            for c in certs.as_array().into_iter().flatten().take(MAX_FILE_CERTS) {
                let hash = |k: &str| {
                    c.get(k)
                        .and_then(|v| v.as_str())
                        .and_then(|t| Sha256::parse_hex(t).ok())
                };
                let (Some(cert_sha256), Some(spki_sha256)) =
                    (hash("cert_sha256"), hash("spki_sha256"))
                else {
                    continue;
                };
                let replaced = c
                    .get("replaced")
                    .and_then(|v| v.as_str())
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc));
                let id = CertIdentity {
                    cert_sha256,
                    spki_sha256,
                };
                expected.restore(id, replaced);
            }
        }
    }

    /// The rules and expected set of `target`.
    pub fn expected(&self, target: &str) -> Option<(&TargetRules, &ExpectedSet)> {
        self.targets.get(target).map(|(r, e, _)| (r, e))
    }

    /// The findings of one report (see [`TlsDetector::judge`]).
    pub fn observe(&mut self, report: &ProbeReport) -> Vec<Finding> {
        self.judge(report).map(|(_, f)| f).unwrap_or_default()
    }

    /// Judges one report once, with [`assess`] (what `probe` prints), and turns
    /// the judgement into findings: a foreign certificate once per certificate,
    /// recovery, expiry once per certificate, failures after N in a row.
    /// `None` for a target that is not configured.
    pub fn judge(&mut self, report: &ProbeReport) -> Option<(Assessment, Vec<Finding>)> {
        let limit = self.failures_before_alert;
        let (rules, expected, states) = self.targets.get_mut(&report.target)?;
        let judgement = assess(rules, expected, report, report.time);
        let endpoint = report.endpoint.clone().unwrap_or_default();
        if !states.contains_key(&endpoint) && states.len() >= MAX_ENDPOINT_STATES {
            return Some((judgement, Vec::new()));
        }
        let state = states.entry(endpoint).or_default();
        // Alerts name the address checked: one endpoint of a service.
        let endpoint_rules;
        let rules: &TargetRules = match &report.endpoint {
            Some(e) => {
                endpoint_rules = TargetRules {
                    address: e.clone(),
                    ..rules.clone()
                };
                &endpoint_rules
            }
            None => rules,
        };
        let findings = match (&report.outcome, judgement.matched) {
            (Err(error), _) => state.failed(rules, error, limit, report.time),
            (Ok(_), None) => state.works_again(rules, report.time).1,
            (Ok(seen), Some(Match::Current | Match::Replaced(_))) => {
                state.ours(rules, seen, judgement.expiring, report.time)
            }
            (Ok(seen), _) => state.foreign(rules, expected, report, seen),
        };
        Some((judgement, findings))
    }

    /// A round of `target` found these endpoints (keys as in
    /// [`ProbeReport::endpoint`], "" for the target as one): the others are
    /// forgotten, and their open conditions cleared (the address left DNS).
    pub fn retain_endpoints(
        &mut self,
        target: &str,
        keep: &[String],
        now: DateTime<Utc>,
    ) -> Vec<Finding> {
        let Some((rules, _, states)) = self.targets.get_mut(target) else {
            return Vec::new();
        };
        let gone: Vec<String> = states
            .keys()
            .filter(|k| !keep.contains(k))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for key in gone {
            let Some(state) = states.remove(&key) else {
                continue;
            };
            let address = match key.is_empty() {
                true => rules.address.clone(),
                false => key.clone(),
            };
            let ids = json!({"target": rules.name, "address": address});
            let why = format!(
                "{} ({address}) is no longer an endpoint of {}",
                rules.name, rules.address
            );
            if state.mismatch.is_some() {
                out.push(Finding::cleared(
                    Kind::TlsMismatch,
                    now,
                    why.clone(),
                    ids.clone(),
                ));
            }
            if state.failure_reported {
                out.push(Finding::cleared(Kind::TlsProbeFailed, now, why, ids));
            }
        }
        out
    }
}

impl TargetState {
    /// A failed check: `tls_probe_failed` once the `limit`-th in a row failed.
    fn failed(
        &mut self,
        rules: &TargetRules,
        error: &ProbeError,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Vec<Finding> {
        self.failures = self.failures.saturating_add(1);
        if self.failures < limit || self.failure_reported {
            return Vec::new();
        }
        self.failure_reported = true;
        vec![Finding::new(
            Kind::TlsProbeFailed,
            now,
            format!(
                "TLS check of {} ({}) failed {} times in a row: {error}",
                rules.name, rules.address, self.failures
            ),
            json!({
                "target": rules.name,
                "address": rules.address,
                "error": error.to_string(),
                "failures": self.failures,
                "vantage": rules.vantage,
            }),
        )]
    }

    /// A check that got a certificate ends a failure episode.
    fn works_again(&mut self, rules: &TargetRules, now: DateTime<Utc>) -> (bool, Vec<Finding>) {
        self.failures = 0;
        if !std::mem::take(&mut self.failure_reported) {
            return (false, Vec::new());
        }
        let ids = json!({"target": rules.name, "address": rules.address});
        let cleared = Finding::cleared(
            Kind::TlsProbeFailed,
            now,
            format!("TLS check of {} works again", rules.name),
            ids,
        );
        (true, vec![cleared])
    }

    /// A certificate that is not ours: `tls_mismatch` once per certificate.
    fn foreign(
        &mut self,
        rules: &TargetRules,
        expected: &ExpectedSet,
        report: &ProbeReport,
        seen: &Seen,
    ) -> Vec<Finding> {
        let now = report.time;
        let (_, mut out) = self.works_again(rules, now);
        let id = seen.facts.identity;
        if self.mismatch == Some(id.cert_sha256) {
            return out;
        }
        self.mismatch = Some(id.cert_sha256);
        let vantage = match report.local {
            true => format!(
                "{} (local: this check never leaves the host)",
                rules.vantage
            ),
            false => rules.vantage.clone(),
        };
        let chain = match seen.chain_valid {
            true => "a valid chain",
            false => "a chain that does not verify",
        };
        out.push(Finding::new(
            Kind::TlsMismatch,
            now,
            format!(
                "{} ({}) presents a certificate that is not ours: {} issued by {}, sha256 {}, with {chain}",
                rules.name,
                report.peer.as_deref().unwrap_or(&rules.address),
                seen.facts.subject,
                seen.facts.issuer,
                id.cert_sha256,
            ),
            json!({
                "target": rules.name,
                "address": rules.address,
                "peer": report.peer,
                "server_name": rules.server_name,
                "vantage": vantage,
                "expected": expected.expected(now, rules.rotation_grace),
                "seen": {
                    "cert_sha256": id.cert_sha256.hex(),
                    "spki_sha256": id.spki_sha256.hex(),
                    "subject": seen.facts.subject,
                    "issuer": seen.facts.issuer,
                    "not_before": format_time(&seen.facts.not_before),
                    "not_after": format_time(&seen.facts.not_after),
                    "dns_names": seen.facts.dns_names,
                    "chain_valid": seen.chain_valid,
                    "chain_error": seen.chain_error,
                },
            }),
        ));
        out
    }

    /// Our certificate: the end of a mismatch or failure (`tls_recovered`), and
    /// `tls_expiring` once per certificate when it is `expiring`.
    fn ours(
        &mut self,
        rules: &TargetRules,
        seen: &Seen,
        expiring: bool,
        now: DateTime<Utc>,
    ) -> Vec<Finding> {
        let (failed_before, mut out) = self.works_again(rules, now);
        let id = seen.facts.identity;
        let ids = json!({"target": rules.name, "address": rules.address});
        let was_mismatch = self.mismatch.take().is_some();
        if was_mismatch {
            out.push(Finding::cleared(
                Kind::TlsMismatch,
                now,
                format!("{} presents our certificate again", rules.name),
                ids,
            ));
        }
        if was_mismatch || failed_before {
            out.push(Finding::new(
                Kind::TlsRecovered,
                now,
                format!(
                    "{} ({}) presents our certificate again (sha256 {})",
                    rules.name, rules.address, id.cert_sha256
                ),
                json!({
                    "target": rules.name,
                    "address": rules.address,
                    "after": if was_mismatch { "tls_mismatch" } else { "tls_probe_failed" },
                    "cert_sha256": id.cert_sha256.hex(),
                }),
            ));
        }
        if expiring && self.expiry_reported != Some(id.cert_sha256) {
            self.expiry_reported = Some(id.cert_sha256);
            out.push(expiring_finding(rules, seen, now));
        }
        out
    }
}

/// `tls_expiring` for our certificate `seen`.
fn expiring_finding(rules: &TargetRules, seen: &Seen, now: DateTime<Utc>) -> Finding {
    let left = seen.facts.not_after - now;
    let days_left = left.num_days();
    let when = match left < Duration::zero() {
        true => "expired".to_string(),
        false => format!("expires in {days_left} days"),
    };
    Finding::new(
        Kind::TlsExpiring,
        now,
        format!(
            "the certificate of {} {when} ({})",
            rules.name,
            format_time(&seen.facts.not_after)
        ),
        json!({
            "target": rules.name,
            "address": rules.address,
            "not_after": format_time(&seen.facts.not_after),
            "days_left": days_left,
            "cert_sha256": seen.facts.identity.cert_sha256.hex(),
        }),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cert::CertFacts;
    use crate::config::{Expect, TargetAddress, TlsTarget};
    use chrono::TimeZone;

    pub(crate) fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap()
    }

    fn facts(n: u8, not_after: DateTime<Utc>) -> CertFacts {
        CertFacts {
            identity: CertIdentity {
                cert_sha256: Sha256::of(&[n]),
                spki_sha256: Sha256::of(&[n, n]),
            },
            subject: format!("CN=cert{n}"),
            issuer: "CN=Test CA".into(),
            not_before: t0() - Duration::days(10),
            not_after,
            dns_names: vec!["example.org".into()],
        }
    }

    fn target() -> TlsTarget {
        TlsTarget {
            name: "xmpp".into(),
            address: Some(TargetAddress::parse("xmpp.example.org:5222").unwrap()),
            srv: None,
            addresses: Default::default(),
            server_name: Some("example.org".into()),
            starttls: Default::default(),
            interval: crate::config::Interval(std::time::Duration::from_secs(60)),
            via: None,
            ca_file: None,
            expect: Expect {
                cert_files: vec!["/x.pem".into()],
                ..Default::default()
            },
            expiry_warning: crate::config::Interval(std::time::Duration::from_secs(14 * 86400)),
            rotation_grace: crate::config::Interval(std::time::Duration::from_secs(86400)),
            timeout: crate::config::Interval(std::time::Duration::from_secs(10)),
            path_check: true,
            reference_port: None,
        }
    }

    fn report(at: DateTime<Utc>, outcome: Result<CertFacts, &str>) -> ProbeReport {
        ProbeReport {
            target: "xmpp".into(),
            address: "xmpp.example.org:5222".into(),
            endpoint: None,
            endpoint_host: None,
            peer: Some("198.51.100.10:5222".into()),
            local: false,
            time: at,
            duration: std::time::Duration::ZERO,
            outcome: outcome
                .map(|facts| Seen {
                    facts,
                    chain_valid: true,
                    chain_error: None,
                    chain: Vec::new(),
                })
                .map_err(|e| ProbeError::Connect(vec![e.to_string()])),
            path: None,
            manifest: None,
            dane: None,
        }
    }

    fn kinds(f: &[Finding]) -> Vec<(&'static str, bool)> {
        f.iter().map(|f| (f.kind.as_str(), f.clears)).collect()
    }

    #[test]
    fn mismatch_once_then_recovered() {
        let far = t0() + Duration::days(90);
        let ours = facts(1, far);
        let theirs = facts(2, far);
        let mut d = TlsDetector::new(&[target()], 3);
        d.set_files("xmpp", &[ours.identity], t0());
        assert!(d.observe(&report(t0(), Ok(ours.clone()))).is_empty());
        let f = d.observe(&report(t0() + Duration::minutes(1), Ok(theirs.clone())));
        assert_eq!(kinds(&f), [("tls_mismatch", false)]);
        let seen = &f[0].details["seen"];
        assert_eq!(seen["cert_sha256"], theirs.identity.cert_sha256.hex());
        assert_eq!(seen["chain_valid"], true);
        assert_eq!(f[0].details["expected"][0], ours.identity.cert_sha256.hex());
        assert_eq!(f[0].details["vantage"], "direct");
        // The same foreign certificate again: no new alert.
        assert!(
            d.observe(&report(t0() + Duration::minutes(2), Ok(theirs)))
                .is_empty()
        );
        // Another foreign certificate: a new alert.
        let f = d.observe(&report(t0() + Duration::minutes(3), Ok(facts(3, far))));
        assert_eq!(kinds(&f), [("tls_mismatch", false)]);
        let f = d.observe(&report(t0() + Duration::minutes(4), Ok(ours.clone())));
        assert_eq!(
            kinds(&f),
            [("tls_mismatch", true), ("tls_recovered", false)]
        );
        assert!(
            d.observe(&report(t0() + Duration::minutes(5), Ok(ours)))
                .is_empty()
        );
    }

    #[test]
    fn each_endpoint_has_its_own_episode_and_a_vanished_one_is_cleared() {
        let far = t0() + Duration::days(90);
        let (ours, theirs) = (facts(1, far), facts(2, far));
        let mut d = TlsDetector::new(&[target()], 3);
        d.set_files("xmpp", &[ours.identity], t0());
        let at = |ep: &str, f: &CertFacts, min: i64| {
            let mut r = report(t0() + Duration::minutes(min), Ok(f.clone()));
            r.endpoint = Some(ep.to_string());
            r.peer = Some(ep.to_string());
            r
        };
        assert!(d.observe(&at("192.0.2.10:5222", &ours, 0)).is_empty());
        let f = d.observe(&at("192.0.2.11:5222", &theirs, 0));
        assert_eq!(kinds(&f), [("tls_mismatch", false)]);
        assert_eq!(f[0].details["address"], "192.0.2.11:5222");
        assert!(
            f[0].summary.contains("xmpp (192.0.2.11:5222)"),
            "{}",
            f[0].summary
        );
        // The good endpoint does not end the other's episode.
        assert!(d.observe(&at("192.0.2.10:5222", &ours, 1)).is_empty());
        assert!(d.observe(&at("192.0.2.11:5222", &theirs, 1)).is_empty());
        // The address leaves DNS: its condition ends.
        let f = d.retain_endpoints("xmpp", &["192.0.2.10:5222".into()], t0());
        assert_eq!(kinds(&f), [("tls_mismatch", true)]);
        assert_eq!(f[0].details["address"], "192.0.2.11:5222");
        assert!(
            d.retain_endpoints("xmpp", &["192.0.2.10:5222".into()], t0())
                .is_empty()
        );
    }

    #[test]
    fn without_expectation_nothing_is_foreign() {
        let far = t0() + Duration::days(90);
        let mut t = target();
        t.expect = Expect::default();
        let mut d = TlsDetector::new(&[t], 1);
        let (a, f) = d.judge(&report(t0(), Ok(facts(9, far)))).unwrap();
        assert_eq!(a.verdict, Verdict::Ok);
        assert!(a.text.starts_with("no expectation"), "{}", a.text);
        assert!(f.is_empty());
        // A failure episode still ends when a certificate arrives.
        let f = d.observe(&report(t0(), Err("refused")));
        assert_eq!(kinds(&f), [("tls_probe_failed", false)]);
        let f = d.observe(&report(t0(), Ok(facts(9, far))));
        assert_eq!(kinds(&f), [("tls_probe_failed", true)]);
    }

    #[test]
    fn a_key_match_is_ours_and_configured_hashes_count() {
        let far = t0() + Duration::days(90);
        let mut t = target();
        let pinned = facts(7, far);
        t.expect.spki_sha256 = vec![pinned.identity.spki_sha256];
        let mut d = TlsDetector::new(&[t], 3);
        // A renewed certificate with the same key (certbot --reuse-key).
        let mut renewed = facts(8, far);
        renewed.identity.spki_sha256 = pinned.identity.spki_sha256;
        assert!(d.observe(&report(t0(), Ok(renewed))).is_empty());
    }

    #[test]
    fn rotation_grace() {
        let far = t0() + Duration::days(90);
        let old = facts(1, far);
        let new = facts(2, far);
        let mut d = TlsDetector::new(&[target()], 3);
        d.set_files("xmpp", &[old.identity], t0());
        // Renewal at t0+1h: the file now holds the new certificate, the server
        // still serves the old one until reloaded.
        d.set_files("xmpp", &[new.identity], t0() + Duration::hours(1));
        assert!(
            d.observe(&report(t0() + Duration::hours(2), Ok(old.clone())))
                .is_empty()
        );
        let (rules, set) = d.expected("xmpp").unwrap();
        let a = assess(
            rules,
            set,
            &report(t0() + Duration::hours(2), Ok(old.clone())),
            t0() + Duration::hours(2),
        );
        assert_eq!(a.verdict, Verdict::Ok);
        assert!(a.text.contains("inside rotation_grace"), "{}", a.text);
        // 24h after the renewal the old certificate is no longer ours.
        let late = t0() + Duration::hours(26);
        let f = d.observe(&report(late, Ok(old.clone())));
        assert_eq!(kinds(&f), [("tls_mismatch", false)]);
        let (rules, set) = d.expected("xmpp").unwrap();
        let a = assess(rules, set, &report(late, Ok(old)), late);
        assert_eq!(a.verdict, Verdict::Critical);
        assert!(a.text.contains("our previous certificate"), "{}", a.text);
        assert_eq!(
            set.expected(late, rules.rotation_grace),
            vec![new.identity.cert_sha256.hex()]
        );
        // The new one is fine.
        let f = d.observe(&report(late, Ok(new)));
        assert_eq!(
            kinds(&f),
            [("tls_mismatch", true), ("tls_recovered", false)]
        );
    }

    #[test]
    fn the_rotation_grace_survives_a_restart() {
        let far = t0() + Duration::days(90);
        let (old, new) = (facts(1, far), facts(2, far));
        let mut d = TlsDetector::new(&[target()], 3);
        assert!(d.set_files("xmpp", &[old.identity], t0()));
        assert!(!d.set_files("xmpp", &[old.identity], t0()));
        assert!(d.set_files("xmpp", &[new.identity], t0() + Duration::hours(1)));
        let saved = serde_json::to_string(&d.saved_state()).unwrap();
        // A new agent: it reads the files (the new certificate) and the saved state.
        let mut again = TlsDetector::new(&[target()], 3);
        again.restore_state(&serde_json::from_str(&saved).unwrap());
        again.set_files("xmpp", &[new.identity], t0() + Duration::hours(2));
        assert!(
            again
                .observe(&report(t0() + Duration::hours(3), Ok(old.clone())))
                .is_empty(),
            "the old certificate is still inside its grace"
        );
        let f = again.observe(&report(t0() + Duration::hours(26), Ok(old)));
        assert_eq!(kinds(&f), [("tls_mismatch", false)]);
        // Garbage is ignored.
        again.restore_state(
            &json!({"expected_files": {"xmpp": [{"cert_sha256": "zz"}], "gone": []}}),
        );
        again.restore_state(&json!("nonsense"));
    }

    #[test]
    fn failures_after_n_in_a_row() {
        let ours = facts(1, t0() + Duration::days(90));
        let mut d = TlsDetector::new(&[target()], 3);
        d.set_files("xmpp", &[ours.identity], t0());
        let at = |m| t0() + Duration::minutes(m);
        assert!(
            d.observe(&report(at(1), Err("connect: refused")))
                .is_empty()
        );
        assert!(
            d.observe(&report(at(2), Err("connect: refused")))
                .is_empty()
        );
        let f = d.observe(&report(at(3), Err("connect: refused")));
        assert_eq!(kinds(&f), [("tls_probe_failed", false)]);
        assert_eq!(f[0].details["error"], "connect: refused");
        assert!(
            d.observe(&report(at(4), Err("connect: refused")))
                .is_empty()
        );
        let f = d.observe(&report(at(5), Ok(ours.clone())));
        assert_eq!(
            kinds(&f),
            [("tls_probe_failed", true), ("tls_recovered", false)]
        );
        // Two failures, then success: nothing at all.
        assert!(d.observe(&report(at(6), Err("x"))).is_empty());
        assert!(d.observe(&report(at(7), Err("x"))).is_empty());
        assert!(d.observe(&report(at(8), Ok(ours))).is_empty());
    }

    #[test]
    fn expiry_warned_once_per_certificate() {
        let soon = facts(1, t0() + Duration::days(5));
        let mut d = TlsDetector::new(&[target()], 3);
        d.set_files("xmpp", &[soon.identity], t0());
        let f = d.observe(&report(t0(), Ok(soon.clone())));
        assert_eq!(kinds(&f), [("tls_expiring", false)]);
        assert_eq!(f[0].details["days_left"], 5);
        assert!(
            d.observe(&report(t0() + Duration::hours(1), Ok(soon)))
                .is_empty()
        );
        let expired = facts(2, t0() - Duration::days(1));
        d.set_files("xmpp", &[expired.identity], t0());
        let f = d.observe(&report(t0(), Ok(expired)));
        assert!(f[0].summary.contains("expired"), "{}", f[0].summary);
    }

    #[test]
    fn local_checks_say_so() {
        let far = t0() + Duration::days(90);
        let mut d = TlsDetector::new(&[target()], 1);
        d.set_files("xmpp", &[facts(1, far).identity], t0());
        let mut r = report(t0(), Ok(facts(2, far)));
        r.local = true;
        let f = d.observe(&r);
        assert!(
            f[0].details["vantage"]
                .as_str()
                .unwrap()
                .contains("never leaves the host")
        );
    }

    #[test]
    fn expected_set_is_capped() {
        let mut set = ExpectedSet::default();
        for i in 0..200u32 {
            let id = CertIdentity {
                cert_sha256: Sha256::of(&i.to_be_bytes()),
                spki_sha256: Sha256::of(&i.to_le_bytes()),
            };
            set.set_files(&[id], t0() + Duration::minutes(i as i64));
        }
        assert!(set.file_certs().len() <= MAX_FILE_CERTS);
        let last = CertIdentity {
            cert_sha256: Sha256::of(&199u32.to_be_bytes()),
            spki_sha256: Sha256::of(&199u32.to_le_bytes()),
        };
        assert_eq!(set.matches(&last, t0(), Duration::hours(1)), Match::Current);
    }
}
