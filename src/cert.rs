//! Certificates as netsentry compares them: SHA-256 of the DER certificate and
//! of its SubjectPublicKeyInfo, plus the facts an operator reads in an alert.

use std::fmt;
use std::path::Path;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::Digest;

/// A SHA-256 digest. Printed as lowercase hex without separators.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256([u8; 32]);

impl Sha256 {
    /// The SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Sha256 {
        Sha256(Sha256::digest_bytes(data))
    }

    fn digest_bytes(data: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&sha2::Sha256::digest(data));
        out
    }

    /// Parses 64 hex digits; colons (`AB:CD:…`), spaces and case are ignored.
    pub fn parse_hex(text: &str) -> Result<Sha256, String> {
        let digits: Vec<u8> = text.bytes().filter(|b| !matches!(b, b':' | b' ')).collect();
        let bad = || {
            format!(
                "{text:?} is not a SHA-256 value: write 64 hex digits (colons allowed), as `netsentry fingerprints` prints them"
            )
        };
        // Hex digits only: `from_str_radix` alone would take "+a" as 0x0a.
        if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(bad());
        }
        let nibble = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
        let mut out = [0u8; 32];
        for (i, pair) in digits.chunks(2).enumerate() {
            out[i] = nibble(pair[0]) << 4 | nibble(pair[1]);
        }
        Ok(Sha256(out))
    }

    /// Lowercase hex, 64 characters.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Standard base64 (as HPKP and DANE tools show pins).
    pub fn base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({})", self.hex())
    }
}

impl Serialize for Sha256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

/// What identifies a certificate: the certificate itself and its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct CertIdentity {
    pub cert_sha256: Sha256,
    pub spki_sha256: Sha256,
}

/// A parsed certificate's identity and the facts shown to people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertFacts {
    #[serde(flatten)]
    pub identity: CertIdentity,
    pub subject: String,
    pub issuer: String,
    #[serde(serialize_with = "crate::alert::serialize_time")]
    pub not_before: DateTime<Utc>,
    #[serde(serialize_with = "crate::alert::serialize_time")]
    pub not_after: DateTime<Utc>,
    /// DNS names of the subjectAltName extension.
    pub dns_names: Vec<String>,
}

/// Why a certificate could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: String },
    #[error("{path}: the PEM data is damaged: {reason}")]
    BadPem { path: String, reason: String },
    #[error("not a valid X.509 certificate: {0}")]
    BadDer(String),
}

impl CertFacts {
    /// The facts as JSON (what `probe --json` and `fingerprints --json` print).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "cert_sha256": self.identity.cert_sha256.hex(),
            "spki_sha256": self.identity.spki_sha256.hex(),
            "subject": self.subject,
            "issuer": self.issuer,
            "not_before": crate::alert::format_time(&self.not_before),
            "not_after": crate::alert::format_time(&self.not_after),
            "dns_names": self.dns_names,
        })
    }

    /// The DER SubjectPublicKeyInfo of a DER certificate (None: unparseable).
    pub fn spki_der(der: &[u8]) -> Option<Vec<u8>> {
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        Some(cert.tbs_certificate.subject_pki.raw.to_vec())
    }

    /// Parses a DER certificate. Nothing here trusts the input: a damaged
    /// certificate is an error, never a panic.
    pub fn from_der(der: &[u8]) -> Result<CertFacts, CertError> {
        use x509_parser::prelude::*;
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| CertError::BadDer(e.to_string()))?;
        let spki = cert.tbs_certificate.subject_pki.raw;
        let time = |t: ASN1Time| {
            DateTime::<Utc>::from_timestamp(t.timestamp(), 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
        };
        let mut dns_names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::DNSName(n) = name {
                    dns_names.push(n.to_string());
                }
            }
        }
        Ok(CertFacts {
            identity: CertIdentity {
                cert_sha256: Sha256::of(der),
                spki_sha256: Sha256::of(spki),
            },
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_before: time(cert.validity().not_before),
            not_after: time(cert.validity().not_after),
            dns_names,
        })
    }
}

/// Every certificate in a PEM file, in file order (for `cert.pem` and
/// `fullchain.pem` the first one is the server's own).
pub fn read_pem_file(path: &Path) -> Result<Vec<Vec<u8>>, CertError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let shown = path.display().to_string();
    let data = crate::files::read_regular(path).map_err(|source| CertError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for item in CertificateDer::pem_slice_iter(&data) {
        match item {
            Ok(der) => out.push(der.as_ref().to_vec()),
            Err(e) => {
                return Err(CertError::BadPem {
                    path: shown,
                    reason: e.to_string(),
                });
            }
        }
    }
    if out.is_empty() {
        return Err(CertError::NoCertificate { path: shown });
    }
    Ok(out)
}

/// The server certificate of a PEM file (its first certificate), parsed.
pub fn read_leaf(path: &Path) -> Result<CertFacts, CertError> {
    let ders = read_pem_file(path)?;
    CertFacts::from_der(&ders[0]).map_err(|e| CertError::BadPem {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_values_parse_with_colons_and_any_case() {
        let lower = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let a = Sha256::parse_hex(lower).unwrap();
        let upper_colons = lower
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(Sha256::parse_hex(&upper_colons).unwrap(), a);
        assert_eq!(a.hex(), lower);
        assert!(Sha256::parse_hex("abc").is_err());
        assert!(Sha256::parse_hex(&"zz".repeat(32)).is_err());
        assert!(Sha256::parse_hex(&"é".repeat(32)).is_err());
        // A sign is not a digit ("+a" would be 0x0a to from_str_radix).
        assert!(Sha256::parse_hex(&"+a".repeat(32)).is_err());
        assert!(Sha256::parse_hex(&"-1".repeat(32)).is_err());
    }

    #[test]
    fn known_digest() {
        assert_eq!(
            Sha256::of(b"abc").hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            Sha256::of(b"abc").base64(),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(CertFacts::from_der(b"").is_err());
        assert!(CertFacts::from_der(&[0x30, 0x82, 0xff, 0xff, 0]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pem");
        std::fs::write(&p, "hello").unwrap();
        assert!(matches!(
            read_pem_file(&p),
            Err(CertError::NoCertificate { .. })
        ));
        std::fs::write(
            &p,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(read_leaf(&p).is_err());
    }

    #[test]
    fn a_generated_certificate_reads_back() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["example.org".into()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cert.pem");
        std::fs::write(&p, cert.pem()).unwrap();
        let facts = read_leaf(&p).unwrap();
        assert_eq!(facts.identity.cert_sha256, Sha256::of(cert.der()));
        assert_eq!(
            facts.identity.spki_sha256,
            Sha256::of(&rcgen::PublicKeyData::subject_public_key_info(&key))
        );
        assert_eq!(facts.dns_names, vec!["example.org".to_string()]);
        assert!(facts.not_after > facts.not_before);
    }
}
