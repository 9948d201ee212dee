//! The agent's side of CT monitoring and the CAA audit: what is ours (the
//! certificate history, authorised files and keys, pinned TLS hashes), the
//! detectors, and their state in `state_dir` (`ct.json`: positions and recent
//! issuances, so a restart neither re-alerts nor misses).

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::alert::Finding;
use crate::cert::Sha256;
use crate::config::Config;
use crate::detect::ct::{Authorized, CtDetector};
use crate::source::certfiles::CertFiles;
use crate::source::ct::CtEvent;
use crate::state;
use crate::state::certhistory::CertHistory;

use crate::state::CT_FILE;
/// Recent issuances kept in `ct.json` (dedup of precertificate/certificate pairs).
const SAVED_SEEN: usize = 10_000;

#[derive(Default, Serialize, Deserialize)]
struct CtState {
    positions: BTreeMap<String, String>,
    seen: Vec<String>,
}

/// The agent's side of CT monitoring: the detector, the positions per domain and `state_dir/ct.json`.
pub struct CtWatch {
    state_dir: PathBuf,
    config: Config,
    detector: CtDetector,
    positions: BTreeMap<String, String>,
    files: CertFiles,
}

impl CtWatch {
    /// Loads the saved positions and recently reported issuances (a damaged file starts afresh).
    pub fn load(config: &Config) -> CtWatch {
        let state_dir = config.agent.state_dir.clone();
        let state: CtState = state::read_text(&state_dir, CT_FILE)
            .and_then(|t| match serde_json::from_str(&t) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(
                        "{CT_FILE} is damaged ({e}); CT monitoring starts from the beginning"
                    );
                    None
                }
            })
            .unwrap_or_default();
        let mut detector = CtDetector::default();
        for tbs in state.seen.iter().filter_map(|t| Sha256::parse_hex(t).ok()) {
            detector.remember(tbs);
        }
        CtWatch {
            state_dir,
            config: config.clone(),
            detector,
            positions: state.positions,
            files: CertFiles::default(),
        }
    }

    /// Where each domain's previous run stopped.
    pub fn positions(&self) -> BTreeMap<String, String> {
        self.positions.clone()
    }

    /// What is ours: certificates we held (history), authorised files (recorded
    /// into the history too), authorised keys, and the TLS targets' pins.
    fn authorized(
        &mut self,
        history: &mut CertHistory,
        from_manifests: &[crate::cert::CertIdentity],
    ) -> Authorized {
        let mut ours = Authorized::default();
        for id in from_manifests {
            ours.certs.insert(id.cert_sha256);
            ours.spki.insert(id.spki_sha256);
        }
        let now = Utc::now();
        let files = self.config.ct.authorized_cert_files.clone();
        let (facts, problems) = self.files.current(&files);
        for p in problems {
            tracing::warn!("[ct] authorized_cert_files: {p}");
        }
        for (path, f) in &facts {
            history.record(f, path, now);
        }
        for (cert, spki) in history.hashes() {
            ours.certs.extend(cert);
            ours.spki.extend(spki);
        }
        ours.spki
            .extend(self.config.ct.authorized_spki_sha256.iter().copied());
        for t in &self.config.tls.targets {
            ours.spki.extend(t.expect.spki_sha256.iter().copied());
            ours.certs.extend(t.expect.cert_sha256.iter().copied());
        }
        ours
    }

    /// One event of the CT task: a page of issuances judged against what is ours, or a failure (logged, tried again next round).
    pub fn observe(&mut self, event: CtEvent, history: &mut CertHistory) -> Vec<Finding> {
        match event {
            CtEvent::Failed { domain, error } => {
                tracing::warn!("CT monitoring of {domain}: {error}; trying again next round");
                Vec::new()
            }
            CtEvent::Page {
                domain,
                issuances,
                damaged,
                last_id,
                authorized,
            } => {
                if damaged > 0 {
                    tracing::warn!(
                        "CT API: {damaged} issuances for {domain} did not parse and were skipped"
                    );
                }
                let ours = self.authorized(history, &authorized);
                let now = Utc::now();
                let findings: Vec<Finding> = issuances
                    .iter()
                    .filter_map(|i| self.detector.observe(&domain, i, &ours, "certspotter", now))
                    .collect();
                self.positions.insert(domain, last_id);
                history.save(&self.state_dir);
                findings
            }
        }
    }

    /// Saves positions and recent issuances; call after the page's alerts
    /// are spooled (at least once: a crash in between repeats the page).
    pub fn save(&self) {
        let seen: Vec<String> = {
            let all: Vec<&Sha256> = self.detector.seen().collect();
            all[all.len().saturating_sub(SAVED_SEEN)..]
                .iter()
                .map(|s| s.hex())
                .collect()
        };
        let state = CtState {
            positions: self.positions.clone(),
            seen,
        };
        let text = serde_json::to_string(&state).unwrap_or_default();
        if let Err(e) = state::write_text(&self.state_dir, CT_FILE, &text) {
            tracing::error!("{e}");
        }
    }
}
