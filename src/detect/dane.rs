//! DANE (RFC 6698, 7671; issue 17, item 5), pure: does the certificate chain
//! a check received match a DNSSEC-validated TLSA record set?
//!
//! Only the usages that do not depend on the public CAs are used: 3
//! (DANE-EE: the server's own certificate or key) and 2 (DANE-TA: a trust
//! anchor in the chain the server sent). Usages 0 and 1 (PKIX-*) also ask a
//! public CA's blessing, which an interceptor with a Let's Encrypt
//! certificate has; they are ignored (and said so). A TLSA set that is not
//! validated is never trusted: it is `dane_unavailable`, never a match.

use sha2::Digest;

/// One TLSA record: usage, selector, matching type, data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

impl Tlsa {
    /// `3 1 1 ab12…` as in a zone file.
    pub fn text(&self) -> String {
        let hex: String = self.data.iter().map(|b| format!("{b:02x}")).collect();
        format!("{} {} {} {hex}", self.usage, self.selector, self.matching)
    }
}

/// How the TLSA lookup of an endpoint ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaneLookup {
    /// Validated from the trust anchor: these records (may be empty: a
    /// validated denial, the name has no TLSA).
    Secure(Vec<Tlsa>),
    /// Not signed (or no chain of trust): not trusted.
    Insecure,
    /// The signatures do not validate: not trusted (maybe an attack).
    Bogus(String),
    /// The lookup failed (timeout, SERVFAIL...).
    Failed(String),
}

/// The verdict for one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaneVerdict {
    /// The chain matches this record.
    Match(Tlsa),
    /// A validated set of usable records, and nothing in the chain matches.
    Mismatch { records: Vec<Tlsa> },
    /// No verdict: why (insecure, bogus, failed, no usable record).
    Unavailable(String),
}

/// What a certificate offers to a TLSA record: its DER and its SPKI DER.
pub struct ChainCert<'a> {
    pub der: &'a [u8],
    pub spki: &'a [u8],
}

/// True when `cert` matches `r`'s selector and matching type.
pub fn matches(r: &Tlsa, cert: &ChainCert<'_>) -> bool {
    let part = match r.selector {
        0 => cert.der,
        1 => cert.spki,
        _ => return false,
    };
    match r.matching {
        0 => part == r.data.as_slice(),
        1 => sha2::Sha256::digest(part).as_slice() == r.data.as_slice(),
        2 => sha2::Sha512::digest(part).as_slice() == r.data.as_slice(),
        _ => false,
    }
}

/// [`judge`] for the certificates as a server sent them (DER, leaf first):
/// each one's SPKI is taken out of it (an unparseable certificate has none,
/// and can then only match a selector-0 record).
pub fn judge_ders<D: AsRef<[u8]>>(lookup: &DaneLookup, chain: &[D]) -> DaneVerdict {
    let spkis: Vec<Vec<u8>> = chain
        .iter()
        .map(|der| crate::cert::CertFacts::spki_der(der.as_ref()).unwrap_or_default())
        .collect();
    let certs: Vec<ChainCert<'_>> = chain
        .iter()
        .zip(&spkis)
        .map(|(der, spki)| ChainCert {
            der: der.as_ref(),
            spki,
        })
        .collect();
    judge(lookup, &certs)
}

