//! Configuration text: every error is `FILE:LINE:COL: message`, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = netsentry::config::Config::parse(text, "fuzz.toml") {
        let _ = config.to_toml();
        let _ = config.heartbeat_every();
    }
});
