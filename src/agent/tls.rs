//! The agent's side of the TLS checks: [`TlsWatch`] feeds each report through
//! the comparison detector and keeps the state files (`tls.json`: replaced
//! certificates within their grace; `tls_checks.json`: the last result per
//! target for `netsentry status`).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::alert::Kind;
use crate::alert::{Finding, format_time};
use crate::config::{Config, TlsTarget};
use crate::detect::consistency::ConsistencyDetector;
use crate::detect::dane::{DaneDetector, DaneSubject};
use crate::detect::path::PathDetector;
use crate::detect::tls::{
    Assessment, ManifestReport, ManifestState, Match, ProbeReport, TlsDetector,
};
use crate::sink::metrics::TlsInfo;
use crate::source::certfiles::CertFiles;
use crate::state::{self, certhistory::CertHistory};

/// The agent's side of the checks: the comparison detector, the expected
/// files, and the state files (`tls.json`: replaced certificates within their
/// grace; `tls_checks.json`: the last result per target for `netsentry status`).
pub struct TlsWatch {
    state_dir: PathBuf,
    targets: Vec<TlsTarget>,
    detector: TlsDetector,
    files: CertFiles,
    /// Targets already warned about resolving to this host.
    local_warned: HashSet<String>,
    /// The path-length comparison across targets.
    path: PathDetector,
    /// The keys of the targets that serve one name, compared.
    consistency: ConsistencyDetector,
    /// Each endpoint's certificate against its TLSA records (`expect.dane`).
    dane: DaneDetector,
    /// Targets already told their path cannot be measured (through a proxy).
    path_skip_said: HashSet<String>,
    /// Per target: the manifest problem last reported (invalid) and whether
    /// manifest_unavailable holds.
    manifest_said: BTreeMap<String, (Option<String>, bool)>,
    last: BTreeMap<String, Value>,
    last_dirty: bool,
    metrics: BTreeMap<String, TlsInfo>,
    /// Every certificate seen in the expected files (`cert_history.json`).
    pub history: CertHistory,
}

impl TlsWatch {
    /// The comparison for the configured targets, with the rotation grace saved in `state_dir/tls.json`.
    pub fn load(config: &Config) -> TlsWatch {
        let state_dir = config.agent.state_dir.clone();
        let mut detector = TlsDetector::new(&config.tls.targets, config.tls.failures_before_alert);
        if let Some(text) = state::read_text(&state_dir, state::TLS_FILE) {
            match serde_json::from_str(&text) {
                Ok(saved) => detector.restore_state(&saved),
                Err(e) => {
                    tracing::warn!("{}: unreadable ({e}); starting afresh", state::TLS_FILE)
                }
            }
        }
        TlsWatch {
            state_dir: state_dir.clone(),
            targets: config.tls.targets.clone(),
            detector,
            files: CertFiles::default(),
            local_warned: HashSet::new(),
            path: PathDetector::default(),
            consistency: ConsistencyDetector::default(),
            dane: DaneDetector::default(),
            path_skip_said: HashSet::new(),
            manifest_said: BTreeMap::new(),
            last: BTreeMap::new(),
            last_dirty: false,
            metrics: BTreeMap::new(),
            history: CertHistory::load(&config.agent.state_dir),
        }
    }

    /// One round of a target (a report per endpoint) through the
    /// comparison; endpoints that left DNS are forgotten (their conditions
    /// end). A round whose lookup failed (one report without an endpoint)
    /// forgets nothing: breaking DNS must not end an alert.
    pub fn observe_round(&mut self, reports: &[ProbeReport]) -> Vec<Finding> {
        let mut out = Vec::new();
        for report in reports {
            out.extend(self.observe(report));
        }
        let resolved = reports.iter().all(|r| r.endpoint.is_some());
        if let Some(first) = reports.first().filter(|_| resolved) {
            let keep: Vec<String> = reports
                .iter()
                .map(|r| r.endpoint.clone().unwrap_or_default())
                .collect();
            out.extend(
                self.detector
                    .retain_endpoints(&first.target, &keep, first.time),
            );
            let keys: Vec<String> = reports.iter().map(ProbeReport::key).collect();
            let prefix = format!("{}@", first.target);
            let stale: Vec<String> = self
                .last
                .keys()
                .filter(|k| (*k == &first.target || k.starts_with(&prefix)) && !keys.contains(k))
                .cloned()
                .collect();
            for k in stale {
                self.last.remove(&k);
                self.metrics.remove(&k);
                out.extend(self.consistency.forget(&k, first.time));
                out.extend(self.dane.forget(&k, first.time));
                self.last_dirty = true;
            }
        }
        out
    }

