//! Publishing the signed manifest (`[publish]`): every few seconds the
//! certificate files are looked at (re-read only when they changed); when
//! what the manifest would say changed, or half its validity has passed, a
//! new one is signed and written atomically next to its `.minisig` and a
//! `.txt` for people. The sequence and the last content survive restarts in
//! `state_dir/publish.json`.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::alert::{Finding, Kind};
use crate::config::{Config, PublishConfig, publish_files};
use crate::detect::dane::{Tlsa, tlsa_host, uncovered};
use crate::manifest::{self, Content, Manifest};
use crate::source::certfiles::CertFiles;
use crate::source::dane::TlsaRound;
use crate::state::{self, certhistory::CertHistory};

/// `state_dir/publish.json`.
const PUBLISH_FILE: &str = "publish.json";

/// What was published last.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Published {
    sequence: u64,
    content: Content,
    #[serde(default, with = "chrono::serde::ts_seconds_option")]
    signed: Option<DateTime<Utc>>,
}

/// The publisher.
pub struct PublishWatch {
    settings: PublishConfig,
    host: String,
    files: Vec<PathBuf>,
    state_dir: PathBuf,
    certs: CertFiles,
    history: CertHistory,
    last: Published,
    /// The last attempt failed (publish_failed was sent for it).
    failing: bool,
    /// Per TLSA name, the certificate reported as not covered (`dane_stale`).
    dane_said: std::collections::BTreeMap<String, String>,
    /// The last TLSA lookups (judged again when the certificates change).
    tlsa: TlsaRound,
}

impl PublishWatch {
    /// The publisher of `config`, or `None` when `[publish]` is off.
    pub fn load(config: &Config) -> Option<PublishWatch> {
        if !config.publish.enabled() {
            return None;
        }
        let state_dir = config.agent.state_dir.clone();
        let last = state::read_text(&state_dir, PUBLISH_FILE)
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        Some(PublishWatch {
            settings: config.publish.clone(),
            host: config.host_id(),
            files: publish_files(config),
            history: CertHistory::load(&state_dir),
            state_dir,
            certs: CertFiles::default(),
            last,
            failing: false,
            dane_said: Default::default(),
            tlsa: Vec::new(),
        })
    }

    /// The TLSA watch of `[publish] tlsa_names`, when there are any.
    pub fn tlsa_feed(config: &Config) -> Option<crate::source::Feed<TlsaRound>> {
        let p = &config.publish;
        (p.enabled() && !p.tlsa_names.is_empty()).then(|| {
            crate::source::dane::watch(
                p.tlsa_names.clone(),
                config.tls.nameservers.clone(),
                p.tlsa_refresh.0,
            )
        })
    }

    /// One round of TLSA lookups against what was published last: each
    /// name whose records do not cover its current (or newer) certificate
    /// is `dane_stale` (a condition per name, once per certificate).
    pub fn observe_tlsa(&mut self, round: TlsaRound, now: DateTime<Utc>) -> Vec<Finding> {
        for (name, found) in &round {
            if let Err(e) = found {
                tracing::warn!("[publish] TLSA lookup of {name}: {e}");
            }
        }
        self.tlsa = round;
        self.judge_tlsa(now)
    }

    /// The last TLSA lookups against the certificates published last.
    fn judge_tlsa(&mut self, now: DateTime<Utc>) -> Vec<Finding> {
        let mut out = Vec::new();
        for (name, found) in &self.tlsa {
            let Ok(records) = found else { continue };
            let Some(host) = tlsa_host(name) else {
                continue;
            };
            let certs: Vec<(String, String)> = self
                .last
                .content
                .names
                .iter()
                .filter(|n| manifest::covers(&n.name, host))
                .flat_map(|n| n.current.iter().chain(&n.newer))
                .map(|f| (f.cert_sha256.clone(), f.spki_sha256.clone()))
                .collect();
            if certs.is_empty() {
                continue;
            }
            let ids = json!({"tlsa_name": name});
            match uncovered(records, &certs) {
                Some(missing) if !missing.is_empty() => {
                    let (cert, spki) = missing[0];
                    if self.dane_said.get(name) == Some(cert) {
                        continue;
                    }
                    self.dane_said.insert(name.clone(), cert.clone());
                    let mut details = ids;
                    details["cert_sha256"] = json!(cert);
                    details["spki_sha256"] = json!(spki);
                    details["tlsa"] = json!(records.iter().map(Tlsa::text).collect::<Vec<_>>());
                    details["add"] = json!(format!("{name}. IN TLSA 3 1 1 {spki}"));
                    out.push(Finding::new(
                        Kind::DaneStale,
                        now,
                        format!(
                            "the TLSA records at {name} do not cover the certificate on disk (sha256 {cert}): once the server serves it, DANE clients will refuse it; publish \"3 1 1 {spki}\" next to the current record first"
                        ),
                        details,
                    ));
                }
                Some(_) if self.dane_said.remove(name).is_some() => {
                    out.push(Finding::cleared(
                        Kind::DaneStale,
                        now,
                        format!("the TLSA records at {name} cover the certificates on disk again"),
                        ids,
                    ));
                }
                _ => {}
            }
        }
        out
    }

