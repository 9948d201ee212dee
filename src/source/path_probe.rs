//! At which hop a TCP port answers, seen from here: connects with a limited
//! IP TTL / IPv6 hop limit. A SYN whose TTL runs out makes a router send ICMP
//! time exceeded; with IP_RECVERR / IPV6_RECVERR the kernel hands it to the
//! socket (the connect fails with EHOSTUNREACH) together with the router's
//! address. The smallest TTL at which the connection is answered is the
//! port's path length. No raw socket, no CAP_NET_RAW: ordinary connects.
//!
//! jabber.ru, from outside: port 22 answered at hop 14, port 5222 at hop 13 —
//! a box one hop in front of the server answered 5222 itself.
//!
//! Cost: with a remembered count `h`, two connects (TTL h-1 and h) confirm
//! it; otherwise (first check, or the count moved) one sweep of every TTL up
//! to [`MAX_HOPS`] at once, which also gives the routers on the way. Each
//! answered connect is closed with a reset (SO_LINGER 0): the service sees a
//! connection that ends at once, like a port check.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, SockaddrStorage, connect,
    getsockopt, recvmsg, setsockopt, socket, sockopt,
};

/// Hops tried at most (paths on the internet are rarely longer than 30).
pub const MAX_HOPS: u8 = 32;

/// What one connect with a limited TTL met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hop {
    /// The port answered (accepted or refused): the destination, or a box
    /// answering for it, is at most this far.
    Answered,
    /// A router sent time exceeded (its address).
    Router(IpAddr),
    /// Something else came back (unreachable, prohibited) or nothing did.
    Silent,
}

/// One measurement of a port's path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathMeasure {
    /// The smallest TTL at which the port answered (None: not within MAX_HOPS,
    /// or nothing answered at all).
    pub hops: Option<u8>,
    /// Routers by TTL (index 0: TTL 1) below `hops`, when a sweep was made
    /// (`None` for a router that stayed silent). Empty after a confirmation.
    pub routers: Vec<Option<IpAddr>>,
    /// SYNs sent (connects made).
    pub syns: u32,
    pub took: Duration,
}

/// Measures the path to `addr`, starting from the remembered count `hint`.
/// `wait` bounds how long one round waits for answers. Blocking: run it
/// off the async runtime.
pub fn measure(addr: SocketAddr, hint: Option<u8>, wait: Duration) -> std::io::Result<PathMeasure> {
    let started = Instant::now();
    if let Some(h) = hint.filter(|h| (1..=MAX_HOPS).contains(h)) {
        let ttls: Vec<u8> = if h > 1 { vec![h - 1, h] } else { vec![h] };
        let seen = sweep(addr, &ttls, wait)?;
        let answered = |t: u8| seen.iter().any(|(x, hop)| *x == t && *hop == Hop::Answered);
        if answered(h) && (h == 1 || !answered(h - 1)) {
            return Ok(PathMeasure {
                hops: Some(h),
                routers: Vec::new(),
                syns: ttls.len() as u32,
                took: started.elapsed(),
            });
        }
        // The count moved: sweep.
        let mut full = measure(addr, None, wait)?;
        full.syns += ttls.len() as u32;
        full.took = started.elapsed();
        return Ok(full);
    }
    let ttls: Vec<u8> = (1..=MAX_HOPS).collect();
    let seen = sweep(addr, &ttls, wait)?;
    Ok(from_sweep(&seen, ttls.len() as u32, started.elapsed()))
}

/// The path length and routers from one answer per TTL.
pub fn from_sweep(seen: &[(u8, Hop)], syns: u32, took: Duration) -> PathMeasure {
    let hops = seen
        .iter()
        .filter(|(_, h)| *h == Hop::Answered)
        .map(|(t, _)| *t)
        .min();
    let routers = match hops {
        Some(h) => (1..h)
            .map(|t| {
                seen.iter().find_map(|(x, hop)| match hop {
                    Hop::Router(ip) if *x == t => Some(*ip),
                    _ => None,
                })
            })
            .collect(),
        None => Vec::new(),
    };
    PathMeasure {
        hops,
        routers,
        syns,
        took,
    }
}

