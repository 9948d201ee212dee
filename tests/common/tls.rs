//! TLS fixtures: a test CA (rcgen) and real TLS servers (rustls) that speak
//! TLS from the first byte or after an RFC STARTTLS dialogue (SMTP, IMAP,
//! POP3), started in a network namespace. Stopped on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use sha2::Digest;

use super::{GW_IP, GW_MAC, Lab, Receiver, in_netns};

/// A certificate authority for tests, and the certificates it issues.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate with its key, as PEM, and its SHA-256 values (hex).
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_sha256: String,
    pub spki_sha256: String,
}

impl Issued {
    /// Writes `NAME.pem` (certificate) and `NAME.key` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

fn hex(data: &[u8]) -> String {
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid for
    /// `days` from yesterday.
    pub fn issue(&self, names: &[&str], days: i64) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].to_string());
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(days);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_sha256: hex(cert.der()),
            spki_sha256: hex(&rcgen::PublicKeyData::subject_public_key_info(&key)),
        }
    }
}

/// A test CA (its file written) and "our" certificate for example.org and
/// xmpp.example.org (written as `ours.pem` / `ours.key`).
pub struct Pki {
    pub ca: TestCa,
    pub ca_file: PathBuf,
    pub ours: Issued,
    pub ours_file: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path, ca_name: &str) -> Pki {
        let ca = TestCa::new(ca_name);
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let ours = ca.issue(&["example.org", "xmpp.example.org"], 90);
        let (ours_file, _) = ours.write(dir, "ours");
        Pki {
            ca,
            ca_file,
            ours,
            ours_file,
        }
    }

    /// One `[[tls.target]]` trusting this CA and expecting `expect`;
    /// `extra` holds more `key = value` lines.
    pub fn target(
        &self,
        name: &str,
        address: &str,
        server_name: &str,
        expect: &Path,
        extra: &str,
    ) -> String {
        format!(
            "\n[[tls.target]]\nname = \"{name}\"\naddress = \"{address}\"\nserver_name = \"{server_name}\"\nca_file = \"{}\"\nexpect = {{ cert_files = [\"{}\"] }}\n{extra}\n",
            self.ca_file.display(),
            expect.display()
        )
    }
}

/// A lab with a service behind the gateway (the host has resolved the
/// gateway), a receiver on the host, and a [`Pki`] in the lab's directory.
pub fn service_lab(ca_name: &str) -> (Lab, Receiver, Pki) {
    let lab = Lab::with_service();
    assert_eq!(lab.resolve_gateway(GW_IP), GW_MAC);
    let receiver = Receiver::start(&lab.host);
    let pki = Pki::new(lab.dir.path(), ca_name);
    (lab, receiver, pki)
}

/// What the server says before TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialogue {
    /// TLS from the first byte.
    Direct,
    /// RFC 3207: greeting, EHLO, STARTTLS.
    Smtp,
    /// RFC 9051: greeting, `tag STARTTLS`.
    Imap,
    /// RFC 2595: greeting, STLS.
    Pop3,
    /// RFC 6120 client-to-server: stream header, features with
    /// `<starttls/>`, `<proceed/>` (what an intercepting XMPP proxy answers).
    Xmpp,
    /// Not TLS at all: answers every connection with an HTTP error.
    PlainText,
    /// Accepts and never says anything.
    Silent,
    /// An SMTP greeting line that never ends.
    EndlessBanner,
}

