//! Certificate history: every certificate this host has held in its expected
//! certificate files (and `[ct] authorized_cert_files`), so that a certificate
//! issued and used here last month is still recognised as ours — by the CT
//! monitor, and by `netsentry fingerprints --history`.
//! Kept in `state_dir/cert_history.json`, bounded.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cert::{CertFacts, Sha256};
use crate::state;

pub use super::HISTORY_FILE;
/// Certificates remembered; beyond this the ones that ended longest ago go.
pub const MAX_HISTORY: usize = 10_000;

/// One certificate we held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldCertificate {
    pub cert_sha256: String,
    pub spki_sha256: String,
    pub subject: String,
    pub issuer: String,
    pub dns_names: Vec<String>,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// The file it was read from (the first time).
    pub file: String,
}

/// Every certificate seen in our files, bounded (`state_dir/cert_history.json`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CertHistory {
    pub certificates: Vec<HeldCertificate>,
    #[serde(skip)]
    dirty: bool,
}

impl CertHistory {
    /// Reads the history from `state_dir`; a missing or damaged file is an
    /// empty history (damage is logged).
    pub fn load(state_dir: &Path) -> CertHistory {
        let Some(text) = state::read_text(state_dir, HISTORY_FILE) else {
            return CertHistory::default();
        };
        match serde_json::from_str::<CertHistory>(&text) {
            Ok(mut h) => {
                h.certificates.truncate(MAX_HISTORY);
                h
            }
            Err(e) => {
                tracing::warn!("{HISTORY_FILE} is damaged ({e}); starting a new history");
                CertHistory::default()
            }
        }
    }

    /// Records certificates seen in `file` now. True when something was new.
    pub fn record(&mut self, facts: &CertFacts, file: &Path, now: DateTime<Utc>) -> bool {
        let hex = facts.identity.cert_sha256.hex();
        if let Some(known) = self.certificates.iter_mut().find(|c| c.cert_sha256 == hex) {
            // last_seen is refreshed at most daily: no write per check.
            if now - known.last_seen > chrono::Duration::days(1) {
                known.last_seen = now;
                self.dirty = true;
            }
            return false;
        }
        self.certificates.push(HeldCertificate {
            cert_sha256: hex,
            spki_sha256: facts.identity.spki_sha256.hex(),
            subject: facts.subject.clone(),
            issuer: facts.issuer.clone(),
            dns_names: facts.dns_names.clone(),
            not_before: facts.not_before,
            not_after: facts.not_after,
            first_seen: now,
            last_seen: now,
            file: file.display().to_string(),
        });
        if self.certificates.len() > MAX_HISTORY {
            self.certificates
                .sort_by_key(|c| std::cmp::Reverse(c.not_after));
            self.certificates.truncate(MAX_HISTORY);
        }
        self.dirty = true;
        true
    }

    /// Keys (SPKI SHA-256) and certificates (SHA-256) we held.
    pub fn hashes(&self) -> impl Iterator<Item = (Option<Sha256>, Option<Sha256>)> + '_ {
        self.certificates.iter().map(|c| {
            (
                Sha256::parse_hex(&c.cert_sha256).ok(),
                Sha256::parse_hex(&c.spki_sha256).ok(),
            )
        })
    }

    /// Writes the history if it changed.
    pub fn save(&mut self, state_dir: &Path) {
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        if let Err(e) = state::write_text(state_dir, HISTORY_FILE, &text) {
            tracing::error!("{e}");
            self.dirty = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::CertIdentity;
    use crate::detect::tls::tests::t0;

    fn facts(n: u32) -> CertFacts {
        CertFacts {
            identity: CertIdentity {
                cert_sha256: Sha256::of(&n.to_be_bytes()),
                spki_sha256: Sha256::of(&n.to_le_bytes()),
            },
            subject: "CN=example.org".into(),
            issuer: "CN=R11".into(),
            not_before: t0(),
            not_after: t0() + chrono::Duration::days(n as i64 % 1000),
            dns_names: vec!["example.org".into()],
        }
    }

    #[test]
    fn records_once_saves_and_loads_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = CertHistory::default();
        assert!(h.record(&facts(1), Path::new("/x.pem"), t0()));
        assert!(!h.record(&facts(1), Path::new("/x.pem"), t0()));
        h.save(dir.path());
        let again = CertHistory::load(dir.path());
        assert_eq!(again.certificates, h.certificates);
        assert_eq!(again.hashes().count(), 1);
        for i in 0..(MAX_HISTORY as u32 + 5) {
            h.record(&facts(i), Path::new("/x.pem"), t0());
        }
        assert_eq!(h.certificates.len(), MAX_HISTORY);
        std::fs::write(dir.path().join(HISTORY_FILE), "{broken").unwrap();
        assert!(CertHistory::load(dir.path()).certificates.is_empty());
    }
}
