//! Frame parsing: Ethernet (with up to two 802.1Q/802.1ad tags) carrying ARP,
//! IPv6 neighbour discovery, IPv4 ICMP redirects or VRRP advertisements. Pure and bounded: any byte string gives either a
//! parsed packet or an error, never a panic (see the fuzz target).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pnet_packet::Packet;
use pnet_packet::arp::{ArpHardwareTypes, ArpOperations, ArpPacket};
use pnet_packet::ethernet::{EtherTypes, EthernetPacket};
use pnet_packet::ipv6::Ipv6Packet;

use crate::kernel::Mac;

/// A 48-bit Ethernet address, stored inline (no allocation per frame).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EtherAddr(pub [u8; 6]);

impl EtherAddr {
    /// ff:ff:ff:ff:ff:ff
    pub const BROADCAST: EtherAddr = EtherAddr([0xff; 6]);

    /// Broadcast, multicast or all-zero: never a station's own address.
    pub fn is_bad(&self) -> bool {
        self.0 == [0; 6] || self.0[0] & 0x01 != 0
    }

    /// 00:00:5e:00:01:xx (VRRP for IPv4, CARP) and 00:00:5e:00:02:xx (VRRP for IPv6).
    pub fn is_vrrp(&self) -> bool {
        self.0[..4] == [0x00, 0x00, 0x5e, 0x00] && (self.0[4] == 0x01 || self.0[4] == 0x02)
    }

    /// The VRRP virtual router id of a virtual MAC ([`EtherAddr::is_vrrp`]),
    /// and whether it is the IPv6 one (00:00:5e:00:02:xx).
    pub fn vrrp_group(&self) -> Option<(bool, u8)> {
        self.is_vrrp().then_some((self.0[4] == 0x02, self.0[5]))
    }

    /// The virtual MAC of VRRP group `vrid` (RFC 5798 7.3).
    pub fn vrrp(v6: bool, vrid: u8) -> EtherAddr {
        EtherAddr([0x00, 0x00, 0x5e, 0x00, if v6 { 0x02 } else { 0x01 }, vrid])
    }

    /// From a kernel address, when it is an Ethernet one.
    pub fn from_mac(mac: &Mac) -> Option<EtherAddr> {
        <[u8; 6]>::try_from(mac.0.as_slice()).ok().map(EtherAddr)
    }

    /// Parses `aa:bb:cc:dd:ee:ff` (case free).
    pub fn parse(text: &str) -> Option<EtherAddr> {
        Mac::parse(text).as_ref().and_then(EtherAddr::from_mac)
    }
}

impl std::fmt::Display for EtherAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl std::fmt::Debug for EtherAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Why a frame was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame too short")]
    Truncated,
    #[error("not ARP or neighbour discovery")]
    NotNeighbourTraffic,
    #[error("malformed ARP")]
    BadArp,
    #[error("malformed neighbour discovery")]
    BadNdp,
    #[error("malformed VRRP advertisement")]
    BadVrrp,
}

/// An ARP packet for IPv4 over Ethernet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpFrame {
    pub eth_src: EtherAddr,
    pub eth_dst: EtherAddr,
    pub vlan: Option<u16>,
    pub is_reply: bool,
    pub sender_mac: EtherAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: EtherAddr,
    pub target_ip: Ipv4Addr,
}

/// The neighbour discovery messages the detectors use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NdpMessage {
    RouterSolicitation,
    RouterAdvertisement {
        router_lifetime_s: u16,
        source_mac: Option<EtherAddr>,
        /// What the router tells hosts (flags, prefixes, DNS, MTU, routes).
        info: RaInfo,
    },
    NeighbourSolicitation {
        target: Ipv6Addr,
        source_mac: Option<EtherAddr>,
    },
    NeighbourAdvertisement {
        target: Ipv6Addr,
        router: bool,
        solicited: bool,
        override_flag: bool,
        target_mac: Option<EtherAddr>,
    },
    Redirect {
        target: Ipv6Addr,
        destination: Ipv6Addr,
    },
}

/// Entries of one kind kept per router advertisement.
pub const MAX_RA_ENTRIES: usize = 16;

/// What a router advertisement tells the hosts (RFC 4861, 8106, 4191):
/// everything a rogue router would change to move traffic or names. Router
/// and prefix lifetimes are left out (they count down on some routers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RaInfo {
    pub cur_hop_limit: u8,
    /// M: addresses from DHCPv6.
    pub managed: bool,
    /// O: other configuration from DHCPv6.
    pub other: bool,
    /// Default router preference (RFC 4191): high, medium, low.
    pub preference: &'static str,
    pub mtu: Option<u32>,
    /// Prefix information: prefix/length, on-link (L), autonomous (A).
    pub prefixes: Vec<(Ipv6Addr, u8, bool, bool)>,
    /// Route information (RFC 4191): prefix/length.
    pub routes: Vec<(Ipv6Addr, u8)>,
    /// Recursive DNS servers (RFC 8106).
    pub rdnss: Vec<Ipv6Addr>,
    /// DNS search list (RFC 8106).
    pub dnssl: Vec<String>,
}

