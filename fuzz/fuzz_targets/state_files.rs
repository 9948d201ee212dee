//! Files in state_dir as damage or an old version may leave them: the
//! baseline, the station table and the routers.
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
});
