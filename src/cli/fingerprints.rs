//! `netsentry fingerprints`: SHA-256 of certificates and their keys, for
//! publishing; `--history`: every certificate the agent has seen.

use std::io::Write;
use std::path::PathBuf;

use serde_json::json;

use crate::alert::format_time;
use crate::cert::{CertFacts, read_pem_file};
use crate::config::Config;
use crate::state::certhistory::CertHistory;

/// `netsentry fingerprints`: every certificate of each file with its SHA-256
/// and SPKI SHA-256 (hex and base64, the latter as HPKP/DANE-style pins use it).
pub fn command(
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
                let mut v = facts.to_json();
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
                .join(crate::state::certhistory::HISTORY_FILE)
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
