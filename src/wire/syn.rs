//! TCP SYNs (SYN set, ACK clear) as the inbound-path detector needs them:
//! who connects to which port, with what TTL / hop limit, and the shape of
//! the sender's TCP/IP stack (window, MSS, window scale, option layout, DF)
//! in the spirit of p0f. Headers only; every length is checked, nothing
//! panics on a cut or forged frame.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Options read from one SYN at most (a TCP header holds 40 bytes of them).
const MAX_OPTIONS: usize = 40;

/// One inbound connection attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Syn {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// TTL (IPv4) or hop limit (IPv6) as received.
    pub ttl: u8,
    /// IPv4 "don't fragment" (always false for IPv6).
    pub df: bool,
    /// IPv4 header options present.
    pub ip_options: bool,
    pub window: u16,
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    /// The TCP options in order, p0f style: `mss`, `nop`, `ws`, `sok`, `sack`,
    /// `ts`, `eol`, `?N` for kind N.
    pub layout: String,
    pub vlan: Option<u16>,
}

/// The TTL a sender most likely started from: the smallest of the common
/// initial values (32, 64, 128, 255) not below what arrived.
pub fn initial_ttl(observed: u8) -> u8 {
    [32, 64, 128, 255]
        .into_iter()
        .find(|&t| observed <= t)
        .unwrap_or(255)
}

/// Routers between the sender and us: initial TTL minus the TTL that arrived
/// (0: the sender is on the link, or a box right in front of us answers).
pub fn hop_distance(observed: u8) -> u8 {
    initial_ttl(observed) - observed
}

impl Syn {
    /// IPv4 or IPv6, as `4` or `6`.
    pub fn version(&self) -> u8 {
        match self.src {
            IpAddr::V4(_) => 4,
            IpAddr::V6(_) => 6,
        }
    }

    /// A short signature of the sender's stack, independent of the path:
    /// `version:initial_ttl:mss:window,wscale:layout:quirks`, e.g.
    /// `4:64:1460:64240,7:mss,sok,ts,nop,ws:df`. The observed TTL is not in
    /// it (the path changes that), the initial TTL is.
    pub fn fingerprint(&self) -> String {
        let mut f = String::with_capacity(64);
        let mss = self
            .mss
            .map(|m| m.to_string())
            .unwrap_or_else(|| "*".into());
        let ws = self
            .wscale
            .map(|w| w.to_string())
            .unwrap_or_else(|| "*".into());
        let _ = write!(
            f,
            "{}:{}:{mss}:{},{ws}:{}:",
            self.version(),
            initial_ttl(self.ttl),
            self.window,
            self.layout
        );
        let quirks: Vec<&str> = [(self.df, "df"), (self.ip_options, "opt+")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        f.push_str(&quirks.join(","));
        f
    }
}

/// Reads a SYN from an Ethernet frame (802.1Q/802.1ad tags understood);
/// `None` for anything else: not IP, not TCP, a later fragment, not a bare
/// SYN, or cut short.
pub fn parse(frame: &[u8]) -> Option<Syn> {
    let (ethertype, packet, vlan) = super::untag(frame)?;
    match ethertype {
        0x0800 => ipv4(packet, vlan),
        0x86dd => ipv6(packet, vlan),
        _ => None,
    }
}

fn ipv4(p: &[u8], vlan: Option<u16>) -> Option<Syn> {
    let h = p.get(..20)?;
    let header_len = usize::from(h[0] & 0x0f) * 4;
    let flags_fragment = u16::from_be_bytes([h[6], h[7]]);
    if h[0] >> 4 != 4 || header_len < 20 || h[9] != 6 || flags_fragment & 0x1fff != 0 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([h[2], h[3]])).min(p.len());
    let tcp = p.get(header_len..total)?;
    let src = IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19]));
    let df = flags_fragment & 0x4000 != 0;
    tcp_syn(tcp, (src, dst), h[8], (df, header_len > 20), vlan)
}

fn ipv6(p: &[u8], vlan: Option<u16>) -> Option<Syn> {
    let h = p.get(..40)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    let payload_len = usize::from(u16::from_be_bytes([h[4], h[5]]));
    let rest = super::upper_layer(p.get(40..)?, h[6], payload_len, 6).ok()?;
    let addr = |b: &[u8]| {
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        IpAddr::V6(Ipv6Addr::from(a))
    };
    tcp_syn(
        rest,
        (addr(&h[8..24]), addr(&h[24..40])),
        h[7],
        (false, false),
        vlan,
    )
}

fn tcp_syn(
    tcp: &[u8],
    (src, dst): (IpAddr, IpAddr),
    ttl: u8,
    (df, ip_options): (bool, bool),
    vlan: Option<u16>,
) -> Option<Syn> {
    let h = tcp.get(..20)?;
    let flags = h[13];
    // SYN without ACK (and without RST): a new connection.
    if flags & 0x02 == 0 || flags & 0x10 != 0 || flags & 0x04 != 0 {
        return None;
    }
    let data_offset = usize::from(h[12] >> 4) * 4;
    let options = tcp.get(20..data_offset.max(20))?;
    let mut syn = Syn {
        src,
        dst,
        src_port: u16::from_be_bytes([h[0], h[1]]),
        dst_port: u16::from_be_bytes([h[2], h[3]]),
        ttl,
        df,
        ip_options,
        window: u16::from_be_bytes([h[14], h[15]]),
        mss: None,
        wscale: None,
        layout: String::new(),
        vlan,
    };
    read_options(&options[..options.len().min(MAX_OPTIONS)], &mut syn);
    Some(syn)
}

