//! One change, one alert. A gateway that moves to another MAC is seen by the
//! frame on the wire (`arp`/`ndp`) and, when the kernel takes it, by the
//! neighbour entry (`netlink`), milliseconds apart. The first sighting is the
//! alert, with `sources`; later sightings of the same change (same gateway,
//! same new MAC, within the window) are folded into it rather than sent again.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::alert::{Finding, Kind};

/// Changes remembered (a flood of distinct changes forgets the oldest).
const MAX_RECENT: usize = 256;

/// What became of a finding (detectors put `sources: [source]` in a
/// `gateway_mac_changed`; a folded sighting is logged).
#[derive(Debug)]
pub enum Merged {
    /// Send it (a `gateway_mac_changed` carries `sources`).
    Send(Finding),
    /// The same change was already sent; `source` saw it too.
    Folded {
        /// What the change was about (`192.0.2.1 at 02:…`), for the log.
        change: String,
        /// The detector that saw it again.
        source: String,
    },
}

/// The recent gateway MAC changes, for folding repeats.
pub struct SameChange {
    window: Duration,
    recent: VecDeque<(Kind, String, String, DateTime<Utc>)>,
}

impl SameChange {
    /// Sightings within `window` of the first are the same change.
    pub fn new(window: std::time::Duration) -> SameChange {
        SameChange {
            window: Duration::from_std(window).unwrap_or(Duration::MAX),
            recent: VecDeque::new(),
        }
    }

    /// Passes every finding but a repeated `gateway_mac_changed` or
    /// `gateway_failover` (each folded only into one of its own kind).
    pub fn admit(&mut self, mut finding: Finding) -> Merged {
        let kind = finding.kind;
        if !matches!(kind, Kind::GatewayMacChanged | Kind::GatewayFailover) || finding.clears {
            return Merged::Send(finding);
        }
        let text = |k: &str| {
            finding
                .details
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let (ip, mac, source) = (text("ip"), text("new_mac"), text("source"));
        let now = finding.time;
        let window = self.window;
        self.recent
            .retain(|(_, _, _, t)| (now - *t).abs() <= window);
        if self
            .recent
            .iter()
            .any(|(k, i, m, _)| (*k, i, m) == (kind, &ip, &mac))
        {
            return Merged::Folded {
                change: format!("{ip} at {mac}"),
                source,
            };
        }
        if self.recent.len() >= MAX_RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((kind, ip, mac, now));
        finding
            .details
            .entry("sources")
            .or_insert_with(|| json!([source]));
        Merged::Send(finding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn change(source: &str, mac: &str, ms: i64) -> Finding {
        Finding::new(
            Kind::GatewayMacChanged,
            Utc.timestamp_millis_opt(1_800_000_000_000 + ms).unwrap(),
            "x",
            json!({"interface": "eth0", "ip": "192.0.2.1", "old_mac": "02:00:00:00:00:01", "new_mac": mac, "source": source}),
        )
    }

    #[test]
    fn the_kernel_confirming_a_frame_is_the_same_change() {
        let mut s = SameChange::new(std::time::Duration::from_secs(60));
        let Merged::Send(first) = s.admit(change("arp", "02:00:00:00:00:66", 0)) else {
            panic!("the first sighting is sent")
        };
        assert_eq!(first.details["sources"], json!(["arp"]));
        assert!(matches!(
            s.admit(change("netlink", "02:00:00:00:00:66", 5)),
            Merged::Folded { .. }
        ));
        // Another MAC is another change; the same one after the window too.
        assert!(matches!(
            s.admit(change("arp", "02:00:00:00:00:77", 10)),
            Merged::Send(_)
        ));
        assert!(matches!(
            s.admit(change("netlink", "02:00:00:00:00:66", 61_000)),
            Merged::Send(_)
        ));
    }

    #[test]
    fn a_failover_never_hides_a_change_to_the_same_mac() {
        let mut s = SameChange::new(std::time::Duration::from_secs(60));
        let mut failover = change("arp", "02:00:00:00:00:66", 0);
        failover.kind = Kind::GatewayFailover;
        assert!(matches!(s.admit(failover.clone()), Merged::Send(_)));
        failover.details["source"] = json!("netlink");
        assert!(matches!(s.admit(failover), Merged::Folded { .. }));
        // The same MAC as a gateway_mac_changed (its group stopped
        // advertising, say) is its own alert.
        assert!(matches!(
            s.admit(change("netlink", "02:00:00:00:00:66", 5)),
            Merged::Send(_)
        ));
    }
}
