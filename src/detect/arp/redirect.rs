//! ICMP redirects, IPv6 (`ndp_redirect`) and IPv4 (`icmp_redirect`): traffic
//! for one destination moved to another first hop without any gateway entry
//! changing.

use std::net::{IpAddr, Ipv6Addr};

use chrono::{DateTime, Utc};
use serde_json::json;

use super::ArpDetector;
use crate::alert::{Finding, Kind};
use crate::wire::{NdpFrame, RedirectFrame};

impl ArpDetector {
    /// An ICMPv6 redirect (RFC 4861 8): traffic for `destination` should go
    /// to `target` instead (`target == destination`: it is on-link). A host
    /// takes it from its current first hop, so a spoofed one moves traffic
    /// without touching any gateway entry. Warning; critical when the new
    /// first hop is not a router we know (a gateway or one seen advertising).
    pub(super) fn observe_redirect(
        &mut self,
        interface: &str,
        n: &NdpFrame,
        target: Ipv6Addr,
        destination: Ipv6Addr,
        now: DateTime<Utc>,
        out: &mut Vec<Finding>,
    ) {
        let known_router = self.gateways.contains_key(&IpAddr::V6(target))
            || self.routers.contains(&(interface.to_string(), target));
        let to = match target == destination {
            true => "on-link (directly to it)".to_string(),
            false => format!("via {target}"),
        };
        let finding = Finding::new(
            Kind::NdpRedirect,
            now,
            format!(
                "redirect on {interface} from {} ({}): traffic for {destination} to go {to}{}",
                n.ip_src,
                n.eth_src,
                if known_router {
                    ""
                } else {
                    ", a first hop that is not a known router"
                }
            ),
            json!({"interface": interface, "router_ip": n.ip_src.to_string(), "mac": n.eth_src.to_string(),
                   "destination": destination.to_string(), "target": target.to_string(),
                   "known_router": known_router}),
        );
        out.push(match known_router {
            true => finding,
            false => finding.raised(crate::alert::Severity::Critical),
        });
    }

    /// An IPv4 ICMP redirect: `icmp_redirect`, warning; critical when the new
    /// first hop is not a gateway we know (Linux takes redirects by default:
    /// `accept_redirects`).
    pub(super) fn observe_redirect4(
        &mut self,
        interface: &str,
        r: &RedirectFrame,
        now: DateTime<Utc>,
        out: &mut Vec<Finding>,
    ) {
        let known_router = self.gateways.contains_key(&IpAddr::V4(r.gateway));
        let finding = Finding::new(
            Kind::IcmpRedirect,
            now,
            format!(
                "ICMP redirect on {interface} from {} ({}): traffic for {} to go via {}{}",
                r.router,
                r.eth_src,
                r.destination,
                r.gateway,
                if known_router {
                    ""
                } else {
                    ", a first hop that is not a known gateway"
                }
            ),
            json!({"interface": interface, "router_ip": r.router.to_string(), "mac": r.eth_src.to_string(),
                   "destination": r.destination.to_string(), "target": r.gateway.to_string(),
                   "known_router": known_router}),
        );
        out.push(match known_router {
            true => finding,
            false => finding.raised(crate::alert::Severity::Critical),
        });
    }
}
