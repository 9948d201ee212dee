//! The agent's own events: started, stopping, heartbeat.

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::alert::{Finding, Kind};

pub fn agent_started(
    now: DateTime<Utc>,
    baseline_loaded: bool,
    watching: &[String],
    problem: Option<&str>,
) -> Finding {
    let baseline = if baseline_loaded { "loaded" } else { "new" };
    let list = if watching.is_empty() {
        "no default route yet".to_string()
    } else {
        watching.join(", ")
    };
    let mut details = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "baseline": baseline,
        "watching": watching,
    });
    if let Some(p) = problem {
        details["baseline_problem"] = json!(p);
    }
    Finding::new(
        Kind::AgentStarted,
        now,
        format!(
            "netsentry {} started ({baseline} baseline; watching {list})",
            env!("CARGO_PKG_VERSION")
        ),
        details,
    )
}

pub fn agent_stopping(now: DateTime<Utc>, reason: &str) -> Finding {
    Finding::new(
        Kind::AgentStopping,
        now,
        format!("netsentry is stopping ({reason})"),
        json!({"reason": reason}),
    )
}

/// `interval_s` lets a receiver (Alertmanager) expire the heartbeat when beats stop.
pub fn agent_heartbeat(now: DateTime<Utc>, uptime_s: u64, interval_s: u64) -> Finding {
    Finding::new(
        Kind::AgentHeartbeat,
        now,
        format!("netsentry is alive (up {uptime_s} s)"),
        json!({"uptime_s": uptime_s, "interval_s": interval_s}),
    )
}

/// Undelivered alerts dropped from a full spool (`max_spool_bytes`).
pub fn spool_overflow(now: DateTime<Utc>, count: u64) -> Finding {
    Finding::new(
        Kind::AlertsSuppressed,
        now,
        format!("{count} undelivered alerts were dropped: the spool reached max_spool_bytes"),
        json!({"kind": "spool", "count": count, "window_s": 0, "reason": "max_spool_bytes"}),
    )
}
