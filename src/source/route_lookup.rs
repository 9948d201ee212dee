//! Where does traffic go? The kernel's own answer, per destination.
//!
//! For each watched destination two `RTM_GETROUTE` requests (lookups: no
//! packet is sent): a plain one, which gives the next hop the kernel really
//! uses (a redirect's route exception included), and one with
//! `RTM_F_FIB_MATCH`, which gives the route that decided (its prefix and
//! table). When the table is not the main one a policy rule chose it: the
//! rules that look it up are named. Every table and every rule is thereby
//! covered without mirroring them.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage,
};
use netlink_packet_route::rule::{RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::netlink::{ParseStats, for_each_message, route_gateway};
use crate::kernel::{PathLookup, RoutePath};

/// Rules read to name the one that chose a table.
const MAX_RULES: usize = 1024;

/// A socket for lookups (connected to the kernel, no groups).
pub struct Lookups {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
    stats: ParseStats,
}

/// One route as the kernel answered a lookup.
struct Answer {
    gateway: Option<IpAddr>,
    oif: u32,
    table: u32,
    prefix: Option<(IpAddr, u8)>,
}

impl Lookups {
    pub fn open() -> io::Result<Lookups> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Lookups {
            socket,
            seq: 0,
            buf: Vec::with_capacity(64 << 10),
            stats: ParseStats::default(),
        })
    }

    /// The path of each destination, in order. A lookup the kernel refuses
    /// (no route, unreachable, blackhole) is a path of `None`.
    pub fn paths(&mut self, destinations: &[IpAddr]) -> io::Result<Vec<PathLookup>> {
        let mut rules: Option<Vec<(u32, String)>> = None;
        let mut out = Vec::with_capacity(destinations.len());
        for &destination in destinations {
            let used = self.lookup(destination, false)?;
            let matched = self.lookup(destination, true)?;
            let path = match (used, matched) {
                (Ok(used), Ok(matched)) => {
                    let redirected_from = match (used.gateway, matched.gateway) {
                        (Some(u), Some(m)) if u != m => Some(m),
                        _ => None,
                    };
                    let rule = if matched.table != RouteHeader::RT_TABLE_MAIN as u32 {
                        if rules.is_none() {
                            rules = Some(self.rules()?);
                        }
                        rules
                            .as_ref()
                            .and_then(|r| r.iter().find(|(t, _)| *t == matched.table))
                            .map(|(_, text)| text.clone())
                    } else {
                        None
                    };
                    Ok(RoutePath {
                        gateway: used.gateway,
                        ifindex: used.oif,
                        table: matched.table,
                        prefix: matched.prefix,
                        redirected_from,
                        rule,
                    })
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
            out.push(PathLookup { destination, path });
        }
        Ok(out)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&mut self, flags: u16, message: RouteNetlinkMessage) -> io::Result<u32> {
        let seq = self.next_seq();
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        msg.finalize();
        let mut out = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut out);
        self.socket.send(&out, 0)?;
        Ok(seq)
    }

    /// One lookup: `Ok(Err(reason))` when the kernel has no usable route.
    fn lookup(
        &mut self,
        destination: IpAddr,
        fib_match: bool,
    ) -> io::Result<Result<Answer, String>> {
        let mut m = RouteMessage::default();
        let (family, len, addr) = match destination {
            IpAddr::V4(a) => (AddressFamily::Inet, 32, RouteAddress::Inet(a)),
            IpAddr::V6(a) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(a)),
        };
        m.header.address_family = family;
        m.header.destination_prefix_length = len;
        // Without LOOKUP_TABLE the kernel reports every answer as the main table's.
        m.header.flags = RouteFlags::LookupTable;
        if fib_match {
            m.header.flags |= RouteFlags::FibMatch;
        }
        m.attributes.push(RouteAttribute::Destination(addr));
        let seq = self.send(NLM_F_REQUEST, RouteNetlinkMessage::GetRoute(m))?;
        loop {
            self.buf.clear();
            self.socket.recv(&mut self.buf, 0)?;
            let mut answer = None;
            for_each_message(&self.buf, &mut self.stats, |header, payload| {
                if header.sequence_number != seq || answer.is_some() {
                    return;
                }
                answer = match payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => {
                        Some(Ok(answer_of(&r)))
                    }
                    NetlinkPayload::Error(e) => Some(Err(match e.code {
                        Some(code) => io::Error::from_raw_os_error(-code.get()).to_string(),
                        None => "no answer".to_string(),
                    })),
                    _ => None,
                };
            });
            if let Some(a) = answer {
                return Ok(a);
            }
        }
    }

    /// The policy rules of both families: (table, how `ip rule` would show it).
    fn rules(&mut self) -> io::Result<Vec<(u32, String)>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut m = RuleMessage::default();
            m.header.family = family;
            let seq = self.send(NLM_F_REQUEST | NLM_F_DUMP, RouteNetlinkMessage::GetRule(m))?;
            let mut done = false;
            while !done {
                self.buf.clear();
                self.socket.recv(&mut self.buf, 0)?;
                for_each_message(&self.buf, &mut self.stats, |header, payload| {
                    if header.sequence_number != seq {
                        return;
                    }
                    match payload {
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRule(r))
                            if out.len() < MAX_RULES =>
                        {
                            out.push(rule_text(&r));
                        }
                        NetlinkPayload::Done(_) | NetlinkPayload::Error(_) => done = true,
                        _ => {}
                    }
                });
            }
        }
        Ok(out)
    }
}

fn answer_of(r: &RouteMessage) -> Answer {
    let mut a = Answer {
        gateway: None,
        oif: 0,
        table: r.header.table as u32,
        prefix: None,
    };
    for attr in &r.attributes {
        match attr {
            RouteAttribute::Table(t) => a.table = *t,
            RouteAttribute::Oif(i) => a.oif = *i,
            RouteAttribute::Destination(d) => {
                a.prefix = ip_of(d).map(|ip| (ip, r.header.destination_prefix_length));
            }
            RouteAttribute::MultiPath(hops) if a.gateway.is_none() => {
                if let Some(hop) = hops.first() {
                    a.oif = hop.interface_index;
                    a.gateway = route_gateway(&hop.attributes);
                }
            }
            _ => {}
        }
    }
    if let Some(g) = route_gateway(&r.attributes) {
        a.gateway = Some(g);
    }
    if a.prefix.is_none() {
        // A default route carries no destination attribute.
        let any = match r.header.address_family {
            AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        };
        a.prefix = Some((any, r.header.destination_prefix_length));
    }
    a
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

/// `100: from 192.0.2.0/24 to all fwmark 0x1 iif eth1 lookup 100`, as `ip rule` says.
fn rule_text(r: &RuleMessage) -> (u32, String) {
    let mut table = r.header.table as u32;
    let mut priority = 0;
    let (mut from, mut to) = ("all".to_string(), "all".to_string());
    let mut extra = String::new();
    for attr in &r.attributes {
        match attr {
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::Priority(p) => priority = *p,
            RuleAttribute::Source(ip) => from = format!("{ip}/{}", r.header.src_len),
            RuleAttribute::Destination(ip) => to = format!("{ip}/{}", r.header.dst_len),
            RuleAttribute::FwMark(m) => extra.push_str(&format!(" fwmark {m:#x}")),
            RuleAttribute::Iifname(n) => extra.push_str(&format!(" iif {n}")),
            RuleAttribute::Oifname(n) => extra.push_str(&format!(" oif {n}")),
            _ => {}
        }
    }
    (
        table,
        format!("{priority}: from {from} to {to}{extra} lookup {table}"),
    )
}
