//! Coalescing: one flapping thing must not flood the receiver.
//!
//! Identical findings (same kind and details, ignoring measured values such as
//! `down_ms`) pass `burst` times per `window`; the rest are counted, and when the
//! window closes one `alerts_suppressed` says how many were held back. A finding
//! that differs in any identifying detail (a *new* MAC, another interface) is a
//! different key and is never held back by this one.
//!
//! Windows are measured on a monotonic clock (`at`: time since any fixed
//! origin, e.g. the agent's start), never on wall time: a wall clock stepped
//! back by an hour must not hold alerts back for an hour. Wall time is only
//! the timestamp of the summaries.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::alert::{Finding, Kind};

/// Keys tracked at once; when full, the oldest window is closed early.
pub const MAX_KEYS: usize = 4_096;
/// Details that measure rather than identify.
const VOLATILE_DETAILS: &[&str] = &["down_ms", "uptime_s", "packets_per_s", "days_left"];

struct Window {
    kind: Kind,
    /// Monotonic time the window opened.
    started: Duration,
    /// How many may pass in this window.
    burst: u32,
    passed: u32,
    suppressed: u64,
    example: String,
}

impl Window {
    fn open(first: &Finding, burst: u32, at: Duration) -> Window {
        Window {
            kind: first.kind,
            started: at,
            burst,
            passed: 0,
            suppressed: 0,
            example: first.summary.clone(),
        }
    }

