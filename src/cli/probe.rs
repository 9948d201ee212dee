//! `netsentry probe`: the TLS checks once, as a monitoring plugin.

use std::io::Write;

use serde_json::json;

use crate::config::{Config, TlsTarget};
use crate::detect::consistency::{RoundSeen, round_outliers};
use crate::detect::tls::{
    Assessment, ExpectedSet, Match, ProbeReport, TargetRules, Verdict, assess,
};
use crate::source::certfiles::CertFiles;
use crate::source::tls_probe::TrustStore;
use crate::source::tls_scheduler::{Shared, probe_round};

/// A check without a configuration file (`--address`).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct AdHoc {
    /// Check this HOST:PORT ([v6]:port) without a configuration file
    #[arg(long, value_name = "HOST:PORT")]
    pub address: Option<String>,
    /// With --address: the STARTTLS dialogue (xmpp, xmpp-server, smtp, imap, pop3, ldap, postgres)
    #[arg(long, value_name = "PROTOCOL", requires = "address")]
    pub starttls: Option<String>,
    /// With --address: SNI and the name verified [default: the host]
    #[arg(long, value_name = "NAME", requires = "address")]
    pub server_name: Option<String>,
    /// With --address: our key's SHA-256 (hex; repeatable)
    #[arg(long, value_name = "HEX", requires = "address")]
    pub expect_spki: Vec<String>,
    /// With --address: our certificate file (PEM; repeatable)
    #[arg(long, value_name = "PEM", requires = "address")]
    pub expect_file: Vec<std::path::PathBuf>,
    /// With --address: trust anchors for chain_valid [default: the system's]
    #[arg(long, value_name = "PEM", requires = "address")]
    pub ca_file: Option<std::path::PathBuf>,
    /// With --address: the whole check ends within this
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        requires = "address"
    )]
    pub timeout: String,
}

impl AdHoc {
    /// The configuration of one target (checked as a configuration file
    /// would be); `config` is not read.
    pub fn config(&self, config: Option<&std::path::Path>) -> Result<Config, String> {
        if let Some(path) = config {
            return Err(format!(
                "--address checks without a configuration; drop -c {}",
                path.display()
            ));
        }
        let address = self.address.as_deref().unwrap_or_default();
        let toml_str = |v: &str| toml::Value::String(v.to_string()).to_string();
        let host = address
            .trim_start_matches('[')
            .split([']', ':'])
            .next()
            .unwrap_or("target");
        let name: String = host
            .chars()
            .map(
                |c| match c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    true => c,
                    false => '.',
                },
            )
            .take(64)
            .collect();
        let mut text = format!(
            "[[tls.target]]\nname = {}\naddress = {}\npath_check = false\ntimeout = {}\n",
            toml_str(&name),
            toml_str(address),
            toml_str(&self.timeout)
        );
        if let Some(s) = &self.starttls {
            text.push_str(&format!("starttls = {}\n", toml_str(s)));
        }
        if let Some(s) = &self.server_name {
            text.push_str(&format!("server_name = {}\n", toml_str(s)));
        }
        if let Some(f) = &self.ca_file {
            text.push_str(&format!(
                "ca_file = {}\n",
                toml_str(&f.display().to_string())
            ));
        }
        let list = |v: Vec<String>| v.iter().map(|x| toml_str(x)).collect::<Vec<_>>().join(", ");
        let files = list(
            self.expect_file
                .iter()
                .map(|f| f.display().to_string())
                .collect(),
        );
        text.push_str(&format!(
            "expect = {{ spki_sha256 = [{}], cert_files = [{files}] }}\n",
            list(self.expect_spki.clone())
        ));
        // The message without the position in the generated text.
        Config::parse(&text, "--address").map_err(|e| {
            let e = e.to_string();
            match e.strip_prefix("--address:") {
                Some(rest) => rest
                    .split_once(": ")
                    .map(|(_, m)| m.to_string())
                    .unwrap_or(e.clone()),
                None => e,
            }
        })
    }
}

