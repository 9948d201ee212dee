//! `netsentry probe`: the TLS checks once, as a monitoring plugin.

use std::io::Write;

use serde_json::json;

use crate::config::{Config, TlsTarget};
use crate::detect::tls::{ExpectedSet, TargetRules, Verdict, assess};
use crate::source::certfiles::CertFiles;
use crate::source::tls_probe::TrustStore;
use crate::source::tls_scheduler::probe_round;

/// The targets named on the command line (all when none are named).
/// "manifest 3, generated 40 s ago" and what is wrong with it.
fn manifest_text(
    m: &crate::detect::tls::ManifestReport,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    use crate::detect::tls::ManifestState;
    let copy = match (m.sequence, m.generated) {
        (Some(s), Some(g)) => format!(
            "manifest {s}, generated {} s ago",
            (now - g).num_seconds().max(0)
        ),
        _ => "no manifest".to_string(),
    };
    match &m.state {
        ManifestState::Fresh => copy,
        ManifestState::Cached(why) => format!("{copy} (kept copy: {why})"),
        ManifestState::Unavailable(why) => format!("manifest unavailable: {why}"),
        ManifestState::Invalid(why) => format!("MANIFEST INVALID: {why}; {copy}"),
    }
}

/// "port 5222 answers at hop 13; port 22 at hop 14".
fn path_text(p: &crate::detect::tls::PathReport) -> String {
    let hop = |h: Option<u8>| match h {
        Some(h) => format!("at hop {h}"),
        None => "at no hop within 32 (ICMP filtered?)".to_string(),
    };
    let mut text = format!("port {} answers {}", p.port.port, hop(p.port.hops));
    if let Some(r) = &p.reference {
        text.push_str(&format!("; port {} {}", r.port, hop(r.hops)));
    }
    text
}

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
pub fn command(
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
    let manifests = crate::source::manifest_fetch::Manifests::read_only(&config.agent.state_dir);
    let reports = runtime.block_on(probe_round(
        &targets,
        config.tls.concurrency,
        &mut trust,
        &manifests,
    ));
    let mut files = CertFiles::default();
    let mut worst = Verdict::Ok;
    let mut rows = Vec::new();
    for (target, report) in targets.iter().zip(&reports) {
        let rules = TargetRules::from_config(target);
        let mut expected = ExpectedSet::new(&target.expect);
        let (found, problems) = files.current(&target.expect.cert_files);
        let ids: Vec<_> = found.iter().map(|(_, f)| f.identity).collect();
        expected.set_files(&ids, report.time);
        if let Some(m) = &report.manifest {
            expected.set_manifest(m.ids.clone());
        }
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
        if let Some(m) = &report.manifest {
            a.text
                .push_str(&format!(" [{}]", manifest_text(m, report.time)));
        }
        if let Some(path) = &report.path {
            a.text.push_str(&format!(" [{}]", path_text(path)));
        }
        worst = worst.max(a.verdict);
        if json_out {
            let seen = report.outcome.as_ref().ok().map(|s| {
                let mut v = s.facts.to_json();
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
                "error": report.outcome.as_ref().err().map(|e| e.to_string()),
                "days_left": a.days_left,
                "manifest": report.manifest.as_ref().map(|m| json!({
                    "url": m.url,
                    "state": manifest_text(m, report.time),
                    "sequence": m.sequence,
                    "generated": m.generated.as_ref().map(crate::alert::format_time),
                })),
                "path": report.path.as_ref().map(|p| json!({
                    "address": p.address.to_string(),
                    "port": p.port.port,
                    "hops": p.port.hops,
                    "syns": p.port.syns,
                    "routers": p.port.routers.iter().map(|r| r.map(|ip| ip.to_string())).collect::<Vec<_>>(),
                    "reference": p.reference.as_ref().map(|r| json!({"port": r.port, "hops": r.hops})),
                })),
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
