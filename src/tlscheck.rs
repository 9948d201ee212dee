//! TLS checks as the agent and the command line run them: the agent's
//! scheduler and [`TlsWatch`] (comparison plus state files), a round of probes
//! with bounded concurrency, `netsentry probe` and `netsentry fingerprints`.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use crate::alert::{Finding, format_time};
use crate::baseline;
use crate::cert::{CertFacts, read_pem_file};
use crate::certhistory::CertHistory;
use crate::config::{Config, TlsTarget};
use crate::detect::tls::{
    ExpectedSet, Match, ProbeReport, TargetRules, TlsDetector, Verdict, assess,
};
use crate::sink::metrics::TlsInfo;
use crate::source::Feed;
use crate::source::certfiles::CertFiles;
use crate::source::tls_probe::{TrustStore, probe};

/// Starts the agent's check scheduler when targets are configured. Each target
/// is checked every `interval` (the first time right away); a check still
/// running when the next is due is not doubled; at most `[tls] concurrency`
/// run at once. Reports arrive on the returned channel.
pub fn start_scheduler(config: &Config) -> Option<Feed<ProbeReport>> {
    let targets = config.tls.targets.clone();
    if targets.is_empty() {
        return None;
    }
    tracing::info!(
        "TLS checks: {} targets ({})",
        targets.len(),
        targets
            .iter()
            .map(|t| format!("{} {} {}", t.name, t.address, t.vantage()))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let (tx, rx) = mpsc::channel::<ProbeReport>(1024);
    let limit = Arc::new(Semaphore::new(config.tls.concurrency.max(1)));
    let task = tokio::spawn(async move {
        let mut trust = TrustStore::default();
        let start = tokio::time::Instant::now();
        let mut due = vec![start; targets.len()];
        let busy: Vec<Arc<AtomicBool>> = targets.iter().map(|_| Arc::default()).collect();
        loop {
            let Some(next) = due.iter().min().copied() else {
                return;
            };
            tokio::time::sleep_until(next).await;
            let now = tokio::time::Instant::now();
            for (i, target) in targets.iter().enumerate() {
                if due[i] > now {
                    continue;
                }
                due[i] = (due[i] + target.interval.0).max(now);
                if busy[i].swap(true, Ordering::AcqRel) {
                    continue;
                }
                let (target, tx, limit, busy) =
                    (target.clone(), tx.clone(), limit.clone(), busy[i].clone());
                let roots = trust.get(target.ca_file.as_deref());
                tokio::spawn(async move {
                    let report = {
                        let _permit = limit.acquire_owned().await;
                        probe(&target, roots).await
                    };
                    busy.store(false, Ordering::Release);
                    let _ = tx.send(report).await;
                });
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    Some(Feed::new((rx, task)))
}

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
    last: BTreeMap<String, Value>,
    last_dirty: bool,
    metrics: BTreeMap<String, TlsInfo>,
    /// Every certificate seen in the expected files (`cert_history.json`).
    pub history: CertHistory,
}

impl TlsWatch {
    pub fn load(config: &Config) -> TlsWatch {
        let state_dir = config.agent.state_dir.clone();
        let mut detector = TlsDetector::new(&config.tls.targets, config.tls.failures_before_alert);
        if let Some(text) = baseline::read_state_text(&state_dir, baseline::TLS_FILE) {
            match serde_json::from_str(&text) {
                Ok(saved) => detector.restore_state(&saved),
                Err(e) => {
                    tracing::warn!("{}: unreadable ({e}); starting afresh", baseline::TLS_FILE)
                }
            }
        }
        TlsWatch {
            state_dir: state_dir.clone(),
            targets: config.tls.targets.clone(),
            detector,
            files: CertFiles::default(),
            local_warned: HashSet::new(),
            last: BTreeMap::new(),
            last_dirty: false,
            metrics: BTreeMap::new(),
            history: CertHistory::load(&config.agent.state_dir),
        }
    }

    /// One check result through the comparison. The expected files are
    /// re-read first when they changed (renewals).
    pub fn observe(&mut self, report: &ProbeReport) -> Vec<Finding> {
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
            if let Err(e) = baseline::write_state_text(&self.state_dir, baseline::TLS_FILE, &text) {
                tracing::error!("{e}");
            }
        }
        if report.local && self.local_warned.insert(target.name.clone()) {
            tracing::warn!(
                "tls target {} ({}) resolves to an address of this host: this check never leaves the host and cannot see an interception on the path; check from another server or through a SOCKS5 proxy (via)",
                target.name,
                target.address
            );
        }
        match &report.outcome {
            Ok(seen) => {
                tracing::debug!(target = %target.name, cert = %seen.facts.identity.cert_sha256, chain_valid = seen.chain_valid, "TLS check")
            }
            Err(e) => tracing::debug!(target = %target.name, "TLS check failed: {e}"),
        }
        self.remember(report);
        self.detector.observe(report)
    }

    /// Keeps the last result for `netsentry status`: written at once when a
    /// target's state changes, else with the periodic [`TlsWatch::save`].
    fn remember(&mut self, report: &ProbeReport) {
        let Some((rules, expected)) = self.detector.expected(&report.target) else {
            return;
        };
        let a = assess(rules, expected, report, report.time);
        let seen = report.outcome.as_ref().ok();
        self.metrics.insert(
            report.target.clone(),
            TlsInfo {
                target: report.target.clone(),
                up: seen.is_some(),
                ours: a
                    .matched
                    .map(|m| matches!(m, Match::Current | Match::Replaced(_))),
                not_after: seen.map(|s| s.facts.not_after.timestamp()),
                checked: report.time.timestamp(),
            },
        );
        let row = json!({
            "time": format_time(&report.time),
            "status": a.verdict.as_str(),
            "message": a.text,
            "peer": report.peer,
        });
        let changed = self.last.get(&report.target).map(|r| &r["status"]) != Some(&row["status"]);
        self.last.insert(report.target.clone(), row);
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
        if let Err(e) =
            baseline::write_state_text(&self.state_dir, baseline::TLS_CHECKS_FILE, &text)
        {
            tracing::debug!("{e}");
        }
    }
}

/// Checks each target once, at most `concurrency` at a time; reports come
/// back in the order of `targets`.
pub async fn probe_round(
    targets: &[TlsTarget],
    concurrency: usize,
    trust: &mut TrustStore,
) -> Vec<ProbeReport> {
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, target) in targets.iter().enumerate() {
        let roots = trust.get(target.ca_file.as_deref());
        let target = target.clone();
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (i, probe(&target, roots).await)
        });
    }
    let mut reports: Vec<Option<ProbeReport>> = vec![None; targets.len()];
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, report)) = done {
            reports[i] = Some(report);
        }
    }
    reports
        .into_iter()
        .zip(targets)
        .map(|(r, t)| {
            r.unwrap_or_else(|| ProbeReport {
                target: t.name.clone(),
                address: t.address.to_string(),
                peer: None,
                local: false,
                time: Utc::now(),
                outcome: Err("the check stopped unexpectedly".into()),
            })
        })
        .collect()
}

