//! The host's listening TCP ports, from the kernel (`NETLINK_SOCK_DIAG`,
//! inet_diag): the ports whose inbound SYNs the inbound-path detector watches
//! by default. No `/proc` needed (the packaged unit hides most of it).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

/// `SOCK_DIAG_BY_FAMILY`.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCP_LISTEN: u32 = 10;
/// Listening sockets read at most (per family).
pub const MAX_LISTENERS: usize = 65_536;

/// A TCP socket in LISTEN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listener {
    pub addr: IpAddr,
    pub port: u16,
}

impl Listener {
    /// Reachable from elsewhere: not bound to a loopback address.
    pub fn is_outside(&self) -> bool {
        !self.addr.is_loopback()
            && !matches!(self.addr, IpAddr::V6(a) if a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()))
    }
}

/// The TCP ports listening on a non-loopback address, minus `ignore`, sorted.
pub fn outside_ports(listeners: &[Listener], ignore: &[u16]) -> Vec<u16> {
    let mut ports: Vec<u16> = listeners
        .iter()
        .filter(|l| l.is_outside() && !ignore.contains(&l.port))
        .map(|l| l.port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Every TCP socket in LISTEN, IPv4 and IPv6, in the caller's network namespace.
pub fn listening() -> io::Result<Vec<Listener>> {
    let mut out = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        socket.send(&request(family), 0)?;
        let mut buf = Vec::with_capacity(64 << 10);
        loop {
            buf.clear();
            socket.recv(&mut buf, 0)?;
            match parse(&buf, &mut out)? {
                true => break,
                false if out.len() >= MAX_LISTENERS => break,
                false => {}
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// An inet_diag dump request for the TCP sockets in LISTEN of `family`.
fn request(family: u8) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + 56);
    m.extend_from_slice(&(16u32 + 56).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id
    // inet_diag_req_v2: family, protocol, extensions, pad, states, then a zero id.
    m.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    m.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    m.extend_from_slice(&[0u8; 48]);
    m
}

/// Reads one datagram of the dump into `out`; `Ok(true)` at its end. Bad or
/// short messages end the walk of the datagram (never a panic).
pub fn parse(bytes: &[u8], out: &mut Vec<Listener>) -> io::Result<bool> {
    let mut at = 0;
    while let Some(h) = bytes.get(at..at + 16) {
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let kind = u16::from_ne_bytes([h[4], h[5]]);
        if len < 16 || at + len > bytes.len() {
            return Ok(false);
        }
        let body = &bytes[at + 16..at + len];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = body
                    .get(..4)
                    .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                    .unwrap_or(0);
                return match code {
                    0 => Ok(true),
                    c => Err(io::Error::from_raw_os_error(-c)),
                };
            }
            SOCK_DIAG_BY_FAMILY => {
                if let Some(l) = listener(body)
                    && out.len() < MAX_LISTENERS
                {
                    out.push(l);
                }
            }
            _ => {}
        }
        at += (len + 3) & !3;
    }
    Ok(false)
}

/// One inet_diag_msg: family, state, timer, retrans, then the socket id
/// (source port and destination port big-endian, then 16-byte addresses).
fn listener(m: &[u8]) -> Option<Listener> {
    let m = m.get(..4 + 48)?;
    let port = u16::from_be_bytes([m[4], m[5]]);
    let src = &m[8..24];
    let addr = match u32::from(m[0]) {
        f if f == libc::AF_INET as u32 => IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3])),
        f if f == libc::AF_INET6 as u32 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(src);
            IpAddr::V6(Ipv6Addr::from(a))
        }
        _ => return None,
    };
    (u32::from(m[1]) == TCP_LISTEN).then_some(Listener { addr, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&(16 + body.len() as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn diag(family: u8, port: u16, addr: &[u8]) -> Vec<u8> {
        let mut b = vec![family, TCP_LISTEN as u8, 0, 0];
        b.extend_from_slice(&port.to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        let mut a = [0u8; 16];
        a[..addr.len()].copy_from_slice(addr);
        b.extend_from_slice(&a);
        b.extend_from_slice(&[0; 16 + 4 + 8 + 20]);
        b
    }

    #[test]
    fn a_dump_is_read_and_loopback_left_out() {
        let mut bytes = message(SOCK_DIAG_BY_FAMILY, &diag(2, 5222, &[0, 0, 0, 0]));
        bytes.extend(message(
            SOCK_DIAG_BY_FAMILY,
            &diag(2, 8080, &[127, 0, 0, 1]),
        ));
        bytes.extend(message(SOCK_DIAG_BY_FAMILY, &diag(10, 22, &[0; 16])));
        let mut out = Vec::new();
        assert!(!parse(&bytes, &mut out).unwrap());
        assert!(parse(&message(NLMSG_DONE, &[0; 4]), &mut out).unwrap());
        assert_eq!(out.len(), 3);
        assert_eq!(outside_ports(&out, &[]), vec![22, 5222]);
        assert_eq!(outside_ports(&out, &[22]), vec![5222]);
        let err = parse(&message(NLMSG_ERROR, &(-13i32).to_ne_bytes()), &mut out).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(13));
    }

    #[test]
    fn junk_is_never_a_panic() {
        let good = message(SOCK_DIAG_BY_FAMILY, &diag(2, 5222, &[0, 0, 0, 0]));
        let mut out = Vec::new();
        for cut in 0..good.len() {
            let _ = parse(&good[..cut], &mut out);
        }
        let _ = parse(&[0xff; 64], &mut out);
        let mut lying = good.clone();
        lying[..4].copy_from_slice(&4u32.to_ne_bytes());
        assert!(!parse(&lying, &mut out).unwrap());
    }
}
