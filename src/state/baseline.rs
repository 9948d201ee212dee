//! The baseline: what the agent last knew about gateways and links, kept in
//! `state_dir/baseline.json` so that a change made while it was stopped is
//! reported at the next start.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{StateError, write_atomically};
use crate::kernel::{Family, Mac};

/// The baseline file in `state_dir`.
pub const FILE_NAME: &str = "baseline.json";
const FORMAT_VERSION: u32 = 1;
/// Gateways remembered (current and past); the least recently confirmed go first.
pub const MAX_GATEWAYS: usize = 64;
/// Links remembered; a host with more non-ignored links than this is not a server.
pub const MAX_LINKS: usize = 4096;

/// A gateway and the MAC address it was last seen at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayRecord {
    pub family: Family,
    pub interface: String,
    pub ip: IpAddr,
    pub mac: Mac,
    pub seen: DateTime<Utc>,
}

/// A default next hop: gateway address (none for a device route) and interface.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextHopRecord {
    pub ip: Option<IpAddr>,
    pub interface: String,
}

/// The last reported state of a link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRecord {
    pub kind: Option<String>,
    pub mac: Option<Mac>,
    pub mtu: u32,
    pub admin_up: bool,
    pub carrier: bool,
    pub promisc: bool,
    /// When the link was seen going down, while it stays down.
    pub down_since: Option<DateTime<Utc>>,
    /// The kernel's carrier-loss counter when last seen (see `kernel::Link`).
    #[serde(default)]
    pub carrier_downs: Option<u32>,
}

impl LinkRecord {
    /// Admin up and carrier.
    pub fn is_up(&self) -> bool {
        self.admin_up && self.carrier
    }
}

/// What the agent last knew: gateways with their MACs, default routes, links.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    pub version: u32,
    pub gateways: Vec<GatewayRecord>,
    /// The default next hops per family, preferred first.
    pub default_routes: BTreeMap<Family, Vec<NextHopRecord>>,
    pub links: BTreeMap<String, LinkRecord>,
}

impl Baseline {
    /// The MAC known for a gateway.
    pub fn gateway_mac(&self, family: Family, interface: &str, ip: &IpAddr) -> Option<&Mac> {
        self.gateways
            .iter()
            .find(|g| g.family == family && g.interface == interface && g.ip == *ip)
            .map(|g| &g.mac)
    }

    /// Records the MAC of a gateway, keeping at most [`MAX_GATEWAYS`] records.
    pub fn set_gateway_mac(
        &mut self,
        family: Family,
        interface: &str,
        ip: IpAddr,
        mac: Mac,
        now: DateTime<Utc>,
    ) {
        if let Some(g) = self
            .gateways
            .iter_mut()
            .find(|g| g.family == family && g.interface == interface && g.ip == ip)
        {
            g.mac = mac;
            g.seen = now;
            return;
        }
        if self.gateways.len() >= MAX_GATEWAYS
            && let Some(oldest) = self
                .gateways
                .iter()
                .enumerate()
                .min_by_key(|(_, g)| g.seen)
                .map(|(i, _)| i)
        {
            self.gateways.remove(oldest);
        }
        self.gateways.push(GatewayRecord {
            family,
            interface: interface.to_string(),
            ip,
            mac,
            seen: now,
        });
    }
}

/// Loads the baseline. `Ok(None)` when there is none yet.
pub fn load(state_dir: &Path) -> Result<Option<Baseline>, StateError> {
    let path = state_dir.join(FILE_NAME);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Read { path, source }),
    };
    let baseline: Baseline = serde_json::from_slice(&text).map_err(|e| StateError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if baseline.version != FORMAT_VERSION {
        return Err(StateError::Corrupt {
            path,
            reason: format!("unknown format version {}", baseline.version),
        });
    }
    Ok(Some(baseline))
}

/// Writes the baseline atomically: temporary file, fsync, rename, fsync of the directory.
pub fn save(state_dir: &Path, baseline: &Baseline) -> Result<(), StateError> {
    let path = state_dir.join(FILE_NAME);
    let mut stored = baseline.clone();
    stored.version = FORMAT_VERSION;
    let text = serde_json::to_vec_pretty(&stored).unwrap_or_default();
    write_atomically(&path, &text).map_err(|source| StateError::Write { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Baseline {
        let mut b = Baseline::default();
        b.set_gateway_mac(
            Family::Inet,
            "eth0",
            "192.0.2.1".parse().unwrap(),
            Mac(vec![2, 0, 0, 0, 0, 1]),
            Utc::now(),
        );
        b.links.insert(
            "eth0".into(),
            LinkRecord {
                kind: None,
                mac: Mac::parse("02:00:00:00:00:10"),
                mtu: 1500,
                admin_up: true,
                carrier: true,
                promisc: false,
                down_since: None,
                carrier_downs: Some(0),
            },
        );
        b
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let b = sample();
        save(dir.path(), &b).unwrap();
        let loaded = load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.gateways, b.gateways);
        assert_eq!(loaded.links, b.links);
        assert!(!dir.path().join("baseline.tmp").exists());
    }

    #[test]
    fn corrupt_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        for junk in [
            &b"{"[..],
            b"",
            b"\xff\xfe",
            b"[]",
            b"{\"version\":9,\"gateways\":[],\"default_routes\":{},\"links\":{}}",
        ] {
            std::fs::write(dir.path().join(FILE_NAME), junk).unwrap();
            let err = load(dir.path()).unwrap_err();
            assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        }
    }

    #[test]
    fn gateway_records_are_capped() {
        let mut b = Baseline::default();
        let t0 = Utc::now();
        for i in 0..(MAX_GATEWAYS as u32 + 10) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0xC000_0200 + i));
            b.set_gateway_mac(
                Family::Inet,
                "eth0",
                ip,
                Mac(vec![2, 0, 0, 0, 0, 1]),
                t0 + chrono::Duration::seconds(i as i64),
            );
        }
        assert_eq!(b.gateways.len(), MAX_GATEWAYS);
        // The oldest went first.
        assert!(
            b.gateway_mac(Family::Inet, "eth0", &"192.0.2.0".parse().unwrap())
                .is_none()
        );
        assert!(
            b.gateway_mac(Family::Inet, "eth0", &"192.0.2.73".parse().unwrap())
                .is_some()
        );
    }
}
