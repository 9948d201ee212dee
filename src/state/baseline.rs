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

/// A gateway and the MAC address it is trusted at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayRecord {
    pub family: Family,
    pub interface: String,
    pub ip: IpAddr,
    /// The trusted MAC: learned at first sight, adopted after being stable,
    /// or accepted by hand. Never replaced by a change as it happens.
    pub mac: Mac,
    /// When the record was written or the trusted MAC last changed.
    pub seen: DateTime<Utc>,
    /// How the trusted MAC came to be trusted: `learned` (first sight, with
    /// the source that saw it), `adopted` (stable as a suspect for the
    /// configured time) or `accepted` (`netsentry baseline accept`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub how: Option<String>,
    /// A different MAC the gateway answers from now, reported and not (yet) trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspect: Option<SuspectMac>,
}

/// A gateway MAC change that was reported and is not trusted yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuspectMac {
    pub mac: Mac,
    /// Since when the gateway answers from it without a break.
    pub since: DateTime<Utc>,
    /// Which detector saw it first (`netlink`, `startup`).
    pub source: String,
}

/// What the gateway's current MAC means against the baseline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayVerdict {
    /// The trusted MAC (a suspect, if there was one, is dropped).
    Trusted,
    /// Not known before: now trusted as learned.
    Learned,
    /// A change not reported before: report it; it is now the suspect.
    NewSuspect(Mac),
    /// Still the suspect reported before: nothing to say yet.
    StillSuspect,
    /// The suspect was stable for the configured time and is now trusted.
    Adopted { old: Mac },
}

/// A decision of the operator about a stored gateway (`netsentry baseline`),
/// kept in [`DECISIONS_FILE`] until the agent has applied it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "action", rename_all = "snake_case")]
pub enum Decision {
    /// Trust `mac` for `ip` (the suspect MAC when the command was run).
    Accept {
        ip: IpAddr,
        mac: Mac,
        at: DateTime<Utc>,
    },
    /// Drop what is known about `ip`: it is learned again at its next sighting.
    Forget { ip: IpAddr, at: DateTime<Utc> },
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::Accept { ip, mac, at } => write!(f, "accept {mac} for {ip} (decided {at})"),
            Decision::Forget { ip, at } => write!(f, "forget {ip} (decided {at})"),
        }
    }
}

/// Operator decisions waiting for the agent, in `state_dir`.
pub const DECISIONS_FILE: &str = "baseline_decisions.json";
/// Decisions kept waiting; older ones go first.
pub const MAX_DECISIONS: usize = 256;

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
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    pub version: u32,
    pub gateways: Vec<GatewayRecord>,
    /// The default next hops per family, preferred first.
    pub default_routes: BTreeMap<Family, Vec<NextHopRecord>>,
    pub links: BTreeMap<String, LinkRecord>,
    /// Alerts about the changes this baseline records, written with it just
    /// before they are spooled: if the agent dies in between, the next start
    /// spools them (same ids) instead of reporting the changes again under
    /// new ones. Empty once they are spooled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<crate::alert::Alert>,
}

impl Baseline {
    /// The MAC known for a gateway.
    pub fn gateway_mac(&self, family: Family, interface: &str, ip: &IpAddr) -> Option<&Mac> {
        self.gateway(family, interface, ip).map(|g| &g.mac)
    }

    /// The record of a gateway.
    /// Rewrites how a gateway's MAC came to be trusted (`learned (netlink)`
    /// → `learned (netlink), unconfirmed` → `..., confirmed`).
    pub fn set_gateway_how(
        &mut self,
        family: Family,
        interface: &str,
        ip: IpAddr,
        how: impl FnOnce(&str) -> String,
    ) {
        if let Some(i) = self.position(family, interface, &ip) {
            let g = &mut self.gateways[i];
            g.how = Some(how(g.how.as_deref().unwrap_or("learned")));
        }
    }

    pub fn gateway(&self, family: Family, interface: &str, ip: &IpAddr) -> Option<&GatewayRecord> {
        self.position(family, interface, ip)
            .map(|i| &self.gateways[i])
    }

    /// Where the record of a gateway is in `gateways`.
    fn position(&self, family: Family, interface: &str, ip: &IpAddr) -> Option<usize> {
        self.gateways
            .iter()
            .position(|g| g.family == family && g.interface == interface && g.ip == *ip)
    }

