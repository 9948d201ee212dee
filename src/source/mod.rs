//! Sources: turn the outside world into observations, and nothing else.

pub mod caa;
pub mod capture;
pub mod certfiles;
pub mod ct;
pub mod dane;
pub mod dns;
pub mod endpoints;
pub mod listeners;
pub mod manifest_fetch;
pub mod neighbour_probe;
pub mod netlink;
pub mod path_probe;
pub mod pcap;
pub mod route_lookup;
pub mod socks;
pub mod starttls;
mod sys;
pub mod tls_probe;
pub mod tls_scheduler;

use std::os::fd::{AsFd, OwnedFd};

use nix::sys::socket::{setsockopt, sockopt};

/// Sets a socket's receive buffer: SO_RCVBUFFORCE (root/CAP_NET_ADMIN) goes past
/// `net.core.rmem_max`; without it, SO_RCVBUF gets as much as the system allows.
/// What overflows is counted by the kernel (netlink: re-dump; capture: drops).
pub(crate) fn set_receive_buffer(fd: &impl AsFd, bytes: usize) {
    let value = bytes.min(i32::MAX as usize / 2);
    if setsockopt(fd, sockopt::RcvBufForce, &value).is_err() {
        let _ = setsockopt(fd, sockopt::RcvBuf, &value);
    }
}

/// Waits until `fd` is readable or `wait` passed: `Ok(true)` when readable.
/// An interrupted wait is `Ok(false)` (the caller loops anyway).
pub(crate) fn wait_readable(fd: &impl AsFd, wait: std::time::Duration) -> std::io::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, timeout) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Waits until one of `fds` is readable or `wait` passes; which are.
pub(crate) fn wait_any_readable(
    fds: &[&OwnedFd],
    wait: std::time::Duration,
) -> std::io::Result<Vec<bool>> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
    let mut polled: Vec<PollFd> = fds
        .iter()
        .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
        .collect();
    match poll(&mut polled, timeout) {
        Ok(_) => Ok(polled
            .iter()
            .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
            .collect()),
        Err(nix::errno::Errno::EINTR) => Ok(vec![false; fds.len()]),
        Err(e) => Err(e.into()),
    }
}

/// A background task's output, and the task (stopped when this is dropped,
/// e.g. when a reload replaces it).
pub struct Feed<T> {
    pub rx: tokio::sync::mpsc::Receiver<T>,
    task: tokio::task::JoinHandle<()>,
}

impl<T> Feed<T> {
    /// A feed from a task's channel and handle.
    pub fn new(
        (rx, task): (tokio::sync::mpsc::Receiver<T>, tokio::task::JoinHandle<()>),
    ) -> Feed<T> {
        Feed { rx, task }
    }
}

impl<T> Drop for Feed<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}
