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

/// Receives one frame without waiting: (length, interface index, packet
/// type), `None` when nothing is queued. nix's `recvfrom::<LinkAddr>` refuses
/// the address when the kernel reports it shorter than a whole `sockaddr_ll`
/// (18 bytes for a 6-byte MAC), so the frame's address is read here.
pub fn recv_frame(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Option<(usize, u32, u8)> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `buf` and `addr` are valid for writes of the lengths given, and
    // the kernel writes at most those.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            libc::MSG_DONTWAIT,
            &mut addr as *mut _ as *mut libc::sockaddr,
            &mut len,
        )
    };
    (n >= 0).then_some((n as usize, addr.sll_ifindex as u32, addr.sll_pkttype))
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
