//! The agent's own events: started, stopping, heartbeat, configuration reloads.

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::alert::{Finding, Kind};

/// `agent_started`: the baseline is ready and what is watched.
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

/// `agent_stopping`, with why.
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

/// Undelivered alerts dropped: from a full spool (`reason = "max_spool_bytes"`)
/// or, while the disk was full, from the alerts waiting in memory (`"disk_full"`).
pub fn spool_overflow(now: DateTime<Utc>, count: u64, reason: &str) -> Finding {
    let why = match reason {
        "disk_full" => "the disk under state_dir was full and too many waited in memory",
        _ => "the spool reached max_spool_bytes",
    };
    Finding::new(
        Kind::AlertsSuppressed,
        now,
        format!("{count} undelivered alerts were dropped: {why}"),
        json!({"kind": "spool", "count": count, "window_s": 0, "reason": reason}),
    )
}

/// SIGHUP: the new configuration is in effect. `changed`: the sections that
/// differ; `needs_restart`: keys that changed but only take effect at a restart.
pub fn config_reloaded(
    now: DateTime<Utc>,
    file: &str,
    changed: &[&str],
    needs_restart: &[&str],
) -> Finding {
    let what = if changed.is_empty() {
        "nothing changed".to_string()
    } else {
        format!("changed: {}", changed.join(", "))
    };
    let restart = if needs_restart.is_empty() {
        String::new()
    } else {
        format!(
            "; {} only take effect at a restart",
            needs_restart.join(", ")
        )
    };
    Finding::new(
        Kind::ConfigReloaded,
        now,
        format!("configuration {file} reloaded ({what}{restart})"),
        json!({"file": file, "changed": changed, "needs_restart": needs_restart}),
    )
}

/// SIGHUP: the new configuration is unusable; the running one stays.
pub fn config_rejected(now: DateTime<Utc>, file: &str, error: &str) -> Finding {
    Finding::new(
        Kind::ConfigRejected,
        now,
        format!("configuration reload rejected, the running configuration stays: {error}"),
        json!({"file": file, "error": error}),
    )
}