/// Judges a chain (leaf first, as sent) against a TLSA lookup. Usage 3
/// matches the leaf only; usage 2 any certificate of the chain after the
/// leaf (the trust anchor the server sends; a self-signed leaf counts too).
pub fn judge(lookup: &DaneLookup, chain: &[ChainCert<'_>]) -> DaneVerdict {
    let records = match lookup {
        DaneLookup::Secure(r) => r,
        DaneLookup::Insecure => {
            return DaneVerdict::Unavailable(
                "the TLSA answer is not DNSSEC-signed (insecure): not trusted".into(),
            );
        }
        DaneLookup::Bogus(why) => {
            return DaneVerdict::Unavailable(format!(
                "the TLSA answer does not validate (bogus): {why}; not trusted"
            ));
        }
        DaneLookup::Failed(why) => {
            return DaneVerdict::Unavailable(format!("TLSA lookup failed: {why}"));
        }
    };
    let usable: Vec<Tlsa> = records
        .iter()
        .filter(|r| matches!(r.usage, 2 | 3) && r.selector <= 1 && r.matching <= 2)
        .cloned()
        .collect();
    if usable.is_empty() {
        return DaneVerdict::Unavailable(match records.is_empty() {
            true => "no TLSA record (validated denial)".into(),
            false => "no usable TLSA record (only usages 0/1 or unknown types)".into(),
        });
    }
    for r in &usable {
        let candidates: &[ChainCert<'_>] = match r.usage {
            3 => &chain[..chain.len().min(1)],
            _ if chain.len() > 1 => &chain[1..],
            _ => chain,
        };
        if candidates.iter().any(|c| matches(r, c)) {
            return DaneVerdict::Match(r.clone());
        }
    }
    DaneVerdict::Mismatch { records: usable }
}

/// Per endpoint, what was said about DANE: `dane_mismatch` (for which
/// certificate) and `dane_unavailable`, both conditions.
#[derive(Debug, Default)]
pub struct DaneDetector {
    /// Per endpoint key: the mismatch reported (certificate), whether
    /// unavailable holds, and the identifying details of both.
    said: std::collections::HashMap<String, (Option<String>, bool, serde_json::Value)>,
}

/// Endpoints remembered at most.
const MAX_DANE_ENDPOINTS: usize = 4096;

/// The endpoint a verdict is about, as alerts name it.
pub struct DaneSubject<'a> {
    /// `target` or `target@address:port`.
    pub key: &'a str,
    pub target: &'a str,
    pub address: &'a str,
    /// `_5222._tcp.xmpp.example.org`.
    pub tlsa_name: &'a str,
    /// The certificate the check received (hex SHA-256).
    pub cert_sha256: &'a str,
}