/// `-w` / `-C`: days before the end of our certificate.
#[derive(Clone, Copy, Debug, Default)]
pub struct Thresholds {
    pub warning_days: Option<i64>,
    pub critical_days: Option<i64>,
}

/// The plugin's answer when it cannot check: UNKNOWN (3), the reason on stdout.
pub fn unknown(why: &str, json_out: bool, out: &mut impl Write) -> i32 {
    let why = why.lines().next().unwrap_or_default();
    let _ = match json_out {
        true => writeln!(
            out,
            "{}",
            json!({"status": "UNKNOWN", "exit_code": 3, "error": why, "targets": []})
        ),
        false => writeln!(out, "NETSENTRY UNKNOWN - {why}"),
    };
    Verdict::Unknown.exit_code()
}

/// One perfdata label: quoted, without the characters the format reserves.
fn perf_label(key: &str, what: &str) -> String {
    let clean: String = key.chars().filter(|c| !matches!(c, '\'' | '=')).collect();
    format!("'{clean} {what}'")
}

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

/// Where the target's expectation comes from: "files a.pem; 1 spki pin;
/// manifest" (what `probe` prints, issue 17 item 6).
fn expectation_text(t: &TlsTarget) -> String {
    let e = &t.expect;
    let mut parts = Vec::new();
    if !e.cert_files.is_empty() {
        let files: Vec<String> = e
            .cert_files
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        parts.push(format!("files {}", files.join(", ")));
    }
    let pins = e.spki_sha256.len() + e.cert_sha256.len();
    if pins > 0 {
        parts.push(format!(
            "{pins} pinned hash{}",
            if pins == 1 { "" } else { "es" }
        ));
    }
    if e.manifest.is_some() {
        parts.push("signed manifest".into());
    }
    if e.dane {
        parts.push("DANE".into());
    }
    match parts.is_empty() {
        true => "no expectation: endpoints compared with each other".into(),
        false => format!("expects {}", parts.join("; ")),
    }
}

/// One endpoint's line: its judgement and what else the check learned.
struct Row<'a> {
    target: &'a TlsTarget,
    report: &'a ProbeReport,
    judgement: Assessment,
    expected: Vec<String>,
}

