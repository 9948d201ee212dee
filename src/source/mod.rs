//! Sources: turn the outside world into observations, and nothing else.

pub mod caa;
pub mod capture;
pub mod certfiles;
pub mod ct;
pub mod netlink;
pub mod socks;
pub mod starttls;
pub mod tls_probe;

use std::os::fd::RawFd;

/// Sets a socket's receive buffer: SO_RCVBUFFORCE (root/CAP_NET_ADMIN) goes past
/// `net.core.rmem_max`; without it, SO_RCVBUF gets as much as the system allows.
/// What overflows is counted by the kernel (netlink: re-dump; capture: drops).
pub(crate) fn set_receive_buffer(fd: RawFd, bytes: usize) {
    let value = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    let set = |opt| unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set(libc::SO_RCVBUFFORCE) != 0 {
        let _ = set(libc::SO_RCVBUF);
    }
}

/// A background task's output, and the task (stopped when this is dropped,
/// e.g. when a reload replaces it).
pub struct Feed<T> {
    pub rx: tokio::sync::mpsc::Receiver<T>,
    task: tokio::task::JoinHandle<()>,
}

impl<T> Feed<T> {
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