/// Fills MSS, window scale and the layout; a malformed option ends the list
/// (what was read before stays).
fn read_options(mut o: &[u8], syn: &mut Syn) {
    let mut names: Vec<String> = Vec::new();
    while let Some(&kind) = o.first() {
        let (name, len) = match kind {
            0 => ("eol".to_string(), 1),
            1 => ("nop".to_string(), 1),
            _ => {
                let Some(&len) = o.get(1) else { break };
                let len = usize::from(len);
                let Some(body) = o.get(2..len.max(2)).filter(|_| len >= 2) else {
                    break;
                };
                let name = match (kind, body.len()) {
                    (2, 2) => {
                        syn.mss = Some(u16::from_be_bytes([body[0], body[1]]));
                        "mss".to_string()
                    }
                    (3, 1) => {
                        syn.wscale = Some(body[0]);
                        "ws".to_string()
                    }
                    (4, 0) => "sok".to_string(),
                    (5, _) => "sack".to_string(),
                    (8, 8) => "ts".to_string(),
                    (k, _) => format!("?{k}"),
                };
                (name, len)
            }
        };
        let end = name == "eol";
        names.push(name);
        o = &o[len.min(o.len())..];
        if end {
            break;
        }
    }
    syn.layout = names.join(",");
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::wire::build::{self, LINUX_SYN_OPTIONS as LINUX};

    fn v4_syn(ttl: u8, flags: u8, options: &[u8]) -> Vec<u8> {
        build::tcp_v4(ttl, flags, 5222, options)
    }

    #[test]
    fn initial_ttl_and_hops() {
        assert_eq!((initial_ttl(64), hop_distance(64)), (64, 0));
        assert_eq!((initial_ttl(50), hop_distance(50)), (64, 14));
        assert_eq!((initial_ttl(113), hop_distance(113)), (128, 15));
        assert_eq!((initial_ttl(240), hop_distance(240)), (255, 15));
        assert_eq!((initial_ttl(30), hop_distance(30)), (32, 2));
        assert_eq!((initial_ttl(0), hop_distance(0)), (32, 32));
        assert_eq!((initial_ttl(255), hop_distance(255)), (255, 0));
    }

    #[test]
    fn a_linux_syn_over_ipv4() {
        let s = parse(&v4_syn(51, 0x02, LINUX)).unwrap();
        assert_eq!(s.src, "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!((s.src_port, s.dst_port), (50000, 5222));
        assert_eq!((s.ttl, hop_distance(s.ttl)), (51, 13));
        assert_eq!((s.mss, s.wscale, s.df), (Some(1460), Some(7), true));
        assert_eq!(s.layout, "mss,sok,ts,nop,ws");
        assert_eq!(s.fingerprint(), "4:64:1460:64240,7:mss,sok,ts,nop,ws:df");
        // The same stack one hop closer has the same fingerprint.
        assert_eq!(
            parse(&v4_syn(64, 0x02, LINUX)).unwrap().fingerprint(),
            s.fingerprint()
        );
    }

    #[test]
    fn only_bare_syns_count() {
        for flags in [0x12, 0x10, 0x18, 0x04, 0x01] {
            assert_eq!(parse(&v4_syn(64, flags, LINUX)), None, "flags {flags:#x}");
        }
        // A later fragment holds no TCP header.
        let mut frag = v4_syn(64, 0x02, LINUX);
        frag[20..22].copy_from_slice(&0x2001u16.to_be_bytes());
        assert_eq!(parse(&frag), None);
    }

    #[test]
    fn vlan_tagged_and_ipv6_with_an_extension_header() {
        let tagged = build::tagged(&v4_syn(60, 0x02, LINUX), 42);
        let s = parse(&tagged).unwrap();
        assert_eq!((s.vlan, hop_distance(s.ttl)), (Some(42), 4));
        // IPv6: hop limit 57, a destination-options header before TCP.
        let f = build::tcp_v6(57, true, 0x02, 5222, LINUX);
        let s = parse(&f).unwrap();
        assert_eq!((s.version(), s.ttl, hop_distance(s.ttl)), (6, 57, 7));
        assert_eq!(s.fingerprint(), "6:64:1460:64240,7:mss,sok,ts,nop,ws:");
    }

    #[test]
    fn cut_and_forged_frames_are_none_or_partial_never_a_panic() {
        let full = v4_syn(64, 0x02, LINUX);
        for cut in 0..full.len() {
            let _ = parse(&full[..cut]);
        }
        // Options that lie about their length end the list.
        let s = parse(&v4_syn(64, 0x02, &[2, 4, 5, 0xb4, 3, 40, 7, 0])).unwrap();
        assert_eq!((s.mss, s.layout.as_str()), (Some(1460), "mss"));
        let s = parse(&v4_syn(64, 0x02, &[9, 0, 0, 0])).unwrap();
        assert_eq!(s.layout, "");
    }
}