    /// Judges the MAC a gateway answers from now (`source` saw it at `now`)
    /// and updates the record: a first sight is learned, a change becomes the
    /// suspect (the trusted MAC stays), a suspect stable for `adopt_after`
    /// (`None`: never) is adopted, and the trusted MAC back drops the suspect.
    pub fn judge_gateway_mac(
        &mut self,
        (family, interface, ip): (Family, &str, IpAddr),
        mac: &Mac,
        source: &str,
        now: DateTime<Utc>,
        adopt_after: Option<chrono::Duration>,
    ) -> GatewayVerdict {
        let Some(g) = self
            .position(family, interface, &ip)
            .map(|i| &mut self.gateways[i])
        else {
            self.set_gateway_mac(family, interface, ip, mac.clone(), now);
            if let Some(g) = self.gateways.last_mut() {
                g.how = Some(format!("learned ({source})"));
            }
            return GatewayVerdict::Learned;
        };
        if g.mac == *mac {
            if g.suspect.take().is_some() {
                g.seen = now;
            }
            return GatewayVerdict::Trusted;
        }
        match &g.suspect {
            Some(s) if s.mac == *mac => {
                if adopt_after.is_some_and(|after| now - s.since >= after) {
                    let old = std::mem::replace(&mut g.mac, mac.clone());
                    g.suspect = None;
                    g.seen = now;
                    g.how = Some("adopted".into());
                    return GatewayVerdict::Adopted { old };
                }
                GatewayVerdict::StillSuspect
            }
            _ => {
                g.suspect = Some(SuspectMac {
                    mac: mac.clone(),
                    since: now,
                    source: source.to_string(),
                });
                GatewayVerdict::NewSuspect(g.mac.clone())
            }
        }
    }

    /// Applies an operator decision; returns the records it changed, as they
    /// were before (none: nothing to do, e.g. a decision applied twice).
    pub fn apply(&mut self, decision: &Decision, now: DateTime<Utc>) -> Vec<GatewayRecord> {
        match decision {
            Decision::Accept { ip, mac, .. } => {
                let mut before = Vec::new();
                for g in self.gateways.iter_mut().filter(|g| g.ip == *ip) {
                    if g.mac != *mac || g.suspect.is_some() {
                        before.push(g.clone());
                        g.mac = mac.clone();
                        g.suspect = None;
                        g.seen = now;
                        g.how = Some("accepted".into());
                    }
                }
                before
            }
            Decision::Forget { ip, .. } => {
                let (gone, kept) = std::mem::take(&mut self.gateways)
                    .into_iter()
                    .partition(|g| g.ip == *ip);
                self.gateways = kept;
                gone
            }
        }
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
        if let Some(i) = self.position(family, interface, &ip) {
            let g = &mut self.gateways[i];
            g.mac = mac;
            g.seen = now;
            g.suspect = None;
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
            how: None,
            suspect: None,
        });
    }
}

/// The decisions waiting in `state_dir` (none when there is no file; a
/// damaged file is an error, so that a decision is never silently lost).
pub fn load_decisions(state_dir: &Path) -> Result<Vec<Decision>, StateError> {
    let path = state_dir.join(DECISIONS_FILE);
    let text = match crate::files::read_regular(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(StateError::Read { path, source }),
    };
    serde_json::from_slice(&text).map_err(|e| StateError::Corrupt {
        path,
        reason: e.to_string(),
    })
}

/// Adds a decision for the agent (at most [`MAX_DECISIONS`] wait).
pub fn add_decision(state_dir: &Path, decision: Decision) -> Result<(), StateError> {
    let mut all = load_decisions(state_dir)?;
    all.push(decision);
    if all.len() > MAX_DECISIONS {
        all.drain(..all.len() - MAX_DECISIONS);
    }
    let path = state_dir.join(DECISIONS_FILE);
    let text = serde_json::to_vec_pretty(&all).unwrap_or_default();
    write_atomically(&path, &text).map_err(|source| StateError::Write { path, source })
}

/// Takes the waiting decisions for the agent: the file is moved aside first,
/// so a decision added meanwhile waits in a new file for the next time.
pub fn take_decisions(state_dir: &Path) -> Result<Vec<Decision>, StateError> {
    let path = state_dir.join(DECISIONS_FILE);
    let taken = state_dir.join("baseline_decisions.taken");
    match std::fs::rename(&path, &taken) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(StateError::Write { path, source }),
    }
    let text = crate::files::read_regular(&taken);
    let _ = std::fs::remove_file(&taken);
    let text = text.map_err(|source| StateError::Read {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|e| StateError::Corrupt {
        path,
        reason: e.to_string(),
    })
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
    save_with_pending(state_dir, baseline, &[])
}

/// [`save`], with the alerts about to be spooled for the changes it records
/// (see [`Baseline::pending`]).
pub fn save_with_pending(
    state_dir: &Path,
    baseline: &Baseline,
    pending: &[std::sync::Arc<crate::alert::Alert>],
) -> Result<(), StateError> {
    let path = state_dir.join(FILE_NAME);
    let mut stored = baseline.clone();
    stored.version = FORMAT_VERSION;
    stored.pending = pending.iter().map(|a| (**a).clone()).collect();
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