/// A TLS server on `addr` in a namespace, one thread per connection.
pub struct TlsServer {
    ns: String,
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    pub handshakes: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsServer {
    pub fn start(ns: &str, addr: &str, dialogue: Dialogue, cert: &Issued) -> TlsServer {
        let addr = addr.to_string();
        let listener = in_netns(ns, move || {
            TcpListener::bind(&addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
        });
        let mut server = Self::serve(listener, dialogue, cert);
        server.ns = ns.to_string();
        server
    }

    fn serve(listener: TcpListener, dialogue: Dialogue, cert: &Issued) -> TlsServer {
        let config = server_config(cert);
        let mut addr = listener.local_addr().unwrap();
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let (stop2, count) = (stop.clone(), handshakes.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (config, count, stop) = (config.clone(), count.clone(), stop2.clone());
                        std::thread::spawn(move || {
                            let _ = serve_one(stream, dialogue, config, &count, &stop);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        TlsServer {
            ns: String::new(),
            addr,
            stop,
            handshakes,
            thread: Some(thread),
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept (inside the namespace the listener is in).
        let addr = self.addr;
        let woke = std::panic::catch_unwind(|| {
            in_netns(&self.ns, move || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })
        })
        .unwrap_or(false);
        // Otherwise the thread is left to end with the process.
        if let Some(t) = self.thread.take().filter(|_| woke) {
            let _ = t.join();
        }
    }
}

/// A rustls server configuration presenting `cert`.
fn server_config(cert: &Issued) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let chain =
        vec![rustls::pki_types::CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap(),
    )
}

fn serve_one(
    stream: TcpStream,
    dialogue: Dialogue,
    config: Arc<rustls::ServerConfig>,
    count: &AtomicUsize,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut w = stream.try_clone()?;
    let mut line = String::new();
    let mut expect = |reader: &mut BufReader<TcpStream>, prefix: &str| -> std::io::Result<()> {
        line.clear();
        reader.read_line(&mut line)?;
        if line.to_ascii_uppercase().starts_with(prefix) {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("unexpected {line:?}")))
        }
    };
    match dialogue {
        Dialogue::Direct => {}
        Dialogue::Smtp => {
            w.write_all(b"220-mail.example.org ESMTP test\r\n220 ready\r\n")?;
            expect(&mut reader, "EHLO ")?;
            w.write_all(
                b"250-mail.example.org\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n",
            )?;
            expect(&mut reader, "STARTTLS")?;
            w.write_all(b"220 2.0.0 Ready to start TLS\r\n")?;
        }
        Dialogue::Imap => {
            w.write_all(b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] test ready.\r\n")?;
            line.clear();
            reader.read_line(&mut line)?;
            let tag = line.split_whitespace().next().unwrap_or("").to_string();
            if !line.to_ascii_uppercase().contains("STARTTLS") {
                return Ok(());
            }
            w.write_all(format!("{tag} OK Begin TLS negotiation now.\r\n").as_bytes())?;
        }
        Dialogue::Pop3 => {
            w.write_all(b"+OK test ready.\r\n")?;
            expect(&mut reader, "STLS")?;
            w.write_all(b"+OK Begin TLS negotiation\r\n")?;
        }
        Dialogue::Xmpp => {
            let mut seen = String::new();
            let mut read_until = |reader: &mut BufReader<TcpStream>, what: &str| {
                let mut buf = [0u8; 1024];
                while !(seen.contains(what) && seen[seen.find(what).unwrap_or(0)..].contains('>')) {
                    let n = reader.get_mut().read(&mut buf)?;
                    if n == 0 || seen.len() > 16 << 10 {
                        return Err(std::io::Error::other("closed before the dialogue"));
                    }
                    seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
                seen.clear();
                Ok::<(), std::io::Error>(())
            };
            read_until(&mut reader, "<stream:stream")?;
            w.write_all(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='i1' from='example.org' version='1.0'><stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>")?;
            read_until(&mut reader, "<starttls")?;
            w.write_all(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")?;
        }
        Dialogue::PlainText => {
            let mut buf = [0u8; 512];
            let _ = reader.get_mut().read(&mut buf)?;
            w.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")?;
            return Ok(());
        }
        Dialogue::EndlessBanner => {
            w.write_all(b"220 ")?;
            let chunk = [b'A'; 4096];
            while !stop.load(Ordering::Relaxed) {
                w.write_all(&chunk)?;
            }
            return Ok(());
        }
        Dialogue::Silent => {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return Ok(());
        }
    }
    // The client's first TLS bytes may already sit in the reader's buffer.
    let early = reader.buffer().to_vec();
    let mut conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    if !early.is_empty() {
        conn.read_tls(&mut &early[..])?;
    }
    let mut tcp = stream;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    count.fetch_add(1, Ordering::Relaxed);
    // Until the client closes.
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut buf = [0u8; 256];
    while let Ok(n) = tls.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
    Ok(())
}

/// A real SOCKS5 proxy (Debian's microsocks) listening on `addr:port` in `ns`.
pub struct Socks5Proxy(std::process::Child);

impl Socks5Proxy {
    pub fn start(ns: &str, addr: &str, port: u16) -> Socks5Proxy {
        let child = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "microsocks",
                "-i",
                addr,
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("microsocks (apt-get install microsocks)");
        // Owned from here on: killed on drop, also when it never listens.
        let proxy = Socks5Proxy(child);
        // Wait until it listens.
        let target: std::net::SocketAddr = format!("{addr}:{port}").parse().unwrap();
        for _ in 0..100 {
            let ns2 = ns.to_string();
            if in_netns(&ns2, move || {
                TcpStream::connect_timeout(&target, Duration::from_millis(100)).is_ok()
            }) {
                return proxy;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("microsocks did not start on {addr}:{port}");
    }
}

impl Drop for Socks5Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real Prosody (Debian's package) on 198.51.100.10 with our certificate:
/// client-to-server and server-to-server STARTTLS, and client direct TLS
/// (XEP-0368) on `direct_tls` when given.
pub struct Prosody(std::process::Child);

impl Prosody {
    pub fn start(
        ns: &str,
        dir: &Path,
        cert: &Path,
        key: &Path,
        direct_tls: Option<u16>,
    ) -> Prosody {
        let d = dir.display();
        std::fs::create_dir_all(dir.join("prosody-data")).unwrap();
        let config = dir.join("prosody.cfg.lua");
        std::fs::write(
            &config,
            format!(
                r#"run_as_root = true
daemonize = false
pidfile = "{d}/prosody.pid"
data_path = "{d}/prosody-data"
certificates = "{d}"
log = {{ info = "{d}/prosody.log"; error = "{d}/prosody.log" }}
interfaces = {{ "198.51.100.10" }}
c2s_ports = {{ 5222 }}
{direct}
s2s_ports = {{ 5269 }}
modules_enabled = {{ "tls"; "saslauth"; "dialback"; "disco" }}
modules_disabled = {{ "posix" }}
c2s_require_encryption = true
s2s_require_encryption = true
VirtualHost "example.org"
  ssl = {{ certificate = "{}"; key = "{}"; }}
"#,
                cert.display(),
                key.display(),
                direct = match direct_tls {
                    Some(port) => format!(
                        "c2s_direct_tls_ports = {{ {port} }}\nc2s_direct_tls_ssl = {{ certificate = \"{}\"; key = \"{}\"; }}",
                        cert.display(),
                        key.display()
                    ),
                    None => String::new(),
                }
            ),
        )
        .unwrap();
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "prosody", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prosody (apt-get install prosody)");
        let prosody = Prosody(child);
        let log = dir.join("prosody.log");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Activated service 's2s'") && text.contains("Activated service 'c2s'")
            {
                return prosody;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "prosody did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A transparent interceptor in a router namespace: nftables `tproxy` sends
/// the SYNs for `server:port` that pass through the router to a local
/// listener (IP_TRANSPARENT), which answers the client itself (the dialogue
/// with its own certificate) and, like the jabber.ru interceptor, opens its
/// own connection to the server from the client's address. Removed on drop.
pub struct TransparentInterceptor {
    ns: String,
    stop: Arc<AtomicBool>,
    pub upstream: Arc<AtomicUsize>,
}

/// The port the interceptor listens on inside the router.
const TPROXY_PORT: u16 = 15222;

impl TransparentInterceptor {
    pub fn start(
        ns: &str,
        server: std::net::SocketAddr,
        dialogue: Dialogue,
        cert: &Issued,
    ) -> TransparentInterceptor {
        let listener = in_netns(ns, || {
            use nix::sys::socket::{
                AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen, setsockopt,
                socket, sockopt,
            };
            use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
            let fd = socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .unwrap();
            setsockopt(&fd, sockopt::ReuseAddr, &true).unwrap();
            setsockopt(&fd, sockopt::IpTransparent, &true).unwrap();
            bind(fd.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, TPROXY_PORT)).unwrap();
            listen(&fd, Backlog::new(512).unwrap()).unwrap();
            let l = unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) };
            l.set_nonblocking(true).unwrap();
            l
        });
        let rules = format!(
            "table ip netsentry_test {{\n chain pre {{\n  type filter hook prerouting priority mangle; policy accept;\n  meta l4proto tcp socket transparent 1 meta mark set 1 accept\n  ip daddr {} tcp dport {} tproxy to :{TPROXY_PORT} meta mark set 1 accept\n }}\n}}\n",
            server.ip(),
            server.port()
        );
        let file = std::env::temp_dir().join(format!("nst-tproxy-{}-{ns}.nft", std::process::id()));
        std::fs::write(&file, rules).unwrap();
        super::run(
            "ip",
            &["netns", "exec", ns, "nft", "-f", file.to_str().unwrap()],
        );
        let _ = std::fs::remove_file(&file);
        super::run(
            "ip",
            &["-n", ns, "rule", "add", "fwmark", "1", "lookup", "100"],
        );
        super::run(
            "ip",
            &[
                "-n",
                ns,
                "route",
                "add",
                "local",
                "0.0.0.0/0",
                "dev",
                "lo",
                "table",
                "100",
            ],
        );
        let config = server_config(cert);
        let stop = Arc::new(AtomicBool::new(false));
        let upstream = Arc::new(AtomicUsize::new(0));
        let (stop2, up2, ns2) = (stop.clone(), upstream.clone(), ns.to_string());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((stream, client)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                };
                let (config, stop, up, ns) =
                    (config.clone(), stop2.clone(), up2.clone(), ns2.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_nonblocking(false);
                    super::inbound::enter(&ns);
                    // The interceptor's own connection to the server, from the client's address.
                    let upstream = super::inbound::connect_from(
                        Some(client.ip()),
                        server,
                        Duration::from_secs(2),
                    );
                    if upstream.is_ok() {
                        up.fetch_add(1, Ordering::Relaxed);
                    }
                    let count = AtomicUsize::new(0);
                    let _ = serve_one(stream, dialogue, config, &count, &stop);
                    drop(upstream);
                });
            }
        });
        TransparentInterceptor {
            ns: ns.to_string(),
            stop,
            upstream,
        }
    }
}

impl Drop for TransparentInterceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let ns = self.ns.as_str();
        let _ = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "nft",
                "delete",
                "table",
                "ip",
                "netsentry_test",
            ])
            .status();
        let _ = std::process::Command::new("ip")
            .args(["-n", ns, "rule", "del", "fwmark", "1", "lookup", "100"])
            .status();
        let _ = std::process::Command::new("ip")
            .args(["-n", ns, "route", "flush", "table", "100"])
            .status();
    }
}