/// `netsentry probe`: checks once, prints one line per endpoint (or JSON) and
/// returns the monitoring-plugin exit code of the worst result.
pub fn command(
    config: &Config,
    names: &[String],
    json_out: bool,
    thresholds: &Thresholds,
    out: &mut impl Write,
) -> Result<i32, String> {
    let targets = select(config, names)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let mut trust = TrustStore::default();
    let manifests = crate::source::manifest_fetch::Manifests::read_only(&config.agent.state_dir);
    let rounds = runtime.block_on(async {
        let shared = Shared::new(config, manifests);
        probe_round(&targets, &mut trust, &shared).await
    });
    let mut files = CertFiles::default();
    let mut rows: Vec<Row<'_>> = Vec::new();
    for (target, reports) in targets.iter().zip(&rounds) {
        let mut rules = TargetRules::from_config(target);
        if let Some(w) = thresholds.warning_days {
            rules.expiry_warning = chrono::Duration::days(w);
        }
        let mut expected = ExpectedSet::new(&target.expect);
        let (found, problems) = files.current(&target.expect.cert_files);
        let ids: Vec<_> = found.iter().map(|(_, f)| f.identity).collect();
        for report in reports {
            expected.set_files(&ids, report.time);
            if let Some(m) = &report.manifest {
                expected.set_manifest(m.ids.clone());
            }
            let mut a = assess(&rules, &expected, report, report.time);
            if !problems.is_empty() && a.verdict == Verdict::Ok {
                a.verdict = Verdict::Warning;
            }
            apply_thresholds(&mut a, thresholds);
            if report.local {
                a.text
                    .push_str(" [local address: this check never leaves the host]");
            }
            for p in &problems {
                a.text.push_str(&format!(" [expected file: {p}]"));
            }
            a.text.push_str(&format!(" [{}]", expectation_text(target)));
            if let Some(m) = &report.manifest {
                a.text
                    .push_str(&format!(" [{}]", manifest_text(m, report.time)));
            }
            if let Some(path) = &report.path {
                a.text.push_str(&format!(" [{}]", path_text(path)));
            }
            if let Some((name, verdict)) = &report.dane {
                use crate::detect::dane::DaneVerdict;
                let (v, text) = match verdict {
                    DaneVerdict::Match(r) => (
                        Verdict::Ok,
                        format!(
                            "DANE: matches TLSA {} at {name} (DNSSEC-validated)",
                            r.text()
                        ),
                    ),
                    DaneVerdict::Mismatch { records } => (
                        Verdict::Critical,
                        format!(
                            "DANE MISMATCH: the validated TLSA records at {name} ({}) match nothing in the chain",
                            records
                                .iter()
                                .map(|r| r.text())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ),
                    DaneVerdict::Unavailable(why) => (
                        Verdict::Warning,
                        format!("DANE unavailable at {name}: {why}"),
                    ),
                };
                a.verdict = a.verdict.max(v);
                a.text.push_str(&format!(" [{text}]"));
            }
            rows.push(Row {
                target,
                report,
                expected: expected.expected(report.time, rules.rotation_grace),
                judgement: a,
            });
        }
    }
    mark_inconsistent(&mut rows);
    let worst = rows
        .iter()
        .map(|r| r.judgement.verdict)
        .max()
        .unwrap_or(Verdict::Unknown);
    if !json_out {
        let _ = writeln!(out, "{}", header(&rows, worst, thresholds));
    }
    let mut json_rows = Vec::new();
    for Row {
        target,
        report,
        judgement: a,
        expected,
    } in &rows
    {
        if json_out {
            json_rows.push(row_json(target, report, a, expected));
        } else {
            let _ = writeln!(
                out,
                "{} {} ({}): {}",
                a.verdict.as_str(),
                target.name,
                shown(report),
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
                "targets": json_rows,
            }))
            .unwrap_or_default()
        );
    }
    Ok(worst.exit_code())
}

/// `-C` in days, for our certificate (a foreign one is critical anyway);
/// `-w` is applied by [`assess`] in place of the target's `expiry_warning`.
fn apply_thresholds(a: &mut Assessment, t: &Thresholds) {
    let ours = matches!(a.matched, Some(Match::Current | Match::Replaced(_)));
    let days = a.days_left.filter(|_| ours);
    if let (Some(days), Some(c)) = (days, t.critical_days)
        && days <= c
    {
        a.verdict = Verdict::Critical;
        a.text = format!("ends within {c} days (-C): {}", a.text);
    }
}