impl DaneDetector {
    /// One check's verdict: `dane_mismatch` once per certificate,
    /// `dane_unavailable` once per episode; a match clears both.
    pub fn observe(
        &mut self,
        s: &DaneSubject<'_>,
        verdict: &DaneVerdict,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Vec<crate::alert::Finding> {
        use crate::alert::{Finding, Kind};
        use serde_json::json;
        if !self.said.contains_key(s.key) && self.said.len() >= MAX_DANE_ENDPOINTS {
            return Vec::new();
        }
        let ids = json!({"target": s.target, "address": s.address, "tlsa_name": s.tlsa_name});
        let (mismatch, unavailable, said_ids) = self
            .said
            .entry(s.key.to_string())
            .or_insert_with(|| (None, false, ids.clone()));
        *said_ids = ids.clone();
        let mut out = Vec::new();
        let mut clear_unavailable = |out: &mut Vec<Finding>| {
            if std::mem::take(unavailable) {
                out.push(Finding::cleared(
                    Kind::DaneUnavailable,
                    now,
                    format!("the TLSA records of {} validate again", s.tlsa_name),
                    ids.clone(),
                ));
            }
        };
        match verdict {
            DaneVerdict::Match(_) => {
                clear_unavailable(&mut out);
                if mismatch.take().is_some() {
                    out.push(Finding::cleared(
                        Kind::DaneMismatch,
                        now,
                        format!(
                            "{} ({}) matches its TLSA records again",
                            s.target, s.address
                        ),
                        ids,
                    ));
                }
            }
            DaneVerdict::Mismatch { records } => {
                clear_unavailable(&mut out);
                if mismatch.as_deref() != Some(s.cert_sha256) {
                    *mismatch = Some(s.cert_sha256.to_string());
                    let mut details = ids;
                    details["cert_sha256"] = json!(s.cert_sha256);
                    details["tlsa"] = json!(records.iter().map(Tlsa::text).collect::<Vec<_>>());
                    out.push(Finding::new(
                        Kind::DaneMismatch,
                        now,
                        format!(
                            "{} ({}) presents a certificate its DNSSEC-validated TLSA records ({}) do not match: sha256 {}",
                            s.target, s.address, s.tlsa_name, s.cert_sha256
                        ),
                        details,
                    ));
                }
            }
            DaneVerdict::Unavailable(why) => {
                if !std::mem::replace(unavailable, true) {
                    let mut details = ids;
                    details["error"] = json!(why);
                    out.push(Finding::new(
                        Kind::DaneUnavailable,
                        now,
                        format!(
                            "no trusted TLSA answer for {} ({}): {why}",
                            s.tlsa_name, s.target
                        ),
                        details,
                    ));
                }
            }
        }
        out
    }

    /// Forgets an endpoint that left DNS; its open conditions end.
    pub fn forget(
        &mut self,
        key: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Vec<crate::alert::Finding> {
        use crate::alert::{Finding, Kind};
        let Some((mismatch, unavailable, ids)) = self.said.remove(key) else {
            return Vec::new();
        };
        let why = format!("{key} is no longer an endpoint");
        let mut out = Vec::new();
        if mismatch.is_some() {
            out.push(Finding::cleared(
                Kind::DaneMismatch,
                now,
                why.clone(),
                ids.clone(),
            ));
        }
        if unavailable {
            out.push(Finding::cleared(Kind::DaneUnavailable, now, why, ids));
        }
        out
    }
}

/// The host of a TLSA name: `_5222._tcp.xmpp.example.org` → `xmpp.example.org`.
pub fn tlsa_host(name: &str) -> Option<&str> {
    let (port, rest) = name.split_once('.')?;
    let (proto, host) = rest.split_once('.')?;
    let port_ok = port.strip_prefix('_')?.parse::<u16>().is_ok_and(|p| p > 0);
    (port_ok && matches!(proto, "_tcp" | "_udp") && !host.is_empty()).then_some(host)
}

/// Which of `certs` ((cert SHA-256, SPKI SHA-256), hex) the TLSA set does
/// not cover, for the publishing server (`dane_stale`): only DANE-EE
/// records with SHA-256 (`3 0 1`, `3 1 1`, what RFC 7671 recommends) can be
/// compared with what a manifest knows; `None` when the set has none (no
/// verdict).
pub fn uncovered<'a>(
    records: &[Tlsa],
    certs: &'a [(String, String)],
) -> Option<Vec<&'a (String, String)>> {
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let usable: Vec<(u8, String)> = records
        .iter()
        .filter(|r| r.usage == 3 && r.matching == 1 && r.selector <= 1)
        .map(|r| (r.selector, hex(&r.data)))
        .collect();
    if usable.is_empty() {
        return None;
    }
    Some(
        certs
            .iter()
            .filter(|(cert, spki)| {
                !usable.iter().any(|(sel, data)| match sel {
                    0 => data.eq_ignore_ascii_case(cert),
                    _ => data.eq_ignore_ascii_case(spki),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(usage: u8, selector: u8, matching: u8, data: &[u8]) -> Tlsa {
        Tlsa {
            usage,
            selector,
            matching,
            data: data.to_vec(),
        }
    }

    const LEAF: ChainCert<'static> = ChainCert {
        der: b"leaf certificate",
        spki: b"leaf key",
    };
    const CA: ChainCert<'static> = ChainCert {
        der: b"issuer certificate",
        spki: b"issuer key",
    };

    #[test]
    fn every_usage_selector_and_matching_type() {
        let sha256 = |d: &[u8]| sha2::Sha256::digest(d).to_vec();
        let sha512 = |d: &[u8]| sha2::Sha512::digest(d).to_vec();
        let chain = [LEAF, CA];
        for (usage, cert) in [(3, &LEAF), (2, &CA)] {
            for (selector, part) in [(0, cert.der), (1, cert.spki)] {
                for (matching, data) in [(0, part.to_vec()), (1, sha256(part)), (2, sha512(part))] {
                    let r = rec(usage, selector, matching, &data);
                    let lookup = DaneLookup::Secure(vec![r.clone()]);
                    assert_eq!(
                        judge(&lookup, &chain),
                        DaneVerdict::Match(r),
                        "{usage} {selector} {matching}"
                    );
                    // Another certificate in its place does not match.
                    let other = [
                        ChainCert {
                            der: b"rogue",
                            spki: b"rogue key",
                        },
                        ChainCert {
                            der: b"rogue ca",
                            spki: b"rogue ca key",
                        },
                    ];
                    assert!(matches!(
                        judge(&lookup, &other),
                        DaneVerdict::Mismatch { .. }
                    ));
                }
            }
        }
        // Usage 3 is about the leaf only; usage 2 never the leaf of a chain.
        let ee_on_ca = rec(3, 1, 1, &sha256(CA.spki));
        assert!(matches!(
            judge(&DaneLookup::Secure(vec![ee_on_ca]), &chain),
            DaneVerdict::Mismatch { .. }
        ));
        let ta_on_leaf = rec(2, 1, 1, &sha256(LEAF.spki));
        assert!(matches!(
            judge(&DaneLookup::Secure(vec![ta_on_leaf]), &chain),
            DaneVerdict::Mismatch { .. }
        ));
        // One matching record of several is enough (a rollover publishes two).
        let two = vec![
            rec(3, 1, 1, &sha256(b"next key")),
            rec(3, 1, 1, &sha256(LEAF.spki)),
        ];
        assert!(matches!(
            judge(&DaneLookup::Secure(two), &chain),
            DaneVerdict::Match(_)
        ));
    }

    #[test]
    fn a_certificate_on_disk_the_tlsa_set_does_not_cover() {
        assert_eq!(
            tlsa_host("_5222._tcp.xmpp.example.org"),
            Some("xmpp.example.org")
        );
        assert_eq!(tlsa_host("_x._tcp.example.org"), None);
        assert_eq!(tlsa_host("xmpp.example.org"), None);
        let old = ("aa".repeat(32), "bb".repeat(32));
        let new = ("cc".repeat(32), "dd".repeat(32));
        let hexbytes = |h: &str| {
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>()
        };
        let set = vec![rec(3, 1, 1, &hexbytes(&old.1))];
        let certs = vec![old.clone(), new.clone()];
        assert_eq!(uncovered(&set, &certs), Some(vec![&new]));
        // A rollover publishes the next key first (or the certificate, 3 0 1).
        let both = vec![
            rec(3, 1, 1, &hexbytes(&old.1)),
            rec(3, 0, 1, &hexbytes(&new.0)),
        ];
        assert_eq!(uncovered(&both, &certs), Some(vec![]));
        // Only usage 2 (or SHA-512): no verdict.
        assert_eq!(
            uncovered(&[rec(2, 1, 1, &[1]), rec(3, 1, 2, &[2])], &certs),
            None
        );
    }

    #[test]
    fn alerts_once_and_cleared_by_a_match() {
        let now = chrono::Utc::now();
        let mut d = DaneDetector::default();
        let s = |cert: &'static str| DaneSubject {
            key: "xmpp",
            target: "xmpp",
            address: "192.0.2.10:5222",
            tlsa_name: "_5222._tcp.xmpp.example.org",
            cert_sha256: cert,
        };
        let miss = DaneVerdict::Mismatch {
            records: vec![rec(3, 1, 1, &[1])],
        };
        let f = d.observe(&s("aa"), &miss, now);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind.as_str(), "dane_mismatch");
        assert_eq!(f[0].details["tlsa"][0], "3 1 1 01");
        assert!(d.observe(&s("aa"), &miss, now).is_empty());
        assert_eq!(d.observe(&s("bb"), &miss, now).len(), 1);
        let f = d.observe(&s("cc"), &DaneVerdict::Unavailable("bogus".into()), now);
        assert_eq!(f[0].kind.as_str(), "dane_unavailable");
        assert!(
            d.observe(&s("cc"), &DaneVerdict::Unavailable("bogus".into()), now)
                .is_empty()
        );
        let f = d.observe(&s("dd"), &DaneVerdict::Match(rec(3, 1, 1, &[1])), now);
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(|f| f.clears));
    }

    #[test]
    fn unvalidated_or_unusable_answers_are_never_a_match() {
        let sha = sha2::Sha256::digest(LEAF.spki).to_vec();
        let chain = [LEAF];
        for lookup in [
            DaneLookup::Insecure,
            DaneLookup::Bogus("RRSIG expired".into()),
            DaneLookup::Failed("timeout".into()),
            DaneLookup::Secure(vec![]),
            DaneLookup::Secure(vec![rec(1, 1, 1, &sha), rec(0, 1, 1, &sha)]),
            DaneLookup::Secure(vec![rec(3, 7, 1, &sha), rec(3, 1, 9, &sha)]),
        ] {
            assert!(
                matches!(judge(&lookup, &chain), DaneVerdict::Unavailable(_)),
                "{lookup:?}"
            );
        }
        assert!(matches!(
            judge(&DaneLookup::Secure(vec![rec(3, 1, 1, &sha)]), &[]),
            DaneVerdict::Mismatch { .. }
        ));
        assert_eq!(rec(3, 1, 1, &[0xab, 0x01]).text(), "3 1 1 ab01");
    }
}
