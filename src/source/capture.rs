//! Packet capture: one AF_PACKET socket for all interfaces, with a classic BPF
//! filter attached so that the kernel only hands over ARP and ICMPv6 neighbour
//! discovery (types 133-137), tagged (802.1Q/802.1ad) or not. Everything else —
//! a server's real traffic — never leaves the kernel.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sys::socket::{LinkAddr, recvfrom};

use super::sys;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// One captured frame.
#[derive(Debug, Clone)]
pub struct CapturedFrame {
    pub ifindex: u32,
    pub time: DateTime<Utc>,
    pub data: Vec<u8>,
}

/// What the capture thread reports.
#[derive(Debug)]
pub enum CaptureEvent {
    Frames(Vec<CapturedFrame>),
    /// Cumulative kernel counters: frames that passed the filter, frames the
    /// kernel dropped because the socket buffer was full.
    Stats {
        packets: u64,
        drops: u64,
    },
    Failed(String),
}

/// Largest frame kept (ARP is 42 bytes, NDP with options a few hundred).
const SNAPLEN: usize = 2048;
const MAX_BATCH: usize = 1024;

// Classic BPF opcodes (linux/filter.h).
const LDH_ABS: u16 = 0x28;
const LDB_ABS: u16 = 0x30;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JGT_K: u16 = 0x25;
const RET_K: u16 = 0x06;

enum Op {
    Ldh(u32),
    Ldb(u32),
    /// Compare with k; go to the named labels (or fall through with `None`).
    Jump(u16, u32, Option<&'static str>, Option<&'static str>),
    Ret(u32),
    Label(&'static str),
}

/// Checks the ethertype at `offset` (12 untagged, 16 one tag, 20 two tags) for
/// ARP, or IPv6 + ICMPv6 + type 133..=137.
fn branch(offset: u32, name: &'static str) -> Vec<Op> {
    use Op::*;
    vec![
        Label(name),
        Ldh(offset),
        Jump(JEQ_K, 0x0806, Some("accept"), None),
        Jump(JEQ_K, 0x86dd, None, Some("reject")),
        Ldb(offset + 2 + 6),
        Jump(JEQ_K, 58, None, Some("reject")),
        Ldb(offset + 2 + 40),
        Jump(JGE_K, 133, None, Some("reject")),
        Jump(JGT_K, 137, Some("reject"), Some("accept")),
    ]
}

/// The filter program, assembled from labels into `sock_filter`s.
pub fn filter_program() -> Vec<libc::sock_filter> {
    use Op::*;
    let mut ops = vec![
        Ldh(12),
        Jump(JEQ_K, 0x8100, Some("tag1"), None),
        Jump(JEQ_K, 0x88a8, Some("tag1"), Some("plain")),
    ];
    ops.extend(branch(12, "plain"));
    ops.push(Label("tag1"));
    ops.push(Ldh(16));
    ops.push(Jump(JEQ_K, 0x8100, Some("tagged2"), Some("tagged1")));
    ops.extend(branch(16, "tagged1"));
    ops.extend(branch(20, "tagged2"));
    ops.extend([
        Label("accept"),
        Ret(SNAPLEN as u32),
        Label("reject"),
        Ret(0),
    ]);

    let mut positions = std::collections::HashMap::new();
    let mut pc = 0usize;
    for op in &ops {
        match op {
            Label(l) => {
                positions.insert(*l, pc);
            }
            _ => pc += 1,
        }
    }
    let mut out = Vec::new();
    for op in &ops {
        let here = out.len();
        let rel = |target: &Option<&'static str>| -> u8 {
            target.map(|l| (positions[l] - here - 1) as u8).unwrap_or(0)
        };
        let ins = match op {
            Label(_) => continue,
            Ldh(k) => libc::sock_filter {
                code: LDH_ABS,
                jt: 0,
                jf: 0,
                k: *k,
            },
            Ldb(k) => libc::sock_filter {
                code: LDB_ABS,
                jt: 0,
                jf: 0,
                k: *k,
            },
            Jump(code, k, jt, jf) => libc::sock_filter {
                code: *code,
                jt: rel(jt),
                jf: rel(jf),
                k: *k,
            },
            Ret(k) => libc::sock_filter {
                code: RET_K,
                jt: 0,
                jf: 0,
                k: *k,
            },
        };
        out.push(ins);
    }
    out
}

/// Opens the capture socket. Fails with `PermissionDenied` without CAP_NET_RAW.
/// Non-blocking: the loop waits in `poll` and drains until the queue is empty.
pub fn open(receive_buffer: usize) -> io::Result<OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    // Protocol 0 first: no frame is queued before the filter is in place.
    let fd = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| {
        let e = io::Error::from(e);
        io::Error::new(e.kind(), format!("AF_PACKET socket: {e}"))
    })?;
    sys::attach_filter(fd.as_fd(), &filter_program())?;
    super::set_receive_buffer(&fd, receive_buffer);
    sys::bind_all_interfaces(fd.as_fd())?;
    Ok(fd)
}