/// Reads the options of a router advertisement (after its 16 fixed bytes).
/// Malformed options end the walk (what came before counts); each list is
/// capped at [`MAX_RA_ENTRIES`].
fn ra_info(fixed: &[u8], mut options: &[u8]) -> RaInfo {
    let mut info = RaInfo {
        cur_hop_limit: fixed[4],
        managed: fixed[5] & 0x80 != 0,
        other: fixed[5] & 0x40 != 0,
        preference: match (fixed[5] >> 3) & 0x3 {
            0b01 => "high",
            0b11 => "low",
            _ => "medium",
        },
        ..RaInfo::default()
    };
    while options.len() >= 2 {
        let kind = options[0];
        let len = options[1] as usize * 8;
        if len == 0 || len > options.len() {
            break;
        }
        let o = &options[..len];
        match kind {
            3 if len >= 32 => add(
                &mut info.prefixes,
                (
                    ipv6_at(o, 16),
                    o[2].min(128),
                    o[3] & 0x80 != 0,
                    o[3] & 0x40 != 0,
                ),
            ),
            5 if len >= 8 => info.mtu = Some(u32::from_be_bytes([o[4], o[5], o[6], o[7]])),
            24 if len >= 8 => {
                let plen = o[2].min(128);
                let mut octets = [0u8; 16];
                let n = (len - 8).min(16);
                octets[..n].copy_from_slice(&o[8..8 + n]);
                add(&mut info.routes, (Ipv6Addr::from(octets), plen));
            }
            25 if len >= 24 => {
                for a in o[8..].chunks_exact(16) {
                    add(&mut info.rdnss, ipv6_at(a, 0));
                }
            }
            31 if len >= 16 => {
                for name in dns_names(&o[8..]) {
                    add(&mut info.dnssl, name);
                }
            }
            _ => {}
        }
        options = &options[len..];
    }
    info.prefixes.sort();
    info.routes.sort();
    info.rdnss.sort();
    info.dnssl.sort();
    info
}

/// Adds `item` to a list of at most [`MAX_RA_ENTRIES`] distinct entries.
fn add<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if list.len() < MAX_RA_ENTRIES && !list.contains(&item) {
        list.push(item);
    }
}

/// The names of a DNSSL option's data: uncompressed wire-format names, zero
/// padding at the end. Labels are kept as printable ASCII (others escaped).
fn dns_names(mut data: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut labels: Vec<String> = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let len = len as usize;
        if len == 0 {
            if !labels.is_empty() {
                names.push(labels.join("."));
                labels.clear();
            }
            data = rest;
            continue;
        }
        if len > 63 || len > rest.len() {
            break;
        }
        labels.push(rest[..len].escape_ascii().to_string());
        data = &rest[len..];
    }
    names
}

/// A neighbour discovery message (RS, RA, NS, NA, redirect) as far as the detectors need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NdpFrame {
    pub eth_src: EtherAddr,
    pub vlan: Option<u16>,
    pub ip_src: Ipv6Addr,
    pub ip_dst: Ipv6Addr,
    pub hop_limit: u8,
    pub message: NdpMessage,
}

/// An IPv4 ICMP redirect (RFC 792, type 5): `router` tells the host to send
/// traffic for `destination` via `gateway`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectFrame {
    /// The frame's Ethernet source.
    pub eth_src: EtherAddr,
    /// The innermost VLAN id, if tagged.
    pub vlan: Option<u16>,
    /// Who sent it (the IP source: the first hop it claims to be).
    pub router: Ipv4Addr,
    /// The new first hop.
    pub gateway: Ipv4Addr,
    /// The destination of the original datagram quoted in the message.
    pub destination: Ipv4Addr,
}

/// Addresses kept of one VRRP advertisement (the rest are not read).
pub const MAX_VRRP_ADDRESSES: usize = 16;

/// A VRRP advertisement (RFC 3768 version 2, RFC 5798 version 3): a router of
/// group `vrid` says it is master (or, priority 0, that it resigns) for
/// `addresses`. Sent from the group's virtual MAC, or from the router's own
/// MAC by implementations that do not use one (keepalived by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpFrame {
    pub eth_src: EtherAddr,
    pub vlan: Option<u16>,
    /// The router's own address.
    pub ip_src: IpAddr,
    pub version: u8,
    pub vrid: u8,
    pub priority: u8,
    /// The advertisement interval, in centiseconds (version 2 says seconds).
    pub interval_cs: u16,
    /// The virtual addresses, at most [`MAX_VRRP_ADDRESSES`].
    pub addresses: Vec<IpAddr>,
}

/// A parsed frame: ARP, neighbour discovery, an IPv4 ICMP redirect or a VRRP
/// advertisement (anything else is a [`FrameError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// ARP request or reply.
    Arp(ArpFrame),
    /// ICMPv6 neighbour discovery (also behind extension headers).
    Ndp(NdpFrame),
    /// IPv4 ICMP redirect.
    Redirect(RedirectFrame),
    /// VRRP advertisement (IPv4 or IPv6, IP protocol 112).
    Vrrp(VrrpFrame),
}

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;

/// IPv6 extension headers skipped before the ICMPv6 header (as the capture
/// filter does: hop-by-hop, destination options, routing, a first fragment).
const MAX_EXTENSION_HEADERS: usize = 4;

pub mod syn;

const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;

