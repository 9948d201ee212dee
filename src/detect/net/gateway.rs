//! Gateways: the default routes' next hops and the MAC each answers from
//! (`gateway_changed`, `gateway_mac_changed`, `gateway_unreachable`).

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{NetDetector, Pass};
use crate::alert::{Finding, Kind};
use crate::detect::arp::vrrp::failover_finding;
use crate::kernel::{Family, KernelView, Mac, NeighbourState};
use crate::state::baseline::{Decision, GatewayVerdict, MAX_GATEWAYS, NextHopRecord};
use crate::wire::EtherAddr;

/// A gateway MAC learned at first sight is confirmed by a probe: answers
/// from another MAC within this are a conflict. Answers on a LAN take
/// milliseconds; a poisoner answering requests answers at once.
pub const CONFIRM_WINDOW: chrono::Duration = chrono::Duration::seconds(1);

/// A gateway whose entry failed stays FAILED this long (the agent's own
/// probe unanswered, the kernel's too) before it is `gateway_unreachable`.
pub const UNREACHABLE_AFTER: chrono::Duration = chrono::Duration::seconds(3);

/// A request to the agent: ask this gateway for its address now (an ARP
/// request or a neighbour solicitation), so that a live gateway's answer
/// refreshes the kernel's entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayProbe {
    pub ifindex: u32,
    pub ip: IpAddr,
}

impl NetDetector {
    /// Gateways to probe now (taken once).
    pub fn take_probes(&mut self) -> Vec<GatewayProbe> {
        std::mem::take(&mut self.probes)
    }

    /// Gateways whose first-sight MAC is being confirmed, or was disputed
    /// (for the wire: another MAC there is a conflict, not a change).
    pub fn confirming(&self) -> Vec<IpAddr> {
        self.confirming
            .keys()
            .chain(self.disputed.iter())
            .map(|(_, ip)| *ip)
            .collect()
    }

    /// Another MAC answered for a gateway being confirmed: it stays
    /// unconfirmed (in the baseline, for `netsentry baseline`).
    /// It is disputed from then on (this run): the wire reports each new set
    /// of MACs answering as a conflict, and neither MAC is called a change
    /// of the other — the operator says which is the gateway
    /// (`netsentry baseline accept`).
    pub fn confirmation_failed(&mut self, ip: IpAddr) {
        for key in self.confirming_keys(ip) {
            self.confirming.remove(&key);
            self.disputed.insert(key);
        }
    }

    /// The learned MAC answered the probe first: confirmed now.
    pub fn confirmation_done(&mut self, ip: IpAddr) {
        let done = self.confirming_keys(ip);
        self.confirm(done);
    }

    /// The (interface, gateway) entries being confirmed for `ip`.
    fn confirming_keys(&self, ip: IpAddr) -> Vec<(u32, IpAddr)> {
        self.confirming
            .keys()
            .filter(|(_, g)| *g == ip)
            .copied()
            .collect()
    }

    /// Confirmations whose window passed without a conflict.
    pub(super) fn end_confirmations(&mut self, now: DateTime<Utc>) {
        let done: Vec<(u32, IpAddr)> = self
            .confirming
            .iter()
            .filter(|(_, until)| now >= **until)
            .map(|(k, _)| *k)
            .collect();
        self.confirm(done);
    }

    fn confirm(&mut self, done: Vec<(u32, IpAddr)>) {
        for (ifindex, ip) in done {
            self.confirming.remove(&(ifindex, ip));
            let interface = self.view.link_name(ifindex);
            let family = Family::of(&ip);
            let single = self
                .baseline
                .gateway(family, &interface, &ip)
                .is_some_and(|g| g.suspect.is_none());
            if single {
                self.baseline
                    .set_gateway_how(family, &interface, ip, |how| {
                        how.replace(", unconfirmed", ", confirmed")
                    });
                self.dirty = true;
            }
        }
    }

