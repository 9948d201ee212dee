//! Capture files for `netsentry replay` (pcap and pcapng).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut frames = 0usize;
    let _ = netsentry::source::pcap::for_each_frame_in(data, "fuzz.pcap", |p| {
        frames += p.data.len().min(1);
    });
});
