//! The prober's side of signed manifests (`expect.manifest`): fetched at most
//! every `[tls] manifest_refresh` (through the target's `via` when set),
//! verified (minisign signature with `manifest_key`, format, names, expiry,
//! a sequence that never goes back), and the last good one kept in
//! `state_dir/manifests/` so that an unreachable server does not stop the
//! checks until that copy expires.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sha2::Digest;
use tokio::sync::Mutex;

use crate::cert::{CertIdentity, Sha256};
use crate::config::{SocksProxy, TlsTarget};
use crate::detect::tls::{ManifestReport, ManifestState};
use crate::manifest::{self, Manifest, ManifestError};

#[derive(Default)]
struct Entry {
    good: Option<Manifest>,
    /// The highest sequence ever verified (rollback protection).
    seen: Option<u64>,
    fetched: Option<tokio::time::Instant>,
    /// The outcome of the last fetch (kept until the next one).
    last: Option<ManifestState>,
}

/// The manifests of every target, shared by the checks.
#[derive(Clone)]
pub struct Manifests {
    dir: PathBuf,
    refresh: Duration,
    /// Good copies are written to `dir` (the agent; not `netsentry probe`,
    /// which may run as another user than the agent that owns state_dir).
    keep: bool,
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

/// Where the last good copy of `url` is kept.
fn file_of(dir: &std::path::Path, url: &str) -> PathBuf {
    let digest = sha2::Sha256::digest(url.as_bytes());
    let name: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{name}.json"))
}

impl Manifests {
    /// The agent's: good copies are kept in `state_dir/manifests/`.
    pub fn new(state_dir: &std::path::Path, refresh: Duration) -> Manifests {
        Manifests {
            dir: state_dir.join("manifests"),
            refresh,
            keep: true,
            entries: Arc::default(),
        }
    }

    /// `netsentry probe`'s: reads the agent's kept copies, writes nothing.
    pub fn read_only(state_dir: &std::path::Path) -> Manifests {
        Manifests {
            keep: false,
            ..Manifests::new(state_dir, Duration::ZERO)
        }
    }

    /// The manifest of `target` for a check now (fetched when due).
    pub async fn for_target(&self, target: &TlsTarget) -> Option<ManifestReport> {
        let url = target.expect.manifest.as_deref()?;
        let key = target.expect.manifest_key.as_deref()?;
        let client = client(target.via.as_ref(), target.timeout.0);
        Some(
            self.fetch_for(url, key, Some(target.server_name()), client)
                .await,
        )
    }

    /// The manifest at `url` signed by `key` (the `RW...` line), fetched
    /// when due: what it lists for `name` (None: for every name).
    pub async fn fetch_for(
        &self,
        url: &str,
        key: &str,
        name: Option<&str>,
        client: Result<reqwest::Client, String>,
    ) -> ManifestReport {
        let url = url.to_string();
        let key = match manifest::public_key(key) {
            Ok(k) => k,
            Err(e) => {
                return ManifestReport {
                    url,
                    state: ManifestState::Invalid(e),
                    sequence: None,
                    generated: None,
                    ids: Vec::new(),
                };
            }
        };
        let mut entries = self.entries.lock().await;
        let entry = entries
            .entry(url.clone())
            .or_insert_with(|| self.load(&url, &key));
        let due = entry.fetched.is_none_or(|t| t.elapsed() >= self.refresh);
        if due {
            entry.fetched = Some(tokio::time::Instant::now());
            let state = match self.fetch_verified(&client, &url, &key).await {
                Ok((m, bytes, sig)) => match manifest::check(&m, name, entry.seen, Utc::now()) {
                    Ok(()) => {
                        self.store(&url, &bytes, &sig);
                        entry.seen = Some(m.sequence);
                        entry.good = Some(m);
                        ManifestState::Fresh
                    }
                    Err(e) if e.is_forgery() => ManifestState::Invalid(e.to_string()),
                    Err(e) => ManifestState::Unavailable(format!("the manifest served {e}")),
                },
                Err(Failure::Invalid(e)) => ManifestState::Invalid(e.to_string()),
                Err(Failure::Unreachable(why)) => ManifestState::Cached(why),
            };
            entry.last = Some(state);
        }
        let now = Utc::now();
        // The copy in use: the last good one, while it has not expired.
        let usable = entry.good.as_ref().filter(|g| g.expires > now);
        let state = match (entry.last.clone().unwrap_or(ManifestState::Fresh), usable) {
            (ManifestState::Cached(why), None) => ManifestState::Unavailable(why),
            (ManifestState::Fresh, None) => {
                ManifestState::Unavailable("the last good copy has expired".into())
            }
            (state, _) => state,
        };
        let ids = usable
            .map(|m| {
                match name {
                    Some(n) => m.hashes_for(n),
                    None => m.all_hashes(),
                }
                .into_iter()
                .filter_map(|(c, s)| {
                    Some(CertIdentity {
                        cert_sha256: Sha256::parse_hex(&c).ok()?,
                        spki_sha256: Sha256::parse_hex(&s).ok()?,
                    })
                })
                .collect()
            })
            .unwrap_or_default();
        ManifestReport {
            url,
            state,
            sequence: usable.map(|m| m.sequence),
            generated: usable.map(|m| m.generated),
            ids,
        }
    }