/// The ethertype of an Ethernet frame past up to two VLAN tags (802.1ad
/// outer, 802.1Q inner), what follows it, and the innermost VLAN id.
pub(crate) fn untag(frame: &[u8]) -> Option<(u16, &[u8], Option<u16>)> {
    let mut ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let mut payload = frame.get(14..)?;
    let mut vlan = None;
    for _ in 0..2 {
        if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
            break;
        }
        let tag = payload.get(..4)?;
        vlan = Some(u16::from_be_bytes([tag[0], tag[1]]) & 0x0fff);
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        payload = &payload[4..];
    }
    Some((ethertype, payload, vlan))
}

/// Parses an Ethernet frame.
pub fn parse(bytes: &[u8]) -> Result<Frame, FrameError> {
    let eth = EthernetPacket::new(bytes).ok_or(FrameError::Truncated)?;
    let eth_src = EtherAddr(eth.get_source().octets());
    let eth_dst = EtherAddr(eth.get_destination().octets());
    let (ethertype, payload, vlan) = untag(bytes).ok_or(FrameError::Truncated)?;
    if ethertype == EtherTypes::Arp.0 {
        parse_arp(payload, eth_src, eth_dst, vlan).map(Frame::Arp)
    } else if ethertype == EtherTypes::Ipv6.0 {
        if payload.len() > 6 && payload[6] == IPPROTO_VRRP {
            return parse_vrrp6(payload, eth_src, vlan).map(Frame::Vrrp);
        }
        parse_ndp(payload, eth_src, vlan).map(Frame::Ndp)
    } else if ethertype == EtherTypes::Ipv4.0 {
        if payload.len() > 9 && payload[9] == IPPROTO_VRRP {
            return parse_vrrp4(payload, eth_src, vlan).map(Frame::Vrrp);
        }
        parse_redirect(payload, eth_src, vlan).map(Frame::Redirect)
    } else {
        Err(FrameError::NotNeighbourTraffic)
    }
}

fn parse_arp(
    payload: &[u8],
    eth_src: EtherAddr,
    eth_dst: EtherAddr,
    vlan: Option<u16>,
) -> Result<ArpFrame, FrameError> {
    let arp = ArpPacket::new(payload).ok_or(FrameError::Truncated)?;
    if arp.get_hardware_type() != ArpHardwareTypes::Ethernet
        || arp.get_protocol_type() != EtherTypes::Ipv4
        || arp.get_hw_addr_len() != 6
        || arp.get_proto_addr_len() != 4
    {
        return Err(FrameError::BadArp);
    }
    let op = arp.get_operation();
    if op != ArpOperations::Request && op != ArpOperations::Reply {
        return Err(FrameError::BadArp);
    }
    // pnet checked the length and the header; the addresses sit at fixed offsets
    // (reading them as slices is several times cheaper than pnet's getters, and
    // replay goes through millions of frames).
    let p = arp.packet().get(..28).ok_or(FrameError::Truncated)?;
    let ether = |at: usize| {
        let mut a = [0u8; 6];
        a.copy_from_slice(&p[at..at + 6]);
        EtherAddr(a)
    };
    let ipv4 = |at: usize| {
        let mut a = [0u8; 4];
        a.copy_from_slice(&p[at..at + 4]);
        Ipv4Addr::from(a)
    };
    Ok(ArpFrame {
        eth_src,
        eth_dst,
        vlan,
        is_reply: op == ArpOperations::Reply,
        sender_mac: ether(8),
        sender_ip: ipv4(14),
        target_mac: ether(18),
        target_ip: ipv4(24),
    })
}

