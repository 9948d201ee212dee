//! Flapping links (`link_flapping`): the third down of a link within
//! `[agent] link_flap_window` starts an episode, reported at once with every
//! down time so far. While it lasts the individual `link_down` / `link_up`
//! alerts are folded into it (nothing is dropped: each time is kept); when
//! the link has been up for the same window the episode ends with one `link_up` carrying
//! the count and all the times — the exact flap times an investigation
//! needs (jabber.ru's began with a 19 s link loss at the first rogue issuance).

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::NetDetector;
use crate::alert::{Finding, Kind, format_time};

/// Downs within `[agent] link_flap_window` that make a link flapping. An
/// episode ends when the link has been up, with no new down, as long.
pub const FLAP_THRESHOLD: usize = 3;
/// Times kept per episode (the count goes on beyond).
pub const MAX_FLAP_TIMES: usize = 256;
/// Links tracked at once.
pub const MAX_FLAPPING_LINKS: usize = 1024;

/// One carrier loss: when, and for how long (unknown while down, or when the
/// kernel folded it between two notifications).
#[derive(Clone, Debug, PartialEq)]
struct Flap {
    down: DateTime<Utc>,
    down_ms: Option<i64>,
    up: bool,
}

impl Flap {
    fn json(&self) -> Value {
        json!({"down": format_time(&self.down), "down_ms": self.down_ms})
    }
}

/// A link's recent losses and, when it flaps, its episode.
#[derive(Clone, Debug, Default)]
pub(super) struct LinkFlaps {
    recent: VecDeque<Flap>,
    episode: Option<Episode>,
}

#[derive(Clone, Debug)]
struct Episode {
    count: u64,
    times: Vec<Flap>,
    /// The last loss or return: the quiet period counts from here.
    last: DateTime<Utc>,
}

impl Episode {
    fn push(&mut self, flap: Flap) {
        self.count += 1;
        if self.times.len() < MAX_FLAP_TIMES {
            self.times.push(flap);
        }
    }
    fn times_json(&self) -> Vec<Value> {
        self.times.iter().map(Flap::json).collect()
    }
}

impl NetDetector {
    /// Passes a link's carrier findings through its flap tracker: the third
    /// loss within the window becomes `link_flapping`; during an episode
    /// the losses and returns are recorded instead of sent.
    pub(super) fn fold_flaps(
        &mut self,
        name: &str,
        findings: Vec<Finding>,
        now: DateTime<Utc>,
    ) -> Vec<Finding> {
        if !self.flaps.contains_key(name) && self.flaps.len() >= MAX_FLAPPING_LINKS {
            return findings;
        }
        let window = self.settings.flap_window;
        let link = self.flaps.entry(name.to_string()).or_default();
        let mut out = Vec::new();
        for f in findings {
            match (f.kind, f.clears) {
                (Kind::LinkDown, false) => {
                    let unseen = f.details.get("flaps").and_then(Value::as_u64);
                    for _ in 0..unseen.unwrap_or(1).clamp(1, MAX_FLAP_TIMES as u64) {
                        let flap = Flap {
                            down: now,
                            down_ms: None,
                            up: unseen.is_some(),
                        };
                        match link.episode.as_mut() {
                            Some(e) => {
                                e.push(flap);
                                e.last = now;
                            }
                            None => link.recent.push_back(flap),
                        }
                    }
                    while link.recent.front().is_some_and(|x| now - x.down > window) {
                        link.recent.pop_front();
                    }
                    if link.episode.is_some() {
                        continue;
                    }
                    if link.recent.len() >= FLAP_THRESHOLD {
                        let times: Vec<Flap> = link.recent.drain(..).collect();
                        let mut episode = Episode {
                            count: 0,
                            times: Vec::new(),
                            last: now,
                        };
                        for t in times {
                            episode.push(t);
                        }
                        out.push(Finding::new(
                            Kind::LinkFlapping,
                            now,
                            format!(
                                "link {name} is flapping: {} downs within {} s",
                                episode.count,
                                (now - episode.times[0].down).num_seconds()
                            ),
                            json!({"interface": name, "flaps": episode.count,
                                   "times": episode.times_json(), "window_s": window.num_seconds()}),
                        ));
                        link.episode = Some(episode);
                    } else {
                        out.push(f);
                    }
                }
                (Kind::LinkUp, _) => {
                    let down_ms = f.details.get("down_ms").and_then(Value::as_i64);
                    let last = match link.episode.as_mut() {
                        Some(e) => {
                            e.last = now;
                            e.times.last_mut()
                        }
                        None => link.recent.back_mut(),
                    };
                    if let Some(l) = last.filter(|l| !l.up) {
                        l.up = true;
                        l.down_ms = down_ms;
                    }
                    if link.episode.is_none() {
                        out.push(f);
                    }
                }
                (Kind::LinkDown, true) if link.episode.is_some() => {}
                _ => out.push(f),
            }
        }
        if link.recent.is_empty() && link.episode.is_none() {
            self.flaps.remove(name);
        }
        out
    }

    /// When the next episode may end (for the agent's timer).
    pub(super) fn next_flap_deadline(&self) -> Option<DateTime<Utc>> {
        self.flaps
            .values()
            .filter_map(|l| {
                l.episode
                    .as_ref()
                    .map(|e| e.last + self.settings.flap_window)
            })
            .min()
    }

    /// Ends the episodes whose quiet period is over: a link up all along gets
    /// its `link_up` with the episode's count and times; a link still down
    /// gets its `link_down` (a flapping link that stopped coming back).
    pub(super) fn end_flap_episodes(&mut self, now: DateTime<Utc>) -> Vec<Finding> {
        let quiet = self.settings.flap_window;
        let due: Vec<String> = self
            .flaps
            .iter()
            .filter(|(_, l)| l.episode.as_ref().is_some_and(|e| now - e.last >= quiet))
            .map(|(n, _)| n.clone())
            .collect();
        let mut out = Vec::new();
        for name in due {
            let Some(episode) = self.flaps.remove(&name).and_then(|l| l.episode) else {
                continue;
            };
            let up = episode.times.last().is_none_or(|f| f.up);
            let first = episode.times.first().map(|f| f.down).unwrap_or(now);
            let span = (episode.last - first).num_seconds();
            out.push(Finding::cleared(
                Kind::LinkFlapping,
                now,
                format!("link {name} no longer flaps"),
                json!({"interface": name}),
            ));
            let details = json!({"interface": name, "flaps": episode.count, "times": episode.times_json(),
                                 "down_ms": episode.times.last().and_then(|f| f.down_ms), "episode_s": span});
            out.push(if up {
                Finding::new(
                    Kind::LinkUp,
                    now,
                    format!(
                        "link {name} is stable again after {} downs in {span} s",
                        episode.count
                    ),
                    details,
                )
            } else {
                // Its return is an ordinary link_up (timed from the record's
                // down_since, kept all along).
                Finding::new(
                    Kind::LinkDown,
                    now,
                    format!(
                        "link {name} is down (since {}) after {} downs",
                        format_time(&episode.last),
                        episode.count
                    ),
                    json!({"interface": name, "reason": "flapping", "flaps": episode.count,
                           "times": episode.times_json()}),
                )
            });
        }
        out
    }

    /// Forgets a removed link's losses; true when it was in an episode.
    pub(super) fn forget_flaps(&mut self, name: &str) -> bool {
        self.flaps.remove(name).is_some_and(|l| l.episode.is_some())
    }
}

/// A link's tracker, by name.
pub(super) type FlapTable = HashMap<String, LinkFlaps>;
