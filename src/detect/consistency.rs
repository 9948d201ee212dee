//! Consistency across the endpoints of one server name (issue 17, item 4;
//! pure; fed by `agent/tls.rs` after each check): the endpoints a client may use for
//! the same name — the targets with the same `server_name`, e.g. 5222
//! STARTTLS and 5223 direct TLS, later every SRV target × address — should
//! present the same key. jabber.ru: 5222 was intercepted, 5223 was not; with
//! no expectation configured at all, the two keys differ.
//!
//! An endpoint whose key differs from the key most endpoints present (ties:
//! the key held longest) is `tls_inconsistent` — but only when both keys were
//! observed over a common time (each endpoint's key from its appearance to
//! its last check): a renewal reaches every port at one reload, and checks
//! made at different times must not read as a difference. A key the
//! target's expectation calls ours is never reported (the expectation wins).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::alert::{Finding, Kind};

/// Endpoints remembered per name, names remembered at most.
pub const MAX_ENDPOINTS: usize = 256;
pub const MAX_NAMES: usize = 1024;

#[derive(Clone, Debug)]
struct Seen {
    spki: String,
    /// When this endpoint started to present this key.
    since: DateTime<Utc>,
    /// The last check that saw it.
    at: DateTime<Utc>,
    /// The expectation calls it ours.
    ours: bool,
}

/// Per server name, the key each endpoint presented last.
#[derive(Debug, Default)]
pub struct ConsistencyDetector {
    names: HashMap<String, HashMap<String, Seen>>,
    /// (name, endpoint) reported, with the key.
    reported: HashMap<(String, String), String>,
}

impl ConsistencyDetector {
    /// A check of `endpoint` (a target, or target@address) serving
    /// `server_name` saw key `spki`; `ours` when the expectation accepts it.
    pub fn observe(
        &mut self,
        server_name: &str,
        endpoint: &str,
        spki: &str,
        ours: bool,
        now: DateTime<Utc>,
    ) -> Vec<Finding> {
        let name = server_name.to_ascii_lowercase();
        if !self.names.contains_key(&name) && self.names.len() >= MAX_NAMES {
            return Vec::new();
        }
        let group = self.names.entry(name.clone()).or_default();
        if !group.contains_key(endpoint) && group.len() >= MAX_ENDPOINTS {
            return Vec::new();
        }
        let entry = group.entry(endpoint.to_string()).or_insert(Seen {
            spki: spki.to_string(),
            since: now,
            at: now,
            ours,
        });
        if entry.spki != spki {
            *entry = Seen {
                spki: spki.to_string(),
                since: now,
                at: now,
                ours,
            };
        }
        entry.at = now;
        entry.ours = ours;
        let usual = usual_key(group);
        let mut out = Vec::new();
        let mut endpoints: Vec<(&String, &Seen)> = group.iter().collect();
        endpoints.sort_by_key(|(e, _)| e.as_str());
        for (ep, seen) in &endpoints {
            let key = (name.clone(), ep.to_string());
            // Another endpoint presented the usual key over a time in which
            // this one was seen with its own: both observed at once (a
            // stale check of an endpoint not yet seen after a reload is not).
            let contradicted = endpoints.iter().any(|(other, s)| {
                other != ep && s.spki == usual && s.since.max(seen.since) <= s.at.min(seen.at)
            });
            let odd = seen.spki != usual && contradicted && !seen.ours;
            match (odd, self.reported.get(&key)) {
                (true, Some(k)) if *k == seen.spki => {}
                (true, _) => {
                    self.reported.insert(key, seen.spki.clone());
                    let others: Vec<serde_json::Value> = endpoints
                        .iter()
                        .filter(|(o, _)| o != ep)
                        .map(|(o, s)| json!({"endpoint": o, "spki_sha256": s.spki}))
                        .collect();
                    out.push(Finding::new(
                        Kind::TlsInconsistent,
                        now,
                        format!(
                            "{ep} presents another key for {name} than the other endpoints: spki {} instead of {}",
                            seen.spki, usual
                        ),
                        json!({"server_name": name, "endpoint": ep, "spki_sha256": seen.spki,
                               "usual_spki_sha256": usual, "others": others}),
                    ));
                }
                (false, Some(_)) if seen.spki == usual => {
                    self.reported.remove(&key);
                    out.push(Finding::cleared(
                        Kind::TlsInconsistent,
                        now,
                        format!(
                            "{ep} presents the same key for {name} as the other endpoints again"
                        ),
                        json!({"server_name": name, "endpoint": ep}),
                    ));
                }
                _ => {}
            }
        }
        out
    }
}

impl ConsistencyDetector {
    /// `endpoint` is gone (it left DNS): it no longer counts for any name,
    /// and its open `tls_inconsistent` is cleared.
    pub fn forget(&mut self, endpoint: &str, now: DateTime<Utc>) -> Vec<Finding> {
        for group in self.names.values_mut() {
            group.remove(endpoint);
        }
        self.names.retain(|_, g| !g.is_empty());
        let mut out = Vec::new();
        self.reported.retain(|(name, e), _| {
            if e != endpoint {
                return true;
            }
            out.push(Finding::cleared(
                Kind::TlsInconsistent,
                now,
                format!("{e} is no longer an endpoint of {name}"),
                json!({"server_name": name, "endpoint": e}),
            ));
            false
        });
        out
    }
}

/// One check of a round for [`round_outliers`]: server name, endpoint, key,
/// and whether the expectation calls the key ours.
pub struct RoundSeen<'a> {
    pub server_name: &'a str,
    pub endpoint: &'a str,
    pub spki: &'a str,
    pub ours: bool,
}

