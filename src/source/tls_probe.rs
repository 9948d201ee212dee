//! The TLS check of one target: connect (directly or through SOCKS5), run the
//! STARTTLS dialogue, complete the handshake and report the server's
//! certificate. Every step is bounded by the target's `timeout`; whatever goes
//! wrong becomes an error sentence in the report, never a hang or a panic.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::cert::{CertFacts, CertIdentity};
use crate::config::{StartTls, TlsTarget};
use crate::detect::tls::{PathReport, PortPath, ProbeError, ProbeReport, Seen};
use crate::source::endpoints::Endpoint;
use crate::source::starttls::{Dialogue, Step};
use crate::source::{path_probe, socks};

/// Trust anchors, loaded once per `ca_file` (None: the system's).
#[derive(Default)]
pub struct TrustStore {
    loaded: HashMap<Option<PathBuf>, Result<Arc<RootCertStore>, String>>,
}

impl TrustStore {
    /// The trust anchors of `ca_file` (the system's without one), loaded once; the error becomes the chain error of every check.
    pub fn get(&mut self, ca_file: Option<&Path>) -> Result<Arc<RootCertStore>, String> {
        self.loaded
            .entry(ca_file.map(Path::to_path_buf))
            .or_insert_with(|| load_roots(ca_file).map(Arc::new))
            .clone()
    }
}

fn load_roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let ders = crate::cert::read_pem_file(path).map_err(|e| e.to_string())?;
            for der in ders {
                roots
                    .add(CertificateDer::from(der))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for der in found.certs {
                let _ = roots.add(der);
            }
        }
    }
    if roots.is_empty() {
        return Err(match ca_file {
            Some(p) => format!("{} holds no usable CA certificate", p.display()),
            None => {
                "the system has no CA certificates (install ca-certificates or set ca_file)".into()
            }
        });
    }
    Ok(roots)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Checks the chain like any client would, but only records the verdict:
/// the handshake goes on so that a foreign certificate is seen and reported.
/// Signatures are still verified, so the server proved it holds the key.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Result<Arc<WebPkiServerVerifier>, String>,
    provider: Arc<CryptoProvider>,
    verdict: Mutex<Option<Result<(), String>>>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = match &self.inner {
            Ok(v) => v
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        };
        if let Ok(mut slot) = self.verdict.lock() {
            *slot = Some(verdict);
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// True when `ip` is an address of this host (the check would never leave it):
/// binding to it succeeds only for local addresses.
pub fn is_local_address(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Bytes read per step of the STARTTLS dialogue.
const READ_CHUNK: usize = 4096;

/// A report of a check of `target` that ended without a result (so far).
pub fn stopped(target: &TlsTarget) -> ProbeReport {
    ProbeReport {
        target: target.name.clone(),
        address: target.service(),
        endpoint: None,
        endpoint_host: None,
        peer: None,
        local: false,
        time: Utc::now(),
        duration: Duration::ZERO,
        outcome: Err(ProbeError::Stopped),
        path: None,
        manifest: None,
        dane: None,
    }
}

/// Path lengths remembered per (address, port): the next check starts there.
pub type PathHints = Arc<Mutex<HashMap<(IpAddr, u16), u8>>>;

/// How long one round of TTL-limited connects waits for answers.
const PATH_WAIT: Duration = Duration::from_secs(2);

/// Measures at which hop the checked port (and `reference_port`) answers,
/// from the address the check connected to. `None` when the path cannot be
/// measured from here: through a proxy, to this host, or no connection.
pub async fn measure_path(
    target: &TlsTarget,
    report: &ProbeReport,
    hints: &PathHints,
) -> Option<PathReport> {
    if !target.path_check || target.via.is_some() || report.local {
        return None;
    }
    let peer: SocketAddr = report.peer.as_deref()?.parse().ok()?;
    let wait = PATH_WAIT.min(target.timeout.0);
    let ports: Vec<u16> = std::iter::once(peer.port())
        .chain(target.reference_port)
        .collect();
    let mut measured = Vec::new();
    for port in ports {
        let addr = SocketAddr::new(peer.ip(), port);
        let hint = hints.lock().ok()?.get(&(addr.ip(), port)).copied();
        let m = tokio::task::spawn_blocking(move || path_probe::measure(addr, hint, wait))
            .await
            .ok()?;
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(target = %target.name, "path length of {addr}: {e}");
                path_probe::PathMeasure::default()
            }
        };
        if let (Some(h), Ok(mut map)) = (m.hops, hints.lock()) {
            map.insert((addr.ip(), port), h);
        }
        measured.push(PortPath {
            port,
            hops: m.hops,
            routers: m.routers,
            syns: m.syns,
            millis: m.took.as_millis() as u64,
        });
    }
    let mut measured = measured.into_iter();
    Some(PathReport {
        address: peer.ip(),
        port: measured.next()?,
        reference: measured.next(),
    })
}

