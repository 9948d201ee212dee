//! Fixtures for the inbound-path tests: TCP listeners in a namespace that
//! accept and drop, and client loops that connect from a namespace at a
//! steady rate (optionally from a given source address), until dropped.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Enters network namespace `ns` on the calling thread.
pub fn enter(ns: &str) {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// Listeners that accept every connection and close it; stopped on drop.
pub struct Listeners {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Listeners {
    /// Listens on each of `addrs` (e.g. `"0.0.0.0:22"`, `"[::]:22"`) in `ns`.
    pub fn start(ns: &str, addrs: &[&str]) -> Listeners {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for addr in addrs {
            let listener = super::in_netns(ns, {
                let addr = addr.to_string();
                move || {
                    let l = TcpListener::bind(&addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
                    l.set_nonblocking(true).unwrap();
                    l
                }
            });
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => drop(conn),
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            }));
        }
        Listeners { stop, threads }
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Connects to `dst` from `src` (or the kernel's choice), with a timeout.
pub fn connect_from(
    src: Option<IpAddr>,
    dst: SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrStorage, bind, connect, setsockopt, socket,
        sockopt,
    };
    let family = if dst.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    let tv = nix::sys::time::TimeVal::new(timeout.as_secs() as i64, timeout.subsec_micros() as i64);
    setsockopt(&fd, sockopt::SendTimeout, &tv)?;
    if let Some(src) = src {
        // The address may belong to another host (IP_TRANSPARENT) in the replica.
        let _ = setsockopt(&fd, sockopt::IpTransparent, &true);
        bind(
            fd.as_raw_fd(),
            &SockaddrStorage::from(SocketAddr::new(src, 0)),
        )?;
    }
    connect(fd.as_raw_fd(), &SockaddrStorage::from(dst))?;
    Ok(unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) })
}

/// A client that connects to `targets` in turn, every `every`, from a
/// namespace, until dropped; `connected` counts the connections made.
pub struct Clients {
    stop: Arc<AtomicBool>,
    pub connected: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Clients {
    pub fn start(
        ns: &str,
        src: Option<IpAddr>,
        targets: &[SocketAddr],
        every: Duration,
    ) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (ns, targets) = (ns.to_string(), targets.to_vec());
        let thread = std::thread::spawn({
            let (stop, connected, failed) = (stop.clone(), connected.clone(), failed.clone());
            move || {
                enter(&ns);
                while !stop.load(Ordering::Relaxed) {
                    for t in &targets {
                        match connect_from(src, *t, Duration::from_secs(2)) {
                            Ok(_) => connected.fetch_add(1, Ordering::Relaxed),
                            Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                    std::thread::sleep(every);
                }
            }
        });
        Clients {
            stop,
            connected,
            failed,
            thread: Some(thread),
        }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sets a namespace's initial TTL and hop limit (clients at another distance).
pub fn set_initial_ttl(ns: &str, ttl: u8) {
    for key in [
        format!("net.ipv4.ip_default_ttl={ttl}"),
        format!("net.ipv6.conf.all.hop_limit={ttl}"),
        format!("net.ipv6.conf.default.hop_limit={ttl}"),
        format!("net.ipv6.conf.eth0.hop_limit={ttl}"),
    ] {
        super::run("ip", &["netns", "exec", ns, "sysctl", "-qw", &key]);
    }
}
