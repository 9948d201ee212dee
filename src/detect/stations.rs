//! The station table: which MAC each IPv4 address was last seen at, per
//! interface, with the previous MACs (arpwatch's `arp.dat`, bounded).

use rustc_hash::FxHashMap;
use std::net::Ipv4Addr;

use crate::wire::EtherAddr as Mac;

/// Previous MACs remembered per station (for flip-flop and reused detection).
const HISTORY: usize = 3;

/// One IPv4 address on an interface, with its MACs (arpwatch's `arp.dat` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Station {
    pub mac: Mac,
    /// Earlier MACs, most recent first.
    pub previous: Vec<Mac>,
    pub first_seen: i64,
    pub last_seen: i64,
}

/// What a sighting means for the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sighting {
    New,
    Same,
    /// A MAC never seen for this address.
    Changed {
        old: Mac,
    },
    /// Back to the MAC seen just before the current one.
    FlipFlop {
        old: Mac,
    },
    /// A MAC older than the last two.
    Reused {
        old: Mac,
    },
}

/// Interface names are short: a byte loop beats a call to memcmp per frame.
pub fn same_name(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

/// Stations by interface and address, bounded (least recently seen evicted).
pub struct StationTable {
    cap: usize,
    /// Per interface (a handful: a list, searched without hashing the name).
    stations: Vec<(String, FxHashMap<Ipv4Addr, Station>)>,
    len: usize,
    evicted: u64,
    dirty: bool,
}

impl StationTable {
    /// An empty table for at most `cap` stations.
    pub fn new(cap: usize) -> StationTable {
        StationTable {
            cap: cap.max(1),
            stations: Vec::new(),
            len: 0,
            evicted: 0,
            dirty: false,
        }
    }

    /// Stations held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Stations held per interface.
    pub fn per_interface(&self) -> Vec<(String, usize)> {
        self.stations
            .iter()
            .map(|(name, table)| (name.clone(), table.len()))
            .collect()
    }

    /// True when no station is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stations evicted to stay under the cap.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The station at `ip` on `interface`.
    pub fn get(&self, interface: &str, ip: Ipv4Addr) -> Option<&Station> {
        self.interface(interface)?.get(&ip)
    }

    /// True (once) when the table changed in a way worth saving.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Records that `ip` on `interface` was seen at `mac` at `now` (unix seconds).
    pub fn observe(&mut self, interface: &str, ip: Ipv4Addr, mac: &Mac, now: i64) -> Sighting {
        if let Some(st) = self.interface_mut(interface).and_then(|m| m.get_mut(&ip)) {
            st.last_seen = st.last_seen.max(now);
            if st.mac == *mac {
                return Sighting::Same;
            }
            let old = st.mac;
            let position = st.previous.iter().position(|m| m == mac);
            let sighting = match position {
                Some(0) => Sighting::FlipFlop { old },
                Some(_) => Sighting::Reused { old },
                None => Sighting::Changed { old },
            };
            if let Some(p) = position {
                st.previous.remove(p);
            }
            st.previous.insert(0, old);
            st.previous.truncate(HISTORY);
            st.mac = *mac;
            self.dirty = true;
            return sighting;
        }
        if self.len >= self.cap {
            self.evict();
        }
        self.insert(
            interface,
            ip,
            Station {
                mac: *mac,
                previous: Vec::new(),
                first_seen: now,
                last_seen: now,
            },
        );
        self.dirty = true;
        Sighting::New
    }

    /// Adds a station that is not known yet (an import); false when the
    /// address is known on that interface already or the table is full.
    pub fn add_if_new(&mut self, interface: &str, ip: Ipv4Addr, station: Station) -> bool {
        let known = self
            .interface(interface)
            .is_some_and(|m| m.contains_key(&ip));
        if known || self.len >= self.cap {
            return false;
        }
        self.insert(interface, ip, station);
        self.dirty = true;
        true
    }

    fn insert(&mut self, interface: &str, ip: Ipv4Addr, station: Station) {
        if self.interface(interface).is_none() {
            self.stations
                .push((interface.to_string(), FxHashMap::default()));
        }
        if let Some(m) = self.interface_mut(interface)
            && m.insert(ip, station).is_none()
        {
            self.len += 1;
        }
    }

    fn interface(&self, name: &str) -> Option<&FxHashMap<Ipv4Addr, Station>> {
        self.stations
            .iter()
            .find(|(n, _)| same_name(n, name))
            .map(|(_, m)| m)
    }

    fn interface_mut(&mut self, name: &str) -> Option<&mut FxHashMap<Ipv4Addr, Station>> {
        self.stations
            .iter_mut()
            .find(|(n, _)| same_name(n, name))
            .map(|(_, m)| m)
    }

    /// Drops the least recently seen 1/64 of the table (at least one): eviction in
    /// batches keeps its cost per inserted station constant.
    fn evict(&mut self) {
        let batch = (self.cap / 64).max(1);
        let mut ages: Vec<(i64, &String, Ipv4Addr)> = self
            .stations
            .iter()
            .flat_map(|(i, m)| m.iter().map(move |(ip, s)| (s.last_seen, i, *ip)))
            .collect();
        if ages.len() > batch {
            ages.select_nth_unstable_by_key(batch - 1, |(t, _, _)| *t);
        }
        let doomed: Vec<(String, Ipv4Addr)> = ages
            .into_iter()
            .take(batch)
            .map(|(_, i, ip)| (i.clone(), ip))
            .collect();
        for (iface, ip) in doomed {
            if let Some(m) = self.interface_mut(&iface)
                && m.remove(&ip).is_some()
            {
                self.len -= 1;
                self.evicted += 1;
            }
        }
    }

    /// The table as text, one station per line (tab-separated):
    /// `interface ip mac first_seen last_seen previous,macs`.
    pub fn to_text(&self) -> String {
        let mut rows: Vec<(&String, &Ipv4Addr, &Station)> = self
            .stations
            .iter()
            .flat_map(|(i, m)| m.iter().map(move |(ip, s)| (i, ip, s)))
            .collect();
        rows.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let mut out = String::with_capacity(rows.len() * 64);
        for (iface, ip, st) in rows {
            let prev: Vec<String> = st.previous.iter().map(|m| m.to_string()).collect();
            out.push_str(&format!(
                "{iface}\t{ip}\t{}\t{}\t{}\t{}\n",
                st.mac,
                st.first_seen,
                st.last_seen,
                prev.join(",")
            ));
        }
        out
    }

    /// Reads [`to_text`](Self::to_text) output. Bad lines are counted and skipped.
    pub fn from_text(text: &str, cap: usize) -> (StationTable, usize) {
        let mut table = StationTable::new(cap);
        let mut bad = 0;
        for line in text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        {
            let f: Vec<&str> = line.split('\t').collect();
            let parsed = (|| {
                let ip: Ipv4Addr = f.get(1)?.parse().ok()?;
                let mac = Mac::parse(f.get(2)?)?;
                let first: i64 = f.get(3)?.parse().ok()?;
                let last: i64 = f.get(4)?.parse().ok()?;
                let previous: Vec<Mac> = f
                    .get(5)
                    .map(|p| p.split(',').filter_map(Mac::parse).take(HISTORY).collect())
                    .unwrap_or_default();
                Some((
                    f[0],
                    ip,
                    Station {
                        mac,
                        previous,
                        first_seen: first,
                        last_seen: last,
                    },
                ))
            })();
            match parsed {
                Some((iface, ip, st)) if table.len < table.cap => table.insert(iface, ip, st),
                Some(_) => table.evicted += 1,
                None => bad += 1,
            }
        }
        (table, bad)
    }
}

/// arpwatch's `arp.dat`: `MAC<TAB>IP<TAB>TIME[<TAB>HOSTNAME[<TAB>INTERFACE]]`
/// (MAC octets without leading zeros). Stations on `interface` when the line
/// names none; IPv4 only; the lines that do not parse are counted.
pub fn parse_arp_dat(
    text: &str,
    interface: Option<&str>,
) -> (Vec<(String, Ipv4Addr, Station)>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let parsed = (|| {
            let mac = Mac::parse(f.first()?.trim()).filter(|m| m.0.len() == 6)?;
            let ip: Ipv4Addr = f.get(1)?.trim().parse().ok()?;
            let time: i64 = f.get(2)?.trim().parse().ok().filter(|t| *t >= 0)?;
            let iface = f
                .get(4)
                .map(|i| i.trim())
                .filter(|i| !i.is_empty())
                .or(interface)?;
            Some((
                iface.to_string(),
                ip,
                Station {
                    mac,
                    previous: Vec::new(),
                    first_seen: time,
                    last_seen: time,
                },
            ))
        })();
        match parsed {
            Some(entry) => out.push(entry),
            None => bad += 1,
        }
    }
    (out, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arpwatch_files_are_read_as_arpwatch_writes_them() {
        let text = "0:11:22:33:44:5\t192.0.2.20\t1700000000\tprinter\teth1\n\
                    2:0:0:0:0:1\t192.0.2.1\t1700000100\n\
                    garbage\n\
                    2:0:0:0:0:2\t2001:db8::1\t1700000100\n\
                    2:0:0:0:0:3\t192.0.2.3\tyesterday\n";
        let (stations, bad) = parse_arp_dat(text, Some("eth0"));
        assert_eq!(bad, 3);
        assert_eq!(stations.len(), 2);
        assert_eq!(stations[0].0, "eth1");
        assert_eq!(stations[0].2.mac.to_string(), "00:11:22:33:44:05");
        assert_eq!(stations[1].0, "eth0");
        assert_eq!(stations[1].2.first_seen, 1_700_000_100);
        // Without --interface, a line that names none is skipped.
        assert_eq!(parse_arp_dat(text, None).0.len(), 1);
        // Known stations stay as they are.
        let mut table = StationTable::new(10);
        assert!(table.add_if_new("eth0", stations[1].1, stations[1].2.clone()));
        assert!(!table.add_if_new("eth0", stations[1].1, stations[1].2.clone()));
        assert_eq!(table.len(), 1);
    }

    fn m(n: u8) -> Mac {
        Mac([2, 0, 0, 0, 0, n])
    }
    const IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);

    #[test]
    fn arpwatch_semantics() {
        let mut t = StationTable::new(10);
        assert_eq!(t.observe("eth0", IP, &m(1), 0), Sighting::New);
        assert_eq!(t.observe("eth0", IP, &m(1), 1), Sighting::Same);
        assert_eq!(
            t.observe("eth0", IP, &m(2), 2),
            Sighting::Changed { old: m(1) }
        );
        assert_eq!(
            t.observe("eth0", IP, &m(1), 3),
            Sighting::FlipFlop { old: m(2) }
        );
        assert_eq!(
            t.observe("eth0", IP, &m(3), 4),
            Sighting::Changed { old: m(1) }
        );
        // m(2) is now older than the last two (m(3) current, m(1) before it).
        assert_eq!(
            t.observe("eth0", IP, &m(2), 5),
            Sighting::Reused { old: m(3) }
        );
        // Another interface is another station.
        assert_eq!(t.observe("eth1", IP, &m(2), 6), Sighting::New);
    }

    #[test]
    fn bounded_with_least_recently_seen_evicted() {
        let mut t = StationTable::new(128);
        for i in 0..1000u32 {
            t.observe("eth0", Ipv4Addr::from(0xC612_0000 + i), &m(1), i as i64);
        }
        assert!(t.len() <= 128);
        assert!(t.evicted() >= 872);
        // The most recent are kept, the oldest went.
        assert!(t.get("eth0", Ipv4Addr::from(0xC612_0000 + 999)).is_some());
        assert!(t.get("eth0", Ipv4Addr::from(0xC612_0000)).is_none());
    }

    #[test]
    fn text_round_trip_and_bad_lines() {
        let mut t = StationTable::new(10);
        t.observe("eth0", IP, &m(1), 100);
        t.observe("eth0", IP, &m(2), 200);
        t.observe("eth0", Ipv4Addr::new(192, 0, 2, 51), &m(9), 300);
        let text = t.to_text();
        let (back, bad) = StationTable::from_text(&format!("{text}garbage\n\t\t\n# comment\n"), 10);
        assert_eq!(bad, 1, "blank lines and comments are not errors");
        assert_eq!(back.get("eth0", IP), t.get("eth0", IP));
        assert_eq!(back.get("eth0", IP).unwrap().previous, vec![m(1)]);
        assert_eq!(back.len(), 2);
    }
}
