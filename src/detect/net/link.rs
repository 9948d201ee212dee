//! Links: their state compared with the last reported one (down/up with
//! duration, short flaps seen through the carrier counter, MAC, promiscuous
//! mode, MTU, added and removed).

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{NetDetector, Pass};
use crate::alert::{Finding, Kind};
use crate::kernel::Link;
use crate::state::baseline::{LinkRecord, MAX_LINKS};

impl NetDetector {
    /// By name or kind, unless stacked on a watched link (see
    /// [`crate::kernel::KernelView::is_ignored`]).
    pub(super) fn is_ignored(&self, link: &Link) -> bool {
        self.view.is_ignored(
            link,
            &self.settings.ignore_links,
            &self.settings.ignore_link_kinds,
        )
    }

    pub(super) fn wants_state_alerts(&self, name: &str) -> bool {
        self.settings.interfaces.is_empty() || self.settings.interfaces.iter().any(|i| i == name)
    }

    /// The record for a link, or `None` for links the operator ignores.
    pub(super) fn record_of(&self, link: &Link) -> Option<LinkRecord> {
        if link.loopback || self.is_ignored(link) {
            return None;
        }
        Some(LinkRecord {
            kind: link.kind.clone(),
            mac: link.mac.clone(),
            mtu: link.mtu,
            admin_up: link.admin_up,
            carrier: link.carrier,
            promisc: link.promisc,
            down_since: None,
            carrier_downs: link.carrier_downs,
        })
    }

    /// Compares the last reported state of link `name` with its new state.
    pub(super) fn update_link(&mut self, name: &str, new: Option<LinkRecord>, pass: &mut Pass<'_>) {
        match (self.baseline.links.get(name).cloned(), new) {
            (None, None) => {}
            (None, Some(new)) => self.link_added(name, new, pass),
            (Some(_), None) => self.link_removed(name, pass),
            (Some(old), Some(new)) => self.link_changed(name, old, new, pass),
        }
    }

    fn link_added(&mut self, name: &str, mut new: LinkRecord, pass: &mut Pass<'_>) {
        if self.baseline.links.len() >= MAX_LINKS {
            self.counters.links_dropped += 1;
            return;
        }
        if !pass.quiet {
            let kind = new.kind.clone().unwrap_or_else(|| "device".into());
            let mac = new.mac.as_ref().map(|m| m.to_string());
            // A stacked link names its lower device: a macvlan on the uplink
            // sees (and can send) the uplink's traffic.
            let lower = crate::kernel::STACKED_KINDS
                .contains(&kind.as_str())
                .then(|| self.view.link_by_name(name).and_then(|l| l.parent))
                .flatten()
                .and_then(|p| self.view.links.get(&p))
                .map(|l| l.name.clone());
            let mut details = json!({"interface": name, "link_kind": kind, "mac": mac});
            if let Some(lower) = &lower {
                details["lower"] = json!(lower);
            }
            pass.out.push(Finding::new(
                Kind::LinkAdded,
                pass.now,
                format!(
                    "new link {name} ({kind}{}{})",
                    lower
                        .as_ref()
                        .map(|l| format!(" on {l}"))
                        .unwrap_or_default(),
                    mac.as_ref().map(|m| format!(", {m}")).unwrap_or_default()
                ),
                details,
            ));
        }
        if !new.is_up() {
            new.down_since = Some(pass.now);
        }
        self.baseline.links.insert(name.to_string(), new);
        self.dirty = true;
    }

    fn link_removed(&mut self, name: &str, pass: &mut Pass<'_>) {
        if !pass.quiet {
            pass.out.push(Finding::new(
                Kind::LinkRemoved,
                pass.now,
                format!("link {name} was removed"),
                json!({"interface": name}),
            ));
            pass.out.push(link_down_ends(name, pass.now));
        }
        if self.forget_flaps(name) && !pass.quiet {
            pass.out.push(Finding::cleared(
                Kind::LinkFlapping,
                pass.now,
                format!("link {name} was removed"),
                json!({"interface": name}),
            ));
        }
        self.baseline.links.remove(name);
        self.dirty = true;
    }

