//! Test fixtures: network namespaces with a gateway and a host, the real agent
//! binary running in the host namespace, and a real HTTP receiver on its loopback.
//! Everything is removed on drop, also when a test panics.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod inbound;
pub mod tls;

/// True when the test may run. Outside CI a non-root run prints
/// `skipped: needs root`; with NETSENTRY_REQUIRE_ROOT_TESTS=1 it fails instead.
pub fn have_root() -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("NETSENTRY_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!("this test needs root (NETSENTRY_REQUIRE_ROOT_TESTS=1 forbids skipping it)");
    }
    eprintln!("skipped: needs root");
    false
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `sysctl -qw KEY=VALUE` in namespace `ns`.
pub fn sysctl(ns: &str, setting: &str) {
    run("ip", &["netns", "exec", ns, "sysctl", "-qw", setting]);
}

/// `ip -n NS <words>`: the command as one string, split at whitespace.
pub fn ip(ns: &str, command: &str) -> String {
    let mut args = vec!["-n", ns];
    args.extend(command.split_whitespace());
    run("ip", &args)
}

/// Runs `f` on a thread that has entered network namespace `ns`. Sockets created
/// there stay in that namespace wherever they are used afterwards.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("netns thread panicked")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A LAN of namespaces on one bridge (in `lan`): `gw` (192.0.2.1, fe80::1,
/// 2001:db8:1::1, MAC 02:00:00:00:00:01), `host` (192.0.2.10, 2001:db8:1::10)
/// with default routes via the gateway, and `mitm` (192.0.2.66, fe80::66, MAC
/// 02:00:00:00:00:66), an attacker on the same segment. Each has `eth0`; its
/// peer on the bridge is `p<name>` (`pgw`, `phost`, `pmitm`).
pub struct Lab {
    pub gw: String,
    pub host: String,
    pub mitm: String,
    pub lan: String,
    /// With [`Lab::with_service`]: `svc` (198.51.100.10, on `eth0`), a server
    /// behind the gateway (198.51.100.1 on the gateway's `eth1`), which routes.
    pub svc: Option<String>,
    pub dir: tempfile::TempDir,
}

pub const SVC_IP: &str = "198.51.100.10";

pub const GW_IP: &str = "192.0.2.1";
pub const GW_MAC: &str = "02:00:00:00:00:01";
pub const GW6_LL: &str = "fe80::1";
pub const MITM_MAC: &str = "02:00:00:00:00:66";