/// An IPv4 packet's fixed header and its payload (as far as the total
/// length says and the frame holds), when it is version 4 of `protocol` and
/// no fragment but a first one (`first_fragment`; else none at all).
fn ipv4_packet(
    payload: &[u8],
    protocol: u8,
    first_fragment: bool,
) -> Result<(&[u8], &[u8]), FrameError> {
    let head = payload.get(..20).ok_or(FrameError::Truncated)?;
    let header_len = usize::from(head[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([head[2], head[3]])).min(payload.len());
    let fragment_bits = if first_fragment { 0x1fff } else { 0x3fff };
    let fragment = u16::from_be_bytes([head[6], head[7]]) & fragment_bits != 0;
    if head[0] >> 4 != 4 || head[9] != protocol || header_len < 20 || fragment {
        return Err(FrameError::NotNeighbourTraffic);
    }
    let body = payload
        .get(header_len..total)
        .ok_or(FrameError::Truncated)?;
    Ok((head, body))
}

/// An IPv4 ICMP redirect: version 4, ICMP, not a later fragment, type 5.
fn parse_redirect(
    payload: &[u8],
    eth_src: EtherAddr,
    vlan: Option<u16>,
) -> Result<RedirectFrame, FrameError> {
    let (head, icmp) = ipv4_packet(payload, 1, true)?;
    if icmp.first() != Some(&5) {
        return Err(FrameError::NotNeighbourTraffic);
    }
    // Type, code, checksum, the gateway, then the original IP header.
    let quoted = icmp.get(8..28).ok_or(FrameError::Truncated)?;
    let v4 = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    Ok(RedirectFrame {
        eth_src,
        vlan,
        router: v4(&head[12..16]),
        gateway: v4(&icmp[4..8]),
        destination: v4(&quoted[16..20]),
    })
}

/// A VRRP advertisement over IPv4: version 2 or 3, TTL 255 (RFC 5798 7.1:
/// anything else crossed a router and is not from this segment), not a fragment.
/// The checksum is not verified: it guards against corruption (which the
/// Ethernet FCS already does), not against a forger.
fn parse_vrrp4(
    payload: &[u8],
    eth_src: EtherAddr,
    vlan: Option<u16>,
) -> Result<VrrpFrame, FrameError> {
    let head = payload.get(..20).ok_or(FrameError::Truncated)?;
    let header_len = usize::from(head[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([head[2], head[3]])).min(payload.len());
    let fragment = u16::from_be_bytes([head[6], head[7]]) & 0x3fff != 0;
    if head[0] >> 4 != 4 || header_len < 20 || fragment {
        return Err(FrameError::NotNeighbourTraffic);
    }
    if head[8] != 255 {
        return Err(FrameError::BadVrrp);
    }
    let body = payload
        .get(header_len..total)
        .ok_or(FrameError::Truncated)?;
    let src = Ipv4Addr::new(head[12], head[13], head[14], head[15]);
    vrrp_body(body, eth_src, vlan, IpAddr::V4(src), 4)
}

/// A VRRP advertisement over IPv6 (version 3 only), hop limit 255.
fn parse_vrrp6(
    payload: &[u8],
    eth_src: EtherAddr,
    vlan: Option<u16>,
) -> Result<VrrpFrame, FrameError> {
    let ip = Ipv6Packet::new(payload).ok_or(FrameError::Truncated)?;
    if ip.get_hop_limit() != 255 {
        return Err(FrameError::BadVrrp);
    }
    let body = payload.get(40..).ok_or(FrameError::Truncated)?;
    let body = &body[..(ip.get_payload_length() as usize).min(body.len())];
    let frame = vrrp_body(body, eth_src, vlan, IpAddr::V6(ip.get_source()), 16)?;
    if frame.version != 3 {
        return Err(FrameError::BadVrrp);
    }
    Ok(frame)
}

/// The VRRP message: version/type, VRID, priority, address count, (v2) auth
/// type and interval in seconds or (v3) the interval in centiseconds,
/// checksum, then the addresses (`width` bytes each).
fn vrrp_body(
    body: &[u8],
    eth_src: EtherAddr,
    vlan: Option<u16>,
    ip_src: IpAddr,
    width: usize,
) -> Result<VrrpFrame, FrameError> {
    let fixed = body.get(..8).ok_or(FrameError::Truncated)?;
    let (version, kind) = (fixed[0] >> 4, fixed[0] & 0x0f);
    let (vrid, priority, count) = (fixed[1], fixed[2], usize::from(fixed[3]));
    // Type 1 is the only one; VRID 0 is not a group.
    if !(version == 2 || version == 3) || kind != 1 || vrid == 0 {
        return Err(FrameError::BadVrrp);
    }
    let interval_cs = match version {
        2 => u16::from(fixed[5]) * 100,
        _ => u16::from_be_bytes([fixed[4], fixed[5]]) & 0x0fff,
    };
    let list = body
        .get(8..8 + count * width)
        .ok_or(FrameError::Truncated)?;
    let addresses = list
        .chunks_exact(width)
        .take(MAX_VRRP_ADDRESSES)
        .map(|a| match <[u8; 4]>::try_from(a) {
            Ok(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
            Err(_) => {
                let mut v6 = [0u8; 16];
                v6.copy_from_slice(a);
                IpAddr::V6(Ipv6Addr::from(v6))
            }
        })
        .collect();
    Ok(VrrpFrame {
        eth_src,
        vlan,
        ip_src,
        version,
        vrid,
        priority,
        interval_cs,
        addresses,
    })
}

/// The message of upper-layer `protocol` (58: ICMPv6, 6: TCP) in an IPv6
/// packet, past up to [`MAX_EXTENSION_HEADERS`] extension headers (RA-Guard
/// evasion, RFC 7113); a later fragment holds none.
pub(crate) fn upper_layer(
    body: &[u8],
    mut next: u8,
    payload_len: usize,
    protocol: u8,
) -> Result<&[u8], FrameError> {
    // The payload length field, not the frame, bounds the message (frames are padded).
    let mut rest = &body[..payload_len.min(body.len())];
    for _ in 0..MAX_EXTENSION_HEADERS {
        let skip = match next {
            n if n == protocol => break,
            0 | 43 | 60 => usize::from(*rest.get(1).ok_or(FrameError::Truncated)?) * 8 + 8,
            44 => {
                let offset = rest.get(2..4).ok_or(FrameError::Truncated)?;
                if u16::from_be_bytes([offset[0], offset[1]]) & 0xfff8 != 0 {
                    return Err(FrameError::NotNeighbourTraffic);
                }
                8
            }
            _ => return Err(FrameError::NotNeighbourTraffic),
        };
        next = *rest.first().ok_or(FrameError::Truncated)?;
        rest = rest.get(skip..).ok_or(FrameError::Truncated)?;
    }
    if next != protocol {
        return Err(FrameError::NotNeighbourTraffic);
    }
    Ok(rest)
}

fn parse_ndp(
    payload: &[u8],
    eth_src: EtherAddr,
    vlan: Option<u16>,
) -> Result<NdpFrame, FrameError> {
    let ip = Ipv6Packet::new(payload).ok_or(FrameError::Truncated)?;
    let body = payload.get(40..).ok_or(FrameError::Truncated)?;
    let icmp = upper_layer(
        body,
        ip.get_next_header().0,
        ip.get_payload_length() as usize,
        58,
    )?;
    if icmp.len() < 4 {
        return Err(FrameError::Truncated);
    }
    let message = match icmp[0] {
        133 => NdpMessage::RouterSolicitation,
        134 => {
            let fixed = icmp.get(..16).ok_or(FrameError::BadNdp)?;
            NdpMessage::RouterAdvertisement {
                router_lifetime_s: u16::from_be_bytes([fixed[6], fixed[7]]),
                source_mac: link_layer_option(&icmp[16..], 1)?,
                info: ra_info(fixed, &icmp[16..]),
            }
        }
        135 => {
            let fixed = icmp.get(..24).ok_or(FrameError::BadNdp)?;
            NdpMessage::NeighbourSolicitation {
                target: ipv6_at(fixed, 8),
                source_mac: link_layer_option(&icmp[24..], 1)?,
            }
        }
        136 => {
            let fixed = icmp.get(..24).ok_or(FrameError::BadNdp)?;
            let flags = fixed[4];
            NdpMessage::NeighbourAdvertisement {
                target: ipv6_at(fixed, 8),
                router: flags & 0x80 != 0,
                solicited: flags & 0x40 != 0,
                override_flag: flags & 0x20 != 0,
                target_mac: link_layer_option(&icmp[24..], 2)?,
            }
        }
        137 => {
            let fixed = icmp.get(..40).ok_or(FrameError::BadNdp)?;
            NdpMessage::Redirect {
                target: ipv6_at(fixed, 8),
                destination: ipv6_at(fixed, 24),
            }
        }
        _ => return Err(FrameError::NotNeighbourTraffic),
    };
    Ok(NdpFrame {
        eth_src,
        vlan,
        ip_src: ip.get_source(),
        ip_dst: ip.get_destination(),
        hop_limit: ip.get_hop_limit(),
        message,
    })
}

fn ipv6_at(bytes: &[u8], at: usize) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&bytes[at..at + 16]);
    Ipv6Addr::from(octets)
}

/// Finds the link-layer address option of `wanted` type (1 source, 2 target).
/// Options are (type, length in units of 8 bytes, data); length 0 is invalid (RFC 4861).
fn link_layer_option(mut options: &[u8], wanted: u8) -> Result<Option<EtherAddr>, FrameError> {
    while options.len() >= 2 {
        let kind = options[0];
        let len = options[1] as usize * 8;
        if len == 0 || len > options.len() {
            return Err(FrameError::BadNdp);
        }
        if kind == wanted && len >= 8 {
            return Ok(Some(EtherAddr([
                options[2], options[3], options[4], options[5], options[6], options[7],
            ])));
        }
        options = &options[len..];
    }
    Ok(None)
}

/// Builders for frames, used by tests, the replay benchmark's generator and fuzzing seeds.
pub mod build {
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// The Internet checksum (RFC 1071) of `bytes`.
    pub fn checksum(bytes: &[u8]) -> u16 {
        let mut sum: u32 = bytes
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// An Ethernet + ARP frame (42 bytes).
    pub fn arp(
        eth_src: [u8; 6],
        eth_dst: [u8; 6],
        reply: bool,
        sha: [u8; 6],
        spa: Ipv4Addr,
        tha: [u8; 6],
        tpa: Ipv4Addr,
    ) -> Vec<u8> {
        let mut f = Vec::with_capacity(42);
        f.extend_from_slice(&eth_dst);
        f.extend_from_slice(&eth_src);
        f.extend_from_slice(&[
            0x08,
            0x06,
            0x00,
            0x01,
            0x08,
            0x00,
            6,
            4,
            0x00,
            if reply { 2 } else { 1 },
        ]);
        f.extend_from_slice(&sha);
        f.extend_from_slice(&spa.octets());
        f.extend_from_slice(&tha);
        f.extend_from_slice(&tpa.octets());
        f
    }

    /// A gratuitous ARP request: `ip` is at `mac`, to broadcast.
    pub fn gratuitous_arp(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
        arp(mac, [0xff; 6], false, mac, ip, [0; 6], ip)
    }

    /// Ethernet + IPv6 + an ICMPv6 body (checksum left zero: parsers here do not check it).
    pub fn icmpv6(
        eth_src: [u8; 6],
        eth_dst: [u8; 6],
        src: Ipv6Addr,
        dst: Ipv6Addr,
        body: &[u8],
    ) -> Vec<u8> {
        let mut f = Vec::with_capacity(54 + body.len());
        f.extend_from_slice(&eth_dst);
        f.extend_from_slice(&eth_src);
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&(body.len() as u16).to_be_bytes());
        f.extend_from_slice(&[58, 255]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(body);
        f
    }

    /// A neighbour advertisement body with flags R|S|O as given and a target link-layer option.
    pub fn na_body(
        target: Ipv6Addr,
        router: bool,
        solicited: bool,
        override_flag: bool,
        mac: [u8; 6],
    ) -> Vec<u8> {
        let flags = (router as u8) << 7 | (solicited as u8) << 6 | (override_flag as u8) << 5;
        let mut b = vec![136, 0, 0, 0, flags, 0, 0, 0];
        b.extend_from_slice(&target.octets());
        b.extend_from_slice(&[2, 1]);
        b.extend_from_slice(&mac);
        b
    }

    /// A router advertisement body with a source link-layer option.
    pub fn ra_body(mac: [u8; 6], lifetime_s: u16) -> Vec<u8> {
        let mut b = vec![134, 0, 0, 0, 64, 0];
        b.extend_from_slice(&lifetime_s.to_be_bytes());
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&[1, 1]);
        b.extend_from_slice(&mac);
        b
    }

    /// [`ra_body`] with what a router tells hosts: a /64 prefix (on-link,
    /// autonomous), one RDNSS server, an MTU.
    pub fn ra_body_with(
        mac: [u8; 6],
        lifetime_s: u16,
        prefix: Ipv6Addr,
        dns: Ipv6Addr,
        mtu: u32,
    ) -> Vec<u8> {
        let mut b = ra_body(mac, lifetime_s);
        b.extend_from_slice(&[
            3, 4, 64, 0xc0, 0, 0, 0x1c, 0x20, 0, 0, 0x0e, 0x10, 0, 0, 0, 0,
        ]);
        b.extend_from_slice(&prefix.octets());
        b.extend_from_slice(&[25, 3, 0, 0, 0, 0, 0x0e, 0x10]);
        b.extend_from_slice(&dns.octets());
        b.extend_from_slice(&[5, 1, 0, 0]);
        b.extend_from_slice(&mtu.to_be_bytes());
        b
    }

    /// Ethernet + IPv4 (DF, `ttl`, 203.0.113.7 → 192.0.2.10) + a TCP header
    /// from port 50000 to `dst_port` with `flags` (0x02: SYN) and `options`.
    pub fn tcp_v4(ttl: u8, flags: u8, dst_port: u16, options: &[u8]) -> Vec<u8> {
        let tcp = tcp_header(flags, dst_port, options);
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
        f.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, ttl, 6, 0, 0]);
        f.extend_from_slice(&[203, 0, 113, 7, 192, 0, 2, 10]);
        f.extend_from_slice(&tcp);
        f
    }

    /// Ethernet + IPv6 (hop limit `hops`, 2001:db8::7 → 2001:db8::10), a
    /// destination-options header when `ext`, and the TCP header of [`tcp_v4`].
    pub fn tcp_v6(hops: u8, ext: bool, flags: u8, dst_port: u16, options: &[u8]) -> Vec<u8> {
        let tcp = tcp_header(flags, dst_port, options);
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&((tcp.len() + if ext { 8 } else { 0 }) as u16).to_be_bytes());
        f.extend_from_slice(&[if ext { 60 } else { 6 }, hops]);
        f.extend_from_slice(
            &"2001:db8::7"
                .parse::<Ipv6Addr>()
                .unwrap_or(Ipv6Addr::UNSPECIFIED)
                .octets(),
        );
        f.extend_from_slice(
            &"2001:db8::10"
                .parse::<Ipv6Addr>()
                .unwrap_or(Ipv6Addr::UNSPECIFIED)
                .octets(),
        );
        if ext {
            f.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        }
        f.extend_from_slice(&tcp);
        f
    }

    fn tcp_header(flags: u8, dst_port: u16, options: &[u8]) -> Vec<u8> {
        let mut t = vec![0xc3, 0x50];
        t.extend_from_slice(&dst_port.to_be_bytes());
        t.extend_from_slice(&[0; 8]);
        t.push((((20 + options.len()) / 4) as u8) << 4);
        t.push(flags);
        t.extend_from_slice(&64240u16.to_be_bytes());
        t.extend_from_slice(&[0; 4]);
        t.extend_from_slice(options);
        t
    }

    /// Linux's SYN options: mss 1460, sackOK, timestamps, nop, wscale 7.
    pub const LINUX_SYN_OPTIONS: &[u8] = &[
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
    ];

    /// A VRRP advertisement over IPv4 (TTL 255, to 224.0.0.18): `version`
    /// 2 or 3, interval 1 s. The checksum is left zero (nobody checks it here).
    pub fn vrrp4(
        eth_src: [u8; 6],
        src: Ipv4Addr,
        version: u8,
        vrid: u8,
        priority: u8,
        addresses: &[Ipv4Addr],
    ) -> Vec<u8> {
        let mut body = vec![version << 4 | 1, vrid, priority, addresses.len() as u8];
        body.extend_from_slice(if version == 2 { &[0, 1] } else { &[0, 100] });
        body.extend_from_slice(&[0, 0]);
        for a in addresses {
            body.extend_from_slice(&a.octets());
        }
        let mut f = vec![0x01, 0x00, 0x5e, 0x00, 0x00, 0x12];
        f.extend_from_slice(&eth_src);
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + body.len()) as u16;
        let mut ip = vec![0x45, 0xc0];
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0, 0, 255, 112, 0, 0]);
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&[224, 0, 0, 18]);
        let sum = checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&body);
        f
    }

    /// A VRRP version 3 advertisement over IPv6 (hop limit 255, to ff02::12).
    pub fn vrrp6(eth_src: [u8; 6], src: Ipv6Addr, vrid: u8, addresses: &[Ipv6Addr]) -> Vec<u8> {
        let mut body = vec![0x31, vrid, 100, addresses.len() as u8, 0, 100, 0, 0];
        for a in addresses {
            body.extend_from_slice(&a.octets());
        }
        let mut f = vec![0x33, 0x33, 0x00, 0x00, 0x00, 0x12];
        f.extend_from_slice(&eth_src);
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&(body.len() as u16).to_be_bytes());
        f.extend_from_slice(&[112, 255]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(
            &"ff02::12"
                .parse::<Ipv6Addr>()
                .map(|a| a.octets())
                .unwrap_or([0; 16]),
        );
        f.extend_from_slice(&body);
        f
    }

    /// Inserts an 802.1Q tag after the MAC addresses.
    pub fn tagged(frame: &[u8], vlan: u16) -> Vec<u8> {
        let mut f = frame[..12].to_vec();
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&(vlan & 0x0fff).to_be_bytes());
        f.extend_from_slice(&frame[12..]);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M1: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const M2: [u8; 6] = [2, 0, 0, 0, 0, 2];

    #[test]
    fn arp_reply_and_tagged_request() {
        let f = build::arp(
            M1,
            M2,
            true,
            M1,
            Ipv4Addr::new(192, 0, 2, 1),
            M2,
            Ipv4Addr::new(192, 0, 2, 10),
        );
        let Frame::Arp(a) = parse(&f).unwrap() else {
            panic!()
        };
        assert!(a.is_reply);
        assert_eq!(a.sender_mac.to_string(), "02:00:00:00:00:01");
        assert_eq!(a.sender_ip, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(a.vlan, None);
        let t = build::tagged(&build::gratuitous_arp(M2, Ipv4Addr::new(192, 0, 2, 7)), 42);
        let Frame::Arp(a) = parse(&t).unwrap() else {
            panic!()
        };
        assert_eq!(a.vlan, Some(42));
        assert!(!a.is_reply);
        assert_eq!(a.target_ip, Ipv4Addr::new(192, 0, 2, 7));
    }

    #[test]
    fn neighbour_advertisement_and_router_advertisement() {
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        let all: Ipv6Addr = "ff02::1".parse().unwrap();
        let f = build::icmpv6(
            M1,
            [0x33, 0x33, 0, 0, 0, 1],
            ll,
            all,
            &build::na_body(ll, true, false, true, M2),
        );
        let Frame::Ndp(n) = parse(&f).unwrap() else {
            panic!()
        };
        assert_eq!(n.ip_src, ll);
        assert_eq!(
            n.message,
            NdpMessage::NeighbourAdvertisement {
                target: ll,
                router: true,
                solicited: false,
                override_flag: true,
                target_mac: Some(EtherAddr(M2))
            }
        );
        let f = build::icmpv6(
            M1,
            [0x33, 0x33, 0, 0, 0, 1],
            ll,
            all,
            &build::ra_body(M1, 1800),
        );
        let Frame::Ndp(n) = parse(&build::tagged(&f, 7)).unwrap() else {
            panic!()
        };
        assert_eq!(n.vlan, Some(7));
        assert_eq!(
            n.message,
            NdpMessage::RouterAdvertisement {
                router_lifetime_s: 1800,
                source_mac: Some(EtherAddr(M1)),
                info: RaInfo {
                    cur_hop_limit: 64,
                    preference: "medium",
                    ..RaInfo::default()
                }
            }
        );
    }

    #[test]
    fn truncations_and_garbage_are_errors() {
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        let frames = [
            build::gratuitous_arp(M1, Ipv4Addr::new(192, 0, 2, 1)),
            build::icmpv6(M1, M2, ll, ll, &build::na_body(ll, false, false, true, M2)),
            build::icmpv6(M1, M2, ll, ll, &build::ra_body(M1, 0)),
            build::tagged(
                &build::tagged(&build::gratuitous_arp(M1, Ipv4Addr::new(192, 0, 2, 1)), 1),
                2,
            ),
        ];
        for f in &frames {
            for cut in 0..f.len() {
                let _ = parse(&f[..cut]);
            }
            let mut bad = f.clone();
            for i in 0..bad.len() {
                bad[i] ^= 0xff;
                let _ = parse(&bad);
            }
        }
        assert_eq!(parse(&[]), Err(FrameError::Truncated));
        // A zero-length NDP option is malformed, not an endless loop.
        let mut body = build::na_body(ll, false, false, true, M2);
        body[25] = 0;
        assert_eq!(
            parse(&build::icmpv6(M1, M2, ll, ll, &body)),
            Err(FrameError::BadNdp)
        );
        // IPv4 is not ours.
        let mut ipv4 = build::gratuitous_arp(M1, Ipv4Addr::new(192, 0, 2, 1));
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(parse(&ipv4), Err(FrameError::NotNeighbourTraffic));
    }
}