/// A report of a check of one endpoint of `target` that ended without a result.
pub fn stopped_at(target: &TlsTarget, endpoint: Option<&Endpoint>) -> ProbeReport {
    let mut report = stopped(target);
    if let Some(e) = endpoint {
        report.endpoint = Some(e.addr.to_string());
        report.endpoint_host = Some(e.host.clone());
    }
    report
}

/// Checks one target once, or one of its endpoints. `roots` are its trust
/// anchors (or why there are none).
pub async fn probe(
    target: &TlsTarget,
    endpoint: Option<&Endpoint>,
    roots: Result<Arc<RootCertStore>, String>,
) -> ProbeReport {
    let mut report = stopped_at(target, endpoint);
    let started = Instant::now();
    let deadline = started + target.timeout.0;
    let (peer, local) = (&mut report.peer, &mut report.local);
    report.outcome = run(target, endpoint, roots, deadline, peer, local).await;
    report.duration = started.elapsed();
    report.time = Utc::now();
    report
}

/// `step` with the overall deadline: a timeout names the step it interrupted.
async fn step<T>(
    deadline: Instant,
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, ProbeError>>,
) -> Result<T, ProbeError> {
    match timeout_at(deadline, fut).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout {
            after: crate::config::Interval(limit).to_string(),
            step: what.to_string(),
        }),
    }
}

