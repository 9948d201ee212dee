//! Certificate Transparency (pure): certificates issued for our names that we
//! never held. Input: issuances as Cert Spotter's API reports them; output:
//! `ct_unknown_certificate` for each one whose key and certificate match
//! nothing we hold or authorised. The precertificate and the certificate of one
//! issuance share their TBS hash and alert once.

use std::collections::{HashSet, VecDeque};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use crate::alert::{Finding, Kind, format_time};
use crate::cert::Sha256;

/// One issuance (Cert Spotter `/v1/issuances` with `expand=dns_names&expand=issuer`).
#[derive(Clone, Debug, PartialEq)]
pub struct Issuance {
    pub id: String,
    pub tbs_sha256: Sha256,
    pub cert_sha256: Option<Sha256>,
    pub spki_sha256: Sha256,
    pub dns_names: Vec<String>,
    /// The issuer's friendly name ("Let's Encrypt"), else its DN.
    pub issuer: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

#[derive(Deserialize)]
struct RawIssuer {
    #[serde(default)]
    friendly_name: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct RawIssuance {
    id: String,
    tbs_sha256: String,
    #[serde(default)]
    cert_sha256: Option<String>,
    pubkey_sha256: String,
    #[serde(default)]
    dns_names: Vec<String>,
    #[serde(default)]
    issuer: Option<RawIssuer>,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
}

/// Most issuances taken from one answer (Cert Spotter pages are far smaller).
pub const MAX_PAGE: usize = 10_000;

/// An answer that is not a page of issuances at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the CT API did not answer with a JSON array of issuances: {0}")]
pub struct NotIssuances(pub String);

/// Parses one page of the issuances API. Entries that do not parse are
/// skipped and counted (`.1`); an answer that is not a JSON array is an error.
pub fn parse_issuances(body: &[u8]) -> Result<(Vec<Issuance>, usize), NotIssuances> {
    let raw: Vec<serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| NotIssuances(e.to_string()))?;
    let mut out = Vec::new();
    let mut bad = 0;
    for value in raw.into_iter().take(MAX_PAGE) {
        let Ok(r) = serde_json::from_value::<RawIssuance>(value) else {
            bad += 1;
            continue;
        };
        let hash = |t: &str| Sha256::parse_hex(t).ok();
        let (Some(tbs), Some(spki)) = (hash(&r.tbs_sha256), hash(&r.pubkey_sha256)) else {
            bad += 1;
            continue;
        };
        let issuer = r
            .issuer
            .and_then(|i| i.friendly_name.or(i.name))
            .unwrap_or_else(|| "unknown issuer".into());
        out.push(Issuance {
            id: r.id,
            tbs_sha256: tbs,
            cert_sha256: r.cert_sha256.as_deref().and_then(hash),
            spki_sha256: spki,
            dns_names: r.dns_names.into_iter().take(1000).collect(),
            issuer,
            not_before: r.not_before,
            not_after: r.not_after,
        });
    }
    Ok((out, bad))
}

/// What counts as ours: keys and certificates we hold(ed) or authorised.
#[derive(Clone, Debug, Default)]
pub struct Authorized {
    pub spki: HashSet<Sha256>,
    pub certs: HashSet<Sha256>,
}

impl Authorized {
    /// True when the issuance's certificate or key is ours.
    pub fn covers(&self, i: &Issuance) -> bool {
        self.spki.contains(&i.spki_sha256) || i.cert_sha256.is_some_and(|c| self.certs.contains(&c))
    }
}

/// TBS hashes remembered to alert once per issuance.
pub const MAX_SEEN: usize = 100_000;

/// The CT detector: which issuances were judged already.
#[derive(Debug, Default)]
pub struct CtDetector {
    seen: HashSet<Sha256>,
    order: VecDeque<Sha256>,
    /// Issuances skipped because they had already expired when first seen.
    pub expired_skipped: u64,
}

impl CtDetector {
    /// The TBS hashes already reported (oldest first), to save across restarts.
    pub fn seen(&self) -> impl Iterator<Item = &Sha256> {
        self.order.iter()
    }

    /// Remembers an issuance as reported; false when it was already known.
    pub fn remember(&mut self, tbs: Sha256) -> bool {
        if !self.seen.insert(tbs) {
            return false;
        }
        self.order.push_back(tbs);
        if self.order.len() > MAX_SEEN
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }

    /// Judges one issuance found for `domain` (our configured domain).
    pub fn observe(
        &mut self,
        domain: &str,
        issuance: &Issuance,
        ours: &Authorized,
        source: &str,
        now: DateTime<Utc>,
    ) -> Option<Finding> {
        if !self.remember(issuance.tbs_sha256) || ours.covers(issuance) {
            return None;
        }
        if issuance.not_after < now {
            // Expired before we ever saw it: nobody can use it any more.
            self.expired_skipped += 1;
            return None;
        }
        let names = if issuance.dns_names.len() > 5 {
            format!(
                "{} and {} more",
                issuance.dns_names[..5].join(", "),
                issuance.dns_names.len() - 5
            )
        } else {
            issuance.dns_names.join(", ")
        };
        Some(Finding::new(
            Kind::CtUnknownCertificate,
            now,
            format!(
                "a certificate for {names} that we never held was issued by {} (valid {} to {}, key sha256 {})",
                issuance.issuer,
                format_time(&issuance.not_before),
                format_time(&issuance.not_after),
                issuance.spki_sha256
            ),
            json!({
                "domain": domain,
                "cert_sha256": issuance.cert_sha256.map(|c| c.hex()),
                "spki_sha256": issuance.spki_sha256.hex(),
                "tbs_sha256": issuance.tbs_sha256.hex(),
                "issuer": issuance.issuer,
                "not_before": format_time(&issuance.not_before),
                "not_after": format_time(&issuance.not_after),
                "dns_names": issuance.dns_names,
                "ct_id": issuance.id,
                "source": source,
            }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::tls::tests::t0;

    fn hexof(b: u8) -> String {
        Sha256::of(&[b]).hex()
    }

    fn page(entries: &[(u64, u8, u8, &str)]) -> String {
        let items: Vec<serde_json::Value> = entries
            .iter()
            .map(|(id, tbs, key, not_after)| {
                json!({
                    "id": id.to_string(),
                    "tbs_sha256": hexof(*tbs),
                    "cert_sha256": hexof(tbs + 100),
                    "pubkey_sha256": hexof(*key),
                    "dns_names": ["example.org", "www.example.org"],
                    "issuer": {"friendly_name": "Let's Encrypt", "name": "C=US, O=Let's Encrypt, CN=R11"},
                    "not_before": "2026-11-01T00:00:00Z",
                    "not_after": not_after,
                    "revoked": false
                })
            })
            .collect();
        serde_json::to_string(&items).unwrap()
    }

    #[test]
    fn parses_the_cert_spotter_format_and_skips_damaged_entries() {
        let mut text = page(&[(1, 1, 1, "2027-01-30T00:00:00Z")]);
        text.insert_str(1, r#"{"id": "x"}, 5, "#);
        let (list, bad) = parse_issuances(text.as_bytes()).unwrap();
        assert_eq!((list.len(), bad), (1, 2));
        assert_eq!(list[0].issuer, "Let's Encrypt");
        assert_eq!(list[0].dns_names, vec!["example.org", "www.example.org"]);
        assert!(parse_issuances(b"{\"code\":\"rate_limited\"}").is_err());
        assert!(parse_issuances(b"").is_err());
    }

    #[test]
    fn foreign_issuances_alert_once_ours_never() {
        let (list, _) = parse_issuances(
            page(&[
                (1, 1, 7, "2027-01-30T00:00:00Z"), // our key
                (2, 2, 9, "2027-01-30T00:00:00Z"), // foreign
                (3, 2, 9, "2027-01-30T00:00:00Z"), // its certificate (same TBS)
                (4, 4, 9, "2026-11-02T00:00:00Z"), // foreign but long expired
            ])
            .as_bytes(),
        )
        .unwrap();
        let mut ours = Authorized::default();
        ours.spki.insert(Sha256::of(&[7]));
        let mut d = CtDetector::default();
        let found: Vec<Finding> = list
            .iter()
            .filter_map(|i| d.observe("example.org", i, &ours, "certspotter", t0()))
            .collect();
        assert_eq!(found.len(), 1);
        let f = &found[0];
        assert_eq!(f.kind, Kind::CtUnknownCertificate);
        assert_eq!(f.details["tbs_sha256"], hexof(2));
        assert_eq!(f.details["spki_sha256"], hexof(9));
        assert_eq!(f.details["issuer"], "Let's Encrypt");
        assert_eq!(f.details["domain"], "example.org");
        assert_eq!(d.expired_skipped, 1);
        // A certificate hash we hold also makes it ours.
        let mut by_cert = Authorized::default();
        by_cert.certs.insert(list[1].cert_sha256.unwrap());
        assert!(by_cert.covers(&list[1]));
    }

    #[test]
    fn the_memory_is_bounded() {
        let mut d = CtDetector::default();
        for i in 0..(MAX_SEEN as u32 + 10) {
            d.remember(Sha256::of(&i.to_be_bytes()));
        }
        assert_eq!(d.seen().count(), MAX_SEEN);
    }
}