/// `NETSENTRY CRITICAL - wrong (198.51.100.10:443): certificate is NOT ours;
/// 1 of 5 checks not OK | 'web days_left'=89;14; 'web time'=0.012s;;;0;10 ...`:
/// the worst state first (what Icinga and Nagios show), perfdata after `|`.
fn header(rows: &[Row<'_>], worst: Verdict, thresholds: &Thresholds) -> String {
    let bad = rows
        .iter()
        .filter(|r| r.judgement.verdict != Verdict::Ok)
        .count();
    let first_worst = rows
        .iter()
        .find(|r| r.judgement.verdict == worst && worst != Verdict::Ok)
        .map(|r| {
            let text = &r.judgement.text;
            let short = text.split(" [").next().unwrap_or(text);
            let short: String = short.chars().take(160).collect();
            format!("{} ({}): {short}", r.target.name, shown(r.report))
        });
    let summary = match first_worst {
        Some(first) => format!("{first}; {bad} of {} checks not OK", rows.len()),
        None => format!("{} checks OK", rows.len()),
    };
    let mut perf = Vec::new();
    for r in rows {
        let key = r.report.key();
        if let Some(d) = r.judgement.days_left {
            let warn = thresholds
                .warning_days
                .unwrap_or(r.target.expiry_warning.0.as_secs() as i64 / 86_400);
            let crit = thresholds
                .critical_days
                .map(|c| format!("{c}:"))
                .unwrap_or_default();
            perf.push(format!(
                "{}={d};{warn}:;{crit}",
                perf_label(&key, "days_left")
            ));
        }
        perf.push(format!(
            "{}={:.3}s;;;0;{}",
            perf_label(&key, "time"),
            r.report.duration.as_secs_f64(),
            r.target.timeout.0.as_secs()
        ));
        if let Some(h) = r.report.path.as_ref().and_then(|p| p.port.hops) {
            perf.push(format!("{}={h};;;0;", perf_label(&key, "hops")));
        }
    }
    format!(
        "NETSENTRY {} - {summary} | {}",
        worst.as_str(),
        perf.join(" ")
    )
}

/// How an endpoint is named in the output: host and address, or the peer.
fn shown(report: &ProbeReport) -> String {
    match (&report.endpoint_host, &report.endpoint) {
        (Some(h), Some(e)) => format!("{h} {e}"),
        _ => report
            .peer
            .clone()
            .unwrap_or_else(|| report.address.clone()),
    }
}

/// The endpoints of one server name that present another key than most of
/// them (and not one the expectation accepts) are CRITICAL: the
/// `tls_inconsistent` rule for one round.
fn mark_inconsistent(rows: &mut [Row<'_>]) {
    let keys: Vec<Option<String>> = rows
        .iter()
        .map(|r| {
            r.report
                .outcome
                .as_ref()
                .ok()
                .map(|s| s.facts.identity.spki_sha256.hex())
        })
        .collect();
    let keys_of: Vec<String> = rows.iter().map(|r| r.report.key()).collect();
    let mut seen = Vec::new();
    let mut index = Vec::new();
    for (i, (row, key)) in rows.iter().zip(&keys).enumerate() {
        let Some(spki) = key else { continue };
        seen.push(RoundSeen {
            server_name: row.target.server_name(),
            endpoint: &keys_of[i],
            spki,
            ours: matches!(
                row.judgement.matched,
                Some(Match::Current | Match::Replaced(_))
            ),
        });
        index.push(i);
    }
    let odd = round_outliers(&seen);
    for (j, usual) in odd {
        let row = &mut rows[index[j]];
        row.judgement.verdict = Verdict::Critical;
        row.judgement.text = format!(
            "INCONSISTENT: another key than the other endpoints of {} (they present spki {usual}); {}",
            row.target.server_name(),
            row.judgement.text
        );
    }
}

fn row_json(
    target: &TlsTarget,
    report: &ProbeReport,
    a: &Assessment,
    expected: &[String],
) -> serde_json::Value {
    let seen = report.outcome.as_ref().ok().map(|s| {
        let mut v = s.facts.to_json();
        v["chain_valid"] = json!(s.chain_valid);
        v["chain_error"] = json!(s.chain_error);
        v
    });
    json!({
        "target": target.name,
        "address": report.address,
        "endpoint": report.endpoint,
        "endpoint_host": report.endpoint_host,
        "peer": report.peer,
        "vantage": target.vantage(),
        "local": report.local,
        "status": a.verdict.as_str(),
        "exit_code": a.verdict.exit_code(),
        "message": a.text,
        "expectation": {
            "cert_files": target.expect.cert_files,
            "pinned": target.expect.spki_sha256.len() + target.expect.cert_sha256.len(),
            "manifest": target.expect.manifest,
            "dane": target.expect.dane,
        },
        "dane": report.dane.as_ref().map(|(name, v)| {
            use crate::detect::dane::DaneVerdict;
            match v {
                DaneVerdict::Match(r) => json!({"tlsa_name": name, "state": "match", "record": r.text()}),
                DaneVerdict::Mismatch { records } => json!({"tlsa_name": name, "state": "mismatch", "records": records.iter().map(|r| r.text()).collect::<Vec<_>>()}),
                DaneVerdict::Unavailable(why) => json!({"tlsa_name": name, "state": "unavailable", "error": why}),
            }
        }),
        "expected": expected,
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
    })
}