    /// Counts one more finding; true when it may pass.
    fn count(&mut self) -> bool {
        if self.passed < self.burst {
            self.passed += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

/// Holds back identical alerts beyond a burst per window and summarises them (`alerts_suppressed`).
pub struct Coalescer {
    burst: u32,
    window: Duration,
    /// Kinds with a budget per window across all their findings (station alerts
    /// under a flood of forged frames: every one is different).
    kind_limits: HashMap<Kind, u32>,
    windows: HashMap<String, Window>,
    kind_windows: HashMap<Kind, Window>,
}

impl Coalescer {
    /// At most `burst` identical alerts per `window` go through.
    pub fn new(burst: u32, window: Duration) -> Coalescer {
        Coalescer {
            burst: burst.max(1),
            window: window.max(Duration::from_millis(1)),
            kind_limits: HashMap::new(),
            windows: HashMap::new(),
            kind_windows: HashMap::new(),
        }
    }

    /// At most `limit` findings of each of `kinds` per window, whatever their details.
    pub fn with_kind_limit(mut self, kinds: &[Kind], limit: u32) -> Coalescer {
        for kind in kinds {
            self.kind_limits.insert(*kind, limit.max(1));
        }
        self
    }

    /// Lets a finding through or holds it back (`at`: monotonic time now). May
    /// also return the summaries of earlier windows that have just closed.
    pub fn admit(&mut self, finding: Finding, at: Duration) -> Vec<Finding> {
        let mut out = Vec::new();
        if matches!(
            finding.kind,
            Kind::AgentStarted
                | Kind::AgentStopping
                | Kind::AgentHeartbeat
                | Kind::AlertsSuppressed
        ) {
            out.push(finding);
            return out;
        }
        let limit = self.kind_limits.get(&finding.kind).copied();
        // Under a flood the kind budget is spent: count without further work.
        if limit.is_some()
            && let Some(w) = self.kind_windows.get_mut(&finding.kind)
            && at.saturating_sub(w.started) < self.window
            && w.passed >= w.burst
        {
            w.suppressed += 1;
            return out;
        }
        if !self.pass(key_of(&finding), self.burst, &finding, at, &mut out) {
            return out;
        }
        if let Some(limit) = limit
            && !self.pass_kind(limit, &finding, at, &mut out)
        {
            return out;
        }
        out.push(finding);
        out
    }

    /// Counts `finding` against the budget of its kind; true when it may pass.
    fn pass_kind(
        &mut self,
        limit: u32,
        finding: &Finding,
        at: Duration,
        out: &mut Vec<Finding>,
    ) -> bool {
        let now = finding.time;
        if let Some(w) = self.kind_windows.get(&finding.kind)
            && at.saturating_sub(w.started) >= self.window
            && let Some(w) = self.kind_windows.remove(&finding.kind)
        {
            out.extend(self.summary(w, now));
        }
        self.kind_windows
            .entry(finding.kind)
            .or_insert_with(|| Window::open(finding, limit, at))
            .count()
    }

    /// Counts `finding` in the window of `key`; true when it may pass.
    fn pass(
        &mut self,
        key: String,
        burst: u32,
        finding: &Finding,
        at: Duration,
        out: &mut Vec<Finding>,
    ) -> bool {
        let now = finding.time;
        if let Some(w) = self.windows.get(&key)
            && at.saturating_sub(w.started) >= self.window
            && let Some(w) = self.windows.remove(&key)
        {
            out.extend(self.summary(w, now));
        }
        if !self.windows.contains_key(&key) && self.windows.len() >= MAX_KEYS {
            out.extend(self.flush(now, at));
            if self.windows.len() >= MAX_KEYS
                && let Some(oldest) = self
                    .windows
                    .iter()
                    .min_by_key(|(_, w)| w.started)
                    .map(|(k, _)| k.clone())
                && let Some(w) = self.windows.remove(&oldest)
            {
                out.extend(self.summary(w, now));
            }
        }
        self.windows
            .entry(key)
            .or_insert_with(|| Window::open(finding, burst, at))
            .count()
    }

    /// Closes the windows that have ended by monotonic time `at`; returns
    /// their `alerts_suppressed`, stamped `now`.
    pub fn flush(&mut self, now: DateTime<Utc>, at: Duration) -> Vec<Finding> {
        let window = self.window;
        let ended: Vec<String> = self
            .windows
            .iter()
            .filter(|(_, w)| at.saturating_sub(w.started) >= window)
            .map(|(k, _)| k.clone())
            .collect();
        let ended_kinds: Vec<Kind> = self
            .kind_windows
            .iter()
            .filter(|(_, w)| at.saturating_sub(w.started) >= window)
            .map(|(k, _)| *k)
            .collect();
        let mut closed: Vec<Window> = ended
            .iter()
            .filter_map(|k| self.windows.remove(k))
            .collect();
        closed.extend(
            ended_kinds
                .iter()
                .filter_map(|k| self.kind_windows.remove(k)),
        );
        let mut out: Vec<Finding> = closed
            .into_iter()
            .filter_map(|w| self.summary(w, now))
            .collect();
        out.sort_by_key(|f| f.time);
        out
    }

    /// Closes every window (at stop), so no held-back count is lost.
    pub fn close_all(&mut self, now: DateTime<Utc>) -> Vec<Finding> {
        let mut windows: Vec<Window> = self.windows.drain().map(|(_, w)| w).collect();
        windows.extend(self.kind_windows.drain().map(|(_, w)| w));
        windows
            .into_iter()
            .filter_map(|w| self.summary(w, now))
            .collect()
    }

    /// When (monotonic) the next window ends and `flush` has something to do (no polling).
    pub fn next_deadline(&self) -> Option<Duration> {
        self.windows
            .values()
            .chain(self.kind_windows.values())
            .map(|w| w.started + self.window)
            .min()
    }

    fn summary(&self, w: Window, now: DateTime<Utc>) -> Option<Finding> {
        if w.suppressed == 0 {
            return None;
        }
        let window_s = self.window.as_millis() as f64 / 1000.0;
        Some(Finding::new(
            Kind::AlertsSuppressed,
            now,
            format!(
                "{} more {} alerts like \"{}\" were held back within {window_s} s",
                w.suppressed,
                w.kind.as_str(),
                w.example
            ),
            json!({"kind": w.kind.as_str(), "count": w.suppressed, "window_s": window_s, "example": w.example}),
        ))
    }
}

fn key_of(f: &Finding) -> String {
    let mut details = f.details.clone();
    for k in VOLATILE_DETAILS {
        details.remove(*k);
    }
    format!("{}|{}", f.kind.as_str(), serde_json::Value::Object(details))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    /// The tests' findings carry their (wall) time; here the monotonic
    /// clock runs with it.
    impl Coalescer {
        fn admit_t(&mut self, f: Finding) -> Vec<Finding> {
            let at = Duration::from_secs((f.time.timestamp() - 1_800_000_000) as u64);
            self.admit(f, at)
        }
        fn flush_t(&mut self, s: i64) -> Vec<Finding> {
            self.flush(t(s), Duration::from_secs(s as u64))
        }
    }
    fn down(at: i64) -> Finding {
        Finding::new(
            Kind::LinkDown,
            t(at),
            "link eth0 is down",
            json!({"interface": "eth0", "reason": "carrier"}),
        )
    }
    fn up(at: i64, ms: i64) -> Finding {
        Finding::new(
            Kind::LinkUp,
            t(at),
            "link eth0 is up",
            json!({"interface": "eth0", "down_ms": ms}),
        )
    }

    #[test]
    fn a_flapping_link_is_coalesced_and_summarised() {
        let mut c = Coalescer::new(3, Duration::from_secs(60));
        let mut passed = 0;
        for i in 0..50 {
            passed += c.admit_t(down(i)).len();
            passed += c.admit_t(up(i, 100 + i)).len();
        }
        assert_eq!(
            passed, 6,
            "3 downs and 3 ups (down_ms does not make them different)"
        );
        assert_eq!(c.next_deadline(), Some(Duration::from_secs(60)));
        assert!(c.flush_t(59).is_empty());
        let s = c.flush_t(60);
        assert_eq!(s.len(), 2);
        assert!(
            s.iter()
                .all(|f| f.kind == Kind::AlertsSuppressed && f.details["count"] == 47)
        );
        assert_eq!(s[0].details["window_s"], 60.0);
        assert!(c.flush_t(1000).is_empty());
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn a_flood_of_different_station_alerts_is_limited_per_kind_but_gateways_pass() {
        let mut c =
            Coalescer::new(3, Duration::from_secs(60)).with_kind_limit(&[Kind::ArpNewStation], 5);
        let mut passed = 0;
        for i in 0..1000 {
            let f = Finding::new(
                Kind::ArpNewStation,
                t(1),
                "new",
                json!({"ip": format!("198.18.{}.{}", i / 250, i % 250)}),
            );
            passed += c.admit_t(f).len();
            if i == 500 {
                let spoof = Finding::new(
                    Kind::GatewayMacChanged,
                    t(1),
                    "gw",
                    json!({"new_mac": "02:de:ad:be:ef:01"}),
                );
                assert_eq!(
                    c.admit_t(spoof).len(),
                    1,
                    "the gateway spoof inside the flood passes at once"
                );
            }
        }
        assert_eq!(passed, 5);
        let s = c.flush_t(61);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].details["kind"], "arp_new_station");
        assert_eq!(s[0].details["count"], 995);
    }

    #[test]
    fn a_new_window_reports_the_old_one_first() {
        let mut c = Coalescer::new(1, Duration::from_secs(10));
        assert_eq!(c.admit_t(down(0)).len(), 1);
        assert!(c.admit_t(down(1)).is_empty());
        let out = c.admit_t(down(11));
        assert_eq!(
            out.iter().map(|f| f.kind).collect::<Vec<_>>(),
            vec![Kind::AlertsSuppressed, Kind::LinkDown]
        );
        assert_eq!(out[0].details["count"], 1);
    }

    #[test]
    fn different_details_are_never_held_back() {
        let mut c = Coalescer::new(1, Duration::from_secs(60));
        for i in 0..100u8 {
            let f = Finding::new(
                Kind::GatewayMacChanged,
                t(0),
                "x",
                json!({"ip": "192.0.2.1", "new_mac": format!("02:00:00:00:00:{i:02x}")}),
            );
            assert_eq!(c.admit_t(f).len(), 1);
        }
        for _ in 0..10 {
            let f = Finding::new(Kind::AgentHeartbeat, t(0), "x", json!({}));
            assert_eq!(c.admit_t(f).len(), 1);
        }
    }

    #[test]
    fn the_key_table_is_capped() {
        let mut c = Coalescer::new(1, Duration::from_secs(60));
        for i in 0..(MAX_KEYS + 10) {
            let f = Finding::new(
                Kind::LinkAdded,
                t(0),
                "x",
                json!({"interface": format!("x{i}")}),
            );
            c.admit_t(f.clone());
            c.admit_t(f);
        }
        assert!(c.windows.len() <= MAX_KEYS);
    }

    #[test]
    fn a_wall_clock_stepped_back_does_not_hold_windows() {
        let mut c = Coalescer::new(1, Duration::from_secs(60));
        assert_eq!(c.admit(down(0), Duration::ZERO).len(), 1);
        assert!(c.admit(down(1), Duration::from_secs(1)).is_empty());
        // The wall clock goes back an hour; 61 s pass on the monotonic clock.
        let stepped = down(-3600);
        let out = c.admit(stepped, Duration::from_secs(61));
        assert_eq!(
            out.iter().map(|f| f.kind).collect::<Vec<_>>(),
            vec![Kind::AlertsSuppressed, Kind::LinkDown]
        );
        assert_eq!(c.next_deadline(), Some(Duration::from_secs(121)));
    }
}