    /// Down, up (with how long), flaps too short to be seen but counted by the
    /// kernel, MAC, promiscuous mode, MTU.
    fn link_changed(
        &mut self,
        name: &str,
        old: LinkRecord,
        mut new: LinkRecord,
        pass: &mut Pass<'_>,
    ) {
        let alerts = !pass.quiet && self.wants_state_alerts(name);
        let carrier = carrier_changes(name, &old, &mut new, pass.now);
        let attributes = attribute_changes(name, &old, &new, pass.now);
        if alerts {
            let carrier = self.fold_flaps(name, carrier, pass.now);
            pass.out.extend(carrier);
            pass.out.extend(attributes);
        }
        if old != new {
            self.baseline.links.insert(name.to_string(), new);
            self.dirty = true;
        }
    }
}

/// Carrier and admin state: `link_down`, `link_up` (timed with `down_since`,
/// which is updated in `new`), and flaps seen only through the counter.
fn carrier_changes(
    name: &str,
    old: &LinkRecord,
    new: &mut LinkRecord,
    now: DateTime<Utc>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    new.down_since = old.down_since;
    let unseen_flaps = match (old.carrier_downs, new.carrier_downs) {
        (Some(before), Some(now_count)) if now_count > before => now_count - before,
        _ => 0,
    };
    if old.is_up() && new.is_up() && unseen_flaps > 0 {
        // Down and up again between two notifications (or while the
        // agent was stopped): the counter is all that shows it.
        let times = if unseen_flaps == 1 {
            String::new()
        } else {
            format!(" {unseen_flaps} times")
        };
        out.push(Finding::new(
            Kind::LinkDown,
            now,
            format!("link {name} lost carrier{times} and got it back before it could be timed"),
            json!({"interface": name, "reason": "carrier", "flaps": unseen_flaps}),
        ));
        out.push(Finding::new(
            Kind::LinkUp,
            now,
            format!("link {name} is up again (short carrier loss{times})"),
            json!({"interface": name, "down_ms": null, "flaps": unseen_flaps}),
        ));
        out.push(link_down_ends(name, now));
    } else if old.is_up() && !new.is_up() {
        new.down_since = Some(now);
        let reason = if new.admin_up { "carrier" } else { "admin" };
        let why = if reason == "carrier" {
            "carrier lost"
        } else {
            "set down"
        };
        out.push(Finding::new(
            Kind::LinkDown,
            now,
            format!("link {name} is down ({why})"),
            json!({"interface": name, "reason": reason}),
        ));
    } else if !old.is_up() && new.is_up() {
        let down_ms = old.down_since.map(|t| (now - t).num_milliseconds().max(0));
        new.down_since = None;
        let after = down_ms
            .map(|ms| format!(" after {:.1} s", ms as f64 / 1000.0))
            .unwrap_or_default();
        out.push(Finding::new(
            Kind::LinkUp,
            now,
            format!("link {name} is up again{after}"),
            json!({"interface": name, "down_ms": down_ms}),
        ));
        out.push(link_down_ends(name, now));
    }

    out
}

/// `link_down` is a condition: it ends (Alertmanager resolves it) when the
/// link is up again, or gone.
fn link_down_ends(name: &str, now: DateTime<Utc>) -> Finding {
    Finding::cleared(
        Kind::LinkDown,
        now,
        format!("link {name} is no longer down"),
        json!({"interface": name}),
    )
}

/// MAC, promiscuous mode and MTU.
fn attribute_changes(
    name: &str,
    old: &LinkRecord,
    new: &LinkRecord,
    now: DateTime<Utc>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if old.mac != new.mac {
        let show = |m: &Option<crate::kernel::Mac>| m.as_ref().map(|m| m.to_string());
        out.push(Finding::new(
            Kind::LinkMacChanged,
            now,
            format!(
                "link {name} changed its MAC address to {} (was {})",
                show(&new.mac).unwrap_or_else(|| "none".into()),
                show(&old.mac).unwrap_or_else(|| "none".into())
            ),
            json!({"interface": name, "old_mac": show(&old.mac), "new_mac": show(&new.mac)}),
        ));
    }
    if old.promisc != new.promisc {
        let what = if new.promisc { "entered" } else { "left" };
        out.push(Finding::new(
            Kind::LinkPromisc,
            now,
            format!("link {name} {what} promiscuous mode"),
            json!({"interface": name, "enabled": new.promisc}),
        ));
    }
    if old.mtu != new.mtu {
        out.push(Finding::new(
            Kind::LinkMtuChanged,
            now,
            format!("link {name} MTU changed from {} to {}", old.mtu, new.mtu),
            json!({"interface": name, "old_mtu": old.mtu, "new_mtu": new.mtu}),
        ));
    }
    out
}
