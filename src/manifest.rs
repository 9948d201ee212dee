//! Signed fingerprint manifests: the server that holds the certificates
//! publishes which ones are its own (`[publish]`), signed with a minisign
//! key, so that probers elsewhere need no pins and no copies of the files
//! (issue 17).
//!
//! The manifest is JSON, signed as a whole with minisign (Ed25519): an
//! operator can check one by hand with `minisign -Vm fingerprints.json -P KEY`.
//! Per server name it lists the SHA-256 of the certificate and of its public
//! key (SPKI) for
//!
//! - `current`: the certificate in the files that was issued first among the
//!   valid ones (what the server most likely serves);
//! - `newer`: certificates issued later, already on disk (the ACME client
//!   wrote them; the server has not reloaded yet) — peers accept them before
//!   they are served;
//! - `retired`: certificates that left the files within `rotation_grace`
//!   (the server may still serve them until it reloads).
//!
//! `sequence` increases with every change of that content; `expires` bounds
//! how long a copy may be believed (a replayed old manifest is caught by its
//! sequence, a withheld new one by its expiry).

use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::cert::CertFacts;
use crate::state::certhistory::HeldCertificate;

/// The `format` of manifests this version writes and reads.
pub const FORMAT: &str = "netsentry-manifest/1";
/// Names per manifest, and certificates per name and category, at most.
pub const MAX_NAMES: usize = 256;
pub const MAX_PER_CATEGORY: usize = 16;
/// Bytes of a manifest (and of its signature) read at most.
pub const MAX_BYTES: usize = 1 << 20;

/// One certificate, as the manifest names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub cert_sha256: String,
    pub spki_sha256: String,
    #[serde(with = "crate::manifest::time")]
    pub not_before: DateTime<Utc>,
    #[serde(with = "crate::manifest::time")]
    pub not_after: DateTime<Utc>,
}

/// The certificates of one server name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameEntry {
    pub name: String,
    pub current: Vec<Fingerprint>,
    #[serde(default)]
    pub newer: Vec<Fingerprint>,
    #[serde(default)]
    pub retired: Vec<Fingerprint>,
}

/// What a manifest says, besides when and which sequence: compared to decide
/// whether a new sequence number is due.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    pub host: String,
    pub names: Vec<NameEntry>,
}

/// A whole manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub host: String,
    #[serde(with = "crate::manifest::time")]
    pub generated: DateTime<Utc>,
    #[serde(with = "crate::manifest::time")]
    pub expires: DateTime<Utc>,
    pub sequence: u64,
    pub names: Vec<NameEntry>,
}

