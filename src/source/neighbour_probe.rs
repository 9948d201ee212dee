//! Asks a gateway for its link-layer address, as the kernel would: an ARP
//! request (IPv4) or a neighbour solicitation (IPv6) from this host's own MAC
//! and address, sent from a send-only packet socket (CAP_NET_RAW; it
//! receives nothing). A live gateway's answer refreshes the kernel's entry,
//! which the netlink source then reports.

use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::AsFd;

use crate::kernel::{KernelView, in_subnet};
use crate::wire::build;

/// The frame that asks for `ip` on `ifindex`, from this host's MAC and an
/// address of that interface (one in the gateway's subnet when there is one);
/// `None` when the interface has no MAC or no address of the family.
pub fn frame(view: &KernelView, ifindex: u32, ip: IpAddr) -> Option<Vec<u8>> {
    let mac: [u8; 6] = view
        .links
        .get(&ifindex)?
        .mac
        .as_ref()?
        .0
        .as_slice()
        .try_into()
        .ok()?;
    let ours: Vec<_> = view
        .addresses
        .iter()
        .filter(|a| a.ifindex == ifindex && a.ip.is_ipv4() == ip.is_ipv4())
        .collect();
    let source = ours
        .iter()
        .find(|a| in_subnet(ip, a.ip, a.prefix_len))
        .or(ours.first())?
        .ip;
    match (ip, source) {
        (IpAddr::V4(target), IpAddr::V4(src)) => {
            Some(build::arp(mac, [0xff; 6], false, mac, src, [0; 6], target))
        }
        (IpAddr::V6(target), IpAddr::V6(src)) => Some(solicitation(mac, src, target)),
        _ => None,
    }
}

/// A neighbour solicitation for `target` to its solicited-node group, with
/// the source link-layer option and a correct checksum (the kernel checks it).
fn solicitation(mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | t[13] as u16,
        u16::from_be_bytes([t[14], t[15]]),
    );
    let g = group.octets();
    let eth_dst = [0x33, 0x33, g[12], g[13], g[14], g[15]];
    let mut body = vec![135, 0, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&t);
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&mac);
    let sum = icmpv6_checksum(src, group, &body);
    body[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut f = eth_dst.to_vec();
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(body.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&g);
    f.extend(body);
    f
}

/// RFC 4443 §2.3: over the pseudo-header and the message.
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, body: &[u8]) -> u16 {
    let mut data = Vec::with_capacity(40 + body.len());
    data.extend_from_slice(&src.octets());
    data.extend_from_slice(&dst.octets());
    data.extend_from_slice(&(body.len() as u32).to_be_bytes());
    data.extend_from_slice(&[0, 0, 0, 58]);
    data.extend_from_slice(body);
    build::checksum(&data)
}

/// Sends the probe for `ip` on `ifindex` (nothing when [`frame`] has none).
pub fn send(view: &KernelView, ifindex: u32, ip: IpAddr) -> io::Result<()> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let Some(frame) = frame(view, ifindex, ip) else {
        return Ok(());
    };
    // Protocol 0: a socket that receives nothing, only sends.
    let fd = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    super::sys::send_frame(fd.as_fd(), ifindex, &frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{Address, Link, Mac};

    fn view() -> KernelView {
        let mut v = KernelView::default();
        v.links.insert(
            2,
            Link {
                index: 2,
                name: "eth0".into(),
                kind: None,
                mac: Some(Mac(vec![2, 0, 0, 0, 0, 0x10])),
                mtu: 1500,
                admin_up: true,
                carrier: true,
                promisc: false,
                loopback: false,
                carrier_downs: None,
                parent: None,
            },
        );
        for (ip, len) in [("198.51.100.7", 24), ("192.0.2.10", 24), ("fe80::10", 64)] {
            v.addresses.push(Address {
                ifindex: 2,
                ip: ip.parse().unwrap(),
                prefix_len: len,
            });
        }
        v
    }

    #[test]
    fn an_arp_request_from_the_address_in_the_gateways_subnet() {
        let f = frame(&view(), 2, "192.0.2.1".parse().unwrap()).unwrap();
        let parsed = crate::wire::parse(&f);
        let text = format!("{parsed:?}");
        assert!(
            text.contains("192.0.2.10") && text.contains("192.0.2.1"),
            "{text}"
        );
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[28..32], &[192, 0, 2, 10]);
    }

    #[test]
    fn a_neighbour_solicitation_to_the_solicited_node_group() {
        let f = frame(&view(), 2, "fe80::1".parse().unwrap()).unwrap();
        assert_eq!(&f[..6], &[0x33, 0x33, 0xff, 0, 0, 1]);
        assert_eq!(f[54], 135);
        // The checksum verifies: summing again over the message gives zero.
        let body = &f[54..];
        let src: Ipv6Addr = "fe80::10".parse().unwrap();
        let dst: Ipv6Addr = "ff02::1:ff00:1".parse().unwrap();
        assert_eq!(icmpv6_checksum(src, dst, body), 0);
    }

    #[test]
    fn no_frame_without_a_mac_or_an_address() {
        let mut v = view();
        assert!(frame(&v, 3, "192.0.2.1".parse().unwrap()).is_none());
        v.addresses.clear();
        assert!(frame(&v, 2, "192.0.2.1".parse().unwrap()).is_none());
    }
}