    /// One check result through the comparison. The expected files are
    /// re-read first when they changed (renewals).
    pub fn observe(&mut self, report: &ProbeReport) -> Vec<Finding> {
        // `target` or `target@address:port`: what every per-endpoint state is keyed by.
        let key = report.key();
        let Some(target) = self.targets.iter().find(|t| t.name == report.target) else {
            return Vec::new();
        };
        let (found, problems) = self.files.current(&target.expect.cert_files);
        let ids: Vec<_> = found.iter().map(|(_, f)| f.identity).collect();
        for (path, facts) in &found {
            self.history.record(facts, path, report.time);
        }
        self.history.save(&self.state_dir);
        for p in problems {
            tracing::warn!(
                "tls target {}: {p}; the last good certificate stays expected",
                target.name
            );
        }
        if self.detector.set_files(&target.name, &ids, report.time) {
            let text = self.detector.saved_state().to_string();
            if let Err(e) = state::write_text(&self.state_dir, state::TLS_FILE, &text) {
                tracing::error!("{e}");
            }
        }
        if report.local && self.local_warned.insert(key.clone()) {
            tracing::warn!(
                "tls target {} ({}) resolves to an address of this host: this check never leaves the host and cannot see an interception on the path; check from another server or through a SOCKS5 proxy (via)",
                target.name,
                report.checked_address()
            );
        }
        match &report.outcome {
            Ok(seen) => {
                tracing::debug!(target = %target.name, cert = %seen.facts.identity.cert_sha256, chain_valid = seen.chain_valid, "TLS check")
            }
            Err(e) => tracing::debug!(target = %target.name, "TLS check failed: {e}"),
        }
        if target.via.is_some()
            && target.path_check
            && self.path_skip_said.insert(target.name.clone())
        {
            tracing::info!(
                "tls target {}: the path length cannot be measured through a SOCKS5 proxy (via); only the certificate is checked",
                target.name
            );
        }
        let mut from_manifest = Vec::new();
        if let Some(m) = &report.manifest {
            self.detector.set_manifest(&report.target, m.ids.clone());
            from_manifest =
                manifest_findings(&mut self.manifest_said, &report.target, m, report.time);
        }
        let mut findings = match &report.path {
            Some(p) => {
                tracing::debug!(target = %target.name, port = p.port.port, hops = ?p.port.hops, syns = p.port.syns, "path length");
                self.path.observe(&key, p, report.time)
            }
            None => Vec::new(),
        };
        let Some((judgement, tls_findings)) = self.detector.judge(report) else {
            return findings;
        };
        if let (Ok(seen), Some((name, verdict))) = (&report.outcome, &report.dane) {
            let subject = DaneSubject {
                key: &key,
                target: &report.target,
                address: report.checked_address(),
                tlsa_name: name,
                cert_sha256: &seen.facts.identity.cert_sha256.hex(),
            };
            findings.extend(self.dane.observe(&subject, verdict, report.time));
        }
        if let Ok(seen) = &report.outcome {
            let ours = matches!(judgement.matched, Some(Match::Current | Match::Replaced(_)));
            findings.extend(self.consistency.observe(
                target.server_name(),
                &key,
                &seen.facts.identity.spki_sha256.hex(),
                ours,
                report.time,
            ));
        }
        self.remember(report, &judgement);
        findings.splice(0..0, tls_findings);
        findings.splice(0..0, from_manifest);
        findings
    }