/// RFC 3339 with microseconds, UTC, like every time the agent writes.
pub(crate) mod time {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::alert::format_time(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

fn fingerprint(f: &CertFacts) -> Fingerprint {
    Fingerprint {
        cert_sha256: f.identity.cert_sha256.hex(),
        spki_sha256: f.identity.spki_sha256.hex(),
        not_before: f.not_before,
        not_after: f.not_after,
    }
}

/// Whether certificate name `pattern` (possibly `*.example.org`) covers `name`.
pub fn covers(pattern: &str, name: &str) -> bool {
    let (pattern, name) = (pattern.to_ascii_lowercase(), name.to_ascii_lowercase());
    pattern == name
        || pattern.strip_prefix("*.").is_some_and(|base| {
            name.split_once('.')
                .is_some_and(|(_, parent)| parent == base)
        })
}

/// The content to publish at `now`: `files` are the certificates in the
/// configured files, `history` every certificate seen in them (for the
/// retired ones), `names` the server names to publish (empty: every DNS name
/// of the certificates in the files).
pub fn build(
    host: &str,
    files: &[CertFacts],
    history: &[HeldCertificate],
    names: &[String],
    rotation_grace: Duration,
    now: DateTime<Utc>,
) -> Content {
    let valid: Vec<&CertFacts> = files.iter().filter(|f| f.not_after > now).collect();
    let mut wanted: Vec<String> = match names.is_empty() {
        true => valid
            .iter()
            .flat_map(|f| f.dns_names.iter().map(|n| n.to_ascii_lowercase()))
            .collect(),
        false => names.iter().map(|n| n.to_ascii_lowercase()).collect(),
    };
    wanted.sort();
    wanted.dedup();
    wanted.truncate(MAX_NAMES);
    let in_files: Vec<String> = valid.iter().map(|f| f.identity.cert_sha256.hex()).collect();
    let names = wanted
        .into_iter()
        .map(|name| {
            let mut mine: Vec<&CertFacts> = valid
                .iter()
                .copied()
                .filter(|f| f.dns_names.iter().any(|p| covers(p, &name)))
                .collect();
            mine.sort_by_key(|f| (f.not_before, f.identity.cert_sha256.hex()));
            mine.dedup_by_key(|f| f.identity.cert_sha256.hex());
            let mut retired: Vec<Fingerprint> = history
                .iter()
                .filter(|h| {
                    !in_files.contains(&h.cert_sha256)
                        && h.not_after > now
                        && now - h.last_seen <= rotation_grace
                        && h.dns_names.iter().any(|p| covers(p, &name))
                })
                .map(|h| Fingerprint {
                    cert_sha256: h.cert_sha256.clone(),
                    spki_sha256: h.spki_sha256.clone(),
                    not_before: h.not_before,
                    not_after: h.not_after,
                })
                .collect();
            retired.sort_by_key(|f| (f.not_before, f.cert_sha256.clone()));
            retired.truncate(MAX_PER_CATEGORY);
            NameEntry {
                name,
                current: mine.first().map(|f| fingerprint(f)).into_iter().collect(),
                newer: mine
                    .iter()
                    .skip(1)
                    .take(MAX_PER_CATEGORY)
                    .map(|f| fingerprint(f))
                    .collect(),
                retired,
            }
        })
        .collect();
    Content {
        host: host.to_string(),
        names,
    }
}

impl Manifest {
    /// The manifest of `content` as sequence `sequence`, valid for `validity`.
    pub fn new(
        content: Content,
        sequence: u64,
        now: DateTime<Utc>,
        validity: Duration,
    ) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            host: content.host,
            generated: now,
            expires: now + validity,
            sequence,
            names: content.names,
        }
    }

    /// The bytes that are signed and served.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(self).unwrap_or_default();
        b.push(b'\n');
        b
    }

    /// The people's rendition, served next to it.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "netsentry fingerprint manifest of {} — sequence {}, generated {}, valid until {}\n\
             Verify the signed JSON: minisign -Vm fingerprints.json -P <public key>\n",
            self.host,
            self.sequence,
            crate::alert::format_time(&self.generated),
            crate::alert::format_time(&self.expires)
        );
        for n in &self.names {
            s.push_str(&format!("\n{}\n", n.name));
            for (what, list) in [
                ("current", &n.current),
                ("newer", &n.newer),
                ("retired", &n.retired),
            ] {
                for f in list {
                    s.push_str(&format!(
                        "  {what:<8} certificate sha256 {}\n           public key  sha256 {}\n           valid {} .. {}\n",
                        f.cert_sha256,
                        f.spki_sha256,
                        f.not_before.format("%Y-%m-%d"),
                        f.not_after.format("%Y-%m-%d")
                    ));
                }
            }
        }
        s
    }

    /// (certificate, SPKI) hex SHA-256 of every certificate listed, any name.
    pub fn all_hashes(&self) -> Vec<(String, String)> {
        self.names
            .iter()
            .flat_map(|n| n.current.iter().chain(&n.newer).chain(&n.retired))
            .map(|f| (f.cert_sha256.clone(), f.spki_sha256.clone()))
            .collect()
    }

    /// (certificate, SPKI) hex SHA-256 of every certificate listed for a
    /// name covering `server_name`.
    pub fn hashes_for(&self, server_name: &str) -> Vec<(String, String)> {
        self.names
            .iter()
            .filter(|n| covers(&n.name, server_name))
            .flat_map(|n| n.current.iter().chain(&n.newer).chain(&n.retired))
            .map(|f| (f.cert_sha256.clone(), f.spki_sha256.clone()))
            .collect()
    }
}

/// Why a manifest is not believed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not signed by the configured key, or not signed at all.
    #[error("the signature does not verify with the configured key ({0})")]
    Signature(String),
    /// Signed, but not a manifest this version reads.
    #[error("signed, but not a netsentry manifest: {0}")]
    Format(String),
    /// Older than one already seen: a replay.
    #[error("sequence {got} is older than {seen}, seen before: an old manifest is being replayed")]
    Rollback { got: u64, seen: u64 },
    /// Past its `expires`.
    #[error("expired at {0}")]
    Expired(String),
    /// Lists none of the names it should.
    #[error("it lists no certificate for {0}")]
    OtherNames(String),
}