/// The same rule for one round of checks made together (`netsentry probe`):
/// per server name, each endpoint whose key differs from the key most of
/// its endpoints present (ties: the first endpoint's) and is not ours, with
/// that usual key. Indexes into `seen`.
pub fn round_outliers(seen: &[RoundSeen<'_>]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut names: Vec<String> = seen
        .iter()
        .map(|s| s.server_name.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        let members: Vec<usize> = (0..seen.len())
            .filter(|&i| seen[i].server_name.eq_ignore_ascii_case(&name))
            .collect();
        let mut best: Option<(&str, usize)> = None;
        for &i in &members {
            let n = members
                .iter()
                .filter(|&&j| seen[j].spki == seen[i].spki)
                .count();
            if best.is_none_or(|(_, b)| n > b) {
                best = Some((seen[i].spki, n));
            }
        }
        let Some((usual, _)) = best else { continue };
        for &i in &members {
            if seen[i].spki != usual && !seen[i].ours {
                out.push((i, usual.to_string()));
            }
        }
    }
    out
}

/// The key most endpoints present; ties: the one presented longest.
fn usual_key(group: &HashMap<String, Seen>) -> String {
    let mut count: HashMap<&str, (usize, DateTime<Utc>)> = HashMap::new();
    for s in group.values() {
        let e = count.entry(s.spki.as_str()).or_insert((0, s.since));
        e.0 += 1;
        e.1 = e.1.min(s.since);
    }
    count
        .into_iter()
        .max_by(|a, b| {
            (a.1.0, std::cmp::Reverse(a.1.1), a.0).cmp(&(b.1.0, std::cmp::Reverse(b.1.1), b.0))
        })
        .map(|(k, _)| k.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000, 0).unwrap() + Duration::seconds(s)
    }

    #[test]
    fn jabber_ru_one_port_presents_another_key() {
        let mut d = ConsistencyDetector::default();
        assert!(
            d.observe("example.org", "xmpp", "K1", false, t(0))
                .is_empty()
        );
        assert!(
            d.observe("example.org", "xmpps", "K1", false, t(10))
                .is_empty()
        );
        // 5222 intercepted: another key. 5223, checked after, keeps K1.
        assert!(
            d.observe("example.org", "xmpp", "ROGUE", false, t(300))
                .is_empty()
        );
        let f = d.observe("example.org", "xmpps", "K1", false, t(310));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, Kind::TlsInconsistent);
        assert_eq!(f[0].details["endpoint"], "xmpp");
        assert_eq!(f[0].details["spki_sha256"], "ROGUE");
        assert_eq!(f[0].details["usual_spki_sha256"], "K1");
        // Once per key; cleared when it is back.
        assert!(
            d.observe("example.org", "xmpp", "ROGUE", false, t(600))
                .is_empty()
        );
        let f = d.observe("example.org", "xmpp", "K1", false, t(900));
        assert!(f.iter().all(|f| f.clears) && f.len() == 1, "{f:?}");
    }

    #[test]
    fn one_round_names_the_odd_endpoint_unless_it_is_ours() {
        let seen = |name, endpoint, spki, ours| RoundSeen {
            server_name: name,
            endpoint,
            spki,
            ours,
        };
        let round = [
            seen("example.org", "c2s@a:5222", "K1", false),
            seen("example.org", "c2s@b:5222", "ROGUE", false),
            seen("Example.org", "tls@a:5223", "K1", false),
            seen("example.org", "tls@b:5223", "K1", false),
            seen("example.net", "other@c:443", "K9", false),
        ];
        assert_eq!(round_outliers(&round), [(1, "K1".to_string())]);
        // A key the expectation accepts (a newer certificate on one node) is not odd.
        let mut accepted = round;
        accepted[1].ours = true;
        assert!(round_outliers(&accepted).is_empty());
        // Two endpoints, two keys: the first is taken as usual.
        let pair = [
            seen("example.org", "a", "K1", false),
            seen("example.org", "b", "K2", false),
        ];
        assert_eq!(round_outliers(&pair), [(1, "K1".to_string())]);
    }

    #[test]
    fn a_vanished_endpoint_ends_its_condition() {
        let mut d = ConsistencyDetector::default();
        d.observe("example.org", "a", "K1", false, t(0));
        d.observe("example.org", "b", "K1", false, t(0));
        let f = d.observe("example.org", "c", "ROGUE", false, t(0));
        assert!(
            f.iter().any(|f| f.details["endpoint"] == "c" && !f.clears),
            "{f:?}"
        );
        let f = d.forget("c", t(2));
        assert_eq!(f.len(), 1);
        assert!(f[0].clears);
        assert!(d.observe("example.org", "a", "K1", false, t(3)).is_empty());
    }

    #[test]
    fn a_renewal_checked_port_by_port_is_no_difference() {
        let mut d = ConsistencyDetector::default();
        for (i, ep) in ["a", "b", "c"].into_iter().enumerate() {
            d.observe("example.org", ep, "OLD", false, t(i as i64));
        }
        // The server reloads at 100; the ports are checked one after another.
        for (i, ep) in ["a", "b", "c"].into_iter().enumerate() {
            let f = d.observe("example.org", ep, "NEW", false, t(100 + i as i64 * 60));
            assert!(f.is_empty(), "{ep}: {f:?}");
        }
        // A key the expectation calls ours is never reported; other names
        // are other groups.
        let mut d = ConsistencyDetector::default();
        d.observe("example.org", "a", "RSA", true, t(0));
        d.observe("example.org", "b", "ECDSA", true, t(1));
        assert!(d.observe("example.org", "a", "RSA", true, t(60)).is_empty());
        assert!(
            d.observe("example.net", "c", "OTHER", false, t(2))
                .is_empty()
        );
    }
}
