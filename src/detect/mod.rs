//! Pure detectors: observations and time in, findings out. No I/O here.

pub mod arp;
pub mod caa;
pub mod coalesce;
pub mod consistency;
pub mod correlate;
pub mod ct;
pub mod dane;
pub mod inbound;
pub mod lifecycle;
pub mod merge;
pub mod net;
pub mod path;
pub mod stations;
pub mod tls;