/// The targets named on the command line (all when none are named).
fn select(config: &Config, names: &[String]) -> Result<Vec<TlsTarget>, String> {
    let all = &config.tls.targets;
    if all.is_empty() {
        return Err(
            "no [[tls.target]] in the configuration: add one (see config/netsentry.toml)".into(),
        );
    }
    if names.is_empty() {
        return Ok(all.clone());
    }
    names
        .iter()
        .map(|n| {
            all.iter().find(|t| &t.name == n).cloned().ok_or_else(|| {
                let known: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
                format!(
                    "no tls target named {n:?} (configured: {})",
                    known.join(", ")
                )
            })
        })
        .collect()
}

/// `netsentry probe`: checks once, prints one line per target (or JSON) and
/// returns the monitoring-plugin exit code of the worst result.
pub fn probe_command(
    config: &Config,
    names: &[String],
    json_out: bool,
    out: &mut impl Write,
) -> Result<i32, String> {
    let targets = select(config, names)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let mut trust = TrustStore::default();
    let reports = runtime.block_on(probe_round(&targets, config.tls.concurrency, &mut trust));
    let mut files = CertFiles::default();
    let mut worst = Verdict::Ok;
    let mut rows = Vec::new();
    for (target, report) in targets.iter().zip(&reports) {
        let rules = TargetRules::from_config(target);
        let mut expected = ExpectedSet::new(&target.expect);
        let (found, problems) = files.current(&target.expect.cert_files);
        let ids: Vec<_> = found.iter().map(|(_, f)| f.identity).collect();
        expected.set_files(&ids, report.time);
        let mut a = assess(&rules, &expected, report, report.time);
        if !problems.is_empty() && a.verdict == Verdict::Ok {
            a.verdict = Verdict::Warning;
        }
        if report.local {
            a.text
                .push_str(" [local address: this check never leaves the host]");
        }
        for p in &problems {
            a.text.push_str(&format!(" [expected file: {p}]"));
        }
        worst = worst.max(a.verdict);
        if json_out {
            let seen = report.outcome.as_ref().ok().map(|s| {
                let mut v = facts_json(&s.facts);
                v["chain_valid"] = json!(s.chain_valid);
                v["chain_error"] = json!(s.chain_error);
                v
            });
            rows.push(json!({
                "target": target.name,
                "address": report.address,
                "peer": report.peer,
                "vantage": target.vantage(),
                "local": report.local,
                "status": a.verdict.as_str(),
                "exit_code": a.verdict.exit_code(),
                "message": a.text,
                "expected": expected.expected(report.time, rules.rotation_grace),
                "seen": seen,
                "error": report.outcome.as_ref().err(),
                "days_left": a.days_left,
            }));
        } else {
            let _ = writeln!(
                out,
                "{} {} ({}): {}",
                a.verdict.as_str(),
                target.name,
                report.peer.as_deref().unwrap_or(&report.address),
                a.text
            );
        }
    }
    if json_out {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json!({
                "status": worst.as_str(),
                "exit_code": worst.exit_code(),
                "targets": rows,
            }))
            .unwrap_or_default()
        );
    }
    Ok(worst.exit_code())
}