impl ManifestError {
    /// Whether this means someone forges or replays manifests (critical), or
    /// only that none can be used now (a stale one).
    pub fn is_forgery(&self) -> bool {
        !matches!(self, ManifestError::Expired(_))
    }
}

/// A minisign public key, from its base64 line (`RWQ...`) or a `.pub` file's text.
pub fn public_key(text: &str) -> Result<minisign::PublicKey, String> {
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .unwrap_or("");
    minisign::PublicKey::from_base64(line).map_err(|e| {
        format!("not a minisign public key ({e}): give the \"RW...\" line of the .pub file")
    })
}

/// Signs `bytes` with the secret key in `key_file` (unencrypted minisign
/// format, as `netsentry keygen` writes it); the `.minisig` text.
pub fn sign(bytes: &[u8], key_file: &Path, trusted_comment: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(key_file)
        .map_err(|e| format!("cannot read the signing key {}: {e}", key_file.display()))?;
    let sk = minisign::SecretKeyBox::from_string(&text)
        .and_then(|b| b.into_unencrypted_secret_key())
        .map_err(|e| {
            format!(
                "{} is not an unencrypted minisign secret key: {e}",
                key_file.display()
            )
        })?;
    let sig = minisign::sign(
        None,
        &sk,
        std::io::Cursor::new(bytes),
        Some(trusted_comment),
        None,
    )
    .map_err(|e| format!("signing failed: {e}"))?;
    Ok(sig.into_string())
}

/// Verifies `bytes` against the `.minisig` text with `key`, then reads it.
pub fn verify(
    bytes: &[u8],
    signature: &str,
    key: &minisign::PublicKey,
) -> Result<Manifest, ManifestError> {
    let sig = minisign::SignatureBox::from_string(signature)
        .map_err(|e| ManifestError::Signature(e.to_string()))?;
    minisign::verify(key, &sig, std::io::Cursor::new(bytes), true, false, false)
        .map_err(|e| ManifestError::Signature(e.to_string()))?;
    let m: Manifest =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Format(e.to_string()))?;
    if m.format != FORMAT {
        return Err(ManifestError::Format(format!("format {:?}", m.format)));
    }
    if m.names.len() > MAX_NAMES
        || m.names.iter().any(|n| {
            n.current.len() > MAX_PER_CATEGORY
                || n.newer.len() > MAX_PER_CATEGORY
                || n.retired.len() > MAX_PER_CATEGORY
        })
    {
        return Err(ManifestError::Format(
            "more names or certificates than allowed".into(),
        ));
    }
    Ok(m)
}

/// The rules a verified manifest must also meet for `server_name` at `now`,
/// given the highest sequence seen before.
/// `server_name` None: any name will do (a manifest read for all it lists,
/// `[ct] authorized_manifests`), but it must list one.
pub fn check(
    m: &Manifest,
    server_name: Option<&str>,
    seen: Option<u64>,
    now: DateTime<Utc>,
) -> Result<(), ManifestError> {
    if let Some(seen) = seen.filter(|s| m.sequence < *s) {
        return Err(ManifestError::Rollback {
            got: m.sequence,
            seen,
        });
    }
    let listed = match server_name {
        Some(name) => !m.hashes_for(name).is_empty(),
        None => !m.all_hashes().is_empty(),
    };
    if !listed {
        return Err(ManifestError::OtherNames(
            server_name.unwrap_or("any name").to_string(),
        ));
    }
    if m.expires <= now {
        return Err(ManifestError::Expired(crate::alert::format_time(
            &m.expires,
        )));
    }
    Ok(())
}