    /// Failed entries that stayed failed: `gateway_unreachable`.
    pub(super) fn judge_failing(&mut self, now: DateTime<Utc>) -> Vec<Finding> {
        let due: Vec<(u32, IpAddr)> = self
            .failing
            .iter()
            .filter(|(_, since)| now - **since >= UNREACHABLE_AFTER)
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::new();
        for (ifindex, ip) in due {
            self.failing.remove(&(ifindex, ip));
            let still_failed = self
                .view
                .neighbours
                .get(&(ifindex, ip))
                .is_some_and(|n| n.state == NeighbourState::Failed);
            let still_gateway = self
                .gateways()
                .iter()
                .any(|(_, i, g)| (*i, *g) == (ifindex, ip));
            if !still_failed || !still_gateway || !self.unreachable.insert((ifindex, ip)) {
                continue;
            }
            let interface = self.view.link_name(ifindex);
            out.push(Finding::new(
                Kind::GatewayUnreachable,
                now,
                format!("default gateway {ip} on {interface} does not answer (neighbour entry failed, and a probe got no answer)"),
                json!({"interface": interface, "ip": ip.to_string(), "state": "failed"}),
            ));
        }
        out
    }

    /// The gateways of the current default routes: (family, ifindex, ip).
    pub(super) fn gateways(&self) -> Vec<(Family, u32, IpAddr)> {
        gateways_of(&self.view)
    }

    pub(super) fn update_gateways(&mut self, pass: &mut Pass<'_>) {
        for family in [Family::Inet, Family::Inet6] {
            let new: Vec<NextHopRecord> = self
                .view
                .default_routes(family)
                .flat_map(|(_, hops)| hops.iter())
                .map(|h| NextHopRecord {
                    ip: h.gateway,
                    interface: self.view.link_name(h.ifindex),
                })
                .collect();
            let old = self
                .baseline
                .default_routes
                .get(&family)
                .cloned()
                .unwrap_or_default();
            if new == old {
                continue;
            }
            if !pass.quiet {
                // A next hop this host never had as a gateway, nor heard
                // advertise before: the rogue router that won the race
                // against its own advertisement's frame.
                let stranger = new.iter().filter_map(|h| h.ip).find(|ip| {
                    !old.iter().any(|o| o.ip == Some(*ip))
                        && !self.baseline.gateways.iter().any(|g| g.ip == *ip)
                        && !self.known_routers.contains(ip)
                });
                let mut finding = gateway_changed(family, &old, &new, pass.now);
                if let Some(ip) = stranger {
                    finding
                        .details
                        .insert("unknown_router".into(), json!(ip.to_string()));
                    finding
                        .summary
                        .push_str(&format!("; {ip} is a router never seen before"));
                    finding = finding.raised(crate::alert::Severity::Critical);
                }
                pass.out.push(finding);
            }
            if new.is_empty() {
                self.baseline.default_routes.remove(&family);
            } else {
                self.baseline.default_routes.insert(family, new);
            }
            self.dirty = true;
        }
        for (family, ifindex, ip) in self.gateways() {
            self.check_gateway(family, ifindex, ip, pass);
        }
    }

