//! Router advertisement contents (`ndp_router_changed`): what each router
//! told the hosts last — flags, preference, hop limit, MTU, prefixes, routes,
//! RDNSS, DNSSL, its source link-layer address — and what changed. A rogue
//! RA from the gateway's own link-local address with a prefix and a DNS
//! server of its own moves the host's addresses and names without any new
//! router or gateway MAC (a real router re-advertises every few minutes, so
//! its contents are known by then). Lifetimes are not compared: they count
//! down on some routers, and a router leaving says 0.

use std::net::Ipv6Addr;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{ArpDetector, MAX_ROUTERS};
use crate::alert::{Finding, Kind, Severity};
use crate::wire::{EtherAddr, RaInfo};

fn info_json(i: &RaInfo) -> Value {
    json!({
        "managed": i.managed, "other": i.other, "preference": i.preference,
        "cur_hop_limit": i.cur_hop_limit, "mtu": i.mtu,
        "prefixes": i.prefixes.iter().map(|(p, l, on_link, auto)| json!({"prefix": format!("{p}/{l}"), "on_link": on_link, "autonomous": auto})).collect::<Vec<_>>(),
        "routes": i.routes.iter().map(|(p, l)| format!("{p}/{l}")).collect::<Vec<_>>(),
        "rdnss": i.rdnss.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "dnssl": i.dnssl,
    })
}

/// One line per difference, as an operator would say it.
fn changes(old: &RaInfo, new: &RaInfo) -> Vec<String> {
    let mut out = Vec::new();
    let mut lists = |what: &str, a: Vec<String>, b: Vec<String>| {
        for x in b.iter().filter(|x| !a.contains(x)) {
            out.push(format!("{what} {x} added"));
        }
        for x in a.iter().filter(|x| !b.contains(x)) {
            out.push(format!("{what} {x} withdrawn"));
        }
    };
    let prefix = |i: &RaInfo| {
        i.prefixes
            .iter()
            .map(|(p, l, on, a)| {
                format!(
                    "{p}/{l}{}{}",
                    if *on { " on-link" } else { "" },
                    if *a { " autonomous" } else { "" }
                )
            })
            .collect()
    };
    lists("prefix", prefix(old), prefix(new));
    let routes = |i: &RaInfo| i.routes.iter().map(|(p, l)| format!("{p}/{l}")).collect();
    lists("route", routes(old), routes(new));
    let rdnss = |i: &RaInfo| i.rdnss.iter().map(|a| a.to_string()).collect();
    lists("RDNSS", rdnss(old), rdnss(new));
    lists("DNSSL", old.dnssl.clone(), new.dnssl.clone());
    let mut scalar = |what: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{what} {a} -> {b}"));
        }
    };
    let mtu = |m: Option<u32>| m.map(|m| m.to_string()).unwrap_or_else(|| "none".into());
    scalar("MTU", mtu(old.mtu), mtu(new.mtu));
    scalar("M flag", old.managed.to_string(), new.managed.to_string());
    scalar("O flag", old.other.to_string(), new.other.to_string());
    scalar("preference", old.preference.into(), new.preference.into());
    scalar(
        "hop limit",
        old.cur_hop_limit.to_string(),
        new.cur_hop_limit.to_string(),
    );
    out
}

impl ArpDetector {
    /// Compares a router's advertisement with its last one; `known_mac`: the
    /// gateway MAC trusted for the router's address, if it is a gateway.
    pub(super) fn observe_ra_contents(
        &mut self,
        interface: &str,
        (router, mac): (Ipv6Addr, EtherAddr),
        info: RaInfo,
        known_mac: Option<EtherAddr>,
        now: DateTime<Utc>,
        out: &mut Vec<Finding>,
    ) {
        let key = (interface.to_string(), router);
        let before = self.advertised.get(&key).cloned();
        let reference = before.as_ref().map(|(_, m)| *m).or(known_mac);
        let mac_differs = reference.is_some_and(|r| r != mac);
        let mut list = match &before {
            Some((old, _)) => changes(old, &info),
            None => Vec::new(),
        };
        if mac_differs && let Some(r) = reference {
            list.insert(0, format!("source link-layer address {r} -> {mac}"));
        }
        if !list.is_empty() {
            let finding = Finding::new(
                Kind::NdpRouterChanged,
                now,
                format!(
                    "router advertisement from {router} on {interface} changed: {}",
                    list.join("; ")
                ),
                json!({
                    "interface": interface, "router_ip": router.to_string(), "mac": mac.to_string(),
                    "known_mac": reference.map(|r| r.to_string()), "changes": list,
                    "before": before.as_ref().map(|(i, _)| info_json(i)), "after": info_json(&info),
                }),
            );
            out.push(if mac_differs {
                finding.raised(Severity::Critical)
            } else {
                finding
            });
        }
        if before.is_some() || self.advertised.len() < MAX_ROUTERS {
            // The trusted MAC is not replaced by a claim from another one.
            let keep = if mac_differs {
                reference.unwrap_or(mac)
            } else {
                mac
            };
            self.advertised.insert(key, (info, keep));
        }
    }
}
