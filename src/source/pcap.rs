//! Capture files (pcap and pcapng, Ethernet) as frames with their time, for
//! `netsentry replay`. Damage is an error with a sentence, never a panic.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use chrono::{DateTime, Utc};
use pcap_file::DataLink;
use pcap_file::pcapng::{Block, PcapNgReader};

/// Why a capture file cannot be read (`replay` exits 2 with this sentence).
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: not a pcap or pcapng file (unknown magic number)")]
    NotPcap { file: String },
    #[error("{file}: broken capture file: {reason}")]
    Broken { file: String, reason: String },
    #[error("{file}: no Ethernet frames (link type {link}); replay reads Ethernet captures")]
    NotEthernet { file: String, link: String },
}

/// One frame from a capture file.
pub struct Packet<'a> {
    /// The interface name (pcapng), or "pcap".
    pub interface: &'a str,
    /// When it was captured.
    pub time: DateTime<Utc>,
    /// The frame, from the Ethernet header.
    pub data: &'a [u8],
}

/// Packet time to calendar time, with the date computed once per day (captures
/// hold millions of packets; this is on the hot path of replay).
#[derive(Default)]
struct Clock {
    day: Option<(u64, chrono::NaiveDate)>,
}

impl Clock {
    fn at(&mut self, ts: std::time::Duration) -> DateTime<Utc> {
        let secs = ts.as_secs();
        let day = secs / 86_400;
        let date = match self.day {
            Some((d, date)) if d == day => date,
            _ => {
                let date = DateTime::from_timestamp((day * 86_400) as i64, 0)
                    .unwrap_or_default()
                    .date_naive();
                self.day = Some((day, date));
                date
            }
        };
        let time = chrono::NaiveTime::from_num_seconds_from_midnight_opt(
            (secs % 86_400) as u32,
            ts.subsec_nanos(),
        )
        .unwrap_or_default();
        chrono::NaiveDateTime::new(date, time).and_utc()
    }
}

/// Largest record accepted in a classic pcap (a sane snap length; larger is corruption).
const MAX_RECORD: usize = 256 * 1024;
/// Read size; always more than one record plus its header.
const CHUNK: usize = 4 << 20;