    /// The copy kept from before a restart (verified again: the file could
    /// have been changed), with its sequence as the rollback floor.
    fn load(&self, url: &str, key: &minisign::PublicKey) -> Entry {
        let path = file_of(&self.dir, url);
        let bytes = std::fs::read(&path).ok();
        let sig = std::fs::read_to_string(crate::agent::publish::sig_path(&path)).ok();
        let good = match (bytes, sig) {
            (Some(b), Some(s)) => manifest::verify(&b, &s, key).ok(),
            _ => None,
        };
        Entry {
            seen: good.as_ref().map(|m| m.sequence),
            good,
            ..Entry::default()
        }
    }

    /// Keeps a good manifest as fetched (the signed bytes; verified again when
    /// read back after a restart).
    fn store(&self, url: &str, bytes: &[u8], sig: &str) {
        if !self.keep {
            return;
        }
        let path = file_of(&self.dir, url);
        let _ = std::fs::create_dir_all(&self.dir);
        let sig_file = crate::agent::publish::sig_path(&path);
        if let Err(e) = crate::state::write_atomically(&sig_file, sig.as_bytes())
            .and_then(|_| crate::state::write_atomically(&path, bytes))
        {
            tracing::warn!(
                "cannot keep the manifest of {url} in {}: {e}",
                self.dir.display()
            );
        }
    }

    /// Fetches the manifest and its `.minisig` and verifies the signature;
    /// a bad signature is fetched again once after a second (the server may
    /// have been between writing the two files).
    async fn fetch_verified(
        &self,
        client: &Result<reqwest::Client, String>,
        url: &str,
        key: &minisign::PublicKey,
    ) -> Result<(Manifest, Vec<u8>, String), Failure> {
        let client = client
            .as_ref()
            .map_err(|e| Failure::Unreachable(e.clone()))?;
        let mut tries = 0;
        loop {
            tries += 1;
            let bytes = get(client, url).await.map_err(Failure::Unreachable)?;
            let sig = get(client, &format!("{url}.minisig"))
                .await
                .map_err(Failure::Unreachable)?;
            let sig = String::from_utf8_lossy(&sig).to_string();
            match manifest::verify(&bytes, &sig, key) {
                Ok(m) => return Ok((m, bytes, sig)),
                Err(ManifestError::Signature(_)) if tries < 2 => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(Failure::Invalid(e)),
            }
        }
    }
}

enum Failure {
    Unreachable(String),
    Invalid(ManifestError),
}

/// An HTTP client for manifests: through a SOCKS5 proxy when given (the
/// proxy resolves the name), bounded by `timeout`, no redirects.
pub fn client(via: Option<&SocksProxy>, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("netsentry/", env!("CARGO_PKG_VERSION")))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(via) = via {
        let auth = match &via.credentials {
            Some((u, p)) => format!("{u}:{p}@"),
            None => String::new(),
        };
        let proxy = reqwest::Proxy::all(format!("socks5h://{auth}{}", via.address))
            .map_err(|e| format!("the SOCKS5 proxy: {e}"))?;
        b = b.proxy(proxy);
    }
    b.build().map_err(|e| e.to_string())
}

/// GET `url`, at most [`manifest::MAX_BYTES`], 200 only.
async fn get(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", without_url(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("{url}: {}", without_url(&e)))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > manifest::MAX_BYTES {
            return Err(format!("{url}: larger than {} bytes", manifest::MAX_BYTES));
        }
    }
    Ok(body)
}

/// reqwest's error text without the URL it repeats.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(u) = e.url() {
        text = text
            .replace(&format!(" ({u})"), "")
            .replace(&format!(" for url ({u})"), "");
    }
    match std::error::Error::source(e) {
        Some(s) => format!("{text}: {s}"),
        None => text,
    }
}
