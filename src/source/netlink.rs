//! Netlink source: the kernel's links, neighbours, default routes and addresses.
//!
//! One socket is subscribed to the link, neighbour, route and address groups
//! *before* a second socket dumps everything, so no change falls between the dump
//! and the first event. Events are idempotent upserts; when the kernel reports
//! that events were lost (`ENOBUFS`, an overrun), and on a timer, everything is
//! dumped again and the detector reconciles.

use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState as NlState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType, RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::kernel::{
    Address, DefaultRoute, Family, KernelView, Link, Mac, Neighbour, NeighbourState, NextHop,
    Observation, PathLookup, RouteKey,
};

const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_NEIGH: u32 = 0x4;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;
/// `1 << (RTNLGRP_IPV4_RULE - 1)`, `1 << (RTNLGRP_IPV6_RULE - 1)`: policy rules.
const RTMGRP_IPV4_RULE: u32 = 1 << 7;
const RTMGRP_IPV6_RULE: u32 = 1 << 18;
/// How often the watched destinations are looked up when nothing was
/// announced: an ICMP redirect changes a path without any netlink event.
const LOOKUP_EVERY: Duration = Duration::from_secs(2);
/// After an address or a link went away, the routes the kernel flushed with
/// it (without `RTM_DELROUTE`) are read again this soon (one dump per burst).
const RESYNC_AFTER_REMOVAL: Duration = Duration::from_millis(200);
const RECV_BUFFER: usize = 256 << 10;
/// Observations handed to the agent at once.
const MAX_BATCH: usize = 4096;

/// What the source sends to the agent.
#[derive(Debug)]
pub enum SourceEvent {
    Observations(Vec<Observation>),
    /// Events were lost (or the timer fired) and this is a fresh full dump.
    Resynced {
        reason: &'static str,
        view: KernelView,
    },
    /// The source cannot go on.
    Failed(String),
}

/// Counters for `status` and logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ParseStats {
    pub messages: u64,
    pub undecodable: u64,
    /// Route, rule, address and link messages: where traffic goes may have changed.
    pub routing: u64,
}

/// Opens the event socket: subscribed to every group the detectors need.
pub fn open_event_socket(receive_buffer: usize) -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    let groups = RTMGRP_LINK
        | RTMGRP_NEIGH
        | RTMGRP_IPV4_ROUTE
        | RTMGRP_IPV6_ROUTE
        | RTMGRP_IPV4_IFADDR
        | RTMGRP_IPV6_IFADDR
        | RTMGRP_IPV4_RULE
        | RTMGRP_IPV6_RULE;
    socket.bind(&SocketAddr::new(0, groups))?;
    super::set_receive_buffer(&socket, receive_buffer);
    Ok(socket)
}

/// Dump attempts before giving up; the pause between them doubles from 5 ms
/// up to [`MAX_RETRY_PAUSE`] (about 4 s in all).
const DUMP_ATTEMPTS: u32 = 12;
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Dumps links, addresses, neighbours and routes into one consistent view.
///
/// A dump the kernel marks as interrupted (`NLM_F_DUMP_INTR`: the tables
/// changed under it) or refuses as busy (`-EBUSY`) is never used: it is thrown
/// away with its socket (whatever of it is still queued goes too) and done
/// again on a fresh socket. When the tables never stay still long enough, the
/// error has kind [`io::ErrorKind::ResourceBusy`]: try again later, and never
/// take a partial view.
pub fn dump() -> io::Result<KernelView> {
    let mut pause = Duration::from_millis(5);
    for _attempt in 0..DUMP_ATTEMPTS {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        match dump_once(&socket) {
            Ok(view) => return Ok(view),
            Err(DumpError::Interrupted) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(MAX_RETRY_PAUSE);
            }
            Err(DumpError::Io(e)) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::ResourceBusy,
        format!("the kernel's tables changed during each of {DUMP_ATTEMPTS} dumps"),
    ))
}

