//! Ethernet frames off the wire: the parser and the whole packet detector.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netsentry::detect::arp::{ArpDetector, ArpSettings};

fuzz_target!(|data: &[u8]| {
    let _ = netsentry::wire::parse(data);
    let mut d = ArpDetector::new(ArpSettings::default());
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
    // The same bytes twice: the second look goes through the station table.
    let _ = d.observe("eth0", data, now);
    let _ = d.observe("eth0", data, now);
});
