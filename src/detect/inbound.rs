//! Inbound path per local port (issue 16, first part: the pure detector).
//!
//! Every SYN to a watched port is tallied per (port, family) by the sender's
//! hop distance (initial TTL minus the TTL that arrived) and stack
//! fingerprint. At the end of each window the tally is judged:
//!
//! - against the port's own **baseline** (what earlier, normal windows saw):
//!   most of the window (`share`) from a hop distance or fingerprint that was
//!   rare (< 5 %) before → `inbound_path_changed`, `reason = "baseline"`;
//! - with no baseline yet, against the **siblings** (the host's other busy
//!   ports of the same family): one port's clients all from one distance
//!   that is rare among the others, while the others see a spread →
//!   `reason = "siblings"` (a host installed while an interception runs).
//!
//! A port with fewer than `min_samples` SYNs in a window is not judged. A
//! port whose clients were always 0 hops away (behind a local proxy) is its
//! own baseline and never alarms. One alert per episode; the first normal
//! window after it gives `inbound_path_restored`. Windows of an episode, the
//! one that ends it, and the one before it are not learned: a window is
//! learned only once the next one was normal too. Pure: SYNs and time in, findings out; the baseline is
//! serializable for `state_dir`.
//!
//! The agent feeds it from the capture socket (`agent/inbound.rs`), replay
//! from a pcap.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::alert::{Finding, Kind};
use crate::wire::syn::{Syn, hop_distance, initial_ttl};

/// (port, family) pairs tracked; SYNs to more are counted and dropped.
pub const MAX_KEYS: usize = 1024;
/// Distinct fingerprints kept per tally; the rest count as "other".
pub const MAX_FINGERPRINTS: usize = 32;
/// Samples a baseline keeps before halving (old windows fade out, so a
/// population that shifts slowly is followed).
pub const BASELINE_SAMPLES: u32 = 20_000;
/// A share below this in the baseline is "rare".
pub const RARE: f64 = 0.05;
/// Distinct sources remembered per window (more count as diverse anyway).
pub const MAX_SOURCES: usize = 1024;
/// Distinct sources that make a window's clients "many" (an interceptor that
/// connects from the clients' addresses), as opposed to a reverse proxy or a
/// load balancer connecting from its own few addresses.
pub const DIVERSE_SOURCES: usize = 8;

/// The detector's settings (`[inbound]`).
#[derive(Clone, Debug)]
pub struct InboundSettings {
    pub min_samples: u32,
    pub share: f64,
}

/// Counts of one window, or of a baseline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub samples: u32,
    /// Hop distance → SYNs.
    pub hops: BTreeMap<u8, u32>,
    /// Fingerprint → SYNs (at most [`MAX_FINGERPRINTS`], then `other`).
    pub fingerprints: BTreeMap<String, u32>,
    /// A TTL seen for each hop distance (for the summary).
    #[serde(default)]
    pub ttls: BTreeMap<u8, u8>,
    /// SYNs per source address (windows only, at most [`MAX_SOURCES`]).
    #[serde(skip)]
    pub sources: HashMap<IpAddr, u32>,
}

impl Tally {
    fn add(&mut self, hops: u8, ttl: u8, fingerprint: String, src: IpAddr) {
        self.samples = self.samples.saturating_add(1);
        if self.sources.len() < MAX_SOURCES || self.sources.contains_key(&src) {
            *self.sources.entry(src).or_default() += 1;
        }
        *self.hops.entry(hops).or_default() += 1;
        self.ttls.entry(hops).or_insert(ttl);
        self.count_fingerprint(fingerprint, 1);
    }

    /// Counts `n` SYNs of a stack; beyond [`MAX_FINGERPRINTS`] as "other".
    fn count_fingerprint(&mut self, fingerprint: String, n: u32) {
        let key = match self.fingerprints.contains_key(&fingerprint)
            || self.fingerprints.len() < MAX_FINGERPRINTS
        {
            true => fingerprint,
            false => "other".to_string(),
        };
        *self.fingerprints.entry(key).or_default() += n;
    }

