//! Packet capture: one AF_PACKET socket for all interfaces, with a classic BPF
//! filter attached so that the kernel only hands over ARP, ICMPv6 neighbour
//! discovery (types 133-137, also behind extension headers or in a first
//! fragment), IPv4 ICMP redirects and VRRP advertisements (IP protocol 112,
//! IPv4 and IPv6), tagged (802.1Q/802.1ad) or not; and,
//! when a [`SynFilter`] names ports, the headers of TCP SYNs (SYN without
//! ACK) to them, IPv4 and IPv6, sampled in the kernel at the rate it says.
//! Everything else — a server's real traffic — never leaves the kernel.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

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
        /// SYNs handed over (after sampling).
        syns: u64,
        /// SYNs the kernel dropped on the SYN socket (a full buffer).
        syn_drops: u64,
        /// The SYN sampling now: kept in 65,536.
        syn_keep: u32,
    },
    Failed(String),
}

/// Largest frame kept (ARP is 42 bytes, NDP with options a few hundred).
const SNAPLEN: usize = 2048;
const MAX_BATCH: usize = 1024;

// Classic BPF opcodes (linux/filter.h).
const LDH_ABS: u16 = 0x28;
const LDH_IND: u16 = 0x48;
const LDB_IND: u16 = 0x50;
const LD_MEM: u16 = 0x60;
const LDX_IMM: u16 = 0x01;
const ST: u16 = 0x02;
const ADD_K: u16 = 0x04;
const ADD_X: u16 = 0x0c;
const AND_K: u16 = 0x54;
const LSH_K: u16 = 0x64;
const TAX: u16 = 0x07;
const TXA: u16 = 0x87;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JGT_K: u16 = 0x25;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;
const LD_W_ABS: u16 = 0x20;
/// `SKF_AD_OFF + SKF_AD_RANDOM`: a load from here gives a random u32.
const AD_RANDOM: u32 = 0xffff_f000 + 56;

/// Bytes kept of a SYN: Ethernet with two tags, the largest IPv4 header, and
/// the largest TCP header (IPv6 with extension headers may lose some options).
pub const SYN_SNAPLEN: u32 = 22 + 60 + 60;
/// Ports whose SYNs the filter can pass (the comparisons are unrolled; more
/// would push its jumps past their 255-instruction reach).
pub const MAX_SYN_PORTS: usize = 64;

/// Which SYNs the filter passes: to these ports, and of those `keep` in
/// 65,536 (65,536: all). No ports: none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SynFilter {
    pub ports: Vec<u16>,
    pub keep: u32,
    /// Pass only the SYNs (the agent's second socket), not ARP and NDP.
    pub only_syns: bool,
}

impl SynFilter {
    /// All SYNs to `ports` (at most [`MAX_SYN_PORTS`], the lowest kept).
    pub fn all(mut ports: Vec<u16>) -> SynFilter {
        ports.sort_unstable();
        ports.dedup();
        ports.truncate(MAX_SYN_PORTS);
        SynFilter {
            ports,
            keep: 1 << 16,
            only_syns: false,
        }
    }
}

/// IPv6 extension headers walked before giving up (RA-Guard evasion, RFC
/// 7113, stacks a few; more than this is rejected).
const MAX_EXTENSION_HEADERS: usize = 4;

enum Op {
    Ldh(u32),
    /// Half word / byte at X + k.
    LdhInd(u32),
    LdbInd(u32),
    /// A = M[k], M[k] = A.
    LdMem(u32),
    St(u32),
    /// X = k.
    LdxImm(u32),
    /// A = A + k, A = A + X, A = A & k, A = A << k.
    AddK(u32),
    AddX,
    AndK(u32),
    LshK(u32),
    /// X = A, A = X.
    Tax,
    Txa,
    /// A = the random ancillary value.
    LdRandom,
    /// Compare with k; go to the named labels (or fall through with `None`).
    Jump(u16, u32, Option<&'static str>, Option<&'static str>),
    Ret(u32),
    Label(&'static str),
}

/// An unconditional jump (both branches of a comparison to `label`).
fn goto(label: &'static str) -> Op {
    Op::Jump(JEQ_K, 0, Some(label), Some(label))
}

/// The labels of the extension-header walk, one set per step (the program has
/// no loops: the walk is unrolled).
const EXT_LABELS: [(&str, &str, &str); MAX_EXTENSION_HEADERS + 1] = [
    ("next0", "ext0", "frag0"),
    ("next1", "ext1", "frag1"),
    ("next2", "ext2", "frag2"),
    ("next3", "ext3", "frag3"),
    ("next4", "ext4", "frag4"),
];

/// Keeps the SYNs the filter hands over under a budget per second: when the
/// rate that passed is above it, `keep` is cut to fit (a SYN flood costs the
/// agent a bounded amount, sampling keeps the distributions representative);
/// when the rate at full `keep` would be well under it again, `keep` doubles
/// back (hysteresis: no flapping at a steady rate near the budget).
#[derive(Clone, Debug)]
pub struct SynBudget {
    per_second: u32,
    keep: u32,
}

impl SynBudget {
    /// All SYNs pass until more than `per_second` arrive.
    pub fn new(per_second: u32) -> SynBudget {
        SynBudget {
            per_second: per_second.max(1),
            keep: 1 << 16,
        }
    }

