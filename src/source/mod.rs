//! Sources: turn the outside world into observations, and nothing else.

pub mod capture;
pub mod netlink;