#[cfg(test)]
mod ra_tests {
    use super::*;

    #[test]
    fn router_advertisement_options_are_read_and_bounded() {
        let m = [2, 0, 0, 0, 0, 1];
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        let mut body = build::ra_body_with(
            m,
            1800,
            "2001:db8:1::".parse().unwrap(),
            "2001:db8:1::53".parse().unwrap(),
            1280,
        );
        body[5] = 0xc8; // M, O, preference high
        // DNSSL: example.org, padded; then 40 RDNSS options (capped at 16).
        body.extend_from_slice(&[31, 3, 0, 0, 0, 0, 0x0e, 0x10]);
        body.extend_from_slice(b"\x07example\x03org\x00\x00\x00\x00");
        for i in 0..40u16 {
            body.extend_from_slice(&[25, 3, 0, 0, 0, 0, 0x0e, 0x10]);
            body.extend_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, i).octets());
        }
        // A zero-length option ends the walk without an error.
        body.extend_from_slice(&[24, 0, 0, 0]);
        let f = build::icmpv6(
            m,
            [0x33, 0x33, 0, 0, 0, 1],
            ll,
            "ff02::1".parse().unwrap(),
            &body,
        );
        let Ok(Frame::Ndp(n)) = parse(&f) else {
            panic!()
        };
        let NdpMessage::RouterAdvertisement { info, .. } = n.message else {
            panic!()
        };
        assert!(info.managed && info.other);
        assert_eq!(info.preference, "high");
        assert_eq!(info.mtu, Some(1280));
        assert_eq!(
            info.prefixes,
            vec![("2001:db8:1::".parse().unwrap(), 64, true, true)]
        );
        assert_eq!(info.dnssl, vec!["example.org".to_string()]);
        assert_eq!(info.rdnss.len(), MAX_RA_ENTRIES);
        assert!(info.rdnss.contains(&"2001:db8:1::53".parse().unwrap()));
    }
}