/// How a re-dump in the source thread went.
enum Resync {
    Done,
    /// The tables kept changing: try again soon.
    Busy,
    /// The agent is gone or the dump failed for good (reported).
    Stop,
}

/// Why one dump attempt is not a view.
enum DumpError {
    /// Interrupted or busy: the view would be partial; try again.
    Interrupted,
    Io(io::Error),
}

impl From<io::Error> for DumpError {
    fn from(e: io::Error) -> Self {
        DumpError::Io(e)
    }
}

/// How one message of a dump ends the dump, if it does.
fn dump_end(payload: &NetlinkPayload<RouteNetlinkMessage>) -> Option<Result<(), DumpError>> {
    match payload {
        NetlinkPayload::Done(_) => Some(Ok(())),
        NetlinkPayload::Error(e) => Some(match e.code {
            // An acknowledgement: nothing more comes.
            None => Ok(()),
            Some(code) if -code.get() == libc::EBUSY || -code.get() == libc::EINTR => {
                Err(DumpError::Interrupted)
            }
            Some(code) => Err(DumpError::Io(io::Error::from_raw_os_error(-code.get()))),
        }),
        _ => None,
    }
}

fn dump_once(socket: &Socket) -> Result<KernelView, DumpError> {
    let mut view = KernelView::default();
    let requests = [
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
        RouteNetlinkMessage::GetRoute(RouteMessage::default()),
    ];
    let mut buf = Vec::with_capacity(RECV_BUFFER);
    let mut stats = ParseStats::default();
    for (seq, request) in requests.into_iter().enumerate() {
        let seq = seq as u32 + 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
        msg.finalize();
        let mut out = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut out);
        socket.send(&out, 0)?;
        loop {
            buf.clear();
            socket.recv(&mut buf, 0)?;
            let mut interrupted = false;
            let mut end = None;
            for_each_message(&buf, &mut stats, |header, payload| {
                if header.sequence_number != seq || end.is_some() {
                    return;
                }
                interrupted |= header.flags & NLM_F_DUMP_INTR != 0;
                match dump_end(&payload) {
                    Some(e) => end = Some(e),
                    None => {
                        if let NetlinkPayload::InnerMessage(m) = payload {
                            for obs in observations_of(m) {
                                apply(&mut view, obs);
                            }
                        }
                    }
                }
            });
            if interrupted {
                return Err(DumpError::Interrupted);
            }
            match end {
                Some(Ok(())) => break,
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
    }
    Ok(view)
}

/// Applies one observation to a view (used to assemble a dump).
fn apply(view: &mut KernelView, obs: Observation) {
    match obs {
        Observation::Link(l) => {
            view.links.insert(l.index, l);
        }
        Observation::Neighbour(n) => {
            view.neighbours.insert((n.ifindex, n.ip), n);
        }
        Observation::Route(r) => {
            view.routes.insert(r.key, r.nexthops);
        }
        Observation::Address(a) => view.addresses.push(a),
        _ => {}
    }
}

/// Walks the netlink messages in one datagram. Undecodable messages are counted
/// and skipped: a kernel newer than this parser must not stop the agent.
pub(super) fn for_each_message(
    bytes: &[u8],
    stats: &mut ParseStats,
    mut f: impl FnMut(&NetlinkHeader, NetlinkPayload<RouteNetlinkMessage>),
) {
    let mut offset = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let Ok(buffer) = NetlinkBuffer::new_checked(rest) else {
            stats.undecodable += 1;
            return;
        };
        let len = buffer.length() as usize;
        if len < 16 || len > rest.len() {
            stats.undecodable += 1;
            return;
        }
        stats.messages += 1;
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len]) {
            Ok(msg) => {
                let (header, payload) = msg.into_parts();
                f(&header, payload);
            }
            Err(e) => {
                stats.undecodable += 1;
                // A message this parser cannot read is lost information: say so,
                // but not for every one of a burst.
                if stats.undecodable <= 10 || stats.undecodable.is_power_of_two() {
                    tracing::warn!(
                        "netlink: cannot decode a message of type {} ({} so far): {e}",
                        buffer.message_type(),
                        stats.undecodable
                    );
                }
            }
        }
        offset += (len + 3) & !3;
    }
}

