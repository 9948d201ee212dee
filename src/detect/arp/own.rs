//! Frames that claim one of this host's own addresses from another MAC
//! (`arp_own_address_claimed`).

use std::collections::HashSet;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::ArpDetector;
use crate::alert::{Finding, Kind};
use crate::wire::EtherAddr;

/// Claims of our own addresses already reported: (address, claiming MAC),
/// bounded; a new claimer of the same address is reported again.
const MAX_OWN_CLAIMS: usize = 1024;

/// The host's own addresses and the MACs of its own links.
#[derive(Default)]
pub(super) struct OwnAddresses {
    addresses: HashSet<IpAddr>,
    macs: HashSet<EtherAddr>,
    reported: HashSet<(IpAddr, EtherAddr)>,
}

impl ArpDetector {
    /// This host's addresses (every interface) and the MACs of its links. A
    /// frame from one of these MACs claiming one of these addresses is the host
    /// itself (Linux answers ARP for any local address on any interface).
    pub fn set_own(&mut self, addresses: HashSet<IpAddr>, macs: HashSet<EtherAddr>) {
        self.own.reported.retain(|(ip, _)| addresses.contains(ip));
        self.own.addresses = addresses;
        self.own.macs = macs;
    }

    /// A frame says `mac` is `ip`. True when `ip` is one of ours (nothing more
    /// to learn from the frame); when `mac` is not ours either, that is
    /// `arp_own_address_claimed`, once per claimer: how an attacker
    /// poisons the gateway's or the neighbours' entry for us. A router of a
    /// VRRP group that advertises the address now (this host is one of its
    /// routers) taking it over is a failover when `vrrp_is_normal`; a
    /// virtual MAC alone is not.
    pub(super) fn observe_own_claim(
        &mut self,
        interface: &str,
        ip: IpAddr,
        mac: &EtherAddr,
        source: &str,
        now: DateTime<Utc>,
        out: &mut Vec<Finding>,
    ) -> bool {
        if !self.own.addresses.contains(&ip) {
            return false;
        }
        // The host itself (any of its links), or a VRRP failover.
        if self.own.macs.contains(mac)
            || (self.settings.vrrp_is_normal
                && !self.vrrp.is_empty()
                && self.vrrp_view(now).advertises(interface, ip, mac))
        {
            return true;
        }
        if self.own.reported.len() < MAX_OWN_CLAIMS && self.own.reported.insert((ip, *mac)) {
            out.push(Finding::new(
                Kind::ArpOwnAddressClaimed,
                now,
                format!(
                    "a frame on {interface} claims this host's own address {ip} for {mac} (seen in {}): someone is poisoning neighbours' entries for us",
                    source.to_uppercase()
                ),
                json!({"interface": interface, "ip": ip.to_string(), "mac": mac.to_string(), "source": source}),
            ));
        }
        true
    }
}
