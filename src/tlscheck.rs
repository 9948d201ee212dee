//! TLS checks as the agent and the command line run them: a round of probes
//! with bounded concurrency, `netsentry probe` and `netsentry fingerprints`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::alert::format_time;
use crate::cert::{CertFacts, read_pem_file};
use crate::config::{Config, TlsTarget};
use crate::detect::tls::{ExpectedSet, ProbeReport, TargetRules, Verdict, assess};
use crate::source::certfiles::CertFiles;
use crate::source::tls_probe::{TrustStore, probe};

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
        let (ids, problems) = files.current(&target.expect.cert_files);
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
        for t in &c.tls.targets {
            for f in &t.expect.cert_files {
                if !files.contains(f) {
                    files.push(f.clone());
                }
            }
        }
    }
    if files.is_empty() {
        return Err(
            "no certificate files: name them on the command line or in expect.cert_files of a [[tls.target]]"
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