    /// Keeps the last result for `netsentry status`: written at once when a
    /// target's state changes, else with the periodic [`TlsWatch::save`].
    fn remember(&mut self, report: &ProbeReport, a: &Assessment) {
        let seen = report.outcome.as_ref().ok();
        let key = report.key();
        self.metrics.insert(
            key.clone(),
            TlsInfo {
                target: report.target.clone(),
                endpoint: report.endpoint.clone(),
                up: seen.is_some(),
                ours: a
                    .matched
                    .map(|m| matches!(m, Match::Current | Match::Replaced(_))),
                not_after: seen.map(|s| s.facts.not_after.timestamp()),
                checked: report.time.timestamp(),
                duration: report.duration.as_secs_f64(),
                address: report.checked_address().to_string(),
                cert: seen.map(|s| crate::sink::metrics::CertLabels {
                    cert_sha256: s.facts.identity.cert_sha256.hex(),
                    spki_sha256: s.facts.identity.spki_sha256.hex(),
                    issuer: s.facts.issuer.clone(),
                    subject: s.facts.subject.clone(),
                }),
            },
        );
        let row = json!({
            "time": format_time(&report.time),
            "status": a.verdict.as_str(),
            "message": a.text,
            "peer": report.peer,
            "target": report.target,
            "endpoint": report.endpoint,
            "endpoint_host": report.endpoint_host,
            "hops": report.path.as_ref().and_then(|p| p.port.hops),
            "reference_hops": report.path.as_ref().and_then(|p| p.reference.as_ref()).map(|r| json!({"port": r.port, "hops": r.hops})),
        });
        let changed = self.last.get(&key).map(|r| &r["status"]) != Some(&row["status"]);
        self.last.insert(key, row);
        self.last_dirty = true;
        if changed {
            self.save();
        }
    }

    /// The last check of each target, for the metrics.
    pub fn metrics(&self) -> Vec<TlsInfo> {
        self.metrics.values().cloned().collect()
    }

    /// Writes the last results if they changed since the last write.
    pub fn save(&mut self) {
        if !std::mem::take(&mut self.last_dirty) {
            return;
        }
        let text = serde_json::to_string(&self.last).unwrap_or_default();
        if let Err(e) = state::write_text(&self.state_dir, state::TLS_CHECKS_FILE, &text) {
            tracing::debug!("{e}");
        }
    }
}

/// `manifest_invalid` once per problem, `manifest_unavailable` while no
/// usable copy exists (a condition, cleared when a fresh one verifies).
fn manifest_findings(
    said_by_target: &mut BTreeMap<String, (Option<String>, bool)>,
    target: &str,
    m: &ManifestReport,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<Finding> {
    let (said, unavailable) = said_by_target.entry(target.to_string()).or_default();
    let ids = json!({"target": target, "url": m.url});
    let mut out = Vec::new();
    match &m.state {
        ManifestState::Invalid(why) => {
            if said.as_deref() != Some(why.as_str()) {
                *said = Some(why.clone());
                let mut details = ids.clone();
                details["error"] = json!(why);
                details["sequence_in_use"] = json!(m.sequence);
                out.push(Finding::new(
                    Kind::ManifestInvalid,
                    now,
                    format!(
                        "the fingerprint manifest of {target} ({}) is forged or replayed: {why}",
                        m.url
                    ),
                    details,
                ));
            }
        }
        ManifestState::Unavailable(why) | ManifestState::Cached(why) => {
            if !std::mem::replace(unavailable, true) {
                let mut details = ids.clone();
                details["error"] = json!(why);
                details["sequence_in_use"] = json!(m.sequence);
                let consequence = match m.sequence {
                    Some(s) => format!(
                        "the checks go on with the kept copy (sequence {s}) until it expires"
                    ),
                    None => "its certificate cannot be judged".to_string(),
                };
                out.push(Finding::new(
                    Kind::ManifestUnavailable,
                    now,
                    format!("the fingerprint manifest of {target} cannot be fetched ({}): {why}; {consequence}", m.url),
                    details,
                ));
            }
        }
        ManifestState::Fresh => {
            *said = None;
            if std::mem::take(unavailable) {
                out.push(Finding::cleared(
                    Kind::ManifestUnavailable,
                    now,
                    format!("the fingerprint manifest of {target} is available again"),
                    ids,
                ));
            }
        }
    }
    out
}
