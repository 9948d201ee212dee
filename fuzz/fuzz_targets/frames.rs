//! Ethernet frames off the wire: the parsers (neighbour traffic, TCP SYNs),
//! the whole packet detector, and the inbound-path detector.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netsentry::detect::arp::{ArpDetector, ArpSettings};
use netsentry::detect::inbound::{InboundDetector, InboundSettings};

fuzz_target!(|data: &[u8]| {
    let _ = netsentry::wire::parse(data);
    let mut d = ArpDetector::new(ArpSettings::default());
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
    // The same bytes twice: the second look goes through the station table.
    let _ = d.observe("eth0", data, now);
    let _ = d.observe("eth0", data, now);
    // A VRRP advertisement among them: the view both paths judge with.
    let _ = d.vrrp_view(now);
    if let Some(syn) = netsentry::wire::syn::parse(data) {
        let _ = syn.fingerprint();
        let mut inbound = InboundDetector::new(InboundSettings {
            min_samples: 1,
            share: 0.5,
        });
        inbound.observe(&syn, now);
        let _ = inbound.close_window(now);
    }
});