    /// Compares a gateway's neighbour entry with the MAC it is trusted at.
    pub(super) fn check_gateway(
        &mut self,
        family: Family,
        ifindex: u32,
        ip: IpAddr,
        pass: &mut Pass<'_>,
    ) {
        let Some(entry) = self.view.neighbours.get(&(ifindex, ip)) else {
            return;
        };
        let interface = self.view.link_name(ifindex);
        if entry.state == NeighbourState::Failed {
            // Not yet unreachable: an administrator's `ip neigh flush` leaves
            // the entry FAILED too. It is if it stays FAILED for
            // UNREACHABLE_AFTER while the agent asks the gateway itself
            // (an ARP request or neighbour solicitation from its own socket).
            if !self.unreachable.contains(&(ifindex, ip))
                && !self.failing.contains_key(&(ifindex, ip))
            {
                self.failing.insert((ifindex, ip), pass.now);
                self.probes.push(GatewayProbe { ifindex, ip });
            }
            return;
        }
        if !entry.state.has_valid_address() {
            return;
        }
        self.failing.remove(&(ifindex, ip));
        if self.unreachable.remove(&(ifindex, ip)) && !pass.quiet {
            pass.out.push(Finding::cleared(
                Kind::GatewayUnreachable,
                pass.now,
                format!("default gateway {ip} on {interface} answers again"),
                json!({"interface": interface, "ip": ip.to_string()}),
            ));
        }
        let Some(mac) = entry.mac.clone() else { return };
        let verdict = self.baseline.judge_gateway_mac(
            (family, &interface, ip),
            &mac,
            pass.source,
            pass.now,
            self.settings.adopt_after,
        );
        // Within the gateway's advertising VRRP group (not once disputed):
        // the same classification as the wire's.
        let failover = match &verdict {
            GatewayVerdict::NewSuspect(known)
                if self.settings.vrrp_is_normal && !self.disputed.contains(&(ifindex, ip)) =>
            {
                self.vrrp_failover((&interface, ip), known, &mac, pass)
            }
            _ => None,
        };
        match verdict {
            GatewayVerdict::Trusted | GatewayVerdict::StillSuspect => {}
            // First sight of this gateway (or a quiet first start): learned,
            // but not trusted blindly — a host poisoned before the agent
            // started would teach it the attacker's MAC. The agent asks the
            // gateway (a probe: every MAC answering for it replies); until
            // CONFIRM_WINDOW has passed, a second MAC is a conflict, not a
            // change of the one learned.
            GatewayVerdict::Learned if !self.settings.confirm_first_sight => self.dirty = true,
            GatewayVerdict::Learned => {
                self.dirty = true;
                self.confirming
                    .insert((ifindex, ip), pass.now + CONFIRM_WINDOW);
                self.probes.push(GatewayProbe { ifindex, ip });
                self.baseline
                    .set_gateway_how(family, &interface, ip, |how| format!("{how}, unconfirmed"));
            }
            GatewayVerdict::NewSuspect(_) if failover.is_some() => {
                // Within the gateway's advertising VRRP group: the same
                // classification as the wire's. The new MAC is the
                // gateway's now (it was the group's all along).
                self.dirty = true;
                self.confirming.remove(&(ifindex, ip));
                if let Some(finding) = failover {
                    let how = format!("VRRP failover (group {})", finding.details["vrid"]);
                    self.baseline
                        .set_gateway_mac(family, &interface, ip, mac.clone(), pass.now);
                    self.baseline
                        .set_gateway_how(family, &interface, ip, |_| how);
                    // As many as the baseline holds gateways (it is capped).
                    let key = (interface.clone(), ip);
                    if self.failovers.len() < MAX_GATEWAYS || self.failovers.contains_key(&key) {
                        *self.failovers.entry(key).or_default() += 1;
                    }
                    if !pass.quiet {
                        pass.out.push(finding);
                    }
                }
            }
            GatewayVerdict::NewSuspect(known)
                if self.disputed.contains(&(ifindex, ip))
                    || self
                        .confirming
                        .get(&(ifindex, ip))
                        .is_some_and(|until| pass.now < *until) =>
            {
                // The kernel took another MAC while the learned one was being
                // confirmed (or after it was disputed): two MACs for the
                // gateway, and naming one of them the intruder would be a
                // guess. Reported here too — the change may not have come
                // over the wire (or the capture missed it); unless the wire
                // already disputed it.
                self.dirty = true;
                if !pass.quiet && !self.disputed.contains(&(ifindex, ip)) {
                    self.disputed.insert((ifindex, ip));
                    self.confirming.remove(&(ifindex, ip));
                    let mut macs = [known.to_string(), mac.to_string()];
                    macs.sort();
                    pass.out.push(Finding::new(
                        Kind::ArpGatewayConflict,
                        pass.now,
                        format!("default gateway {ip} on {interface} is now at {mac} while {known}, learned at first sight, was being confirmed: two MACs, not confirmed"),
                        json!({"interface": interface, "ip": ip.to_string(), "macs": macs,
                               "unconfirmed": true, "learned_mac": known.to_string(), "source": pass.source}),
                    ));
                }
            }
            GatewayVerdict::NewSuspect(known) => {
                self.dirty = true;
                if !pass.quiet {
                    pass.out.push(Finding::new(
                        Kind::GatewayMacChanged,
                        pass.now,
                        format!("default gateway {ip} on {interface} is now at {mac} (was {known})"),
                        json!({"interface": interface, "ip": ip.to_string(), "old_mac": known.to_string(),
                               "new_mac": mac.to_string(), "source": pass.source, "sources": [pass.source]}),
                    ));
                }
            }
            GatewayVerdict::Adopted { old } => {
                self.dirty = true;
                pass.out.push(Finding::new(
                    Kind::GatewayMacTrusted,
                    pass.now,
                    format!("default gateway {ip} on {interface}: {mac} (reported as a change from {old}) has been stable for [agent] gateway_adopt_after and is now trusted"),
                    json!({"interface": interface, "ip": ip.to_string(), "old_mac": old.to_string(),
                           "new_mac": mac.to_string(), "how": "adopted"}),
                ));
            }
        }
    }

