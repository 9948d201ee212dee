//! Sinks: deliver finished alerts. Delivery state lives only here.

pub mod format;
pub mod journald;
pub mod metrics;
pub mod notify;
pub mod spool;
pub mod webhook;

use crate::alert::{Alert, format_time};

/// One readable line for stderr when there is no journal.
pub fn console_line(alert: &Alert) -> String {
    format!(
        "{} {:<8} {}: {} [id={}]",
        format_time(&alert.time),
        alert.severity.as_str().to_uppercase(),
        alert.kind.as_str(),
        alert.summary,
        alert.id
    )
}