    pub fn share_of_hops(&self, hops: u8) -> f64 {
        share(self.hops.get(&hops).copied(), self.samples)
    }

    pub fn share_of_fingerprint(&self, fp: &str) -> f64 {
        share(self.fingerprints.get(fp).copied(), self.samples)
    }

    /// The most common hop distance and its share.
    pub fn top_hops(&self) -> Option<(u8, f64)> {
        let (h, n) = self
            .hops
            .iter()
            .max_by_key(|(h, n)| (**n, std::cmp::Reverse(**h)))?;
        Some((*h, share(Some(*n), self.samples)))
    }

    /// The most common fingerprint and its share.
    pub fn top_fingerprint(&self) -> Option<(&str, f64)> {
        let (f, n) = self.fingerprints.iter().max_by_key(|(_, n)| **n)?;
        Some((f.as_str(), share(Some(*n), self.samples)))
    }

    /// The hop distance at quantile `q` (0..=1).
    pub fn hops_at(&self, q: f64) -> u8 {
        let want = (f64::from(self.samples) * q).ceil().max(1.0) as u32;
        let mut seen = 0;
        for (h, n) in &self.hops {
            seen += n;
            if seen >= want {
                return *h;
            }
        }
        0
    }

    /// Within the caps and consistent (a damaged file is not taken).
    fn is_sane(&self) -> bool {
        self.fingerprints.len() <= MAX_FINGERPRINTS + 1
            && self.samples == self.hops.values().fold(0u32, |a, n| a.saturating_add(*n))
    }

    fn merge(&mut self, other: &Tally) {
        self.samples = self.samples.saturating_add(other.samples);
        for (h, n) in &other.hops {
            *self.hops.entry(*h).or_default() += n;
        }
        for (h, t) in &other.ttls {
            self.ttls.entry(*h).or_insert(*t);
        }
        for (f, n) in &other.fingerprints {
            self.count_fingerprint(f.clone(), *n);
        }
        while self.samples > BASELINE_SAMPLES {
            self.halve();
        }
    }

    fn halve(&mut self) {
        self.samples /= 2;
        self.hops.values_mut().for_each(|n| *n /= 2);
        self.hops.retain(|_, n| *n > 0);
        self.fingerprints.values_mut().for_each(|n| *n /= 2);
        self.fingerprints.retain(|_, n| *n > 0);
        self.samples = self.hops.values().sum();
    }
}

fn share(n: Option<u32>, of: u32) -> f64 {
    match of {
        0 => 0.0,
        _ => f64::from(n.unwrap_or(0)) / f64::from(of),
    }
}

/// A watched port and the address family its clients use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortKey {
    pub port: u16,
    /// 4 or 6.
    pub family: u8,
}

/// What is kept per port.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PortState {
    pub baseline: Tally,
    /// In an episode since (the window that started it ended then).
    pub changed_since: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub window: Tally,
    /// The last normal window, learned only when the next one is normal too:
    /// the window in which an interception starts (partly intercepted, not
    /// yet over `share`) must not teach the baseline the attack.
    #[serde(skip)]
    pub pending: Option<Tally>,
}

/// The inbound-path detector.
pub struct InboundDetector {
    settings: InboundSettings,
    ports: HashMap<PortKey, PortState>,
    /// When the current window started.
    window_start: Option<DateTime<Utc>>,
    /// SYNs not tallied because [`MAX_KEYS`] ports were tracked.
    pub dropped: u64,
}

impl InboundDetector {
    pub fn new(settings: InboundSettings) -> InboundDetector {
        InboundDetector {
            settings,
            ports: HashMap::new(),
            window_start: None,
            dropped: 0,
        }
    }

    /// The per-port state (to save, or to show in `status`).
    pub fn ports(&self) -> &HashMap<PortKey, PortState> {
        &self.ports
    }