/// Runs the capture on the calling thread until the receiver goes away.
/// Blocks in `poll`; reports the kernel counters every `stats_every`.
pub fn run(
    tx: tokio::sync::mpsc::Sender<CaptureEvent>,
    stats_every: Duration,
    receive_buffer: usize,
) {
    let fd = match open(receive_buffer) {
        Ok(fd) => fd,
        Err(e) => {
            let why = if e.kind() == io::ErrorKind::PermissionDenied {
                format!("packet capture needs CAP_NET_RAW ({e}); running on netlink alone")
            } else {
                format!("packet capture is not available ({e}); running on netlink alone")
            };
            let _ = tx.blocking_send(CaptureEvent::Failed(why));
            return;
        }
    };
    let (mut packets, mut drops) = (0u64, 0u64);
    let mut next_stats = Instant::now() + stats_every;
    let mut buf = vec![0u8; SNAPLEN];
    loop {
        let wait = next_stats.saturating_duration_since(Instant::now());
        let ready = match super::wait_readable(&fd, wait) {
            Ok(ready) => ready,
            Err(e) => {
                let _ = tx.blocking_send(CaptureEvent::Failed(format!(
                    "poll on the capture socket failed: {e}"
                )));
                return;
            }
        };
        if Instant::now() >= next_stats {
            if let Some((p, d)) = sys::packet_statistics(fd.as_fd()) {
                packets += p;
                drops += d;
            }
            if tx
                .blocking_send(CaptureEvent::Stats { packets, drops })
                .is_err()
            {
                return;
            }
            next_stats = Instant::now() + stats_every;
        }
        if !ready {
            continue;
        }
        let mut batch = Vec::new();
        while batch.len() < MAX_BATCH {
            let (n, addr) = match recvfrom::<LinkAddr>(fd.as_raw_fd(), &mut buf) {
                Ok((n, Some(addr))) => (n, addr),
                Ok((_, None)) => continue,
                Err(_) => break, // EAGAIN: drained (or an error poll will report)
            };
            // Our own frames tell nothing about the network.
            if addr.pkttype() == libc::PACKET_OUTGOING {
                continue;
            }
            batch.push(CapturedFrame {
                ifindex: addr.ifindex() as u32,
                time: Utc::now(),
                data: buf[..n].to_vec(),
            });
        }
        if !batch.is_empty() && tx.blocking_send(CaptureEvent::Frames(batch)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic BPF interpreter for the opcodes the filter uses, to test the
    /// program without a socket.
    fn run_filter(program: &[libc::sock_filter], pkt: &[u8]) -> u32 {
        let mut a: u32 = 0;
        let mut pc = 0;
        while pc < program.len() {
            let i = program[pc];
            pc += 1;
            match i.code {
                LDH_ABS => match pkt.get(i.k as usize..i.k as usize + 2) {
                    Some(b) => a = u16::from_be_bytes([b[0], b[1]]) as u32,
                    None => return 0,
                },
                LDB_ABS => match pkt.get(i.k as usize) {
                    Some(b) => a = *b as u32,
                    None => return 0,
                },
                JEQ_K | JGE_K | JGT_K => {
                    let taken = match i.code {
                        JEQ_K => a == i.k,
                        JGE_K => a >= i.k,
                        _ => a > i.k,
                    };
                    pc += if taken { i.jt as usize } else { i.jf as usize };
                }
                RET_K => return i.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
        panic!("fell off the end of the program");
    }

    #[test]
    fn the_filter_passes_arp_and_ndp_only() {
        use crate::wire::build;
        let p = filter_program();
        let m = [2, 0, 0, 0, 0, 1];
        let arp = build::gratuitous_arp(m, "192.0.2.1".parse().unwrap());
        let ll: std::net::Ipv6Addr = "fe80::1".parse().unwrap();
        let na = build::icmpv6(m, m, ll, ll, &build::na_body(ll, false, false, true, m));
        let ra = build::icmpv6(m, m, ll, ll, &build::ra_body(m, 10));
        let mut echo = build::icmpv6(m, m, ll, ll, &[128, 0, 0, 0, 0, 0, 0, 0]);
        for f in [
            &arp,
            &na,
            &ra,
            &build::tagged(&arp, 5),
            &build::tagged(&na, 5),
            &build::tagged(&build::tagged(&ra, 1), 2),
        ] {
            assert_eq!(run_filter(&p, f), SNAPLEN as u32);
        }
        assert_eq!(
            run_filter(&p, &echo),
            0,
            "ICMPv6 echo is not neighbour discovery"
        );
        echo[20] = 6; // TCP over IPv6
        assert_eq!(run_filter(&p, &echo), 0);
        let mut ipv4 = arp.clone();
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(run_filter(&p, &ipv4), 0);
        assert_eq!(run_filter(&p, &build::tagged(&ipv4, 9)), 0);
        assert_eq!(run_filter(&p, &[0u8; 4]), 0, "short frames are rejected");
    }
}
