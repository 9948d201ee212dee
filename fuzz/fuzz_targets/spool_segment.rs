//! A spool segment as a crash, a full disk or a flipped bit may leave it:
//! opened, read to the end, counted; and a saved cursor pointing anywhere in
//! it, made safe. What is read and what is counted must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netsentry::sink::spool::{Position, Spool};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("netsentry-fuzz-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err() || std::fs::write(dir.join("0000000000000001.seg"), data).is_err() {
        return;
    }
    if let Ok((spool, _)) = Spool::open(&dir, 64 << 20) {
        let start = spool.start();
        if let Ok(records) = spool.read(start, 1 << 20) {
            assert_eq!(records.len() as u64, spool.count_after(start));
            for (_, after) in records {
                let _ = spool.count_after(after);
            }
        }
        // A cursor anywhere (the first bytes say where): made safe, it reads
        // exactly what it counts.
        let offset = data.iter().take(3).fold(0u64, |n, b| n << 8 | u64::from(*b));
        let (cursor, _) = spool.checked_cursor(Position { segment: 1, offset });
        if let Ok(records) = spool.read(cursor, 1 << 20) {
            assert_eq!(records.len() as u64, spool.count_after(cursor));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
});