impl Lab {
    pub fn new() -> Lab {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("nst{}x{n}", std::process::id());
        let lab = Lab {
            gw: format!("{prefix}gw"),
            host: format!("{prefix}host"),
            mitm: format!("{prefix}mitm"),
            lan: format!("{prefix}lan"),
            svc: None,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        let (gw, host, mitm, lan) = (
            lab.gw.as_str(),
            lab.host.as_str(),
            lab.mitm.as_str(),
            lab.lan.as_str(),
        );
        for ns in [lan, gw, host, mitm] {
            run("ip", &["netns", "add", ns]);
            ip(ns, "link set lo up");
        }
        ip(lan, "link add br0 type bridge");
        ip(lan, "link set br0 up");
        for (ns, port) in [(gw, "pgw"), (host, "phost"), (mitm, "pmitm")] {
            run(
                "ip",
                &[
                    "-n", lan, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                    "netns", ns,
                ],
            );
            ip(lan, &format!("link set {port} master br0"));
            ip(lan, &format!("link set {port} up"));
            // No duplicate address detection delays in the way of the tests.
            sysctl(ns, "net.ipv6.conf.eth0.accept_dad=0");
        }
        // The gateway and the attacker are IPv6 routers: a neighbour
        // advertisement without the router flag would make the host drop
        // them as default routers (RFC 4861 7.2.5) when the agent asks.
        for ns in [gw, mitm] {
            sysctl(ns, "net.ipv6.conf.all.forwarding=1");
        }
        ip(gw, &format!("link set eth0 address {GW_MAC}"));
        ip(mitm, &format!("link set eth0 address {MITM_MAC}"));
        for ns in [gw, host, mitm] {
            ip(ns, "link set eth0 up");
        }
        ip(gw, "addr add 192.0.2.1/24 dev eth0");
        ip(gw, "addr add 2001:db8:1::1/64 dev eth0 nodad");
        ip(gw, "addr add fe80::1/64 dev eth0 nodad");
        ip(mitm, "addr add 192.0.2.66/24 dev eth0");
        ip(mitm, "addr add fe80::66/64 dev eth0 nodad");
        ip(host, "addr add 192.0.2.10/24 dev eth0");
        ip(host, "addr add 2001:db8:1::10/64 dev eth0 nodad");
        ip(host, &format!("route add default via {GW_IP}"));
        // The gateway never has to ARP for the host, so only the frames a test
        // sends change what the host believes about the gateway.
        let host_mac = lab.host_mac();
        ip(
            gw,
            &format!("neigh replace 192.0.2.10 lladdr {host_mac} dev eth0 nud permanent"),
        );
        lab
    }

    /// A LAN plus a service namespace behind the gateway, reached by routing.
    pub fn with_service() -> Lab {
        let mut lab = Lab::new();
        let svc = lab.gw.replace("gw", "svc");
        run("ip", &["netns", "add", &svc]);
        lab.svc = Some(svc.clone());
        ip(&svc, "link set lo up");
        run(
            "ip",
            &[
                "-n", &lab.gw, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0",
                "netns", &svc,
            ],
        );
        ip(&lab.gw, "addr add 198.51.100.1/24 dev eth1");
        ip(&lab.gw, "link set eth1 up");
        ip(&svc, &format!("addr add {SVC_IP}/24 dev eth0"));
        ip(&svc, "link set eth0 up");
        ip(&svc, "route add default via 198.51.100.1");
        run(
            "ip",
            &[
                "netns",
                "exec",
                &lab.gw,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        );
        lab
    }

    /// The interceptor takes over the service's address on the path: `mitm`
    /// gets 198.51.100.10 and the gateway routes that address to it.
    pub fn intercept_service(&self) {
        ip(&self.mitm, &format!("addr replace {SVC_IP}/32 dev lo"));
        ip(
            &self.gw,
            &format!("route replace {SVC_IP}/32 via 192.0.2.66"),
        );
    }

    /// The path is back to the real service.
    pub fn restore_service(&self) {
        ip(&self.gw, &format!("route del {SVC_IP}/32 via 192.0.2.66"));
    }

    pub fn svc(&self) -> &str {
        self.svc.as_deref().expect("Lab::with_service")
    }

    pub fn host_mac(&self) -> String {
        let out = ip(&self.host, "-br link show eth0");
        out.split_whitespace().nth(2).expect("host mac").to_string()
    }

    /// `ip -n <ns> args...`
    pub fn ip(&self, ns: &str, args: &[&str]) -> String {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Makes the host resolve the gateway for real (ARP on the veth) and waits
    /// until its neighbour entry holds a MAC.
    pub fn resolve_gateway(&self, ip: &str) -> String {
        let target: std::net::SocketAddr = if ip.contains(':') {
            format!("[{ip}%2]:9")
                .parse()
                .unwrap_or_else(|_| format!("[{ip}]:9").parse().unwrap())
        } else {
            format!("{ip}:9").parse().unwrap()
        };
        let ip_owned = ip.to_string();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            in_netns(&self.host, move || {
                let bind = if target.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let s = std::net::UdpSocket::bind(bind).expect("udp bind");
                let _ = s.send_to(b"netsentry test", target);
            });
            std::thread::sleep(Duration::from_millis(100));
            let fam = if ip.contains(':') { "-6" } else { "-4" };
            let out = self.ip(
                &self.host,
                &[fam, "neigh", "show", &ip_owned, "dev", "eth0"],
            );
            if let Some(mac) = out.split_whitespace().skip_while(|w| *w != "lladdr").nth(1) {
                return mac.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "the host never resolved {ip}: {out}"
            );
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.host, &self.gw, &self.mitm, &self.lan]
            .into_iter()
            .chain(self.svc.as_ref())
        {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Parses "02:de:ad:be:ef:01".
pub fn mac_bytes(text: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (i, p) in text.split(':').enumerate() {
        out[i] = u8::from_str_radix(p, 16).expect("mac");
    }
    out
}

/// Sends one gratuitous ARP request from namespace `ns`: `ip` is at `mac`.
/// Built by hand and sent on an AF_PACKET socket, as an attacker would.
pub fn send_gratuitous_arp(ns: &str, iface: &str, ip: std::net::Ipv4Addr, mac: [u8; 6]) {
    send_frames(
        ns,
        iface,
        vec![netsentry::wire::build::gratuitous_arp(mac, ip)],
    );
}

/// Sends raw Ethernet frames from namespace `ns` on `iface`, as fast as the
/// socket takes them. Returns when all are sent.
pub fn send_frames(ns: &str, iface: &str, frames: Vec<Vec<u8>>) {
    let iface = std::ffi::CString::new(iface).unwrap();
    in_netns(ns, move || unsafe {
        let index = libc::if_nametoindex(iface.as_ptr());
        assert!(index > 0, "no interface {iface:?}");
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        for frame in &frames {
            addr.sll_addr[..6].copy_from_slice(&frame[..6]);
            loop {
                let n = libc::sendto(
                    fd,
                    frame.as_ptr() as *const libc::c_void,
                    frame.len(),
                    0,
                    &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                if n as usize == frame.len() {
                    break;
                }
                let err = std::io::Error::last_os_error();
                // A full transmit queue: wait a little and try again.
                assert_eq!(err.raw_os_error(), Some(libc::ENOBUFS), "send frame: {err}");
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        libc::close(fd);
    })
}

/// Sends an unsolicited IPv6 neighbour advertisement (router and override flags
/// set) from `ns`: `target` (a link-local address of that namespace) is at `mac`.
pub fn send_neighbour_advertisement(
    ns: &str,
    iface: &str,
    target: std::net::Ipv6Addr,
    mac: [u8; 6],
) {
    let iface = std::ffi::CString::new(iface).unwrap();
    in_netns(ns, move || unsafe {
        let index = libc::if_nametoindex(iface.as_ptr());
        let fd = libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6);
        assert!(
            fd >= 0,
            "raw icmpv6 socket: {}",
            std::io::Error::last_os_error()
        );
        let hops: libc::c_int = 255;
        libc::setsockopt(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_MULTICAST_HOPS,
            &hops as *const _ as *const libc::c_void,
            4,
        );
        let mut src: libc::sockaddr_in6 = std::mem::zeroed();
        src.sin6_family = libc::AF_INET6 as u16;
        src.sin6_addr.s6_addr = target.octets();
        src.sin6_scope_id = index;
        let rc = libc::bind(
            fd,
            &src as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in6>() as u32,
        );
        assert_eq!(rc, 0, "bind {target}: {}", std::io::Error::last_os_error());
        // ICMPv6 type 136, code 0, checksum (kernel fills it), flags R|O, target, option 2 (TLLA).
        let mut na = vec![136u8, 0, 0, 0, 0xa0, 0, 0, 0];
        na.extend_from_slice(&target.octets());
        na.extend_from_slice(&[2, 1]);
        na.extend_from_slice(&mac);
        let mut dst: libc::sockaddr_in6 = std::mem::zeroed();
        dst.sin6_family = libc::AF_INET6 as u16;
        dst.sin6_addr.s6_addr = "ff02::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
        dst.sin6_scope_id = index;
        let n = libc::sendto(
            fd,
            na.as_ptr() as *const libc::c_void,
            na.len(),
            0,
            &dst as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in6>() as u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(n as usize, na.len(), "send NA: {err}");
    })
}

/// One POST that reached the receiver.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Value,
    /// The body exactly as it arrived.
    pub raw: Vec<u8>,
}

/// A small real HTTP/1.1 server (keep-alive, Content-Length bodies) that records
/// every POST and answers with `status` (settable while running).
pub struct Receiver {
    pub port: u16,
    state: Arc<(Mutex<Vec<Received>>, Condvar)>,
    status: Arc<Mutex<u16>>,
}

impl Receiver {
    /// Listens on 127.0.0.1 inside namespace `ns`.
    pub fn start(ns: &str) -> Receiver {
        let listener = in_netns(ns, || {
            TcpListener::bind("127.0.0.1:0").expect("bind receiver")
        });
        let port = listener.local_addr().unwrap().port();
        let state: Arc<(Mutex<Vec<Received>>, Condvar)> = Arc::default();
        let status = Arc::new(Mutex::new(200u16));
        let (st, sc) = (state.clone(), status.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (st, sc) = (st.clone(), sc.clone());
                std::thread::spawn(move || serve(conn, st, sc));
            }
        });
        Receiver {
            port,
            state,
            status,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub fn set_status(&self, code: u16) {
        *self.status.lock().unwrap() = code;
    }

    pub fn all(&self) -> Vec<Received> {
        self.state.0.lock().unwrap().clone()
    }

    /// Waits for the first alert matching `pred`; panics with everything received on timeout.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Received {
        self.try_wait_for(timeout, pred).unwrap_or_else(|| {
            let got: Vec<String> = self.all().iter().map(|r| r.body.to_string()).collect();
            panic!(
                "no {what} within {timeout:?}; received:\n{}",
                got.join("\n")
            )
        })
    }

    pub fn try_wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Received> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.state;
        let mut got = lock.lock().unwrap();
        loop {
            if let Some(r) = got.iter().find(|r| pred(&r.body)) {
                return Some(r.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            got = cv.wait_timeout(got, deadline - now).unwrap().0;
        }
    }

    /// Waits for an alert of `kind` whose details match `pred`.
    pub fn wait_kind(&self, kind: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for(kind, timeout, |b| b["kind"] == kind && pred(&b["details"]))
            .body["details"]
            .clone()
    }

    /// The alerts that would page someone: every warning and critical.
    pub fn loud(&self) -> Vec<Value> {
        self.all()
            .into_iter()
            .map(|a| a.body)
            .filter(|b| b["severity"] != "info")
            .collect()
    }

    pub fn count_kind(&self, kind: &str) -> usize {
        self.all().iter().filter(|r| r.body["kind"] == kind).count()
    }
}

fn serve(conn: TcpStream, state: Arc<(Mutex<Vec<Received>>, Condvar)>, status: Arc<Mutex<u16>>) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut writer = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let at = Instant::now();
        let code = *status.lock().unwrap();
        if code / 100 == 2 {
            let raw = body;
            let body = serde_json::from_slice(&raw)
                .unwrap_or(Value::String(String::from_utf8_lossy(&raw).into_owned()));
            let (lock, cv) = &*state;
            lock.lock().unwrap().push(Received {
                at,
                path,
                headers,
                body,
                raw,
            });
            cv.notify_all();
        }
        let reply = format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\n\r\n");
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// The agent binary, running in a namespace; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Agent {
    pub child: Option<Child>,
    pub log: PathBuf,
}

/// The binary under test; benchmarks may point `NETSENTRY_AGENT_BINARY` at
/// another build (e.g. the previous release) to compare side by side.
pub fn agent_binary() -> String {
    std::env::var("NETSENTRY_AGENT_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_netsentry").to_string())
}

impl Agent {
    /// Starts `netsentry run -c config` inside namespace `ns`.
    pub fn start(ns: &str, config: &Path, log: &Path) -> Agent {
        Agent::start_with(
            &["nsenter", &format!("--net=/run/netns/{ns}"), "--"],
            config,
            log,
        )
    }

    /// Starts the agent behind a launcher (`nsenter ...`).
    pub fn start_with(launcher: &[&str], config: &Path, log: &Path) -> Agent {
        let logfile = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = Command::new(launcher[0])
            .args(&launcher[1..])
            .arg(agent_binary())
            .args(["run", "-c"])
            .arg(config)
            .env("NETSENTRY_LOG", "netsentry=debug")
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().unwrap())
            .stderr(logfile)
            .spawn()
            .expect("start netsentry");
        Agent {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// SIGTERM and wait; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the agent did not stop within 10 s of SIGTERM; log:\n{}",
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Ends the agent with SIGKILL (no agent_stopping, no clean-up) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// The ids of the alerts the agent printed (stderr lines end with `[id=...]`).
    pub fn alert_ids(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter_map(|l| {
                l.rsplit_once("[id=")
                    .map(|(_, id)| id.trim_end_matches(']').to_string())
            })
            .collect()
    }

    /// Waits until `what` appears `count` times in the agent's output.
    pub fn wait_for_log(&self, what: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log_text().matches(what).count() < count {
            assert!(
                Instant::now() < deadline,
                "no {count}x {what} in the log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            std::thread::sleep(Duration::from_millis(200));
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A lab whose host has resolved the gateway, a receiver on the host's loopback,
/// and a running agent that has announced itself.
pub struct Running {
    pub lab: Lab,
    pub receiver: Receiver,
    pub agent: Agent,
}

/// A lab whose host has resolved the gateway, a receiver, and the agent's
/// config file (not started yet); `None` (test skipped) without root.
pub fn prepare(extra_agent_config: &str) -> Option<(Lab, Receiver, PathBuf)> {
    if !have_root() {
        return None;
    }
    let lab = Lab::new();
    assert_eq!(lab.resolve_gateway(GW_IP), GW_MAC);
    let receiver = Receiver::start(&lab.host);
    let config = write_config(&lab, &receiver, extra_agent_config);
    Some((lab, receiver, config))
}

/// What the agent logs when a gateway learned at first sight is confirmed.
pub const CONFIRMED: &str = "answered the agent's probe first; confirmed";

/// Sets up a [`Running`] lab; `None` (test skipped) without root.
/// `extra_agent_config` goes into the `[agent]` section.
pub fn start_agent(extra_agent_config: &str) -> Option<Running> {
    let (lab, receiver, config) = prepare(extra_agent_config)?;
    let agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", Duration::from_secs(10), |_| true);
    // With the capture on, a frame sent before the gateway answered the
    // agent's first-sight probe is judged as a second MAC answering
    // (arp_gateway_conflict), not as a change: wait for the answer
    // (milliseconds; more on a loaded machine).
    let text = std::fs::read_to_string(&config).unwrap_or_default();
    if !text.contains("[arp]\nenabled = false") {
        agent.wait_for_log(CONFIRMED, 1);
    }
    Some(Running {
        lab,
        receiver,
        agent,
    })
}

/// Number of neighbour updates in a burst file.
pub const BURST_UPDATES: usize = 100_000;

/// Writes an `ip -batch` file: 1,000 permanent entries in 198.18.0.0/15 rewritten
/// 100 times (permanent entries are exempt from the neighbour table's gc limits),
/// with the gateway moved to `spoof_mac` halfway through.
pub fn write_burst(lab: &Lab, spoof_mac: &str) -> PathBuf {
    let mut text = String::with_capacity(8 << 20);
    for n in 0..BURST_UPDATES {
        if n == BURST_UPDATES / 2 {
            text.push_str(&format!(
                "neigh replace {GW_IP} lladdr {spoof_mac} dev eth0 nud reachable\n"
            ));
        }
        let (round, i) = (n / 1000, n % 1000);
        text.push_str(&format!(
            "neigh replace 198.18.{}.{} lladdr 02:00:00:{round:02x}:{:02x}:{:02x} dev eth0 nud permanent\n",
            i / 250,
            i % 250 + 1,
            i / 256,
            i % 256
        ));
    }
    let path = lab.path("burst.batch");
    std::fs::write(&path, text).expect("write burst");
    path
}

/// Writes a config for an agent in the lab: state in the lab's directory and
/// one webhook to `receiver`.
pub fn write_config(lab: &Lab, receiver: &Receiver, extra: &str) -> PathBuf {
    let path = lab.path("netsentry.toml");
    let text = format!(
        "[agent]\nhost_id = \"testhost\"\nstate_dir = \"{}\"\n{extra}\n[log]\njournald = \"off\"\n\n[[webhook]]\nurl = \"{}\"\ntimeout = \"2s\"\n",
        lab.path("state").display(),
        receiver.url()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// Writes frames (with their timestamps since the epoch) as a classic pcap file.
pub fn write_pcap(path: &Path, frames: &[(Duration, Vec<u8>)]) {
    use pcap_file::pcap::{PcapPacket, PcapWriter};
    let file = std::io::BufWriter::new(std::fs::File::create(path).expect("create pcap"));
    let mut w = PcapWriter::new(file).expect("pcap header");
    for (ts, data) in frames {
        w.write_packet(&PcapPacket::new(*ts, data.len() as u32, data))
            .expect("write packet");
    }
}

/// Writes frames as pcapng with one Ethernet interface named `interface`.
pub fn write_pcapng(path: &Path, interface: &str, frames: &[(Duration, Vec<u8>)]) {
    use pcap_file::DataLink;
    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::{
        InterfaceDescriptionBlock, InterfaceDescriptionOption,
    };
    let file = std::io::BufWriter::new(std::fs::File::create(path).expect("create pcapng"));
    let mut w = PcapNgWriter::new(file).expect("pcapng header");
    let mut idb = InterfaceDescriptionBlock::new(DataLink::ETHERNET, 65535);
    idb.options.push(InterfaceDescriptionOption::IfName(
        interface.to_string().into(),
    ));
    w.write_pcapng_block(idb).expect("write idb");
    for (ts, data) in frames {
        let epb = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: *ts,
            original_len: data.len() as u32,
            data: std::borrow::Cow::Borrowed(data),
            options: vec![],
        };
        w.write_pcapng_block(epb).expect("write packet");
    }
}

/// Runs `netsentry` with `args`: (exit code, stdout, stderr).
pub fn netsentry(args: &[&str]) -> (i32, String, String) {
    outcome(Command::new(agent_binary()).args(args))
}

/// `netsentry ARGS` run inside network namespace `ns`.
pub fn netsentry_in(ns: &str, args: &[&str]) -> (i32, String, String) {
    outcome(
        Command::new("ip")
            .args(["netns", "exec", ns, &agent_binary()])
            .args(args),
    )
}

/// Exit code, stdout and stderr of a command.
fn outcome(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run netsentry");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reproducible flood of ARP requests (random sender MACs, senders in
/// 192.0.2.100-249, never the gateway) with, at index `n / 2`, an ARP reply to
/// the host claiming the gateway from `spoof_mac`.
pub fn flood_frames(n: u32, spoof_mac: [u8; 6], host_mac: [u8; 6]) -> Vec<Vec<u8>> {
    use netsentry::wire::build;
    use std::net::Ipv4Addr;
    let gw: Ipv4Addr = GW_IP.parse().unwrap();
    let mut x: u32 = 0x2545_f491;
    (0..n)
        .map(|i| {
            if i == n / 2 {
                return build::arp(
                    spoof_mac,
                    host_mac,
                    true,
                    spoof_mac,
                    gw,
                    host_mac,
                    Ipv4Addr::new(192, 0, 2, 10),
                );
            }
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let mac = [
                0x02,
                (x >> 24) as u8,
                (x >> 16) as u8,
                (x >> 8) as u8,
                x as u8,
                i as u8,
            ];
            let ip = Ipv4Addr::new(192, 0, 2, 100 + (x % 150) as u8);
            build::arp(
                mac,
                [0xff; 6],
                false,
                mac,
                ip,
                [0; 6],
                Ipv4Addr::new(192, 0, 2, 254),
            )
        })
        .collect()
}

/// Appends TOML (a section, or keys of the last section) to a config file.
pub fn append_config(config: &Path, text: &str) {
    let mut all = std::fs::read_to_string(config).expect("read config");
    all.push_str(text);
    std::fs::write(config, all).expect("write config");
}

/// The Standard Webhooks test secret of SPEC.md.
pub const TEST_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// Writes [`TEST_SECRET`] to a file readable by its owner only.
pub fn write_secret(lab: &Lab) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = lab.path("webhook.key");
    std::fs::write(&path, format!("{TEST_SECRET}\n")).expect("write secret");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod secret");
    path
}

/// Sets the ICMPv6 checksum of a frame built by `wire::build::icmpv6` (the
/// receiving kernel checks it; the agent's parsers do not need it).
pub fn with_icmpv6_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    let ip = 14;
    let payload = ip + 40;
    let len = frame.len() - payload;
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += word as u32;
        }
    };
    add(&frame[ip + 8..ip + 40]); // source and destination
    add(&(len as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    frame[payload + 2] = 0;
    frame[payload + 3] = 0;
    add(&frame[payload..]);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let checksum = !(sum as u16);
    frame[payload + 2..payload + 4].copy_from_slice(&checksum.to_be_bytes());
    frame
}

/// A small tmpfs mounted on `dir` for the test, unmounted on drop (also when
/// the test fails).
pub struct SmallDisk(PathBuf);

impl SmallDisk {
    pub fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                dir.to_str().unwrap(),
            ],
        );
        SmallDisk(dir.to_path_buf())
    }

    /// Fills the disk to the last byte; returns the filler to remove.
    pub fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let one = [0u8; 1];
        while f.write_all(&one).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Creates `n` veth pairs named `{prefix}{i}`/`{prefix}p{i}` in `ns` (each end a `link_added`).
pub fn add_links(ns: &str, prefix: &str, n: usize) {
    for i in 0..n {
        ip(
            ns,
            &format!("link add {prefix}{i} type veth peer name {prefix}p{i}"),
        );
    }
}

/// A lab's agent with `state_dir` on a 256 KiB tmpfs, every link reported
/// (each new one an alert) and nothing coalesced; started and announced.
pub fn agent_on_a_small_disk(lab: &Lab, receiver: &Receiver) -> (SmallDisk, PathBuf, Agent) {
    let disk = SmallDisk::mount(&lab.path("state"), "256k");
    let config = write_config(
        lab,
        receiver,
        "ignore_links = []\ncoalesce_burst = 1000\nheartbeat_interval = \"0s\"",
    );
    let agent = Agent::start(&lab.host, &config, &lab.path("agent.log"));
    receiver.wait_kind("agent_started", Duration::from_secs(10), |_| true);
    // A delivery happened, so the cursor file exists before the disk fills.
    std::thread::sleep(Duration::from_millis(300));
    (disk, config, agent)
}

/// `link_added` alerts received for links whose name starts with `prefix`.
pub fn link_added(receiver: &Receiver, prefix: &str) -> usize {
    receiver
        .all()
        .iter()
        .filter(|r| {
            r.body["kind"] == "link_added"
                && r.body["details"]["interface"]
                    .as_str()
                    .is_some_and(|i| i.starts_with(prefix))
        })
        .count()
}

/// Sets the checksum of a 20-byte IPv4 header (a bridge with br_netfilter
/// drops frames whose header does not check out).
pub fn set_ipv4_header_checksum(header: &mut [u8]) {
    header[10..12].copy_from_slice(&[0, 0]);
    let sum: u32 = header[..20]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    let sum = (sum & 0xffff) + (sum >> 16);
    header[10..12].copy_from_slice(&(!((sum & 0xffff) + (sum >> 16)) as u16).to_be_bytes());
}

/// Creates and deletes `pairs` veth pairs (`{prefix}N` and `{prefix}pN`) in
/// namespace `ns` in a loop until `stop` is set; returns how many rounds ran.
pub fn churn_links(
    ns: String,
    prefix: &'static str,
    pairs: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    dir: std::path::PathBuf,
) -> std::thread::JoinHandle<usize> {
    use std::fmt::Write;
    let mut add = String::new();
    let mut del = String::new();
    for i in 0..pairs {
        let _ = writeln!(add, "link add {prefix}{i} type veth peer name {prefix}p{i}");
        let _ = writeln!(del, "link del {prefix}{i}");
    }
    let (add_file, del_file) = (
        dir.join(format!("{prefix}-add")),
        dir.join(format!("{prefix}-del")),
    );
    std::fs::write(&add_file, add).unwrap();
    std::fs::write(&del_file, del).unwrap();
    std::thread::spawn(move || {
        let mut rounds = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            for file in [&add_file, &del_file] {
                let _ = std::process::Command::new("ip")
                    .args(["-n", &ns, "-batch"])
                    .arg(file)
                    .output();
            }
            rounds += 1;
        }
        rounds
    })
}

/// Waits (up to 5 s) until a server in `ns` has bound the UDP `addr`: a
/// DNS server is ready once its port is taken.
pub fn wait_for_udp_port(ns: &str, addr: &'static str) {
    for _ in 0..100 {
        if in_netns(ns, move || std::net::UdpSocket::bind(addr).is_err()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Debian's dnsmasq as an authoritative-only DNS server on 127.0.0.1:5353 in
/// `ns` (no upstream, no /etc/hosts), answering for `--local` zones from
/// `records` (`--srv-host=...`, `--host-record=...`, `--dns-rr=...`);
/// stopped on drop.
pub struct Dnsmasq(std::process::Child);

impl Dnsmasq {
    pub fn start(ns: &str, records: &[String]) -> Dnsmasq {
        let child = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "dnsmasq",
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--user=root",
                "--group=root",
                "--pid-file=",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--port=5353",
            ])
            .args(records)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("dnsmasq (apt-get install dnsmasq-base)");
        wait_for_udp_port(ns, "127.0.0.1:5353");
        Dnsmasq(child)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An Ethernet frame carrying one IPv4 packet (`protocol`, TTL 64, valid
/// header checksum: a bridge with br_netfilter drops others).
pub fn ipv4_frame(
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    protocol: u8,
    (src, dst): ([u8; 4], [u8; 4]),
    payload: &[u8],
) -> Vec<u8> {
    let mut f = eth_dst.to_vec();
    f.extend_from_slice(&eth_src);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ipv4 = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, protocol, 0, 0];
    ipv4.extend_from_slice(&src);
    ipv4.extend_from_slice(&dst);
    let total = (ipv4.len() + payload.len()) as u16;
    ipv4[2..4].copy_from_slice(&total.to_be_bytes());
    set_ipv4_header_checksum(&mut ipv4);
    f.extend(ipv4);
    f.extend_from_slice(payload);
    f
}