fn facts_json(f: &CertFacts) -> Value {
    json!({
        "cert_sha256": f.identity.cert_sha256.hex(),
        "spki_sha256": f.identity.spki_sha256.hex(),
        "subject": f.subject,
        "issuer": f.issuer,
        "not_before": format_time(&f.not_before),
        "not_after": format_time(&f.not_after),
        "dns_names": f.dns_names,
    })
}

/// `netsentry fingerprints`: every certificate of each file with its SHA-256
/// and SPKI SHA-256 (hex and base64, the latter as HPKP/DANE-style pins use it).
pub fn fingerprints_command(
    files: &[PathBuf],
    config: Option<&Config>,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), String> {
    let mut files = files.to_vec();
    if files.is_empty()
        && let Some(c) = config
    {
        let named = c
            .tls
            .targets
            .iter()
            .flat_map(|t| &t.expect.cert_files)
            .chain(&c.ct.authorized_cert_files);
        for f in named {
            if !files.contains(f) {
                files.push(f.clone());
            }
        }
    }
    if files.is_empty() {
        return Err(
            "no certificate files: name them on the command line, in expect.cert_files of a [[tls.target]] or in [ct] authorized_cert_files"
                .into(),
        );
    }
    let mut rows = Vec::new();
    for file in &files {
        let ders = read_pem_file(file).map_err(|e| e.to_string())?;
        for (index, der) in ders.iter().enumerate() {
            let facts = CertFacts::from_der(der)
                .map_err(|e| format!("{} #{index}: {e}", file.display()))?;
            let id = facts.identity;
            if json_out {
                let mut v = facts_json(&facts);
                v["file"] = json!(file.display().to_string());
                v["index"] = json!(index);
                v["cert_sha256_base64"] = json!(id.cert_sha256.base64());
                v["spki_sha256_base64"] = json!(id.spki_sha256.base64());
                rows.push(v);
            } else {
                let _ = writeln!(
                    out,
                    "{}{}\n  subject      {}\n  issuer       {}\n  valid        {} to {}\n  names        {}\n  cert sha256  {}\n               {}\n  spki sha256  {}\n               {}\n",
                    file.display(),
                    if ders.len() > 1 {
                        format!(" #{index}")
                    } else {
                        String::new()
                    },
                    facts.subject,
                    facts.issuer,
                    format_time(&facts.not_before),
                    format_time(&facts.not_after),
                    facts.dns_names.join(", "),
                    id.cert_sha256.hex(),
                    id.cert_sha256.base64(),
                    id.spki_sha256.hex(),
                    id.spki_sha256.base64(),
                );
            }
        }
    }
    if json_out {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    }
    Ok(())
}

/// `netsentry fingerprints --history`: the certificates the agent has seen in
/// its expected files, oldest first.
pub fn history_command(config: &Config, json_out: bool, out: &mut impl Write) {
    let history = CertHistory::load(&config.agent.state_dir);
    let mut certs = history.certificates;
    certs.sort_by_key(|c| c.not_before);
    if json_out {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&certs).unwrap_or_default()
        );
        return;
    }
    if certs.is_empty() {
        let _ = writeln!(
            out,
            "no certificates recorded yet in {} (the agent records those of expect.cert_files and [ct] authorized_cert_files)",
            config
                .agent
                .state_dir
                .join(crate::certhistory::HISTORY_FILE)
                .display()
        );
    }
    for c in &certs {
        let _ = writeln!(
            out,
            "{} .. {}  cert {}  spki {}  {}  ({}; first seen {})",
            format_time(&c.not_before),
            format_time(&c.not_after),
            c.cert_sha256,
            c.spki_sha256,
            c.dns_names.join(","),
            c.file,
            format_time(&c.first_seen)
        );
    }
}