/// Parses one datagram of events into observations (pure; fuzzable).
pub fn parse_events(bytes: &[u8], stats: &mut ParseStats) -> Vec<Observation> {
    let mut out = Vec::new();
    let mut routing = 0;
    for_each_message(bytes, stats, |_, payload| {
        if let NetlinkPayload::InnerMessage(m) = payload {
            routing += matches!(
                m,
                RouteNetlinkMessage::NewRoute(_)
                    | RouteNetlinkMessage::DelRoute(_)
                    | RouteNetlinkMessage::NewRule(_)
                    | RouteNetlinkMessage::DelRule(_)
                    | RouteNetlinkMessage::NewAddress(_)
                    | RouteNetlinkMessage::DelAddress(_)
                    | RouteNetlinkMessage::NewLink(_)
                    | RouteNetlinkMessage::DelLink(_)
            ) as u64;
            out.extend(observations_of(m));
        }
    });
    stats.routing += routing;
    out
}

fn observations_of(message: RouteNetlinkMessage) -> Vec<Observation> {
    match message {
        RouteNetlinkMessage::NewLink(m) => vec![Observation::Link(link_of(&m))],
        RouteNetlinkMessage::DelLink(m) => {
            let l = link_of(&m);
            vec![Observation::LinkRemoved {
                index: l.index,
                name: l.name,
            }]
        }
        RouteNetlinkMessage::NewNeighbour(m) => neighbour_of(&m)
            .map(Observation::Neighbour)
            .into_iter()
            .collect(),
        RouteNetlinkMessage::DelNeighbour(m) => neighbour_of(&m)
            .map(|n| Observation::NeighbourRemoved {
                ifindex: n.ifindex,
                ip: n.ip,
            })
            .into_iter()
            .collect(),
        RouteNetlinkMessage::NewRoute(m) => default_route_of(&m)
            .map(Observation::Route)
            .into_iter()
            .collect(),
        RouteNetlinkMessage::DelRoute(m) => default_route_of(&m)
            .map(|r| Observation::RouteRemoved(r.key))
            .into_iter()
            .collect(),
        RouteNetlinkMessage::NewAddress(m) => address_of(&m)
            .map(Observation::Address)
            .into_iter()
            .collect(),
        RouteNetlinkMessage::DelAddress(m) => address_of(&m)
            .map(Observation::AddressRemoved)
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

fn link_of(m: &LinkMessage) -> Link {
    let flags = m.header.flags;
    let mut link = Link {
        index: m.header.index,
        name: format!("if{}", m.header.index),
        kind: None,
        mac: None,
        mtu: 0,
        admin_up: flags.contains(LinkFlags::Up),
        carrier: flags.contains(LinkFlags::LowerUp),
        promisc: flags.contains(LinkFlags::Promisc),
        loopback: flags.contains(LinkFlags::Loopback),
        carrier_downs: None,
        parent: None,
    };
    for attr in &m.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(a) => link.mac = Mac::from_bytes(a),
            LinkAttribute::Mtu(v) => link.mtu = *v,
            LinkAttribute::Link(p) if *p != 0 => link.parent = Some(*p),
            LinkAttribute::CarrierDownCount(n) => link.carrier_downs = Some(*n),
            // Packet sockets (tcpdump) raise this counter without setting IFF_PROMISC.
            LinkAttribute::Promiscuity(n) => link.promisc |= *n > 0,
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = Some(match kind {
                            InfoKind::Other(s) => s.clone(),
                            k => k.to_string(),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn neighbour_of(m: &NeighbourMessage) -> Option<Neighbour> {
    if !matches!(m.header.family, AddressFamily::Inet | AddressFamily::Inet6) {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    for attr in &m.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(IpAddr::V4(*a)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                ip = Some(IpAddr::V6(*a))
            }
            NeighbourAttribute::LinkLayerAddress(a) => mac = Mac::from_bytes(a),
            _ => {}
        }
    }
    let state = match m.header.state {
        NlState::Incomplete => NeighbourState::Incomplete,
        NlState::Reachable => NeighbourState::Reachable,
        NlState::Stale => NeighbourState::Stale,
        NlState::Delay => NeighbourState::Delay,
        NlState::Probe => NeighbourState::Probe,
        NlState::Failed => NeighbourState::Failed,
        NlState::Noarp => NeighbourState::Noarp,
        NlState::Permanent => NeighbourState::Permanent,
        _ => NeighbourState::None,
    };
    Some(Neighbour {
        ifindex: m.header.ifindex,
        ip: ip?,
        mac,
        state,
    })
}

fn address_of(m: &AddressMessage) -> Option<Address> {
    let ip = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let ip = ip.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })?;
    Some(Address {
        ifindex: m.header.index,
        ip,
        prefix_len: m.header.prefix_len,
    })
}

pub(super) fn route_gateway(attrs: &[RouteAttribute]) -> Option<IpAddr> {
    attrs.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        RouteAttribute::Via(RouteVia::Inet(ip)) => Some(IpAddr::V4(*ip)),
        RouteAttribute::Via(RouteVia::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        _ => None,
    })
}

/// A unicast default route of the main table, or `None` for any other route.
fn default_route_of(m: &RouteMessage) -> Option<DefaultRoute> {
    let family = match m.header.address_family {
        AddressFamily::Inet => Family::Inet,
        AddressFamily::Inet6 => Family::Inet6,
        _ => return None,
    };
    if m.header.destination_prefix_length != 0 || m.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = m.header.table as u32;
    let mut metric = 0;
    let mut oif = 0;
    let mut nexthops = Vec::new();
    for attr in &m.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Oif(i) => oif = *i,
            RouteAttribute::MultiPath(hops) => {
                for hop in hops {
                    nexthops.push(NextHop {
                        gateway: route_gateway(&hop.attributes),
                        ifindex: hop.interface_index,
                    });
                }
            }
            _ => {}
        }
    }
    if table != RouteHeader::RT_TABLE_MAIN as u32 {
        return None;
    }
    if nexthops.is_empty() {
        nexthops.push(NextHop {
            gateway: route_gateway(&m.attributes),
            ifindex: oif,
        });
    }
    let hop = match family {
        Family::Inet6 => nexthops.first().map(|h| (h.gateway, h.ifindex)),
        Family::Inet => None,
    };
    Some(DefaultRoute {
        key: RouteKey {
            family,
            table,
            metric,
            tos: m.header.tos,
            hop,
        },
        nexthops,
    })
}

