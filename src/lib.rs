//! netsentry: a host-level network integrity agent.
//!
//! Data flows one way: sources (netlink) produce [`kernel::Observation`]s, pure
//! detectors turn them into [`alert::Finding`]s, and sinks (journald, webhooks)
//! deliver the resulting [`alert::Alert`]s. `agent` wires them together.

pub mod agent;
pub mod alert;
pub mod baseline;
pub mod cert;
pub mod certhistory;
pub mod config;
pub mod ctwatch;
pub mod detect;
pub mod kernel;
pub mod packet;
pub mod replay;
pub mod sink;
pub mod source;
pub mod status;
pub mod tlscheck;
pub mod wire;