    /// Restores saved per-port baselines.
    pub fn restore(&mut self, saved: HashMap<PortKey, PortState>) {
        self.ports = saved.into_iter().take(MAX_KEYS).collect();
    }

    /// The state to save in `state_dir`: per port, the baseline, the episode
    /// and (for `netsentry status`, not restored) the current window.
    pub fn to_json(&self) -> serde_json::Value {
        let mut keys: Vec<&PortKey> = self.ports.keys().collect();
        keys.sort();
        let ports: Vec<serde_json::Value> = keys
            .into_iter()
            .map(|k| {
                let s = &self.ports[k];
                json!({"port": k.port, "family": k.family, "baseline": s.baseline,
                       "changed_since": s.changed_since, "window": s.window})
            })
            .collect();
        json!({"version": 1, "ports": ports})
    }

    /// Reads what [`to_json`](Self::to_json) wrote; entries that do not
    /// parse are skipped and counted.
    pub fn from_json(text: &str) -> (HashMap<PortKey, PortState>, usize) {
        #[derive(Deserialize)]
        struct Saved {
            port: u16,
            family: u8,
            baseline: Tally,
            changed_since: Option<DateTime<Utc>>,
        }
        let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
            return (HashMap::new(), 1);
        };
        let entries = value["ports"].as_array().cloned().unwrap_or_default();
        let mut bad = 0;
        let mut out = HashMap::new();
        for entry in entries.into_iter().take(MAX_KEYS) {
            match serde_json::from_value::<Saved>(entry) {
                Ok(s) if matches!(s.family, 4 | 6) && s.baseline.is_sane() => {
                    out.insert(
                        PortKey {
                            port: s.port,
                            family: s.family,
                        },
                        PortState {
                            baseline: s.baseline,
                            changed_since: s.changed_since,
                            ..Default::default()
                        },
                    );
                }
                _ => bad += 1,
            }
        }
        (out, bad)
    }

    /// Tallies one SYN to a watched port, from a source that counts (the
    /// caller has left out the host's own subnets and `ignore_sources`).
    pub fn observe(&mut self, syn: &Syn, now: DateTime<Utc>) {
        self.window_start.get_or_insert(now);
        let key = PortKey {
            port: syn.dst_port,
            family: syn.version(),
        };
        if !self.ports.contains_key(&key) && self.ports.len() >= MAX_KEYS {
            self.dropped += 1;
            return;
        }
        self.ports.entry(key).or_default().window.add(
            hop_distance(syn.ttl),
            syn.ttl,
            syn.fingerprint(),
            syn.src,
        );
    }

    /// Ends the window at `now`: judges every busy port, learns the normal
    /// ones, and starts a new window.
    pub fn close_window(&mut self, now: DateTime<Utc>) -> Vec<Finding> {
        let since = self.window_start.take().unwrap_or(now);
        let keys: Vec<PortKey> = {
            let mut k: Vec<PortKey> = self.ports.keys().copied().collect();
            k.sort();
            k
        };
        let mut out = Vec::new();
        let verdicts: Vec<(PortKey, Option<Change>)> =
            keys.iter().map(|k| (*k, self.judge(*k))).collect();
        for (key, verdict) in verdicts {
            let Some(state) = self.ports.get_mut(&key) else {
                continue;
            };
            let window = std::mem::take(&mut state.window);
            match (verdict, state.changed_since) {
                (Some(change), None) => {
                    state.changed_since = Some(now);
                    state.pending = None;
                    out.push(change.finding(key, &window, since, now));
                }
                (Some(_), Some(_)) => {}
                (None, Some(_)) => {
                    // The window that ends an episode is partly the attack's:
                    // it restores, it is not learned.
                    if window.samples >= self.settings.min_samples {
                        state.changed_since = None;
                        out.push(restored(key, &window, now));
                    }
                }
                (None, None) => {
                    if let Some(previous) = state.pending.replace(window) {
                        state.baseline.merge(&previous);
                    }
                }
            }
        }
        out
    }

    /// Why the current window of `key` is a changed path, if it is.
    fn judge(&self, key: PortKey) -> Option<Change> {
        let state = self.ports.get(&key)?;
        let w = &state.window;
        if w.samples < self.settings.min_samples {
            return None;
        }
        let (hops, hop_share) = w.top_hops()?;
        let (fp, fp_share) = w.top_fingerprint()?;
        let b = &state.baseline;
        if b.samples >= self.settings.min_samples {
            let new_hops = hop_share >= self.settings.share && b.share_of_hops(hops) < RARE;
            let new_fp = fp_share >= self.settings.share && b.share_of_fingerprint(fp) < RARE;
            return (new_hops || new_fp).then(|| Change {
                reason: "baseline",
                before: b.clone(),
                siblings: Vec::new(),
            });
        }
        // No baseline yet: compare with the other busy ports of the family.
        let mut siblings: Vec<(PortKey, &Tally)> = self
            .ports
            .iter()
            .filter(|(k, s)| {
                **k != key
                    && k.family == key.family
                    && s.window.samples >= self.settings.min_samples
            })
            .map(|(k, s)| (*k, &s.window))
            .collect();
        siblings.sort_by_key(|(k, _)| *k);
        if siblings.is_empty() || hop_share < self.settings.share {
            return None;
        }
        let mut others = Tally::default();
        for (_, t) in &siblings {
            others.merge(t);
        }
        let spread = siblings
            .iter()
            .all(|(_, t)| t.top_hops().is_some_and(|(_, s)| s < self.settings.share));
        // An interceptor connects from the clients' own addresses: many of
        // them, or the same ones that reach the other ports from further
        // away. A reverse proxy or load balancer in front of one port
        // connects from its own few addresses: not an interception.
        let theirs: std::collections::HashSet<&IpAddr> = siblings
            .iter()
            .flat_map(|(_, t)| t.sources.keys())
            .collect();
        let shared: u32 = w
            .sources
            .iter()
            .filter(|(ip, _)| theirs.contains(ip))
            .map(|(_, n)| *n)
            .sum();
        let clients_own =
            w.sources.len() >= DIVERSE_SOURCES || share(Some(shared), w.samples) >= 0.5;
        (spread && clients_own && others.share_of_hops(hops) < RARE).then(|| Change {
            reason: "siblings",
            before: others,
            siblings: siblings.iter().map(|(k, _)| k.port).collect(),
        })
    }
}

