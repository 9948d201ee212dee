//! A fetched fingerprint manifest and its `.minisig`, as a server (or an
//! interceptor) may serve them: the input is split at the first NUL into
//! the manifest and the signature; both are verified and read.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// A fixed minisign public key (the check must reject, never panic).
const KEY: &str = "RWRroVm14c2CeVCTn/kk8dUGeBGtvdIacXN9rkI6TTaGAly8r1GYM4eN";

fuzz_target!(|data: &[u8]| {
    let (manifest, sig) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let sig = String::from_utf8_lossy(sig);
    if let Ok(key) = netsentry::manifest::public_key(KEY) {
        let _ = netsentry::manifest::verify(manifest, &sig, &key);
    }
    let _ = netsentry::manifest::public_key(&sig);
    if let Ok(m) = serde_json::from_slice::<netsentry::manifest::Manifest>(manifest) {
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let _ = netsentry::manifest::check(&m, Some("example.org"), Some(3), now);
        let _ = netsentry::manifest::check(&m, None, None, now);
        let _ = m.all_hashes();
        let _ = m.hashes_for("xmpp.example.org");
        let _ = m.to_text();
    }
});