    /// The filter's `keep` now.
    pub fn keep(&self) -> u32 {
        self.keep
    }

    /// `passed` SYNs came through the filter in `elapsed`; returns the new
    /// `keep` when the filter should be re-attached with it.
    pub fn update(&mut self, passed: u64, elapsed: Duration) -> Option<u32> {
        let secs = elapsed.as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        let rate = passed as f64 / secs;
        let budget = f64::from(self.per_second);
        let next = if rate > budget {
            // Cut to fit, to a power of two (fewer distinct programs).
            let fit = (f64::from(self.keep) * budget / rate).max(1.0) as u32;
            1 << (31 - fit.max(1).leading_zeros())
        } else if self.keep < 1 << 16 && rate * 4.0 < budget {
            self.keep * 2
        } else {
            return None;
        };
        (next != self.keep).then(|| {
            self.keep = next;
            next
        })
    }
}

/// The filter program: ARP; ICMPv6 neighbour discovery (types 133..=137, also
/// behind up to four hop-by-hop, destination-options or routing headers, and
/// in a first fragment); IPv4 ICMP redirects (type 5, first fragments);
/// untagged or under one or two VLAN tags. X holds where the current header
/// starts; M[0] the next header's protocol number. (~110 lines on purpose:
/// the program is listed one instruction per line, in the order it runs.)
fn program_ops(syn: &SynFilter) -> Vec<Op> {
    use Op::*;
    let syns = !syn.ports.is_empty();
    let mut ops = vec![
        // Where the ethertype is: 12, 16 or 20 (802.1Q / 802.1ad tags).
        Ldh(12),
        Jump(JEQ_K, 0x8100, Some("tag1"), None),
        Jump(JEQ_K, 0x88a8, Some("tag1"), None),
        LdxImm(12),
        goto("ethertype"),
        Label("tag1"),
        Ldh(16),
        Jump(JEQ_K, 0x8100, Some("tag2"), None),
        LdxImm(16),
        goto("ethertype"),
        Label("tag2"),
        LdxImm(20),
        Label("ethertype"),
        LdhInd(0),
        Jump(JEQ_K, 0x0806, Some("accept"), None),
        Jump(JEQ_K, 0x86dd, Some("ipv6"), None),
        Jump(JEQ_K, 0x0800, None, Some("reject")),
        // IPv4: a first fragment; ICMP (1) type 5 (redirect), VRRP (112) or TCP (6).
        Txa,
        AddK(2),
        Tax,
        LdhInd(6),
        Jump(JSET_K, 0x1fff, Some("reject"), None),
        LdbInd(9),
        St(0),
        LdbInd(0),
        AndK(0x0f),
        LshK(2),
        AddX,
        Tax,
        LdMem(0),
        Jump(JEQ_K, 6, Some(if syns { "tcp" } else { "reject" }), None),
        Jump(JEQ_K, 112, Some("accept"), None),
        Jump(JEQ_K, 1, None, Some("reject")),
        LdbInd(0),
        Jump(JEQ_K, 5, Some("accept"), Some("reject")),
        // IPv6: the next header, then X past the fixed header.
        Label("ipv6"),
        Txa,
        AddK(2),
        Tax,
        LdbInd(6),
        St(0),
        Txa,
        AddK(40),
        Tax,
        LdMem(0),
    ];
    for (step, (next, ext, frag)) in EXT_LABELS.iter().enumerate() {
        let last = step == MAX_EXTENSION_HEADERS;
        ops.push(Label(next));
        ops.push(Jump(JEQ_K, 58, Some("icmpv6"), None));
        if step == 0 {
            // VRRP (RFC 5798), right after the fixed header.
            ops.push(Jump(JEQ_K, 112, Some("accept"), None));
        }
        if syns {
            ops.push(Jump(JEQ_K, 6, Some("tcp"), None));
        }
        if last {
            ops.push(goto("reject"));
            break;
        }
        ops.extend([
            Jump(JEQ_K, 0, Some(ext), None),
            Jump(JEQ_K, 60, Some(ext), None),
            Jump(JEQ_K, 43, Some(ext), None),
            Jump(JEQ_K, 44, Some(frag), Some("reject")),
            // Hop-by-hop, destination options, routing: (length + 1) * 8 bytes.
            Label(ext),
            LdbInd(0),
            St(0),
            LdbInd(1),
            AddK(1),
            LshK(3),
            AddX,
            Tax,
            LdMem(0),
            goto(EXT_LABELS[step + 1].0),
            // Fragment: 8 bytes; only a first fragment holds the ICMPv6 header.
            Label(frag),
            LdhInd(2),
            Jump(JSET_K, 0xfff8, Some("reject"), None),
            LdbInd(0),
            St(0),
            Txa,
            AddK(8),
            Tax,
            LdMem(0),
            goto(EXT_LABELS[step + 1].0),
        ]);
    }
    ops.extend([
        Label("icmpv6"),
        LdbInd(0),
        Jump(JGE_K, 133, None, Some("reject")),
        Jump(JGT_K, 137, Some("reject"), Some("accept")),
    ]);
    if syns {
        // TCP, X at its header: SYN without ACK, to one of the ports, sampled.
        ops.extend([
            Label("tcp"),
            LdbInd(13),
            Jump(JSET_K, 0x10, Some("reject"), None),
            Jump(JSET_K, 0x02, None, Some("reject")),
            LdhInd(2),
        ]);
        ops.extend(
            syn.ports
                .iter()
                .map(|p| Jump(JEQ_K, u32::from(*p), Some("sample"), None)),
        );
        ops.extend([goto("reject"), Label("sample")]);
        if syn.keep < 1 << 16 {
            ops.extend([
                LdRandom,
                AndK(0xffff),
                Jump(JGE_K, syn.keep, Some("reject"), None),
            ]);
        }
        ops.push(Ret(SYN_SNAPLEN));
    }
    ops.extend([
        Label("accept"),
        Ret(if syn.only_syns { 0 } else { SNAPLEN as u32 }),
        Label("reject"),
        Ret(0),
    ]);
    ops
}

/// The filter program, assembled from labels into `sock_filter`s.
pub fn filter_program(syn: &SynFilter) -> Vec<libc::sock_filter> {
    use Op::*;
    let ops = program_ops(syn);
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
    let plain = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let mut out = Vec::new();
    for op in &ops {
        let here = out.len();
        // Every jump is forward and within reach: [`MAX_SYN_PORTS`] keeps
        // the program short enough (a test checks the longest program).
        let rel = |target: &Option<&'static str>| -> u8 {
            target
                .map(|l| u8::try_from(positions[l] - here - 1).unwrap_or(u8::MAX))
                .unwrap_or(0)
        };
        let ins = match op {
            Label(_) => continue,
            Ldh(k) => libc::sock_filter {
                code: LDH_ABS,
                jt: 0,
                jf: 0,
                k: *k,
            },
            LdhInd(k) => plain(LDH_IND, *k),
            LdbInd(k) => plain(LDB_IND, *k),
            LdMem(k) => plain(LD_MEM, *k),
            St(k) => plain(ST, *k),
            LdxImm(k) => plain(LDX_IMM, *k),
            AddK(k) => plain(ADD_K, *k),
            AddX => plain(ADD_X, 0),
            AndK(k) => plain(AND_K, *k),
            LshK(k) => plain(LSH_K, *k),
            Tax => plain(TAX, 0),
            Txa => plain(TXA, 0),
            LdRandom => plain(LD_W_ABS, AD_RANDOM),
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
    open_with(receive_buffer, &SynFilter::default())
}

/// [`open`], passing the SYNs `syn` names too.
pub fn open_with(receive_buffer: usize, syn: &SynFilter) -> io::Result<OwnedFd> {
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
    sys::attach_filter(fd.as_fd(), &filter_program(syn))?;
    sys::enable_auxdata(fd.as_fd())?;
    super::set_receive_buffer(&fd, receive_buffer);
    sys::bind_all_interfaces(fd.as_fd())?;
    Ok(fd)
}

/// How often the SYN socket is read (and its rate measured against the
/// budget). SYNs are not urgent: read in bulk ten times a second, they cost
/// the agent one wake-up per tenth of a second instead of one per connection;
/// ARP and NDP come on their own socket, read at once.
const SYN_READ_EVERY: Duration = Duration::from_millis(100);
/// SYN frames taken per read of the SYN socket at most (the rest waits).
const MAX_SYN_BATCH: usize = 8192;

/// What the agent tells a running capture.
#[derive(Debug)]
pub enum CaptureControl {
    /// Pass the SYNs to these ports (none: no SYNs).
    SynPorts(Vec<u16>),
    /// The interfaces watched (by index): the capture joins the VRRP
    /// multicast groups on them, so that a NIC's multicast filter passes
    /// the advertisements up.
    Interfaces(Vec<u32>),
}

/// The Ethernet groups of VRRP advertisements: 224.0.0.18 and ff02::12.
const VRRP_GROUPS: [[u8; 6]; 2] = [
    [0x01, 0x00, 0x5e, 0x00, 0x00, 0x12],
    [0x33, 0x33, 0x00, 0x00, 0x00, 0x12],
];

/// Interfaces whose VRRP groups are joined at most (one membership per
/// interface and group).
const MAX_JOINED: usize = 256;

/// Joins the VRRP groups on the interfaces in `wanted` not joined yet and
/// leaves those no longer wanted. An interface that refuses (no multicast,
/// gone meanwhile) is logged and left out.
fn join_vrrp_groups(fd: BorrowedFd<'_>, joined: &mut Vec<u32>, wanted: &[u32]) {
    for &ifindex in joined.iter().filter(|i| !wanted.contains(i)) {
        for group in VRRP_GROUPS {
            let _ = sys::multicast_membership(fd, ifindex, group, false);
        }
    }
    joined.retain(|i| wanted.contains(i));
    for &ifindex in wanted {
        if joined.contains(&ifindex) {
            continue;
        }
        if joined.len() >= MAX_JOINED {
            break;
        }
        let result: io::Result<()> = VRRP_GROUPS
            .iter()
            .try_for_each(|g| sys::multicast_membership(fd, ifindex, *g, true));
        match result {
            Ok(()) => joined.push(ifindex),
            Err(e) => tracing::debug!("interface {ifindex}: VRRP groups not joined ({e})"),
        }
    }
}

/// The capture thread's settings.
#[derive(Clone, Copy, Debug)]
pub struct CaptureSettings {
    pub stats_every: Duration,
    pub receive_buffer: usize,
    /// SYNs per second handed over at most (the filter samples beyond it).
    pub max_syn_rate: u32,
}

/// Runs the capture on the calling thread until the receiver goes away: one
/// socket for ARP/NDP/redirects (read as soon as a frame is there), one for
/// the SYNs to the watched ports (read every [`SYN_READ_EVERY`], sampled in
/// the kernel so that at most `max_syn_rate` per second are handed over).
/// Reports the kernel counters every `stats_every`.
pub fn run(
    tx: tokio::sync::mpsc::Sender<CaptureEvent>,
    control: std::sync::mpsc::Receiver<CaptureControl>,
    settings: CaptureSettings,
) {
    let mut filter = SynFilter {
        only_syns: true,
        ..SynFilter::default()
    };
    let sockets = open(settings.receive_buffer)
        .and_then(|n| Ok((n, open_with(settings.receive_buffer, &filter)?)));
    let (fd, syn_fd) = match sockets {
        Ok(fds) => fds,
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
    let mut joined = Vec::new();
    let mut budget = SynBudget::new(settings.max_syn_rate);
    let mut counts = Counts::default();
    let mut next_stats = Instant::now() + settings.stats_every;
    let mut syn_read = Instant::now();
    let mut buf = vec![0u8; SNAPLEN];
    loop {
        let mut refilter = false;
        loop {
            match control.try_recv() {
                Ok(CaptureControl::Interfaces(indexes)) => {
                    join_vrrp_groups(fd.as_fd(), &mut joined, &indexes);
                }
                Ok(CaptureControl::SynPorts(ports)) => {
                    let next = SynFilter {
                        keep: budget.keep(),
                        only_syns: true,
                        ..SynFilter::all(ports)
                    };
                    refilter |= next != filter;
                    filter = next;
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
            }
        }
        if refilter && let Err(e) = sys::attach_filter(syn_fd.as_fd(), &filter_program(&filter)) {
            let _ = tx.blocking_send(CaptureEvent::Failed(format!(
                "packet capture: the SYN filter could not be replaced: {e}"
            )));
            return;
        }
        let syns_due = !filter.ports.is_empty() && Instant::now() >= syn_read;
        // The SYN socket is waited on only when it is due.
        let wake = match filter.ports.is_empty() || syns_due {
            true => next_stats,
            false => next_stats.min(syn_read),
        };
        let wait = wake.saturating_duration_since(Instant::now());
        let ready =
            match super::wait_any_readable(&[&fd, &syn_fd][..if syns_due { 2 } else { 1 }], wait) {
                Ok(ready) => ready,
                Err(e) => {
                    let _ = tx.blocking_send(CaptureEvent::Failed(format!(
                        "poll on the capture socket failed: {e}"
                    )));
                    return;
                }
            };
        if Instant::now() >= next_stats {
            for (socket, drops) in [(&fd, &mut counts.drops), (&syn_fd, &mut counts.syn_drops)] {
                if let Some((p, d)) = sys::packet_statistics(socket.as_fd()) {
                    counts.packets += p;
                    *drops += d;
                }
            }
            let stats = CaptureEvent::Stats {
                packets: counts.packets,
                drops: counts.drops,
                syns: counts.syns,
                syn_drops: counts.syn_drops,
                syn_keep: filter.keep,
            };
            if tx.blocking_send(stats).is_err() {
                return;
            }
            next_stats = Instant::now() + settings.stats_every;
        }
        let mut batch = Vec::new();
        if ready.first() == Some(&true) {
            drain(&fd, &mut buf, &mut batch, MAX_BATCH);
        }
        if ready.get(1) == Some(&true) {
            let before = batch.len();
            drain(&syn_fd, &mut buf, &mut batch, MAX_SYN_BATCH);
            let taken = (batch.len() - before) as u64;
            counts.syns += taken;
            let now = Instant::now();
            // The rate since the last read against the budget.
            let elapsed = now.saturating_duration_since(syn_read) + SYN_READ_EVERY;
            if let Some(keep) = budget.update(taken, elapsed) {
                filter.keep = keep;
                if let Err(e) = sys::attach_filter(syn_fd.as_fd(), &filter_program(&filter)) {
                    tracing::warn!("packet capture: the SYN sampling could not be changed: {e}");
                }
            }
            syn_read = now + SYN_READ_EVERY;
        } else if syns_due {
            // Nothing came: the budget may double back.
            if let Some(keep) = budget.update(0, SYN_READ_EVERY) {
                filter.keep = keep;
                let _ = sys::attach_filter(syn_fd.as_fd(), &filter_program(&filter));
            }
            syn_read = Instant::now() + SYN_READ_EVERY;
        }
        if !batch.is_empty() && tx.blocking_send(CaptureEvent::Frames(batch)).is_err() {
            return;
        }
    }
}

/// Reads frames from `fd` into `batch` until it is empty or `max` were taken;
/// the host's own frames are skipped (they tell nothing about the network).
fn drain(fd: &OwnedFd, buf: &mut [u8], batch: &mut Vec<CapturedFrame>, max: usize) {
    let mut taken = 0;
    while taken < max {
        let Some(meta) = sys::recv_frame(fd.as_fd(), buf) else {
            break; // EAGAIN: drained (or an error poll will report)
        };
        taken += 1;
        if meta.pkttype == libc::PACKET_OUTGOING {
            continue;
        }
        let n = meta.len.min(buf.len());
        let data = match meta.vlan_tci {
            // The kernel took the 802.1Q tag off into the metadata: put it
            // back, so the frame says which segment it belongs to (as in a
            // capture file).
            Some(tci) if n >= 12 => {
                let mut d = Vec::with_capacity(n + 4);
                d.extend_from_slice(&buf[..12]);
                d.extend_from_slice(&[0x81, 0x00]);
                d.extend_from_slice(&tci.to_be_bytes());
                d.extend_from_slice(&buf[12..n]);
                d
            }
            _ => buf[..n].to_vec(),
        };
        batch.push(CapturedFrame {
            ifindex: meta.ifindex,
            time: Utc::now(),
            data,
        });
    }
}

/// The capture's running totals.
#[derive(Default)]
struct Counts {
    packets: u64,
    drops: u64,
    syns: u64,
    syn_drops: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic BPF interpreter for the opcodes the filter uses, to test the
    /// program without a socket.
    fn run_filter(program: &[libc::sock_filter], pkt: &[u8]) -> u32 {
        run_filter_seeded(program, pkt, 0)
    }

    /// [`run_filter`] with the random ancillary load answering `random`.
    fn run_filter_seeded(program: &[libc::sock_filter], pkt: &[u8], random: u32) -> u32 {
        let (mut a, mut x): (u32, u32) = (0, 0);
        let mut mem = [0u32; 16];
        let mut pc = 0;
        while pc < program.len() {
            let i = program[pc];
            pc += 1;
            match i.code {
                LDH_ABS => match pkt.get(i.k as usize..i.k as usize + 2) {
                    Some(b) => a = u16::from_be_bytes([b[0], b[1]]) as u32,
                    None => return 0,
                },
                LDH_IND => match pkt.get((x + i.k) as usize..(x + i.k) as usize + 2) {
                    Some(b) => a = u16::from_be_bytes([b[0], b[1]]) as u32,
                    None => return 0,
                },
                LDB_IND => match pkt.get((x + i.k) as usize) {
                    Some(b) => a = *b as u32,
                    None => return 0,
                },
                LD_W_ABS if i.k == AD_RANDOM => a = random,
                LD_MEM => a = mem[i.k as usize],
                ST => mem[i.k as usize] = a,
                LDX_IMM => x = i.k,
                ADD_K => a = a.wrapping_add(i.k),
                ADD_X => a = a.wrapping_add(x),
                AND_K => a &= i.k,
                LSH_K => a <<= i.k,
                TAX => x = a,
                TXA => a = x,
                JEQ_K | JGE_K | JGT_K | JSET_K => {
                    let taken = match i.code {
                        JEQ_K => a == i.k,
                        JGE_K => a >= i.k,
                        JSET_K => a & i.k != 0,
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
    fn syns_to_the_chosen_ports_pass_with_their_headers_only() {
        use crate::wire::build::{self, LINUX_SYN_OPTIONS as O};
        let none = filter_program(&SynFilter::default());
        let p = filter_program(&SynFilter::all(vec![5222, 22]));
        let syn = build::tcp_v4(51, 0x02, 5222, O);
        assert_eq!(run_filter(&none, &syn), 0, "no ports: no SYNs");
        assert_eq!(run_filter(&p, &syn), SYN_SNAPLEN);
        assert_eq!(run_filter(&p, &build::tcp_v4(51, 0x02, 22, O)), SYN_SNAPLEN);
        assert_eq!(run_filter(&p, &build::tagged(&syn, 7)), SYN_SNAPLEN);
        assert_eq!(
            run_filter(&p, &build::tcp_v6(57, false, 0x02, 5222, O)),
            SYN_SNAPLEN
        );
        assert_eq!(
            run_filter(&p, &build::tcp_v6(57, true, 0x02, 5222, O)),
            SYN_SNAPLEN
        );
        for (what, frame) in [
            ("another port", build::tcp_v4(51, 0x02, 80, O)),
            ("SYN-ACK", build::tcp_v4(51, 0x12, 5222, O)),
            ("ACK", build::tcp_v4(51, 0x10, 5222, O)),
            ("data", build::tcp_v4(51, 0x18, 5222, &[])),
            ("v6 another port", build::tcp_v6(57, true, 0x02, 443, O)),
            ("v6 SYN-ACK", build::tcp_v6(57, false, 0x12, 5222, O)),
        ] {
            assert_eq!(run_filter(&p, &frame), 0, "{what}");
        }
        let mut later_fragment = syn.clone();
        later_fragment[20..22].copy_from_slice(&0x2001u16.to_be_bytes());
        assert_eq!(run_filter(&p, &later_fragment), 0);
        // Neighbour traffic is unchanged by the SYN part.
        let m = [2, 0, 0, 0, 0, 1];
        let arp = build::gratuitous_arp(m, "192.0.2.1".parse().unwrap());
        assert_eq!(run_filter(&p, &arp), SNAPLEN as u32);
    }

    #[test]
    fn vrrp_advertisements_pass_other_ip_protocols_do_not() {
        use crate::wire::build;
        let vmac = [0, 0, 0x5e, 0, 1, 7];
        let (r1, vip) = ("192.0.2.2".parse().unwrap(), "192.0.2.1".parse().unwrap());
        let v4 = build::vrrp4(vmac, r1, 2, 7, 200, &[vip]);
        let v6 = build::vrrp6([0, 0, 0x5e, 0, 2, 7], "fe80::2".parse().unwrap(), 7, &[]);
        for p in [
            filter_program(&SynFilter::default()),
            filter_program(&SynFilter::all(vec![5222])),
        ] {
            assert_eq!(run_filter(&p, &v4), SNAPLEN as u32);
            assert_eq!(run_filter(&p, &build::tagged(&v4, 42)), SNAPLEN as u32);
            assert_eq!(run_filter(&p, &v6), SNAPLEN as u32);
            // OSPF (89) and UDP (17) are not ours.
            for proto in [89u8, 17] {
                let mut other = v4.clone();
                other[14 + 9] = proto;
                assert_eq!(run_filter(&p, &other), 0, "IPv4 protocol {proto}");
                let mut other6 = v6.clone();
                other6[14 + 6] = proto;
                assert_eq!(run_filter(&p, &other6), 0, "IPv6 next header {proto}");
            }
        }
        // The SYN socket takes none.
        let syns = filter_program(&SynFilter {
            only_syns: true,
            ..SynFilter::all(vec![5222])
        });
        assert_eq!(run_filter(&syns, &v4), 0);
    }

    #[test]
    fn a_syn_flood_is_cut_to_the_budget_and_quiet_brings_it_back() {
        let mut b = SynBudget::new(2_000);
        let second = Duration::from_secs(1);
        // Ordinary traffic: nothing changes.
        assert_eq!(b.update(1_000, second), None);
        // 100,000 SYNs/s: cut so that at most ~2,000/s pass.
        let keep = b.update(100_000, second).unwrap();
        let passed = 100_000 * u64::from(keep) / 65_536;
        assert!((500..=2_000).contains(&passed), "keep {keep}: {passed}/s");
        // The flood goes on at the sampled rate: stays.
        assert_eq!(b.update(passed, second), None);
        // Steady just under the budget: no flapping.
        assert_eq!(b.update(1_900, second), None);
        // Quiet: keep doubles back, step by step, to everything.
        let mut steps = 0;
        while b.keep() < 1 << 16 {
            assert!(b.update(10, second).is_some());
            steps += 1;
        }
        assert!(steps <= 16);
        assert_eq!(b.update(10, Duration::ZERO), None);
    }

    #[test]
    fn syns_are_sampled_in_the_kernel() {
        use crate::wire::build::{self, LINUX_SYN_OPTIONS as O};
        // 1 in 16.
        let p = filter_program(&SynFilter {
            ports: vec![5222],
            keep: 4096,
            only_syns: false,
        });
        let syn = build::tcp_v4(51, 0x02, 5222, O);
        let kept = (0..65_536u32)
            .filter(|r| run_filter_seeded(&p, &syn, r.wrapping_mul(2_654_435_761)) == SYN_SNAPLEN)
            .count();
        assert_eq!(kept, 4096);
    }

    /// The agent's second socket: SYNs only, no ARP or NDP (those come on
    /// the first, read at once).
    #[test]
    fn the_syn_socket_passes_syns_only() {
        use crate::wire::build::{self, LINUX_SYN_OPTIONS as O};
        let p = filter_program(&SynFilter {
            only_syns: true,
            ..SynFilter::all(vec![22])
        });
        let m = [2, 0, 0, 0, 0, 1];
        assert_eq!(
            run_filter(&p, &build::gratuitous_arp(m, "192.0.2.1".parse().unwrap())),
            0
        );
        assert_eq!(run_filter(&p, &build::tcp_v4(51, 0x02, 22, O)), SYN_SNAPLEN);
        assert_eq!(
            run_filter(&p, &build::tcp_v6(51, false, 0x02, 22, O)),
            SYN_SNAPLEN
        );
        assert_eq!(
            run_filter(&p, &build::tcp_v4(51, 0x12, 22, O)),
            0,
            "SYN-ACK"
        );
        let none = filter_program(&SynFilter {
            only_syns: true,
            ..SynFilter::default()
        });
        assert_eq!(run_filter(&none, &build::tcp_v4(51, 0x02, 22, O)), 0);
    }

    #[test]
    fn the_longest_program_keeps_every_jump_in_reach() {
        use crate::wire::build::{self, LINUX_SYN_OPTIONS as O};
        let ports: Vec<u16> = (1000..1100).collect();
        let filter = SynFilter {
            keep: 100,
            ..SynFilter::all(ports)
        };
        assert_eq!(filter.ports.len(), MAX_SYN_PORTS);
        let p = filter_program(&filter);
        // Shorter than a jump's reach: no offset can have been cut.
        assert!(p.len() <= 256, "{} instructions", p.len());
        let last = build::tcp_v6(57, true, 0x02, 1063, O);
        assert_eq!(run_filter_seeded(&p, &last, 7), SYN_SNAPLEN);
        assert_eq!(run_filter_seeded(&p, &last, 100), 0);
        assert_eq!(run_filter(&p, &build::tcp_v6(57, true, 0x02, 1064, O)), 0);
    }

    #[test]
    fn the_filter_passes_arp_and_ndp_only() {
        use crate::wire::build;
        let p = filter_program(&SynFilter::default());
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

    /// An IPv6 packet with `headers` (next-header number, bytes) before the
    /// ICMPv6 body, as a frame.
    fn with_headers(headers: &[(u8, Vec<u8>)], body: &[u8]) -> Vec<u8> {
        let m = [2, 0, 0, 0, 0, 1];
        let ll: std::net::Ipv6Addr = "fe80::1".parse().unwrap();
        let mut payload = Vec::new();
        for (i, (_, h)) in headers.iter().enumerate() {
            let mut h = h.clone();
            h[0] = headers.get(i + 1).map(|(n, _)| *n).unwrap_or(58);
            payload.extend(h);
        }
        payload.extend_from_slice(body);
        let mut f = crate::wire::build::icmpv6(m, m, ll, ll, &payload);
        f[20] = headers.first().map(|(n, _)| *n).unwrap_or(58);
        f
    }

    /// RA-Guard evasion (RFC 7113): NDP behind extension headers or in a first
    /// fragment reaches the detectors; later fragments and other traffic do not.
    #[test]
    fn the_filter_walks_ipv6_extension_headers() {
        use crate::wire::{self, Frame, build};
        let p = filter_program(&SynFilter::default());
        assert!(
            p.len() < 256,
            "every forward jump fits in a u8: {}",
            p.len()
        );
        let m = [2, 0, 0, 0, 0, 0x66];
        let ll: std::net::Ipv6Addr = "fe80::1".parse().unwrap();
        let na = build::na_body(ll, true, false, true, m);
        let hop_by_hop = (0u8, vec![0, 0, 1, 4, 0, 0, 0, 0]);
        let dest_opts = (60u8, vec![0, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let first_fragment = (44u8, vec![0, 0, 0, 1, 0, 0, 0, 7]);
        let later_fragment = (44u8, vec![0, 0, 0, 0x41, 0, 0, 0, 7]);
        for headers in [
            vec![hop_by_hop.clone()],
            vec![dest_opts.clone()],
            vec![hop_by_hop.clone(), dest_opts.clone()],
            vec![first_fragment.clone()],
            vec![
                hop_by_hop.clone(),
                dest_opts.clone(),
                first_fragment.clone(),
            ],
        ] {
            let frame = with_headers(&headers, &na);
            assert_eq!(run_filter(&p, &frame), SNAPLEN as u32, "{headers:?}");
            assert_eq!(run_filter(&p, &build::tagged(&frame, 3)), SNAPLEN as u32);
            // And the parser reads the same message.
            match wire::parse(&frame) {
                Ok(Frame::Ndp(n)) => assert!(matches!(
                    n.message,
                    wire::NdpMessage::NeighbourAdvertisement { .. }
                )),
                other => panic!("{headers:?}: {other:?}"),
            }
        }
        assert_eq!(run_filter(&p, &with_headers(&[later_fragment], &na)), 0);
        let five = vec![dest_opts.clone(); 5];
        assert_eq!(run_filter(&p, &with_headers(&five, &na)), 0, "bounded walk");
        let echo = [128, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(run_filter(&p, &with_headers(&[hop_by_hop], &echo)), 0);
    }

    /// IPv4: ICMP redirects pass (first fragments), everything else does not.
    #[test]
    fn the_filter_passes_ipv4_icmp_redirects_only() {
        use crate::wire::{self, Frame};
        let p = filter_program(&SynFilter::default());
        let ip4 = |protocol: u8, icmp_type: u8, frag: u16, options: usize| {
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&[0x08, 0x00]);
            let ihl = 5 + options / 4;
            let mut ip = vec![0x40 | ihl as u8, 0, 0, 0, 0, 0];
            ip.extend_from_slice(&frag.to_be_bytes());
            ip.extend_from_slice(&[64, protocol, 0, 0, 192, 0, 2, 1, 192, 0, 2, 10]);
            ip.extend(std::iter::repeat_n(1u8, options));
            let mut icmp = vec![icmp_type, 1, 0, 0, 192, 0, 2, 66];
            icmp.extend_from_slice(&[
                0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 10, 198, 51, 100, 99,
            ]);
            icmp.extend_from_slice(&[0; 8]);
            let total = (ip.len() + icmp.len()) as u16;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            f.extend(ip);
            f.extend(icmp);
            f
        };
        for options in [0, 8] {
            let redirect = ip4(1, 5, 0, options);
            assert_eq!(run_filter(&p, &redirect), SNAPLEN as u32);
            match wire::parse(&redirect) {
                Ok(Frame::Redirect(r)) => {
                    assert_eq!(r.gateway.to_string(), "192.0.2.66");
                    assert_eq!(r.destination.to_string(), "198.51.100.99");
                    assert_eq!(r.router.to_string(), "192.0.2.1");
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(run_filter(&p, &ip4(1, 8, 0, 0)), 0, "echo");
        assert_eq!(run_filter(&p, &ip4(6, 5, 0, 0)), 0, "TCP");
        assert_eq!(run_filter(&p, &ip4(1, 5, 0x0010, 0)), 0, "a later fragment");
    }
}