/// A new key pair: (secret key file text, public key file text, public key line).
pub fn keygen(comment: &str) -> Result<(String, String, String), String> {
    let minisign::KeyPair { pk, sk } =
        minisign::KeyPair::generate_unencrypted_keypair().map_err(|e| e.to_string())?;
    let sk_text = sk
        .to_box(Some(&format!("{comment} secret key")))
        .map_err(|e| e.to_string())?
        .into_string();
    let pk_text = pk.to_box().map_err(|e| e.to_string())?.into_string();
    Ok((sk_text, pk_text, pk.to_base64()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::{CertIdentity, Sha256};
    use chrono::TimeZone;

    fn t(days: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000, 0).unwrap() + Duration::days(days)
    }

    fn cert(n: u8, issued: i64, names: &[&str]) -> CertFacts {
        CertFacts {
            identity: CertIdentity {
                cert_sha256: Sha256::of(&[n]),
                spki_sha256: Sha256::of(&[n, n]),
            },
            subject: "CN=x".into(),
            issuer: "CN=R11".into(),
            not_before: t(issued),
            not_after: t(issued + 90),
            dns_names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn held(c: &CertFacts, last_seen: DateTime<Utc>) -> HeldCertificate {
        HeldCertificate {
            cert_sha256: c.identity.cert_sha256.hex(),
            spki_sha256: c.identity.spki_sha256.hex(),
            subject: c.subject.clone(),
            issuer: c.issuer.clone(),
            dns_names: c.dns_names.clone(),
            not_before: c.not_before,
            not_after: c.not_after,
            first_seen: c.not_before,
            last_seen,
            file: "/x.pem".into(),
        }
    }

    #[test]
    fn a_renewal_lists_new_current_and_old_retired_for_the_grace() {
        let old = cert(1, -60, &["example.org", "*.example.org"]);
        let new = cert(2, 0, &["example.org", "*.example.org"]);
        let history = vec![held(&old, t(0)), held(&new, t(0))];
        let c = build(
            "h",
            std::slice::from_ref(&new),
            &history,
            &[],
            Duration::hours(24),
            t(0),
        );
        let names: Vec<&str> = c.names.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, vec!["*.example.org", "example.org"]);
        let e = &c.names[1];
        assert_eq!(e.current[0].cert_sha256, new.identity.cert_sha256.hex());
        assert_eq!(e.retired[0].cert_sha256, old.identity.cert_sha256.hex());
        // A day later the old one is gone.
        let later = build(
            "h",
            std::slice::from_ref(&new),
            &history,
            &[],
            Duration::hours(24),
            t(2),
        );
        assert!(later.names[1].retired.is_empty());
        // Written before the server reloads: both files, the later one is newer.
        let both = build(
            "h",
            &[new.clone(), old.clone()],
            &history,
            &["xmpp.example.org".into()],
            Duration::hours(24),
            t(0),
        );
        assert_eq!(both.names.len(), 1);
        assert_eq!(
            both.names[0].current[0].cert_sha256,
            old.identity.cert_sha256.hex()
        );
        assert_eq!(
            both.names[0].newer[0].cert_sha256,
            new.identity.cert_sha256.hex()
        );
    }

    #[test]
    fn signed_manifests_verify_and_forgeries_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (sk, pk_text, pk_line) = keygen("test").unwrap();
        let key_file = dir.path().join("k.key");
        std::fs::write(&key_file, sk).unwrap();
        let content = build(
            "h",
            &[cert(1, 0, &["example.org"])],
            &[],
            &[],
            Duration::hours(24),
            t(1),
        );
        let m = Manifest::new(content, 7, t(1), Duration::days(7));
        let bytes = m.to_bytes();
        let sig = sign(&bytes, &key_file, "netsentry manifest h sequence 7").unwrap();
        let key = public_key(&pk_line).unwrap();
        assert_eq!(public_key(&pk_text).unwrap(), key);
        let back = verify(&bytes, &sig, &key).unwrap();
        assert_eq!(back, m);
        assert_eq!(check(&back, Some("example.org"), Some(7), t(2)), Ok(()));
        assert_eq!(back.hashes_for("EXAMPLE.org").len(), 1);
        // One byte changed; another key; the rules.
        let mut forged = bytes.clone();
        let at = forged.len() - 10;
        forged[at] ^= 1;
        assert!(matches!(
            verify(&forged, &sig, &key),
            Err(ManifestError::Signature(_))
        ));
        let (_, _, other) = keygen("other").unwrap();
        assert!(matches!(
            verify(&bytes, &sig, &public_key(&other).unwrap()),
            Err(ManifestError::Signature(_))
        ));
        assert!(matches!(
            check(&back, Some("example.org"), Some(8), t(2)),
            Err(ManifestError::Rollback { got: 7, seen: 8 })
        ));
        assert!(matches!(
            check(&back, Some("example.net"), None, t(2)),
            Err(ManifestError::OtherNames(_))
        ));
        let expired = check(&back, Some("example.org"), None, t(9)).unwrap_err();
        assert!(!expired.is_forgery());
        assert!(public_key("RWQ-not-base64").is_err());
        assert!(verify(&bytes, "garbage", &key).is_err());
    }
}
