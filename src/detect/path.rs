//! Path length per port, from outside (pure): the hop at which each checked
//! port answers (see `source/path_probe.rs`), compared
//!
//! - with the **other ports of the same address** — the other TLS targets
//!   on that address and a target's `reference_port`: a port answering
//!   *earlier* than its siblings (something in front of the server answers
//!   it), or later than two or more siblings that agree →
//!   `path_length_mismatch` (critical, a condition: cleared when the counts
//!   agree again). jabber.ru: 22 and 5223 at hop 14, 5222 at hop 13.
//! - with **the target's own history**: a count that moved and stays moved
//!   for two checks → `path_changed` (warning; routes on the internet do
//!   change, so one odd measurement is not reported).

use std::collections::HashMap;
use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::alert::{Finding, Kind};
use crate::detect::tls::{PathReport, PortPath};

/// (address, port) pairs remembered at most.
pub const MAX_PORTS: usize = 4096;
/// A sibling's count older than this is not compared with.
const SIBLING_MAX_AGE: i64 = 3600;

#[derive(Clone, Debug)]
struct Latest {
    hops: u8,
    routers: Vec<Option<IpAddr>>,
    at: DateTime<Utc>,
}

#[derive(Clone, Debug, Default)]
struct History {
    stable: Option<u8>,
    /// A different count seen once (confirmed by the next check).
    pending: Option<u8>,
    /// In a mismatch episode: the reference port and count it was raised with.
    mismatch: Option<(u16, u8)>,
    /// The last check was odd (a mismatch is raised when the next one is too:
    /// a route that changes for the whole address between two checks of
    /// different ports is not one).
    odd_once: bool,
}

/// The path-length comparison of every target.
#[derive(Debug, Default)]
pub struct PathDetector {
    latest: HashMap<(IpAddr, u16), Latest>,
    targets: HashMap<String, History>,
}

impl PathDetector {
    /// The last count of a port, for `probe` and hints.
    pub fn hops(&self, address: IpAddr, port: u16) -> Option<u8> {
        self.latest.get(&(address, port)).map(|l| l.hops)
    }

    fn remember(&mut self, address: IpAddr, p: &PortPath, now: DateTime<Utc>) {
        let Some(hops) = p.hops else {
            return;
        };
        if !self.latest.contains_key(&(address, p.port)) && self.latest.len() >= MAX_PORTS {
            return;
        }
        let entry = self.latest.entry((address, p.port)).or_insert(Latest {
            hops,
            routers: Vec::new(),
            at: now,
        });
        if !p.routers.is_empty() || entry.hops != hops {
            entry.routers = p.routers.clone();
        }
        entry.hops = hops;
        entry.at = now;
    }

    /// One measurement of `target`'s port (and reference port).
    pub fn observe(&mut self, target: &str, r: &PathReport, now: DateTime<Utc>) -> Vec<Finding> {
        self.remember(r.address, &r.port, now);
        if let Some(reference) = &r.reference {
            self.remember(r.address, reference, now);
        }
        let Some(hops) = r.port.hops else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let history = self.targets.entry(target.to_string()).or_default();
        match history.stable {
            None => history.stable = Some(hops),
            Some(stable) if stable == hops => history.pending = None,
            Some(stable) => {
                if history.pending == Some(hops) {
                    history.stable = Some(hops);
                    history.pending = None;
                    out.push(Finding::new(
                        Kind::PathChanged,
                        now,
                        format!(
                            "port {} of {} ({target}) now answers at hop {hops}, before at hop {stable}",
                            r.port.port, r.address
                        ),
                        json!({"target": target, "address": r.address.to_string(), "port": r.port.port,
                               "hops": hops, "previous_hops": stable,
                               "routers": routers_json(&self.routers_of(r.address, r.port.port))}),
                    ));
                } else {
                    history.pending = Some(hops);
                }
            }
        }
        out.extend(self.compare(target, r, hops, now));
        out
    }

    fn routers_of(&self, address: IpAddr, port: u16) -> Vec<Option<IpAddr>> {
        self.latest
            .get(&(address, port))
            .map(|l| l.routers.clone())
            .unwrap_or_default()
    }

