//! `netsentry replay`: the packet detectors over a pcap or pcapng file, with
//! packet timestamps as time and no rate limits (forensics wants every finding).

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};

use crate::alert::{Alert, Finding};
use crate::config::Config;
use crate::detect::arp::{ArpCounters, ArpDetector};
use crate::packet;

/// Why a capture file cannot be replayed (exit 2 with this sentence).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
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

/// What a replay found.
#[derive(Debug, Default)]
pub struct ReplaySummary {
    pub counters: ArpCounters,
    pub alerts: u64,
    /// Frames on interfaces with another link type (skipped).
    pub skipped_link_type: u64,
}

/// One frame from a capture file.
struct Packet<'a> {
    interface: &'a str,
    time: DateTime<Utc>,
    data: &'a [u8],
}

fn to_time(ts: std::time::Duration) -> DateTime<Utc> {
    DateTime::from_timestamp(ts.as_secs() as i64, ts.subsec_nanos()).unwrap_or_default()
}

/// Calls `f` for each Ethernet frame of a pcap or pcapng file.
fn for_each_frame(path: &Path, mut f: impl FnMut(Packet<'_>)) -> Result<u64, ReplayError> {
    let file = path.display().to_string();
    let io = |source| ReplayError::Io {
        file: file.clone(),
        source,
    };
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path).map_err(io)?);
    let mut magic = [0u8; 4];
    reader
        .read_exact(&mut magic)
        .map_err(|_| ReplayError::NotPcap { file: file.clone() })?;
    let reader = std::io::Cursor::new(magic).chain(reader);
    let broken = |e: pcap_file::PcapError| ReplayError::Broken {
        file: file.clone(),
        reason: e.to_string(),
    };
    let mut skipped = 0u64;
    match u32::from_le_bytes(magic) {
        0xa1b2c3d4 | 0xd4c3b2a1 | 0xa1b23c4d | 0x4d3cb2a1 => {
            let mut pcap = PcapReader::new(reader).map_err(broken)?;
            let link = pcap.header().datalink;
            if link != DataLink::ETHERNET {
                return Err(ReplayError::NotEthernet {
                    file: file.clone(),
                    link: format!("{link:?}"),
                });
            }
            while let Some(packet) = pcap.next_packet() {
                let packet = packet.map_err(broken)?;
                f(Packet {
                    interface: "pcap",
                    time: to_time(packet.timestamp),
                    data: &packet.data,
                });
            }
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
                            time: to_time(epb.timestamp),
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
                return Err(ReplayError::NotEthernet {
                    file,
                    link: "none of the interfaces is Ethernet".into(),
                });
            }
        }
        _ => return Err(ReplayError::NotPcap { file }),
    }
    Ok(skipped)
}

/// Replays `path` and writes every alert to `out` (JSON lines with `json`).
pub fn replay(
    path: &Path,
    config: &Config,
    use_baseline: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<ReplaySummary, ReplayError> {
    let stored = if use_baseline {
        crate::baseline::load(&config.agent.state_dir)
            .ok()
            .flatten()
    } else {
        None
    };
    let mut gateways = packet::configured_gateways(config, stored.as_ref());
    if let Some(b) = &stored {
        for g in &b.gateways {
            if !gateways.iter().any(|(ip, _)| *ip == g.ip) {
                gateways.push((g.ip, Some(g.mac.clone())));
            }
        }
    }
    let mut detector = ArpDetector::new(packet::settings(config));
    detector.set_gateways(&gateways);
    let host = config.host_id();
    let mut alerts = 0u64;
    let mut write_error = None;
    let mut emit = |findings: Vec<Finding>, out: &mut dyn Write| {
        for f in findings {
            alerts += 1;
            let a = Alert::from_finding(f, &host);
            let line = if json {
                a.to_json()
            } else {
                crate::sink::console_line(&a)
            };
            if let Err(e) = writeln!(out, "{line}")
                && write_error.is_none()
            {
                write_error = Some(e);
            }
        }
    };
    let skipped = for_each_frame(path, |p| {
        let findings = detector.observe(p.interface, p.data, p.time);
        if !findings.is_empty() {
            emit(findings, out);
        }
    })?;
    let _ = out.flush();
    if let Some(e) = write_error
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(ReplayError::Io {
            file: "stdout".into(),
            source: e,
        });
    }
    Ok(ReplaySummary {
        counters: detector.counters(),
        alerts,
        skipped_link_type: skipped,
    })
}
