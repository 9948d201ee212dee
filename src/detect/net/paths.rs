//! Where traffic goes (`route_diverted`): the kernel's next hop for each
//! watched destination, compared with the one before.
//!
//! The main table's default route is the gateway detector's (`gateway_changed`);
//! everything else that moves a destination's next hop is a diversion: a more
//! specific route (`0.0.0.0/1` + `128.0.0.0/1`, a host route), a policy rule
//! that sends traffic to another table, a redirect's route exception. One
//! alert per new path, naming the destinations it took, the old and new next
//! hop and the route, rule or redirect responsible. A destination that lost
//! its route keeps its last path: "gone, then back the same way" is quiet.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde_json::{Value, json};

use super::{NetDetector, Pass};
use crate::alert::{Finding, Kind, Severity};
use crate::kernel::{KernelView, PathLookup, RoutePath};

/// Destinations remembered (the watched set is bounded by the configuration).
pub const MAX_PATHS: usize = 1024;
const RT_TABLE_MAIN: u32 = 254;

/// Why a path goes where it goes.
fn cause(p: &RoutePath) -> &'static str {
    if p.redirected_from.is_some() {
        "redirect"
    } else if p.table != RT_TABLE_MAIN {
        "rule"
    } else {
        "route"
    }
}

/// The main table's default route, not redirected: the gateway detector's.
fn is_plain_default(p: &RoutePath) -> bool {
    p.table == RT_TABLE_MAIN && p.redirected_from.is_none() && p.prefix.is_some_and(|(_, l)| l == 0)
}

fn table_name(table: u32) -> String {
    match table {
        254 => "main".into(),
        255 => "local".into(),
        253 => "default".into(),
        t => t.to_string(),
    }
}

/// `0.0.0.0/1 via 192.0.2.66 dev eth0 table main`, as `ip route` would say.
pub(crate) fn route_text(p: &RoutePath, view: &KernelView) -> String {
    let prefix = p
        .prefix
        .map(|(ip, len)| format!("{ip}/{len}"))
        .unwrap_or_else(|| "?".into());
    let via = match p.redirected_from.or(p.gateway) {
        Some(g) => format!(" via {g}"),
        None => String::new(),
    };
    format!(
        "{prefix}{via} dev {} table {}",
        view.link_name(p.ifindex),
        table_name(p.table)
    )
}

fn hop_json(p: &RoutePath, view: &KernelView) -> Value {
    json!({"ip": p.gateway.map(|g| g.to_string()), "interface": view.link_name(p.ifindex)})
}

impl NetDetector {
    /// Routers this host has used: every gateway it knows a MAC for, and the
    /// current default next hops.
    fn known_router(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip else { return false };
        self.baseline.gateways.iter().any(|g| g.ip == ip)
            || self
                .baseline
                .default_routes
                .values()
                .flatten()
                .any(|h| h.ip == Some(ip))
    }

    /// New lookups: report the destinations whose next hop moved.
    pub(super) fn check_paths(&mut self, lookups: Vec<PathLookup>, pass: &mut Pass<'_>) {
        // (new path's next hop and route) -> (old next hop, destinations, path)
        let mut moved: BTreeMap<String, (Vec<Value>, Vec<String>, RoutePath)> = BTreeMap::new();
        for lookup in lookups {
            let Ok(new) = lookup.path else { continue };
            if !self.paths.contains_key(&lookup.destination) && self.paths.len() >= MAX_PATHS {
                continue;
            }
            let old = self.paths.insert(lookup.destination, new.clone());
            let Some(old) = old else { continue };
            if (old.gateway, old.ifindex) == (new.gateway, new.ifindex) || pass.quiet {
                continue;
            }
            if is_plain_default(&new) {
                continue; // gateway_changed says it
            }
            let key = format!("{:?} {}", new.gateway, route_text(&new, &self.view));
            let entry = moved
                .entry(key)
                .or_insert_with(|| (Vec::new(), Vec::new(), new.clone()));
            let old_hop = hop_json(&old, &self.view);
            if !entry.0.contains(&old_hop) {
                entry.0.push(old_hop);
            }
            entry.1.push(lookup.destination.to_string());
        }
        for (_, (old_hops, destinations, new)) in moved {
            let known = self.known_router(new.gateway);
            let route = route_text(&new, &self.view);
            let cause = cause(&new);
            let by = match cause {
                "redirect" => format!(
                    "a redirect from {} (route exception)",
                    new.redirected_from
                        .map(|g| g.to_string())
                        .unwrap_or_default()
                ),
                "rule" => format!(
                    "rule {}, route {route}",
                    new.rule.as_deref().unwrap_or("(not found)")
                ),
                _ => format!("route {route}"),
            };
            let hop = match new.gateway {
                Some(g) => format!("via {g}"),
                None => "directly (on-link)".into(),
            };
            let finding = Finding::new(
                Kind::RouteDiverted,
                pass.now,
                format!(
                    "traffic for {} now goes {hop} on {} ({by}){}",
                    destinations.join(", "),
                    self.view.link_name(new.ifindex),
                    if known { "" } else { "; not a known router" }
                ),
                json!({
                    "destinations": destinations,
                    "old_next_hop": old_hops.first().cloned().unwrap_or(Value::Null),
                    "old_next_hops": old_hops,
                    "new_next_hop": hop_json(&new, &self.view),
                    "cause": cause,
                    "route": route,
                    "table": table_name(new.table),
                    "rule": new.rule,
                    "redirected_from": new.redirected_from.map(|g| g.to_string()),
                    "known_router": known,
                }),
            );
            pass.out.push(if known {
                finding
            } else {
                finding.raised(Severity::Critical)
            });
        }
    }

    /// The last path of each watched destination (for `status`).
    pub fn paths(&self) -> &HashMap<IpAddr, RoutePath> {
        &self.paths
    }
}
