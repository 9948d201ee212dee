//! The few socket calls `nix` does not wrap (or wraps too strictly), for the
//! AF_PACKET capture socket. Everything else (socket, poll, SO_RCVBUF[FORCE],
//! the clock) goes through `nix`; each `unsafe` block here says why it is sound.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

fn check(rc: libc::c_int, what: &str) -> io::Result<()> {
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

/// Attaches a classic BPF program (SO_ATTACH_FILTER; nix has no wrapper).
pub fn attach_filter(fd: BorrowedFd<'_>, program: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel
    // copies the program and does not write through the pointer.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &prog as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as u32,
        )
    };
    check(rc, "attach BPF filter")
}

/// Adds (`join`) or drops the packet socket's membership of the Ethernet
/// multicast group `group` on interface `ifindex` (PACKET_ADD_MEMBERSHIP):
/// the NIC's multicast filter then passes the group's frames up, which it
/// drops otherwise for groups nobody on the host joined. Dropped by the
/// kernel when the socket closes or the interface goes away.
pub fn multicast_membership(
    fd: BorrowedFd<'_>,
    ifindex: u32,
    group: [u8; 6],
    join: bool,
) -> io::Result<()> {
    let mut mreq = libc::packet_mreq {
        mr_ifindex: ifindex as libc::c_int,
        mr_type: libc::PACKET_MR_MULTICAST as libc::c_ushort,
        mr_alen: 6,
        mr_address: [0; 8],
    };
    mreq.mr_address[..6].copy_from_slice(&group);
    let option = match join {
        true => libc::PACKET_ADD_MEMBERSHIP,
        false => libc::PACKET_DROP_MEMBERSHIP,
    };
    // SAFETY: `mreq` is a valid packet_mreq for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            option,
            &mreq as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::packet_mreq>() as u32,
        )
    };
    check(rc, "packet multicast membership")
}

/// Binds a packet socket to every interface and every protocol (ETH_P_ALL).
/// nix's `LinkAddr` cannot be built from parts, so the sockaddr_ll is ours.
pub fn bind_all_interfaces(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    addr.sll_ifindex = 0;
    // SAFETY: `addr` is a valid sockaddr_ll and the length is its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    check(rc, "bind AF_PACKET socket")
}

/// Asks the kernel for each frame's metadata (PACKET_AUXDATA): the VLAN tag
/// it stripped on receive is only there.
pub fn enable_auxdata(fd: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid c_int for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_AUXDATA,
            &on as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    check(rc, "PACKET_AUXDATA")
}

/// One received frame's metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameMeta {
    pub len: usize,
    pub ifindex: u32,
    pub pkttype: u8,
    /// The 802.1Q tag (TCI) the kernel stripped, when there was one.
    pub vlan_tci: Option<u16>,
}

/// Receives one frame without waiting, `None` when nothing is queued. The
/// address and the auxiliary data are read here: nix's `recvfrom::<LinkAddr>`
/// refuses an address the kernel reports shorter than a whole `sockaddr_ll`,
/// and nix has no PACKET_AUXDATA control message.
pub fn recv_frame(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Option<FrameMeta> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    // Room for one cmsg carrying a tpacket_auxdata (u64 for alignment).
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = &mut addr as *mut _ as *mut libc::c_void;
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: every pointer in `msg` points at a live buffer of the length
    // given, and the kernel writes at most those lengths.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return None;
    }
    let mut vlan_tci = None;
    // SAFETY: `msg` was filled by recvmsg; the CMSG macros walk only the
    // control buffer it reported (msg_controllen), and the aux data is read
    // unaligned from within the cmsg whose length says it holds one.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::SOL_PACKET
                && c.cmsg_type == libc::PACKET_AUXDATA
                && c.cmsg_len as usize
                    >= libc::CMSG_LEN(std::mem::size_of::<libc::tpacket_auxdata>() as u32) as usize
            {
                let aux =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::tpacket_auxdata);
                if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                    vlan_tci = Some(aux.tp_vlan_tci);
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Some(FrameMeta {
        len: n as usize,
        ifindex: addr.sll_ifindex as u32,
        pkttype: addr.sll_pkttype,
        vlan_tci,
    })
}

/// Reads and resets the kernel's capture counters (PACKET_STATISTICS; nix has
/// no wrapper): frames that passed the filter, frames dropped.
pub fn packet_statistics(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    let mut stats = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `stats`, which is
    // that large, and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            &mut stats as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    (rc == 0).then_some((stats.tp_packets as u64, stats.tp_drops as u64))
}

/// Sends one whole Ethernet frame out of interface `ifindex`
/// (`sendto` with a `sockaddr_ll`; nix's `LinkAddr` cannot be built from parts).
pub fn send_frame(fd: BorrowedFd<'_>, ifindex: u32, frame: &[u8]) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    if frame.len() >= 6 {
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
    }
    // SAFETY: `frame` is valid for its length, `addr` is a valid sockaddr_ll
    // and the length is its size; the kernel only reads both.
    let rc = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr() as *const libc::c_void,
            frame.len(),
            0,
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    check(rc as libc::c_int, "send a frame")
}
