//! Files in state_dir as damage or an old version may leave them: the
//! baseline, the station table, the routers, the inbound baselines and what
//! `netsentry status` reads of them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netsentry::detect::arp::{ArpDetector, ArpSettings};
use netsentry::detect::stations::StationTable;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<netsentry::state::baseline::Baseline>(data);
    let text = String::from_utf8_lossy(data);
    let (table, _bad) = StationTable::from_text(&text, 64);
    let _ = table.to_text();
    let mut d = ArpDetector::new(ArpSettings::default());
    d.load_routers(&text);
    let _ = d.routers_text();
    // inbound.json: restored, then closed and saved again.
    let (saved, _bad) = netsentry::detect::inbound::InboundDetector::from_json(&text);
    let mut inbound = netsentry::detect::inbound::InboundDetector::new(
        netsentry::detect::inbound::InboundSettings {
            min_samples: 1,
            share: 0.8,
        },
    );
    inbound.restore(saved);
    let _ = inbound.close_window(chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default());
    let _ = inbound.to_json();
    let _ = netsentry::cli::status::inbound_rows(&text);
});