    /// The port against the other ports of its address.
    fn compare(
        &mut self,
        target: &str,
        r: &PathReport,
        hops: u8,
        now: DateTime<Utc>,
    ) -> Option<Finding> {
        let port = r.port.port;
        let mut siblings: Vec<(u16, u8)> = self
            .latest
            .iter()
            .filter(|((a, p), l)| {
                *a == r.address && *p != port && (now - l.at) <= Duration::seconds(SIBLING_MAX_AGE)
            })
            .map(|((_, p), l)| (*p, l.hops))
            .collect();
        siblings.sort();
        let mut counts: HashMap<u8, usize> = HashMap::new();
        for (_, h) in &siblings {
            *counts.entry(*h).or_default() += 1;
        }
        // The reference port, measured in the same check, is the surest
        // comparison; else the count most siblings agree on.
        let (usual, agree) = match r.reference.as_ref().and_then(|p| p.hops) {
            Some(h) => (h, 2),
            None => counts
                .iter()
                .max_by_key(|(h, n)| (**n, **h))
                .map(|(h, n)| (*h, *n))?,
        };
        let odd = hops < usual || (hops > usual && agree >= 2);
        let history = self.targets.entry(target.to_string()).or_default();
        let confirmed = odd && std::mem::replace(&mut history.odd_once, odd);
        match (odd, history.mismatch) {
            (true, None) if !confirmed => None,
            (true, None) => {
                // The configured reference port when it has the usual count.
                let reference = r
                    .reference
                    .as_ref()
                    .map(|p| p.port)
                    .filter(|p| siblings.contains(&(*p, usual)))
                    .or_else(|| siblings.iter().find(|(_, h)| *h == usual).map(|(p, _)| *p))?;
                history.mismatch = Some((reference, usual));
                let others: Vec<String> = siblings
                    .iter()
                    .map(|(p, h)| format!("{p} at hop {h}"))
                    .collect();
                let what = if hops < usual {
                    format!(
                        "something {} hop{} in front of the server answers it",
                        usual - hops,
                        if usual - hops == 1 { "" } else { "s" }
                    )
                } else {
                    "it is routed elsewhere".to_string()
                };
                Some(Finding::new(
                    Kind::PathLengthMismatch,
                    now,
                    format!(
                        "port {port} of {} ({target}) answers at hop {hops}, the same address's port{} {}: {what}",
                        r.address,
                        if others.len() == 1 { "" } else { "s" },
                        others.join(", ")
                    ),
                    json!({"target": target, "address": r.address.to_string(), "port": port, "hops": hops,
                           "reference_port": reference, "reference_hops": usual,
                           "siblings": siblings.iter().map(|(p, h)| json!({"port": p, "hops": h})).collect::<Vec<_>>(),
                           "routers": {"port": routers_json(&self.routers_of(r.address, port)),
                                       "reference": routers_json(&self.routers_of(r.address, reference))}}),
                ))
            }
            (false, Some((reference, usual))) => {
                history.mismatch = None;
                Some(Finding::cleared(
                    Kind::PathLengthMismatch,
                    now,
                    format!(
                        "port {port} of {} ({target}) answers at hop {hops} again, like its siblings",
                        r.address
                    ),
                    json!({"target": target, "address": r.address.to_string(), "port": port, "hops": hops,
                           "reference_port": reference, "reference_hops": usual}),
                ))
            }
            _ => None,
        }
    }
}

fn routers_json(routers: &[Option<IpAddr>]) -> Vec<Option<String>> {
    routers.iter().map(|r| r.map(|ip| ip.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn port(port: u16, hops: u8) -> PortPath {
        PortPath {
            port,
            hops: Some(hops),
            routers: (1..hops)
                .map(|h| Some(IpAddr::from([203, 0, 113, h])))
                .collect(),
            syns: 32,
            millis: 5,
        }
    }

    fn report(p: u16, hops: u8, reference: Option<(u16, u8)>) -> PathReport {
        PathReport {
            address: IpAddr::from([198, 51, 100, 10]),
            port: port(p, hops),
            reference: reference.map(|(p, h)| port(p, h)),
        }
    }

    #[test]
    fn jabber_ru_from_outside() {
        let mut d = PathDetector::default();
        // Normal: all at 14.
        assert!(
            d.observe("xmpp", &report(5222, 14, Some((22, 14))), t(0))
                .is_empty()
        );
        assert!(d.observe("xmpps", &report(5223, 14, None), t(1)).is_empty());
        // 5222 is answered one hop in front: reported at the second check.
        assert!(
            d.observe("xmpp", &report(5222, 13, Some((22, 14))), t(60))
                .is_empty()
        );
        assert!(
            d.observe("xmpps", &report(5223, 14, None), t(61))
                .is_empty()
        );
        let f = d.observe("xmpp", &report(5222, 13, Some((22, 14))), t(120));
        let kinds: Vec<Kind> = f.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            vec![Kind::PathChanged, Kind::PathLengthMismatch],
            "{f:?}"
        );
        let m = &f[1];
        assert_eq!(m.details["hops"], 13);
        assert_eq!(m.details["reference_port"], 22);
        assert_eq!(m.details["reference_hops"], 14);
        assert_eq!(m.details["routers"]["port"].as_array().unwrap().len(), 12);
        assert!(m.summary.contains("answers at hop 13, the same address's ports 22 at hop 14, 5223 at hop 14: something 1 hop in front"), "{}", m.summary);
        // 5223 is not reported; the episode is one alert.
        assert!(
            d.observe("xmpps", &report(5223, 14, None), t(121))
                .is_empty()
        );
        assert!(
            d.observe("xmpp", &report(5222, 13, Some((22, 14))), t(150))
                .is_empty()
        );
        // It ends: cleared.
        let end = d.observe("xmpp", &report(5222, 14, Some((22, 14))), t(180));
        assert!(
            end.iter()
                .any(|f| f.kind == Kind::PathLengthMismatch && f.clears),
            "{end:?}"
        );
    }

    #[test]
    fn two_ports_without_reference_report_only_the_nearer() {
        let mut d = PathDetector::default();
        d.observe("a", &report(5222, 13, None), t(0));
        let f = d.observe("b", &report(5223, 14, None), t(1));
        assert!(f.is_empty(), "the farther port is not the odd one: {f:?}");
        assert!(
            d.observe("a", &report(5222, 13, None), t(2)).is_empty(),
            "once is not yet"
        );
        let f = d.observe("a", &report(5222, 13, None), t(3));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].details["port"], 5222);
    }

    #[test]
    fn routes_that_change_for_every_port_are_no_mismatch() {
        let mut d = PathDetector::default();
        for (i, h) in [14u8, 14, 15, 15, 15, 13, 13].into_iter().enumerate() {
            let at = t(i as i64 * 60);
            let mut f = d.observe("xmpp", &report(5222, h, Some((22, h))), at);
            f.extend(d.observe("xmpps", &report(5223, h, None), at));
            assert!(f.iter().all(|f| f.kind == Kind::PathChanged), "{i}: {f:?}");
        }
        // One odd measurement is not a change.
        let mut d = PathDetector::default();
        d.observe("x", &report(443, 10, None), t(0));
        assert!(d.observe("x", &report(443, 11, None), t(60)).is_empty());
        assert!(d.observe("x", &report(443, 10, None), t(120)).is_empty());
    }
}
