//! What a TLS check reports: the contract between the probe (source) and the
//! comparison (detector).

use chrono::{DateTime, Utc};

use crate::cert::CertFacts;

/// The result of one check of one target (what the probe source reports).
#[derive(Clone, Debug)]
pub struct ProbeReport {
    pub target: String,
    /// The address checked, as configured.
    pub address: String,
    /// When the target is checked at each of its addresses (`srv`, or a host
    /// name with `addresses = "all"`): this one (`192.0.2.10:5222`), and the
    /// host name it belongs to.
    pub endpoint: Option<String>,
    pub endpoint_host: Option<String>,
    /// The address actually connected to (unknown through a proxy).
    pub peer: Option<String>,
    /// The target resolved to an address of this host: the check never left it.
    pub local: bool,
    pub time: DateTime<Utc>,
    /// How long the check took (connect, STARTTLS, handshake).
    pub duration: std::time::Duration,
    pub outcome: Result<Seen, ProbeError>,
    /// The path length of the port (and of the reference port) from here.
    pub path: Option<PathReport>,
    /// The signed manifest of the target's expectation (`expect.manifest`).
    pub manifest: Option<ManifestReport>,
    /// The DANE verdict (`expect.dane`) and the TLSA name looked up.
    pub dane: Option<(String, crate::detect::dane::DaneVerdict)>,
}

impl ProbeReport {
    /// What the detectors key this check by: the target, or
    /// `target@address:port` for one endpoint of it.
    pub fn key(&self) -> String {
        match &self.endpoint {
            Some(e) => format!("{}@{e}", self.target),
            None => self.target.clone(),
        }
    }

    /// The address alerts name: the endpoint, else the configured address.
    pub fn checked_address(&self) -> &str {
        self.endpoint.as_deref().unwrap_or(&self.address)
    }
}

/// How the manifest of a check stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestState {
    /// Fetched and verified now (or within `manifest_refresh`).
    Fresh,
    /// The fetch failed; the last good copy is used until it expires.
    Cached(String),
    /// No usable copy: unreachable and none cached, or the cached one expired.
    Unavailable(String),
    /// Someone serves a forged, replayed or foreign manifest. The last good
    /// copy (if any) is still used.
    Invalid(String),
}

/// What a check learned about its manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestReport {
    pub url: String,
    pub state: ManifestState,
    /// The copy in use: its sequence and when it was generated.
    pub sequence: Option<u64>,
    pub generated: Option<DateTime<Utc>>,
    /// The certificates it lists for the target's server name.
    pub ids: Vec<crate::cert::CertIdentity>,
}

/// How far the checked port (and `reference_port`) answered from here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathReport {
    /// The address measured (the one the check connected to).
    pub address: std::net::IpAddr,
    pub port: PortPath,
    pub reference: Option<PortPath>,
}

/// One port's path length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortPath {
    pub port: u16,
    pub hops: Option<u8>,
    /// Routers by TTL when the path was swept (empty after a confirmation).
    pub routers: Vec<Option<std::net::IpAddr>>,
    pub syns: u32,
    pub millis: u64,
}

/// Why a check got no certificate. Each variant names the step, and the
/// text is what `tls_probe_failed` and `probe` show.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The name did not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host of the target's address.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// The name resolved to nothing.
    #[error("{0} has no address")]
    NoAddress(String),
    /// No address accepted the connection: one sentence per address tried.
    #[error("{}", .0.join("; "))]
    Connect(Vec<String>),
    /// The SOCKS5 proxy could not be reached or did not connect us.
    #[error("SOCKS5 proxy {proxy}: {reason}")]
    Proxy {
        /// `host:port` of the proxy.
        proxy: String,
        /// What went wrong.
        reason: String,
    },
    /// The plaintext dialogue before TLS failed.
    #[error("STARTTLS ({protocol}): {reason}")]
    StartTls {
        /// `xmpp`, `smtp`, ...
        protocol: &'static str,
        /// What the server did (or did not do).
        reason: String,
    },
    /// `server_name` cannot be sent as SNI.
    #[error("server_name {name:?}: {reason}")]
    ServerName {
        /// The name.
        name: String,
        /// Why it is not valid.
        reason: String,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake: {0}")]
    Handshake(String),
    /// The handshake ended without a certificate.
    #[error("the server sent no certificate")]
    NoCertificate,
    /// The deadline passed during `step`.
    #[error("timed out after {after} while {step}")]
    Timeout {
        /// The target's timeout, as configured.
        after: String,
        /// The step that was interrupted.
        step: String,
    },
    /// The client could not be set up (a rustls configuration error).
    #[error("{0}")]
    Setup(String),
    /// The check's task ended without a result (it panicked).
    #[error("the check stopped unexpectedly")]
    Stopped,
}

/// The server certificate a check received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub facts: CertFacts,
    /// The chain verifies against the trust anchors and names the server.
    pub chain_valid: bool,
    /// Why it does not, when it does not.
    pub chain_error: Option<String>,
    /// The certificates as sent, leaf first, DER (at most 8; for DANE).
    pub chain: Vec<Vec<u8>>,
}