/// One connect per TTL in `ttls`, all at once; what each met within `wait`.
fn sweep(addr: SocketAddr, ttls: &[u8], wait: Duration) -> std::io::Result<Vec<(u8, Hop)>> {
    let mut open: Vec<(u8, OwnedFd)> = Vec::new();
    let mut out = Vec::new();
    for &ttl in ttls {
        match start_connect(addr, ttl)? {
            Some(fd) => open.push((ttl, fd)),
            None => out.push((ttl, Hop::Answered)),
        }
    }
    let deadline = Instant::now() + wait;
    while !open.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut fds: Vec<nix::poll::PollFd> = open
            .iter()
            .map(|(_, fd)| nix::poll::PollFd::new(fd.as_fd(), nix::poll::PollFlags::POLLOUT))
            .collect();
        let timeout = nix::poll::PollTimeout::try_from(left).unwrap_or(nix::poll::PollTimeout::MAX);
        match nix::poll::poll(&mut fds, timeout) {
            Ok(0) => break,
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut still = Vec::new();
        for ((ttl, fd), ready) in open.into_iter().zip(ready) {
            if !ready {
                still.push((ttl, fd));
                continue;
            }
            out.push((ttl, outcome(&fd)));
        }
        open = still;
    }
    out.extend(open.into_iter().map(|(ttl, _)| (ttl, Hop::Silent)));
    out.sort_by_key(|(t, _)| *t);
    Ok(out)
}

/// A non-blocking connect to `addr` with TTL `ttl` and error reports on;
/// `None` when it completed at once.
fn start_connect(addr: SocketAddr, ttl: u8) -> std::io::Result<Option<OwnedFd>> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    match addr {
        SocketAddr::V4(_) => {
            setsockopt(&fd, sockopt::Ipv4Ttl, &i32::from(ttl))?;
            setsockopt(&fd, sockopt::Ipv4RecvErr, &true)?;
        }
        SocketAddr::V6(_) => {
            setsockopt(&fd, sockopt::Ipv6Ttl, &i32::from(ttl))?;
            setsockopt(&fd, sockopt::Ipv6RecvErr, &true)?;
        }
    }
    // A reset at close: no lingering connection on the service.
    setsockopt(
        &fd,
        sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )?;
    match connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Ok(()) => Ok(None),
        Err(Errno::EINPROGRESS) => Ok(Some(fd)),
        Err(Errno::ECONNREFUSED) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What a finished connect met.
fn outcome(fd: &OwnedFd) -> Hop {
    match getsockopt(fd, sockopt::SocketError) {
        Ok(0) => Hop::Answered,
        Ok(e) if e == libc::ECONNREFUSED => Hop::Answered,
        Ok(_) => offender(fd).map(Hop::Router).unwrap_or(Hop::Silent),
        Err(_) => Hop::Silent,
    }
}

/// The router that sent time exceeded, from the socket's error queue.
fn offender(fd: &OwnedFd) -> Option<IpAddr> {
    let mut data = [0u8; 64];
    let mut iov = [std::io::IoSliceMut::new(&mut data)];
    let mut cmsg = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in6);
    let msg = recvmsg::<SockaddrStorage>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_ERRQUEUE,
    )
    .ok()?;
    for c in msg.cmsgs().ok()? {
        match c {
            ControlMessageOwned::Ipv4RecvErr(e, Some(from))
                if e.ee_origin == libc::SO_EE_ORIGIN_ICMP && e.ee_type == 11 =>
            {
                return Some(IpAddr::V4(std::net::Ipv4Addr::from(u32::from_be(
                    from.sin_addr.s_addr,
                ))));
            }
            ControlMessageOwned::Ipv6RecvErr(e, Some(from))
                if e.ee_origin == libc::SO_EE_ORIGIN_ICMP6 && e.ee_type == 3 =>
            {
                return Some(IpAddr::V6(std::net::Ipv6Addr::from(from.sin6_addr.s6_addr)));
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_length_is_the_first_ttl_that_answers() {
        let r = |n: u8| Hop::Router(IpAddr::from([192, 0, 2, n]));
        let seen = vec![
            (1, r(1)),
            (2, Hop::Silent),
            (3, r(3)),
            (4, Hop::Answered),
            (5, Hop::Answered),
        ];
        let m = from_sweep(&seen, 5, Duration::ZERO);
        assert_eq!(m.hops, Some(4));
        assert_eq!(
            m.routers,
            vec![
                Some(IpAddr::from([192, 0, 2, 1])),
                None,
                Some(IpAddr::from([192, 0, 2, 3]))
            ]
        );
        let none = from_sweep(&[(1, r(1)), (2, Hop::Silent)], 2, Duration::ZERO);
        assert_eq!((none.hops, none.routers.len()), (None, 0));
    }
}