/// A TCP connection to the target: through the SOCKS5 proxy (`via`), or
/// directly to the endpoint, or to the first of its addresses (at most 8)
/// that answers.
async fn open_stream(
    target: &TlsTarget,
    endpoint: Option<&Endpoint>,
    deadline: Instant,
    peer: &mut Option<String>,
    local: &mut bool,
) -> Result<TcpStream, ProbeError> {
    let limit = target.timeout.0;
    let ip_text = endpoint.map(|e| e.addr.ip().to_string());
    let (host, port) = match (endpoint, &target.address) {
        (Some(e), _) => (ip_text.as_deref().unwrap_or_default(), e.addr.port()),
        (None, Some(a)) => (a.host.as_str(), a.port),
        (None, None) => return Err(ProbeError::NoAddress(target.service())),
    };
    let shown = match endpoint {
        Some(e) => e.addr.to_string(),
        None => target.service(),
    };
    match &target.via {
        Some(proxy) => {
            let p = &proxy.address;
            let what = format!("connecting to the SOCKS5 proxy {p}");
            let mut s = step(deadline, limit, &what, async {
                TcpStream::connect((p.host.as_str(), p.port))
                    .await
                    .map_err(|e| ProbeError::Proxy {
                        proxy: p.to_string(),
                        reason: e.to_string(),
                    })
            })
            .await?;
            let what = format!("the SOCKS5 proxy {p} connected to {shown}");
            step(deadline, limit, &what, async {
                socks::connect(&mut s, proxy, host, port)
                    .await
                    .map_err(|e| ProbeError::Proxy {
                        proxy: p.to_string(),
                        reason: e.to_string(),
                    })
            })
            .await?;
            Ok(s)
        }
        None => {
            let what = format!("resolving {host}");
            let addrs: Vec<SocketAddr> = step(deadline, limit, &what, async {
                if let Some(e) = endpoint {
                    return Ok(vec![e.addr]);
                }
                tokio::net::lookup_host((host, port))
                    .await
                    .map(|a| a.collect())
                    .map_err(|e| ProbeError::Resolve {
                        host: host.to_string(),
                        reason: e.to_string(),
                    })
            })
            .await?;
            if addrs.is_empty() {
                return Err(ProbeError::NoAddress(host.to_string()));
            }
            *local = addrs.iter().any(|a| is_local_address(a.ip()));
            let mut errors = Vec::new();
            let mut connected = None;
            for addr in addrs.iter().take(8) {
                let what = format!("connecting to {addr}");
                match step(deadline, limit, &what, async {
                    TcpStream::connect(addr)
                        .await
                        .map_err(|e| ProbeError::Connect(vec![format!("connect to {addr}: {e}")]))
                })
                .await
                {
                    Ok(s) => {
                        *peer = Some(addr.to_string());
                        connected = Some(s);
                        break;
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
            connected.ok_or(ProbeError::Connect(errors))
        }
    }
}

async fn run(
    target: &TlsTarget,
    endpoint: Option<&Endpoint>,
    roots: Result<Arc<RootCertStore>, String>,
    deadline: Instant,
    peer: &mut Option<String>,
    local: &mut bool,
) -> Result<Seen, ProbeError> {
    let limit = target.timeout.0;
    let mut stream = open_stream(target, endpoint, deadline, peer, local).await?;
    let _ = stream.set_nodelay(true);

    if target.starttls != StartTls::None {
        let what = format!("in the {} STARTTLS dialogue", target.starttls.as_str());
        step(deadline, limit, &what, async {
            starttls(&mut stream, target.starttls, target.server_name())
                .await
                .map_err(|reason| ProbeError::StartTls {
                    protocol: target.starttls.as_str(),
                    reason,
                })
        })
        .await?;
    }

    let provider = provider();
    let inner = roots.and_then(|r| {
        WebPkiServerVerifier::builder_with_provider(r, provider.clone())
            .build()
            .map_err(|e| e.to_string())
    });
    let verifier = Arc::new(RecordingVerifier {
        inner,
        provider: provider.clone(),
        verdict: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProbeError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(target.server_name().to_string()).map_err(|e| {
        ProbeError::ServerName {
            name: target.server_name().to_string(),
            reason: e.to_string(),
        }
    })?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tls = step(deadline, limit, "in the TLS handshake", async {
        connector
            .connect(name, stream)
            .await
            .map_err(|e| ProbeError::Handshake(e.to_string()))
    })
    .await?;
    let chain: Vec<Vec<u8>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .take(8)
        .map(|c| c.as_ref().to_vec())
        .collect();
    let leaf = chain.first().cloned().ok_or(ProbeError::NoCertificate)?;
    // A polite close; the answer does not matter.
    let _ = timeout_at(deadline, tls.shutdown()).await;
    let verdict = verifier.verdict.lock().ok().and_then(|mut v| v.take());
    let mut seen = seen(&leaf, verdict);
    seen.chain = chain;
    Ok(seen)
}

/// What the check saw: the leaf's facts (a certificate that does not parse is
/// still reported, by its hash) and the chain verdict the verifier recorded.
fn seen(leaf: &[u8], verdict: Option<Result<(), String>>) -> Seen {
    let facts = CertFacts::from_der(leaf).unwrap_or_else(|e| CertFacts {
        identity: CertIdentity {
            cert_sha256: crate::cert::Sha256::of(leaf),
            spki_sha256: crate::cert::Sha256::of(&[]),
        },
        subject: format!("(unparseable certificate: {e})"),
        issuer: String::new(),
        not_before: chrono::DateTime::<Utc>::MIN_UTC,
        not_after: chrono::DateTime::<Utc>::MIN_UTC,
        dns_names: Vec::new(),
    });
    let verdict = verdict.unwrap_or_else(|| Err("not verified".into()));
    Seen {
        facts,
        chain_valid: verdict.is_ok(),
        chain_error: verdict.err(),
        chain: Vec::new(),
    }
}

/// Drives a [`Dialogue`] over the connection.
async fn starttls(stream: &mut TcpStream, protocol: StartTls, domain: &str) -> Result<(), String> {
    let mut dialogue = Dialogue::new(protocol, domain);
    let mut next = dialogue.opening();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match next {
            Step::Ready => return Ok(()),
            Step::Send(bytes) => stream
                .write_all(&bytes)
                .await
                .map_err(|e| format!("cannot send: {e}"))?,
            Step::Read => {}
        }
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("cannot read: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        next = dialogue.receive(&buf[..n]).map_err(|e| e.to_string())?;
    }
}