/// A changed path, before it is a finding.
struct Change {
    reason: &'static str,
    /// The baseline, or the siblings' window together.
    before: Tally,
    siblings: Vec<u16>,
}

impl Change {
    fn finding(
        &self,
        key: PortKey,
        w: &Tally,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Finding {
        let (hops, hop_share) = w.top_hops().unwrap_or((0, 0.0));
        let (fp, fp_share) = w.top_fingerprint().unwrap_or(("", 0.0));
        let ttl = w.ttls.get(&hops).copied().unwrap_or(0);
        let (lo, hi) = (self.before.hops_at(0.1), self.before.hops_at(0.9));
        let whom = match self.reason {
            "siblings" => format!(
                "clients of port{} {} come from {lo}–{hi} hops",
                if self.siblings.len() > 1 { "s" } else { "" },
                self.siblings
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => format!("before, clients came from {lo}–{hi} hops"),
        };
        let summary = format!(
            "since {}, {:.0} % of {} connections to port {} (IPv{}) arrive from {hops} hops away (TTL {ttl}) — {whom}",
            since.format("%H:%M"),
            hop_share * 100.0,
            w.samples,
            key.port,
            key.family,
        );
        let mut before = json!({
            "median_hops": self.before.hops_at(0.5),
            "p10_hops": lo,
            "p90_hops": hi,
            "distinct_fingerprints": self.before.fingerprints.len(),
            "samples": self.before.samples,
        });
        if !self.siblings.is_empty() {
            before["ports"] = json!(self.siblings);
        }
        Finding::new(
            Kind::InboundPathChanged,
            now,
            summary,
            json!({
                "port": key.port,
                "family": if key.family == 4 { "inet" } else { "inet6" },
                "reason": self.reason,
                "samples": w.samples,
                "now": {"hops": hops, "ttl": ttl, "initial_ttl": initial_ttl(ttl), "share": round(hop_share),
                        "fingerprint": fp, "fingerprint_share": round(fp_share),
                        "distinct_sources": w.sources.len()},
                "before": before,
            }),
        )
    }
}

fn restored(key: PortKey, w: &Tally, now: DateTime<Utc>) -> Finding {
    Finding::new(
        Kind::InboundPathRestored,
        now,
        format!(
            "connections to port {} (IPv{}) arrive from their usual distances again (median {} hops, {} connections)",
            key.port,
            key.family,
            w.hops_at(0.5),
            w.samples
        ),
        json!({"port": key.port, "family": if key.family == 4 { "inet" } else { "inet6" },
               "samples": w.samples, "median_hops": w.hops_at(0.5)}),
    )
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Whether `ip` counts as a client from elsewhere: not loopback, not
/// unspecified, not link-local (the caller also leaves out own subnets).
pub fn counts_as_remote(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !(a.is_loopback() || a.is_unspecified() || a.is_link_local()),
        IpAddr::V6(a) => {
            !(a.is_loopback() || a.is_unspecified() || (a.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn syn(port: u16, ttl: u8, window: u16) -> Syn {
        syn_from(port, ttl, window, 7)
    }

    /// A SYN from client `n` (198.51.100.n).
    fn syn_from(port: u16, ttl: u8, window: u16, n: u8) -> Syn {
        Syn {
            src: IpAddr::from([198, 51, 100, n]),
            dst: "192.0.2.10".parse().unwrap(),
            src_port: 50000,
            dst_port: port,
            ttl,
            df: true,
            ip_options: false,
            window,
            mss: Some(1460),
            wscale: Some(7),
            layout: "mss,sok,ts,nop,ws".into(),
            vlan: None,
        }
    }

    fn detector() -> InboundDetector {
        InboundDetector::new(InboundSettings {
            min_samples: 30,
            share: 0.8,
        })
    }

    /// `n` SYNs to `port` from internet clients 9–17 hops away, mixed stacks.
    fn internet(d: &mut InboundDetector, port: u16, n: u32, at: i64) {
        for i in 0..n {
            let ttl = [55u8, 50, 47, 119, 112, 240][(i % 6) as usize];
            let window = [64240u16, 65535, 29200][(i % 3) as usize];
            d.observe(&syn_from(port, ttl, window, (i % 40) as u8), t(at));
        }
    }

    /// `n` SYNs to `port` from one stack right in front of us (TTL 64),
    /// from the clients' addresses (a transparent interceptor).
    fn interceptor(d: &mut InboundDetector, port: u16, n: u32, at: i64) {
        for i in 0..n {
            d.observe(&syn_from(port, 64, 42340, (i % 40) as u8), t(at));
        }
    }

    /// `n` SYNs to `port` from a reverse proxy right in front (its own address).
    fn proxy(d: &mut InboundDetector, port: u16, n: u32, at: i64) {
        for _ in 0..n {
            d.observe(&syn_from(port, 64, 42340, 250), t(at));
        }
    }

    #[test]
    fn the_jabber_ru_pattern_against_the_baseline() {
        let mut d = detector();
        for w in 0..3 {
            for port in [5222, 5223, 22] {
                internet(&mut d, port, 60, w * 600);
            }
            assert!(d.close_window(t(w * 600 + 600)).is_empty());
        }
        // 5222 is intercepted; 5223 and 22 are not.
        interceptor(&mut d, 5222, 97, 1800);
        internet(&mut d, 5222, 3, 1800);
        internet(&mut d, 5223, 60, 1800);
        internet(&mut d, 22, 60, 1800);
        let f = d.close_window(t(2400));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, Kind::InboundPathChanged);
        let det = &f[0].details;
        assert_eq!(
            (det["port"].as_u64(), det["reason"].as_str()),
            (Some(5222), Some("baseline"))
        );
        assert_eq!(det["now"]["hops"], 0);
        assert_eq!(det["now"]["ttl"], 64);
        assert_eq!(det["samples"], 100);
        assert!(
            f[0].summary
                .contains("97 % of 100 connections to port 5222"),
            "{}",
            f[0].summary
        );
        assert!(
            f[0].summary.contains("from 0 hops away (TTL 64)"),
            "{}",
            f[0].summary
        );
        // The episode goes on: no second alert, nothing learned.
        interceptor(&mut d, 5222, 100, 2400);
        assert!(d.close_window(t(3000)).is_empty());
        assert_eq!(
            d.ports()[&PortKey {
                port: 5222,
                family: 4
            }]
                .baseline
                .share_of_hops(0),
            0.0
        );
        // It ends.
        internet(&mut d, 5222, 60, 3000);
        let f = d.close_window(t(3600));
        assert_eq!(
            f.iter().map(|f| f.kind).collect::<Vec<_>>(),
            vec![Kind::InboundPathRestored]
        );
    }

    /// An interception that starts in the middle of a window (40 % of it, not
    /// enough to report) must not teach the baseline its 0-hop clients: the
    /// next, fully intercepted window is still reported; and the window that
    /// ends the episode is not learned either.
    #[test]
    fn the_windows_around_an_episode_are_not_learned() {
        let mut d = detector();
        for w in 0..3 {
            internet(&mut d, 5222, 60, w * 600);
            internet(&mut d, 22, 60, w * 600);
            assert!(d.close_window(t(w * 600 + 600)).is_empty());
        }
        internet(&mut d, 5222, 36, 1800);
        interceptor(&mut d, 5222, 24, 1800);
        internet(&mut d, 22, 60, 1800);
        assert!(d.close_window(t(2400)).is_empty(), "40 % is below share");
        interceptor(&mut d, 5222, 60, 2400);
        internet(&mut d, 22, 60, 2400);
        let f = d.close_window(t(3000));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].details["reason"], "baseline");
        // Ends mid-window: restored, and that window is not learned.
        interceptor(&mut d, 5222, 20, 3000);
        internet(&mut d, 5222, 40, 3000);
        let f = d.close_window(t(3600));
        assert_eq!(
            f.iter().map(|f| f.kind).collect::<Vec<_>>(),
            vec![Kind::InboundPathRestored]
        );
        let key = PortKey {
            port: 5222,
            family: 4,
        };
        assert_eq!(d.ports()[&key].baseline.share_of_hops(0), 0.0);
        // Back again: reported again.
        internet(&mut d, 5222, 60, 3600);
        d.close_window(t(4200));
        interceptor(&mut d, 5222, 60, 4200);
        let f = d.close_window(t(4800));
        assert_eq!(
            f.iter().map(|f| f.kind).collect::<Vec<_>>(),
            vec![Kind::InboundPathChanged]
        );
    }

    #[test]
    fn installed_during_an_interception_the_siblings_tell() {
        let mut d = detector();
        interceptor(&mut d, 5222, 80, 0);
        internet(&mut d, 5223, 60, 0);
        internet(&mut d, 22, 60, 0);
        let f = d.close_window(t(600));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].details["reason"], "siblings");
        assert_eq!(f[0].details["before"]["ports"], json!([22, 5223]));
    }

    #[test]
    fn benign_cases_never_alarm() {
        let mut d = detector();
        // A port whose clients were always 0 hops away (behind a reverse
        // proxy in front of the host): its own baseline. A quiet port: a few
        // SYNs from right in front now and then.
        proxy(&mut d, 8443, 50, 0);
        assert!(d.close_window(t(600)).is_empty());
        for w in 1..6 {
            proxy(&mut d, 8443, 50, w * 600);
            interceptor(&mut d, 2222, 5, w * 600);
            internet(&mut d, 443, 60, w * 600);
            assert!(d.close_window(t(w * 600 + 600)).is_empty(), "window {w}");
        }
        // A client population that shifts slowly, until all come from nearby.
        let mut d = detector();
        for w in 0..=60u32 {
            for i in 0..60u32 {
                let near = i < w;
                let ttl = if near {
                    62
                } else {
                    [55u8, 50, 47][(i % 3) as usize]
                };
                d.observe(&syn(443, ttl, 64240), t(i64::from(w) * 600));
            }
            let f = d.close_window(t(i64::from(w) * 600 + 600));
            assert!(f.is_empty(), "window {w}: {f:?}");
        }
        // Installed on a host with a reverse proxy in front of one port: its
        // clients all 0 hops away, the other ports' spread, but from the
        // proxy's own address: no interception, and it becomes the baseline.
        let mut d = detector();
        for w in 0..3 {
            proxy(&mut d, 8443, 80, w * 600);
            internet(&mut d, 22, 60, w * 600);
            internet(&mut d, 443, 60, w * 600);
            assert!(d.close_window(t(w * 600 + 600)).is_empty(), "window {w}");
        }
        // One busy port alone, no baseline: nothing to compare with.
        let mut d = detector();
        interceptor(&mut d, 5222, 100, 0);
        assert!(d.close_window(t(600)).is_empty());
    }

    #[test]
    fn the_port_table_is_capped_and_state_restores() {
        let mut d = detector();
        for port in 0..(MAX_KEYS as u16 + 10) {
            d.observe(&syn(port, 50, 64240), t(0));
        }
        assert_eq!(d.ports().len(), MAX_KEYS);
        assert_eq!(d.dropped, 10);
        internet(&mut d, 1, 60, 0);
        d.close_window(t(600));
        let key = PortKey { port: 1, family: 4 };
        // A window is learned once the next one was normal too.
        assert_eq!(d.ports()[&key].baseline.samples, 0);
        d.close_window(t(1200));
        assert_eq!(d.ports()[&key].baseline.samples, 61);
        let mut again = detector();
        again.restore(d.ports().clone());
        assert_eq!(again.ports()[&key].baseline, d.ports()[&key].baseline);
    }

    #[test]
    fn saved_state_round_trips_and_damage_is_skipped() {
        let mut d = detector();
        internet(&mut d, 5222, 60, 0);
        d.close_window(t(600));
        interceptor(&mut d, 5222, 5, 600);
        let text = d.to_json().to_string();
        let (saved, bad) = InboundDetector::from_json(&text);
        assert_eq!(bad, 0);
        let key = PortKey {
            port: 5222,
            family: 4,
        };
        assert_eq!(saved[&key].baseline, d.ports()[&key].baseline);
        // The current window is for `status` only.
        assert_eq!(saved[&key].window.samples, 0);
        // Damaged entries: counts that do not add up, a family 5, garbage.
        let mut damaged = d.to_json();
        damaged["ports"][0]["baseline"]["samples"] = json!(62);
        let ports = damaged["ports"].as_array_mut().unwrap();
        ports.push(json!({"port": 1, "family": 5, "changed_since": null,
                          "baseline": {"samples": 0, "hops": {}, "fingerprints": {}}}));
        ports.push(json!(7));
        let damaged = damaged.to_string();
        let (saved, bad) = InboundDetector::from_json(&damaged);
        assert_eq!((saved.len(), bad), (0, 3), "{damaged}");
        assert_eq!(InboundDetector::from_json("not json").1, 1);
    }

    #[test]
    fn remote_sources() {
        for (ip, remote) in [
            ("203.0.113.7", true),
            ("127.0.0.1", false),
            ("169.254.1.1", false),
            ("2001:db8::1", true),
            ("::1", false),
            ("fe80::1", false),
        ] {
            assert_eq!(counts_as_remote(&ip.parse().unwrap()), remote, "{ip}");
        }
    }
}
