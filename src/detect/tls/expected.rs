//! The certificates a target may present, with the rotation grace of
//! replaced ones.

use chrono::{DateTime, Duration, Utc};

use crate::cert::{CertIdentity, Sha256};
use crate::config::Expect;

/// The certificates a target may present: fixed hashes from the configuration
/// and the certificates of the expected files, including replaced ones that are
/// still inside their rotation grace.
#[derive(Clone, Debug, Default)]
pub struct ExpectedSet {
    spki: Vec<Sha256>,
    certs: Vec<Sha256>,
    /// From the files: (identity, replaced at). Capped at [`MAX_FILE_CERTS`].
    files: Vec<(CertIdentity, Option<DateTime<Utc>>)>,
    /// From the last good signed manifest (current, newer and retired).
    manifest: Vec<CertIdentity>,
    /// The target's `expect` names anything at all (without, the target is
    /// only compared with the other endpoints of its name).
    configured: bool,
}

/// Certificates remembered per target (current and replaced ones in grace).
pub(super) const MAX_FILE_CERTS: usize = 64;

/// How a seen certificate relates to the expected set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// One of ours.
    Current,
    /// One we replaced at this time, still inside the rotation grace.
    Replaced(DateTime<Utc>),
    /// We replaced it at this time and the grace is over.
    Expired(DateTime<Utc>),
    No,
}

impl ExpectedSet {
    /// A file certificate saved before a restart (with when it was replaced),
    /// unless it is known already or the set is full.
    pub fn restore(&mut self, id: CertIdentity, replaced: Option<DateTime<Utc>>) {
        if self.files.len() < MAX_FILE_CERTS && !self.files.iter().any(|(known, _)| *known == id) {
            self.files.push((id, replaced));
        }
    }

    /// The pinned hashes of `expect` (file certificates follow with `set_files`).
    pub fn new(expect: &Expect) -> ExpectedSet {
        ExpectedSet {
            spki: expect.spki_sha256.clone(),
            certs: expect.cert_sha256.clone(),
            files: Vec::new(),
            manifest: Vec::new(),
            configured: !expect.is_empty(),
        }
    }

    /// False when the target's `expect` is empty: no certificate is ours or
    /// foreign, only the endpoints of a name are compared.
    pub fn configured(&self) -> bool {
        self.configured
    }

    /// The certificates the last good manifest lists for the target's name.
    pub fn set_manifest(&mut self, ids: Vec<CertIdentity>) {
        self.manifest = ids;
        self.manifest.truncate(MAX_FILE_CERTS);
    }

    /// The files now hold `current`: what was there before and is gone is
    /// marked replaced (accepted for the rotation grace from `now`). True when
    /// anything changed.
    pub fn set_files(&mut self, current: &[CertIdentity], now: DateTime<Utc>) -> bool {
        let before = self.files.clone();
        for (id, replaced) in &mut self.files {
            if current.contains(id) {
                *replaced = None;
            } else if replaced.is_none() {
                *replaced = Some(now);
            }
        }
        for id in current {
            if !self.files.iter().any(|(known, _)| known == id) {
                self.files.push((*id, None));
            }
        }
        // Forget the oldest replaced certificates beyond the cap.
        while self.files.len() > MAX_FILE_CERTS {
            let oldest = self
                .files
                .iter()
                .enumerate()
                .filter_map(|(i, (_, r))| r.map(|t| (t, i)))
                .min();
            match oldest {
                Some((_, i)) => {
                    self.files.remove(i);
                }
                None => break,
            }
        }
        self.files != before
    }

    /// The file certificates and when each was replaced (None: current).
    pub fn file_certs(&self) -> &[(CertIdentity, Option<DateTime<Utc>>)] {
        &self.files
    }

    /// Drops replaced certificates whose grace ended long ago (keeps memory flat).
    pub fn forget_before(&mut self, cutoff: DateTime<Utc>) {
        self.files
            .retain(|(_, replaced)| replaced.is_none_or(|t| t >= cutoff));
    }

    /// True when nothing is expected (no pins, no file certificates).
    pub fn is_empty(&self) -> bool {
        self.spki.is_empty()
            && self.certs.is_empty()
            && self.files.is_empty()
            && self.manifest.is_empty()
    }

    /// A certificate matches by its own hash or by its key (whoever presents
    /// our key proved in the handshake that they hold our private key).
    pub fn matches(&self, seen: &CertIdentity, now: DateTime<Utc>, grace: Duration) -> Match {
        if self.certs.contains(&seen.cert_sha256)
            || self.spki.contains(&seen.spki_sha256)
            || self
                .manifest
                .iter()
                .any(|m| m.cert_sha256 == seen.cert_sha256 || m.spki_sha256 == seen.spki_sha256)
        {
            return Match::Current;
        }
        let mut best = Match::No;
        for (id, replaced) in &self.files {
            if id.cert_sha256 != seen.cert_sha256 && id.spki_sha256 != seen.spki_sha256 {
                continue;
            }
            match replaced {
                None => return Match::Current,
                Some(t) if now - *t <= grace => best = Match::Replaced(*t),
                Some(t) if best == Match::No => best = Match::Expired(*t),
                Some(_) => {}
            }
        }
        best
    }

    /// What is accepted now, as hex: certificate SHA-256s (files and
    /// `cert_sha256`), then SPKI SHA-256s (`spki_sha256`).
    pub fn expected(&self, now: DateTime<Utc>, grace: Duration) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (id, replaced) in &self.files {
            if replaced.is_none_or(|t| now - t <= grace) {
                out.push(id.cert_sha256.hex());
            }
        }
        out.extend(self.certs.iter().map(Sha256::hex));
        out.extend(self.manifest.iter().map(|m| m.cert_sha256.hex()));
        out.extend(self.spki.iter().map(Sha256::hex));
        out.dedup();
        out
    }
}