/// What the source thread is given.
pub struct NetlinkSettings {
    /// Full re-dump interval.
    pub reconcile: Duration,
    pub receive_buffer: usize,
    /// Destinations whose path is looked up (see [`super::route_lookup`]);
    /// the agent replaces them at a reload.
    pub destinations: std::sync::Arc<std::sync::Mutex<Vec<IpAddr>>>,
}

/// The watched destinations' paths: looked up after routing events, every
/// [`LOOKUP_EVERY`] and after a dump; sent on when they differ from the last
/// ones sent (or after a dump, always).
struct PathWatch {
    lookups: Option<super::route_lookup::Lookups>,
    destinations: std::sync::Arc<std::sync::Mutex<Vec<IpAddr>>>,
    last: Vec<PathLookup>,
    next: Instant,
}

impl PathWatch {
    fn new(destinations: std::sync::Arc<std::sync::Mutex<Vec<IpAddr>>>) -> PathWatch {
        let lookups = match super::route_lookup::Lookups::open() {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(
                    "netlink: cannot open a socket for route lookups ({e}); paths are not watched"
                );
                None
            }
        };
        PathWatch {
            lookups,
            destinations,
            last: Vec::new(),
            next: Instant::now(),
        }
    }

    /// The paths, when they changed (or `always`).
    fn check(&mut self, always: bool) -> Option<Observation> {
        self.next = Instant::now() + LOOKUP_EVERY;
        let lookups = self.lookups.as_mut()?;
        let destinations = self
            .destinations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if destinations.is_empty() {
            return None;
        }
        match lookups.paths(&destinations) {
            Ok(paths) if always || paths != self.last => {
                tracing::debug!("netlink: paths {paths:?}");
                self.last = paths.clone();
                Some(Observation::Paths(paths))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!("netlink: route lookup failed: {e}");
                None
            }
        }
    }
}