    /// Looks at the files; publishes when due. The findings to send.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Finding> {
        let (found, problems) = self.certs.current(&self.files);
        for (path, facts) in &found {
            self.history.record(facts, path, now);
        }
        self.history.save(&self.state_dir);
        for p in &problems {
            tracing::warn!("[publish]: {p}; publishing the certificates that can be read");
        }
        let facts: Vec<_> = found.into_iter().map(|(_, f)| f).collect();
        let grace = Duration::from_std(self.settings.rotation_grace.0).unwrap_or(Duration::days(1));
        let validity = Duration::from_std(self.settings.validity.0).unwrap_or(Duration::days(7));
        let content = manifest::build(
            &self.host,
            &facts,
            &self.history.certificates,
            &self.settings.names,
            grace,
            now,
        );
        let changed = content != self.last.content || self.last.sequence == 0;
        let stale = self.last.signed.is_none_or(|t| now - t >= validity / 2);
        if !changed && !stale && !self.failing {
            return Vec::new();
        }
        let sequence = self.last.sequence + u64::from(changed);
        let m = Manifest::new(content.clone(), sequence, now, validity);
        match self.write(&m) {
            Ok(()) => {
                self.failing = false;
                self.last = Published {
                    sequence,
                    content,
                    signed: Some(now),
                };
                let text = serde_json::to_string(&self.last).unwrap_or_default();
                if let Err(e) = state::write_text(&self.state_dir, PUBLISH_FILE, &text) {
                    tracing::error!("{e}");
                }
                if !changed {
                    tracing::info!(
                        "[publish]: manifest {sequence} signed again (half its validity passed)"
                    );
                    return Vec::new();
                }
                let path = self.path().display().to_string();
                let mut published = vec![Finding::new(
                    Kind::ManifestPublished,
                    now,
                    format!(
                        "fingerprint manifest {sequence} published at {path} ({} names, valid until {})",
                        m.names.len(),
                        crate::alert::format_time(&m.expires)
                    ),
                    json!({"sequence": sequence, "path": path, "names": m.names.iter().map(|n| &n.name).collect::<Vec<_>>(),
                           "expires": crate::alert::format_time(&m.expires)}),
                )];
                // A renewal on disk: do the TLSA records cover it?
                published.extend(self.judge_tlsa(now));
                published
            }
            Err(why) => {
                let first = !std::mem::replace(&mut self.failing, true);
                tracing::warn!("[publish]: {why}; trying again");
                match first {
                    true => vec![Finding::new(
                        Kind::PublishFailed,
                        now,
                        format!("the fingerprint manifest could not be published: {why}"),
                        json!({"path": self.path().display().to_string(), "error": why}),
                    )],
                    false => Vec::new(),
                }
            }
        }
    }

    fn path(&self) -> &Path {
        self.settings.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Signs `m` and writes the manifest, its signature and the text.
    fn write(&self, m: &Manifest) -> Result<(), String> {
        let key = self.settings.key_file.as_deref().unwrap_or(Path::new(""));
        let bytes = m.to_bytes();
        let comment = format!(
            "netsentry manifest host={} sequence={} expires={}",
            m.host,
            m.sequence,
            crate::alert::format_time(&m.expires)
        );
        let sig = manifest::sign(&bytes, key, &comment)?;
        let path = self.path();
        // World-readable: a web server serves them (the agent's umask is 077).
        let write = |p: PathBuf, data: &[u8]| {
            use std::os::unix::fs::PermissionsExt;
            state::write_atomically(&p, data)
                .and_then(|_| std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)))
                .map_err(|e| format!("cannot write {}: {e}", p.display()))
        };
        // The signature first: a reader between the two writes sees the old
        // manifest with the new signature and retries (probers fetch again
        // once before they call a signature bad).
        write(sig_path(path), sig.as_bytes())?;
        write(path.to_path_buf(), &bytes)?;
        write(path.with_extension("txt"), m.to_text().as_bytes())?;
        Ok(())
    }
}

/// `fingerprints.json` → `fingerprints.json.minisig` (minisign's convention).
pub fn sig_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_os_string();
    p.push(".minisig");
    PathBuf::from(p)
}

/// `manifest.key` → `manifest.key.pub`.
pub fn pub_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_os_string();
    p.push(".pub");
    PathBuf::from(p)
}
