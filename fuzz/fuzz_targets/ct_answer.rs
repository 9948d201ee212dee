//! A page of Cert Spotter's issuances API (what any server at api_url answers).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = netsentry::detect::ct::parse_issuances(data);
});