/// Runs the source on the calling thread until the receiver goes away: a dump,
/// then events, a re-dump after lost events, after an address or link went
/// away, and every `reconcile` interval; the watched destinations' paths.
/// Blocks in `poll` between events; there is no polling loop. (~100 lines:
/// the loop is wait, re-dump or look up on the timers, drain; split, its
/// state would be passed around more than it is used.)
pub fn run(tx: tokio::sync::mpsc::Sender<SourceEvent>, settings: NetlinkSettings) {
    let socket = match open_event_socket(settings.receive_buffer) {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.blocking_send(SourceEvent::Failed(format!(
                "cannot open a netlink socket: {e}"
            )));
            return;
        }
    };
    let reconcile = settings.reconcile;
    let mut paths = PathWatch::new(settings.destinations);
    // A dump that cannot be had consistently (tables changing all the time)
    // is retried a second later; the events keep coming meanwhile.
    let busy_retry = Duration::from_secs(1);
    let resync = |reason: &'static str, paths: &mut PathWatch| -> Resync {
        match dump() {
            Ok(view) => {
                if tx
                    .blocking_send(SourceEvent::Resynced { reason, view })
                    .is_err()
                {
                    return Resync::Stop;
                }
                if let Some(p) = paths.check(true)
                    && tx
                        .blocking_send(SourceEvent::Observations(vec![p]))
                        .is_err()
                {
                    return Resync::Stop;
                }
                Resync::Done
            }
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy => {
                tracing::warn!("netlink: {e}; no partial view is used, trying again in 1 s");
                Resync::Busy
            }
            Err(e) => {
                let _ = tx.blocking_send(SourceEvent::Failed(format!("netlink dump failed: {e}")));
                Resync::Stop
            }
        }
    };
    loop {
        match resync("start", &mut paths) {
            Resync::Done => break,
            Resync::Busy => std::thread::sleep(busy_retry),
            Resync::Stop => return,
        }
    }
    let mut next_reconcile = Instant::now() + reconcile;
    let mut buf = Vec::with_capacity(RECV_BUFFER);
    let mut stats = ParseStats::default();
    let mut removed = false;
    loop {
        let wait = next_reconcile
            .min(paths.next)
            .saturating_duration_since(Instant::now());
        let ready = match super::wait_readable(&socket, wait) {
            Ok(ready) => ready,
            Err(e) => {
                let _ = tx.blocking_send(SourceEvent::Failed(format!(
                    "poll on the netlink socket failed: {e}"
                )));
                return;
            }
        };
        if !ready {
            let now = Instant::now();
            if now >= next_reconcile {
                let reason = if std::mem::take(&mut removed) {
                    "an address or a link went away"
                } else {
                    "timer"
                };
                next_reconcile = match resync(reason, &mut paths) {
                    Resync::Done => Instant::now() + reconcile,
                    Resync::Busy => Instant::now() + busy_retry,
                    Resync::Stop => return,
                };
            } else if now >= paths.next
                && let Some(p) = paths.check(false)
                && tx
                    .blocking_send(SourceEvent::Observations(vec![p]))
                    .is_err()
            {
                return;
            }
            continue;
        }
        // Drain what is queued and hand it over as one batch: one channel
        // message per burst instead of per event.
        let mut batch = Vec::new();
        let mut overrun = false;
        let routing_before = stats.routing;
        loop {
            buf.clear();
            match socket.recv(&mut buf, libc::MSG_DONTWAIT) {
                Ok(_) => {
                    batch.extend(parse_events(&buf, &mut stats));
                    if batch.len() >= MAX_BATCH {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    overrun = true;
                    break;
                }
                Err(e) => {
                    let _ = tx
                        .blocking_send(SourceEvent::Failed(format!("netlink receive failed: {e}")));
                    return;
                }
            }
        }
        // Routes the kernel flushes with an address or a link are not
        // announced: read them again shortly (one dump for a burst).
        if batch.iter().any(|o| {
            matches!(
                o,
                Observation::AddressRemoved(_) | Observation::LinkRemoved { .. }
            )
        }) {
            next_reconcile = next_reconcile.min(Instant::now() + RESYNC_AFTER_REMOVAL);
            removed = true;
        }
        if stats.routing != routing_before
            && let Some(p) = paths.check(false)
        {
            batch.push(p);
        }
        if !batch.is_empty() && tx.blocking_send(SourceEvent::Observations(batch)).is_err() {
            return;
        }
        if overrun {
            // The kernel dropped events: our picture is no longer exact.
            next_reconcile = match resync("overrun", &mut paths) {
                Resync::Done => Instant::now() + reconcile,
                Resync::Busy => Instant::now() + busy_retry,
                Resync::Stop => return,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::neighbour::NeighbourHeader;

    fn encode(message: RouteNetlinkMessage) -> Vec<u8> {
        let mut msg = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(message),
        );
        msg.finalize();
        let mut out = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut out);
        out
    }

    #[test]
    fn parses_a_neighbour_event() {
        let mut m = NeighbourMessage::default();
        m.header = NeighbourHeader {
            family: AddressFamily::Inet,
            ifindex: 2,
            state: NlState::Stale,
            ..Default::default()
        };
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                "192.0.2.1".parse().unwrap(),
            )));
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(vec![
            2, 0xde, 0xad, 0xbe, 0xef, 1,
        ]));
        let mut bytes = encode(RouteNetlinkMessage::NewNeighbour(m));
        // Two messages in one datagram.
        bytes.extend(bytes.clone());
        let mut stats = ParseStats::default();
        let obs = parse_events(&bytes, &mut stats);
        assert_eq!(obs.len(), 2);
        match &obs[0] {
            Observation::Neighbour(n) => {
                assert_eq!(n.ip.to_string(), "192.0.2.1");
                assert_eq!(n.mac.as_ref().unwrap().to_string(), "02:de:ad:be:ef:01");
                assert_eq!(n.state, NeighbourState::Stale);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn default_routes_only_from_the_main_table() {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.kind = RouteType::Unicast;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(
                "192.0.2.1".parse().unwrap(),
            )));
        m.attributes.push(RouteAttribute::Oif(2));
        let r = default_route_of(&m).unwrap();
        assert_eq!(
            r.nexthops,
            vec![NextHop {
                gateway: Some("192.0.2.1".parse().unwrap()),
                ifindex: 2
            }]
        );
        let mut other_table = m.clone();
        other_table.header.table = 100;
        assert!(default_route_of(&other_table).is_none());
        let mut not_default = m.clone();
        not_default.header.destination_prefix_length = 24;
        assert!(default_route_of(&not_default).is_none());
    }

    #[test]
    fn garbage_is_counted_not_fatal() {
        let mut stats = ParseStats::default();
        for junk in [
            &[][..],
            &[1, 2, 3],
            &[0xff; 64],
            &[16, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
        ] {
            let _ = parse_events(junk, &mut stats);
        }
        assert!(stats.undecodable > 0);
        // Truncations of a valid message never panic.
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet6;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet6(
                "2001:db8::1".parse().unwrap(),
            )));
        let bytes = encode(RouteNetlinkMessage::NewNeighbour(m));
        for cut in 0..bytes.len() {
            let _ = parse_events(&bytes[..cut], &mut stats);
        }
    }
}
