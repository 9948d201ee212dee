//! netsentry: a host-level network integrity agent.
//!
//! Data flows one way: sources (netlink, capture, TLS probes, CT, CAA) produce
//! observations, pure detectors turn them into [`alert::Finding`]s, and sinks
//! (journald, webhooks, metrics) deliver the resulting [`alert::Alert`]s.
//! `agent` wires them together; `cli` is the command line. See
//! docs/ARCHITECTURE.md for what may import what.

pub mod agent;
pub mod alert;
pub mod cert;
pub mod cli;
pub mod config;
pub mod detect;
pub mod files;
pub mod kernel;
pub mod manifest;
pub mod sink;
pub mod source;
pub mod state;
pub mod wire;
