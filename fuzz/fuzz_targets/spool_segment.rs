//! A spool segment as a crash, a full disk or a flipped bit may leave it:
//! opened, read to the end, counted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netsentry::sink::spool::Spool;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("netsentry-fuzz-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err() || std::fs::write(dir.join("0000000000000001.seg"), data).is_err() {
        return;
    }
    if let Ok((spool, _)) = Spool::open(&dir, 64 << 20) {
        let start = spool.start();
        if let Ok(records) = spool.read(start, 1 << 20) {
            for (_, after) in records {
                let _ = spool.count_after(after);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
});