/// Checks `out` against the monitoring-plugin guidelines (Nagios plugin API,
/// monitoring-plugins development guidelines): the first line is
/// `SERVICE STATE - text[ | perfdata]` whose state matches the exit code;
/// each perfdata item is `'label'=value[UOM];[warn];[crit];[min];[max]`
/// with a label free of `'` and `=`, a number, a UOM from the guidelines
/// and ranges made of numbers, `:`, `~` and `@`. Returns the perfdata items.
pub fn plugin_output(code: i32, out: &str) -> Vec<(String, f64)> {
    let first = out.lines().next().unwrap_or_default();
    let state = ["OK", "WARNING", "CRITICAL", "UNKNOWN"][code as usize];
    let prefix = format!("NETSENTRY {state} - ");
    assert!(
        first.starts_with(&prefix),
        "state {state} for exit {code}: {first}"
    );
    let Some((text, perf)) = first.split_once(" | ") else {
        return Vec::new();
    };
    assert!(!text.contains('|'), "one '|' only: {first}");
    let mut items = Vec::new();
    let mut rest = perf.trim();
    while !rest.is_empty() {
        assert!(rest.starts_with('\''), "label quoted: {rest}");
        let end = rest[1..].find('\'').expect("closing quote") + 1;
        let label = &rest[1..end];
        assert!(!label.contains('='), "{label}");
        let after = &rest[end + 1..];
        assert!(after.starts_with('='), "'label'=value: {after}");
        let (item, next) = after[1..].split_once(' ').unwrap_or((&after[1..], ""));
        let fields: Vec<&str> = item.split(';').collect();
        assert!(fields.len() <= 5, "{item}");
        let number_end = fields[0]
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-')))
            .unwrap_or(fields[0].len());
        let (value, uom) = fields[0].split_at(number_end);
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number: {item}"));
        assert!(
            ["", "s", "ms", "us", "%", "B", "KB", "MB", "TB", "c"].contains(&uom),
            "unit {uom:?}: {item}"
        );
        for range in fields.iter().skip(1) {
            assert!(
                range
                    .chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | ':' | '~' | '@')),
                "range {range:?}: {item}"
            );
        }
        items.push((label.to_string(), value));
        rest = next.trim_start();
    }
    items
}