#[cfg(test)]
mod vrrp_tests {
    use super::*;

    const VMAC: [u8; 6] = [0, 0, 0x5e, 0, 1, 7];
    const R1: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    fn vrrp(bytes: &[u8]) -> VrrpFrame {
        match parse(bytes) {
            Ok(Frame::Vrrp(v)) => v,
            other => panic!("not VRRP: {other:?}"),
        }
    }

    #[test]
    fn versions_2_and_3_over_ipv4_and_ipv6() {
        let v2 = vrrp(&build::vrrp4(VMAC, R1, 2, 7, 200, &[VIP]));
        assert_eq!(
            (v2.version, v2.vrid, v2.priority, v2.interval_cs),
            (2, 7, 200, 100)
        );
        assert_eq!((v2.eth_src, v2.ip_src), (EtherAddr(VMAC), IpAddr::V4(R1)));
        assert_eq!(v2.addresses, vec![IpAddr::V4(VIP)]);
        let v3 = vrrp(&build::vrrp4([2, 0, 0, 0, 0, 2], R1, 3, 9, 100, &[VIP, R1]));
        assert_eq!((v3.version, v3.vrid, v3.interval_cs), (3, 9, 100));
        assert_eq!(v3.addresses.len(), 2);
        let ll: Ipv6Addr = "fe80::2".parse().unwrap();
        let v6 = vrrp(&build::vrrp6(
            [0, 0, 0x5e, 0, 2, 7],
            ll,
            7,
            &["fe80::1".parse().unwrap()],
        ));
        assert_eq!((v6.version, v6.vrid, v6.ip_src), (3, 7, IpAddr::V6(ll)));
        assert_eq!(
            EtherAddr([0, 0, 0x5e, 0, 2, 7]).vrrp_group(),
            Some((true, 7))
        );
        assert_eq!(EtherAddr::vrrp(false, 7), EtherAddr(VMAC));
        let tagged = build::tagged(&build::vrrp4(VMAC, R1, 2, 7, 200, &[VIP]), 42);
        assert_eq!(vrrp(&tagged).vlan, Some(42));
    }

    #[test]
    fn forwarded_bad_or_truncated_advertisements_are_errors() {
        let good = build::vrrp4(VMAC, R1, 2, 7, 200, &[VIP]);
        // TTL 254: it crossed a router (RFC 5798 7.1).
        let mut routed = good.clone();
        routed[14 + 8] = 254;
        assert_eq!(parse(&routed), Err(FrameError::BadVrrp));
        // VRID 0, version 4, type 2.
        for (at, value) in [(35, 0u8), (34, 0x41), (34, 0x22)] {
            let mut bad = good.clone();
            bad[at] = value;
            assert_eq!(parse(&bad), Err(FrameError::BadVrrp), "byte {at} = {value}");
        }
        // More addresses announced than carried.
        let mut short = good.clone();
        short[37] = 5;
        assert_eq!(parse(&short), Err(FrameError::Truncated));
        for cut in 0..good.len() {
            let _ = parse(&good[..cut]);
        }
        // Version 2 over IPv6 does not exist.
        let mut v6 = build::vrrp6(VMAC, "fe80::2".parse().unwrap(), 7, &[]);
        v6[54] = 0x21;
        assert_eq!(parse(&v6), Err(FrameError::BadVrrp));
    }
}