/// Reads a classic pcap (either byte order, micro- or nanosecond timestamps) in
/// large chunks, calling `f` with each record's time and bytes. Small and bounded:
/// replay spends most of its time here and in the detector.
fn read_pcap(
    mut reader: impl Read,
    file: &str,
    mut f: impl FnMut(std::time::Duration, &[u8]),
) -> Result<(), PcapError> {
    let broken = |reason: String| PcapError::Broken {
        file: file.to_string(),
        reason,
    };
    let mut header = [0u8; 24];
    reader
        .read_exact(&mut header)
        .map_err(|_| broken("the file header is cut short".into()))?;
    let magic = [header[0], header[1], header[2], header[3]];
    let (big_endian, nanos) = match u32::from_le_bytes(magic) {
        0xa1b2c3d4 => (false, false),
        0xa1b23c4d => (false, true),
        0xd4c3b2a1 => (true, false),
        _ => (true, true),
    };
    let word = |b: &[u8]| {
        let w = [b[0], b[1], b[2], b[3]];
        if big_endian {
            u32::from_be_bytes(w)
        } else {
            u32::from_le_bytes(w)
        }
    };
    let link = word(&header[20..24]) & 0x0fff_ffff;
    if link != 1 {
        return Err(PcapError::NotEthernet {
            file: file.to_string(),
            link: format!("{link}"),
        });
    }
    // One buffer, zeroed once; records are parsed in place and the unparsed
    // tail moves to the front before the next read.
    let mut buf = vec![0u8; CHUNK];
    let (mut start, mut filled) = (0usize, 0usize);
    let mut eof = false;
    loop {
        // Records wholly in the buffer.
        while filled - start >= 16 {
            let h = &buf[start..start + 16];
            let (secs, frac, len) = (word(&h[0..4]), word(&h[4..8]), word(&h[8..12]) as usize);
            if len > MAX_RECORD {
                return Err(broken(format!("a record claims {len} bytes")));
            }
            if filled - start < 16 + len {
                break;
            }
            let time = std::time::Duration::new(
                secs as u64,
                if nanos {
                    frac.min(999_999_999)
                } else {
                    frac.min(999_999) * 1000
                },
            );
            f(time, &buf[start + 16..start + 16 + len]);
            start += 16 + len;
        }
        if eof {
            return if start == filled {
                Ok(())
            } else {
                Err(broken("the last record is cut short".into()))
            };
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        start = 0;
        let n = read_full(&mut reader, &mut buf[filled..]).map_err(|e| PcapError::Io {
            file: file.to_string(),
            source: e,
        })?;
        filled += n;
        eof = n == 0;
    }
}

/// Reads until the buffer is full or the input ends.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Calls `f` for each Ethernet frame of a pcap or pcapng file; returns the
/// frames skipped (other link types).
pub fn for_each_frame(path: &Path, f: impl FnMut(Packet<'_>)) -> Result<u64, PcapError> {
    let file = path.display().to_string();
    let opened = File::open(path).map_err(|source| PcapError::Io {
        file: file.clone(),
        source,
    })?;
    for_each_frame_in(BufReader::with_capacity(64 << 10, opened), &file, f)
}

/// [`for_each_frame`] over any reader (`file` names it in errors).
pub fn for_each_frame_in(
    mut reader: impl Read,
    file: &str,
    mut f: impl FnMut(Packet<'_>),
) -> Result<u64, PcapError> {
    let file = file.to_string();
    let mut magic = [0u8; 4];
    reader
        .read_exact(&mut magic)
        .map_err(|_| PcapError::NotPcap { file: file.clone() })?;
    let reader = std::io::Cursor::new(magic).chain(reader);
    let broken = |e: pcap_file::PcapError| PcapError::Broken {
        file: file.clone(),
        reason: e.to_string(),
    };
    let mut skipped = 0u64;
    let mut clock = Clock::default();
    match u32::from_le_bytes(magic) {
        0xa1b2c3d4 | 0xd4c3b2a1 | 0xa1b23c4d | 0x4d3cb2a1 => {
            read_pcap(reader, &file, |time, data| {
                f(Packet {
                    interface: "pcap",
                    time: clock.at(time),
                    data,
                })
            })?;
        }
        0x0a0d0d0a => {
            let mut ng = PcapNgReader::new(reader).map_err(broken)?;
            let mut names: Vec<(String, bool)> = Vec::new();
            let mut any_ethernet = false;
            while let Some(block) = ng.next_block() {
                match block.map_err(broken)? {
                    Block::InterfaceDescription(idb) => {
                        let name = idb
                            .options
                            .iter()
                            .find_map(|o| match o {
                                pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption::IfName(n) => {
                                    Some(n.to_string())
                                }
                                _ => None,
                            })
                            .unwrap_or_else(|| format!("if{}", names.len()));
                        let ethernet = idb.linktype == DataLink::ETHERNET;
                        any_ethernet |= ethernet;
                        names.push((name, ethernet));
                    }
                    Block::EnhancedPacket(epb) => match names.get(epb.interface_id as usize) {
                        Some((name, true)) => f(Packet {
                            interface: name,
                            time: clock.at(epb.timestamp),
                            data: &epb.data,
                        }),
                        _ => skipped += 1,
                    },
                    Block::SimplePacket(spb) => match names.first() {
                        Some((name, true)) => f(Packet {
                            interface: name,
                            time: DateTime::default(),
                            data: &spb.data,
                        }),
                        _ => skipped += 1,
                    },
                    _ => {}
                }
            }
            if !any_ethernet && !names.is_empty() {
                return Err(PcapError::NotEthernet {
                    file,
                    link: "none of the interfaces is Ethernet".into(),
                });
            }
        }
        _ => return Err(PcapError::NotPcap { file }),
    }
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap(big_endian: bool, nanos: bool, records: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let magic: u32 = if nanos { 0xa1b23c4d } else { 0xa1b2c3d4 };
        let w = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut out = Vec::new();
        out.extend_from_slice(&w(magic));
        out.extend_from_slice(&[0, 2, 0, 4][..]); // version (not read)
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&w(65535));
        out.extend_from_slice(&w(1));
        for (secs, frac, data) in records {
            out.extend_from_slice(&w(*secs));
            out.extend_from_slice(&w(*frac));
            out.extend_from_slice(&w(data.len() as u32));
            out.extend_from_slice(&w(data.len() as u32));
            out.extend_from_slice(data);
        }
        out
    }

    fn read(bytes: &[u8]) -> Result<Vec<(std::time::Duration, Vec<u8>)>, PcapError> {
        let mut got = Vec::new();
        read_pcap(bytes, "t", |t, d| got.push((t, d.to_vec())))?;
        Ok(got)
    }

    #[test]
    fn both_byte_orders_and_resolutions() {
        for (be, ns) in [(false, false), (true, false), (false, true), (true, true)] {
            let got = read(&pcap(be, ns, &[(10, 5, b"abc"), (11, 0, b"")])).unwrap();
            let frac = if ns { 5 } else { 5_000 };
            assert_eq!(
                got,
                vec![
                    (std::time::Duration::new(10, frac), b"abc".to_vec()),
                    (std::time::Duration::new(11, 0), vec![])
                ]
            );
        }
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let good = pcap(false, false, &[(1, 0, &[7u8; 60]), (2, 0, &[8u8; 60])]);
        for cut in 0..good.len() {
            let r = read(&good[..cut]);
            if cut == 24 || cut == 24 + 76 {
                assert!(r.is_ok(), "a cut at a record boundary is a shorter capture");
            } else {
                assert!(r.is_err(), "cut at {cut}");
            }
        }
        let mut huge = pcap(false, false, &[(1, 0, b"x")]);
        huge[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(read(&huge), Err(PcapError::Broken { .. })));
        let mut not_ethernet = pcap(false, false, &[]);
        not_ethernet[20] = 101;
        assert!(matches!(
            read(&not_ethernet),
            Err(PcapError::NotEthernet { .. })
        ));
    }
}