    /// `gateway_failover` when the gateway moving from `old` to `new` is a
    /// failover within its VRRP group (see [`crate::detect::arp::vrrp`]).
    fn vrrp_failover(
        &self,
        (interface, ip): (&str, IpAddr),
        old: &Mac,
        new: &Mac,
        pass: &Pass<'_>,
    ) -> Option<Finding> {
        let (old, new) = (EtherAddr::from_mac(old)?, EtherAddr::from_mac(new)?);
        let group = self.vrrp.failover(interface, ip, old, new)?;
        Some(failover_finding(
            group,
            (interface, ip),
            (old, new),
            pass.source,
            pass.now,
        ))
    }

    /// Applies an operator decision (`netsentry baseline accept|forget`);
    /// an accepted MAC is reported as `gateway_mac_trusted`.
    pub fn apply_decision(&mut self, decision: &Decision, now: DateTime<Utc>) -> Vec<Finding> {
        let before = self.baseline.apply(decision, now);
        self.dirty |= !before.is_empty();
        // The operator said which MAC is the gateway (or to forget it): no
        // longer disputed.
        let decided = match decision {
            Decision::Accept { ip, .. } | Decision::Forget { ip, .. } => *ip,
        };
        self.disputed.retain(|(_, g)| *g != decided);
        self.confirming.retain(|(_, g), _| *g != decided);
        let Decision::Accept { ip, mac, .. } = decision else {
            return Vec::new();
        };
        before
            .iter()
            .map(|g| {
                Finding::new(
                    Kind::GatewayMacTrusted,
                    now,
                    format!("default gateway {ip} on {}: {mac} accepted by hand with `netsentry baseline accept` (was {})", g.interface, g.mac),
                    json!({"interface": g.interface, "ip": ip.to_string(), "old_mac": g.mac.to_string(),
                           "new_mac": mac.to_string(), "how": "accepted"}),
                )
            })
            .collect()
    }
}

pub(super) fn gateways_of(view: &KernelView) -> Vec<(Family, u32, IpAddr)> {
    [Family::Inet, Family::Inet6]
        .into_iter()
        .flat_map(|f| {
            view.default_nexthops(f)
                .into_iter()
                .map(move |(ip, ifindex)| (f, ifindex, ip))
        })
        .collect()
}

fn hop_json(hop: Option<&NextHopRecord>) -> Value {
    match hop {
        Some(h) => json!({"ip": h.ip.map(|ip| ip.to_string()), "interface": h.interface}),
        None => Value::Null,
    }
}

fn hop_text(hop: &NextHopRecord) -> String {
    match hop.ip {
        Some(ip) => format!("{ip} on {}", hop.interface),
        None => format!("dev {}", hop.interface),
    }
}

fn gateway_changed(
    family: Family,
    old: &[NextHopRecord],
    new: &[NextHopRecord],
    now: DateTime<Utc>,
) -> Finding {
    let f = family.as_str();
    let summary = match (old.first(), new.first()) {
        (Some(o), Some(n)) if o == n => format!(
            "default {f} route next hops changed: now {} (was {})",
            new.iter().map(hop_text).collect::<Vec<_>>().join(", "),
            old.iter().map(hop_text).collect::<Vec<_>>().join(", ")
        ),
        (Some(o), Some(n)) => format!(
            "default {f} gateway changed to {} (was {})",
            hop_text(n),
            hop_text(o)
        ),
        (None, Some(n)) => format!("new default {f} gateway {}", hop_text(n)),
        (Some(o), None) => format!("default {f} route removed (was via {})", hop_text(o)),
        (None, None) => format!("default {f} route changed"),
    };
    let mut details =
        json!({"family": f, "old": hop_json(old.first()), "new": hop_json(new.first())});
    if old.len() > 1 || new.len() > 1 {
        details["old_nexthops"] = Value::Array(old.iter().map(|h| hop_json(Some(h))).collect());
        details["new_nexthops"] = Value::Array(new.iter().map(|h| hop_json(Some(h))).collect());
    }
    Finding::new(Kind::GatewayChanged, now, summary, details)
}
