//! The spool: alerts on disk before delivery, in append-only segment files.
//!
//! Each alert is appended and fsynced (one fsync per batch) before any receiver
//! sees it; each receiver keeps its own cursor and moves it only after a 2xx,
//! so outages, restarts and `kill -9` lose nothing (at-least-once). The writer
//! knows where every record ends, so what waits for a receiver is counted from
//! memory ([`Spool::count_after`]), never by reading the files.
//!
//! Record: `b"NS"`, payload length (u32 LE), CRC-32 of the payload (u32 LE),
//! payload. A damaged record is skipped: reading resynchronises on the next
//! record magic whose record checks out, so one bad byte costs one alert, not
//! the rest of the segment. Bytes after the last valid record of the newest
//! segment (a write cut short by a crash or a full disk) are truncated at
//! open, and at once when an append fails part-way.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: [u8; 2] = *b"NS";
const HEADER: u64 = 10;
/// An alert is a few hundred bytes; anything near this is damage.
pub const MAX_RECORD: usize = 1 << 20;
/// Segment size at which a new segment is started.
pub const SEGMENT_BYTES: u64 = 1 << 20;

/// A place in the spool: before the record at `offset` of segment `segment`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// Segment ids at or above this are not ours (a file named so is ignored):
/// ids count up from 1 by one per megabyte written, so this is never reached.
pub const MAX_SEGMENT_ID: u64 = 1 << 48;

/// Why the spool could not be read or written. (The system's error is part of
/// the sentence, not a separate `source`, so that it is printed once.)
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl SpoolError {
    fn io(path: &Path) -> impl Fn(std::io::Error) -> SpoolError + '_ {
        move |error| SpoolError::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Segment {
    bytes: u64,
    records: u64,
    /// Where each record ends (offsets in the segment, ascending); bounded by
    /// the segment size (a segment is closed past [`SEGMENT_BYTES`]).
    ends: Vec<u32>,
}

/// What `open` found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    pub records: u64,
    /// Bytes of a half-written record cut from the newest segment.
    pub torn_bytes: u64,
    /// Damaged bytes skipped between valid records (kept on disk, never read).
    pub damaged_bytes: u64,
}

/// The spool: segment files under `state_dir/spool`, bounded by `max_spool_bytes`.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segments: BTreeMap<u64, Segment>,
    writer: File,
    dropped: u64,
    /// An append failed part-way and cutting its bytes failed too: cut them
    /// before the next append.
    torn: bool,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016}.seg"))
}

/// The payload length of the valid record at `at`, if one starts there.
fn record_at(bytes: &[u8], at: usize) -> Option<usize> {
    let h = bytes.get(at..at + HEADER as usize)?;
    let len = u32::from_le_bytes([h[2], h[3], h[4], h[5]]) as usize;
    let crc = u32::from_le_bytes([h[6], h[7], h[8], h[9]]);
    let payload = bytes.get(at + HEADER as usize..at + HEADER as usize + len)?;
    (h[..2] == MAGIC && len <= MAX_RECORD && crc32fast::hash(payload) == crc).then_some(len)
}

/// What a scan found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Scanned {
    /// Where the last valid record read ends (`offset` when none was).
    end: usize,
    /// Damaged bytes skipped between valid records.
    skipped: usize,
}

/// Reads up to `max` valid records of a segment from `offset`, calling `f`
/// with each payload and the offset after it. Damage is skipped: the scan
/// goes on at the next record magic whose record checks out.
fn scan(bytes: &[u8], offset: usize, max: usize, mut f: impl FnMut(&[u8], usize)) -> Scanned {
    let (mut at, mut n) = (offset, 0);
    let mut found = Scanned {
        end: offset,
        skipped: 0,
    };
    while n < max && at + HEADER as usize <= bytes.len() {
        match record_at(bytes, at) {
            Some(len) => {
                let end = at + HEADER as usize + len;
                found.skipped += at - found.end;
                f(&bytes[at + HEADER as usize..end], end);
                (at, found.end, n) = (end, end, n + 1);
            }
            None => match bytes[at + 1..].windows(2).position(|w| w == MAGIC) {
                Some(i) => at += 1 + i,
                None => break,
            },
        }
    }
    found
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, truncating a torn tail.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Spool, Recovery), SpoolError> {
        let io = SpoolError::io(dir);
        std::fs::create_dir_all(dir).map_err(&io)?;
        let mut segments = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(&io)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            match name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u64>().ok())
            {
                Some(id) if (1..MAX_SEGMENT_ID).contains(&id) => {
                    segments.insert(id, Segment::default());
                }
                Some(_) => tracing::warn!(
                    "spool {}: {name} is not a segment this agent wrote (id out of range); ignored",
                    dir.display()
                ),
                None => {}
            }
        }
        let mut recovery = Recovery {
            segments: segments.len(),
            ..Default::default()
        };
        let newest = segments.keys().next_back().copied().unwrap_or(1);
        for (id, seg) in segments.iter_mut() {
            let path = segment_path(dir, *id);
            let bytes = std::fs::read(&path).map_err(SpoolError::io(&path))?;
            let mut records = 0;
            let found = scan(&bytes, 0, usize::MAX, |_, end| {
                records += 1;
                seg.ends.push(end as u32);
            });
            let end = found.end;
            seg.records = records;
            seg.bytes = end as u64;
            recovery.records += records;
            recovery.damaged_bytes += found.skipped as u64;
            if *id == newest && end < bytes.len() {
                recovery.torn_bytes = (bytes.len() - end) as u64;
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(SpoolError::io(&path))?;
                f.set_len(end as u64)
                    .and_then(|_| f.sync_all())
                    .map_err(SpoolError::io(&path))?;
            }
        }
        segments.entry(newest).or_default();
        let path = segment_path(dir, newest);
        let writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(SpoolError::io(&path))?;
        Ok((
            Spool {
                dir: dir.to_path_buf(),
                max_bytes,
                segments,
                writer,
                dropped: 0,
                torn: false,
            },
            recovery,
        ))
    }

    fn newest(&self) -> u64 {
        self.segments.keys().next_back().copied().unwrap_or(1)
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the next record will go.
    pub fn end(&self) -> Position {
        let id = self.newest();
        Position {
            segment: id,
            offset: self.segments.get(&id).map(|s| s.bytes).unwrap_or(0),
        }
    }

    /// The oldest record still kept.
    pub fn start(&self) -> Position {
        Position {
            segment: self.segments.keys().next().copied().unwrap_or(1),
            offset: 0,
        }
    }

    /// The start of the `n`th newest segment (the oldest kept when there are fewer).
    pub fn recent(&self, n: usize) -> Position {
        let segment = self
            .segments
            .keys()
            .rev()
            .nth(n.saturating_sub(1))
            .or_else(|| self.segments.keys().next())
            .copied()
            .unwrap_or(1);
        Position { segment, offset: 0 }
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.values().map(|s| s.bytes).sum()
    }

    /// Records dropped (oldest first) to stay under `max_bytes`, since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Appends payloads and makes them durable with one fsync; returns the new end.
    pub fn append(&mut self, payloads: &[&[u8]]) -> Result<Position, SpoolError> {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        for p in payloads.iter().filter(|p| p.len() <= MAX_RECORD) {
            buf.extend_from_slice(&MAGIC);
            buf.extend_from_slice(&(p.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(p).to_le_bytes());
            buf.extend_from_slice(p);
            ends.push(buf.len() as u64);
        }
        // A full segment is closed before anything is written: a failure to
        // start the next one (a full disk) fails this append with nothing
        // stored, never after the batch is in (it would be appended twice).
        if self.torn {
            let id = self.newest();
            let valid = self.segments.get(&id).map(|s| s.bytes).unwrap_or(0);
            let path = segment_path(&self.dir, id);
            self.writer.set_len(valid).map_err(SpoolError::io(&path))?;
            self.torn = false;
        }
        self.rotate_if_full()?;
        let id = self.newest();
        let path = segment_path(&self.dir, id);
        let io = SpoolError::io(&path);
        let valid = self.segments.get(&id).map(|s| s.bytes).unwrap_or(0);
        if let Err(e) = self
            .writer
            .write_all(&buf)
            .and_then(|_| self.writer.sync_data())
        {
            // Part of the batch may be in the file (a full disk): cut it, so
            // that the file holds exactly what is known to be in it and the
            // batch can be appended again later.
            self.torn = self.writer.set_len(valid).is_err();
            return Err(io(e));
        }
        let seg = self.segments.entry(id).or_default();
        seg.ends.extend(
            ends.iter()
                .map(|end| (seg.bytes + end).min(u32::MAX as u64) as u32),
        );
        seg.bytes += buf.len() as u64;
        seg.records += ends.len() as u64;
        // The batch is stored: a next segment that cannot be started now is
        // started before the next append.
        let _ = self.rotate_if_full();
        self.enforce_cap();
        Ok(self.end())
    }

    /// Starts the next segment when the newest is full.
    fn rotate_if_full(&mut self) -> Result<(), SpoolError> {
        let id = self.newest();
        if self.segments.get(&id).map(|s| s.bytes).unwrap_or(0) < SEGMENT_BYTES {
            return Ok(());
        }
        let next = id + 1;
        let path = segment_path(&self.dir, next);
        self.writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(SpoolError::io(&path))?;
        self.segments.insert(next, Segment::default());
        // The new file's directory entry must survive a crash too.
        let _ = File::open(&self.dir).and_then(|d| d.sync_all());
        Ok(())
    }

    /// Drops the oldest segments (never the one being written) while over `max_bytes`.
    fn enforce_cap(&mut self) {
        while self.bytes() > self.max_bytes && self.segments.len() > 1 {
            let Some((&oldest, seg)) = self.segments.iter().next() else {
                break;
            };
            self.dropped += seg.records;
            self.segments.remove(&oldest);
            let _ = std::fs::remove_file(segment_path(&self.dir, oldest));
        }
    }

    /// Reads up to `max` records from `from` (moved to the oldest kept record if
    /// that was dropped): each payload with the position after it.
    pub fn read(&self, from: Position, max: usize) -> Result<Vec<(Vec<u8>, Position)>, SpoolError> {
        let mut from = from.max(self.start());
        let mut out = Vec::new();
        while out.len() < max {
            let Some(seg) = self.segments.get(&from.segment) else {
                break;
            };
            if from.offset < seg.bytes {
                let path = segment_path(&self.dir, from.segment);
                let io = SpoolError::io(&path);
                let mut f = File::open(&path).map_err(&io)?;
                f.seek(SeekFrom::Start(from.offset)).map_err(&io)?;
                let mut bytes = Vec::with_capacity((seg.bytes - from.offset) as usize);
                f.take(seg.bytes - from.offset)
                    .read_to_end(&mut bytes)
                    .map_err(&io)?;
                let base = from.offset;
                let segment = from.segment;
                let want = max - out.len();
                let end = scan(&bytes, 0, want, |p, end| {
                    out.push((
                        p.to_vec(),
                        Position {
                            segment,
                            offset: base + end as u64,
                        },
                    ));
                })
                .end;
                from.offset = base + end as u64;
                if out.len() >= max {
                    break;
                }
            }
            match self.segments.range(from.segment.saturating_add(1)..).next() {
                Some((&next, _)) => {
                    from = Position {
                        segment: next,
                        offset: 0,
                    }
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// Records after `from` (from the oldest kept when `from` was dropped),
    /// counted from memory.
    pub fn count_after(&self, from: Position) -> u64 {
        let from = from.max(self.start());
        self.segments
            .range(from.segment..)
            .map(|(id, seg)| match *id == from.segment {
                true => {
                    let done = seg
                        .ends
                        .partition_point(|end| u64::from(*end) <= from.offset);
                    (seg.ends.len() - done) as u64
                }
                false => seg.records,
            })
            .sum()
    }

    /// Deletes the segments every cursor has passed.
    pub fn collect(&mut self, cursors: &[Position]) {
        let Some(min) = cursors.iter().min().copied() else {
            return;
        };
        let newest = self.newest();
        let done: Vec<u64> = self
            .segments
            .keys()
            .copied()
            .filter(|id| *id < min.segment && *id != newest)
            .collect();
        for id in done {
            self.segments.remove(&id);
            let _ = std::fs::remove_file(segment_path(&self.dir, id));
        }
    }

    /// The saved cursor of a receiver (`None`: it starts at the oldest record).
    pub fn load_cursor(&self, receiver: &str) -> Option<Position> {
        read_cursor(&self.dir, receiver)
    }

    /// A saved cursor made safe to read from, and what was wrong with it.
    /// A cursor before the oldest kept record starts there (those records were
    /// dropped); one in the middle of a record, past the end of its segment
    /// (cut after damage) or in a segment that is not there goes back to the
    /// record boundary before it, or to the oldest record: an alert may be
    /// delivered twice, none is skipped.
    pub fn checked_cursor(&self, pos: Position) -> (Position, Option<String>) {
        let start = self.start();
        if pos < start {
            return (start, None);
        }
        let Some(seg) = self.segments.get(&pos.segment) else {
            let why = format!(
                "the saved cursor points at segment {} which is not in the spool; delivering from the oldest record kept",
                pos.segment
            );
            return (start, Some(why));
        };
        if pos.offset == 0
            || seg
                .ends
                .binary_search(&(pos.offset.min(u32::MAX as u64) as u32))
                .is_ok()
        {
            return (pos, None);
        }
        let before = seg
            .ends
            .partition_point(|end| u64::from(*end) < pos.offset)
            .checked_sub(1)
            .map(|i| u64::from(seg.ends[i]))
            .unwrap_or(0);
        let what = match pos.offset > seg.bytes {
            true => "past the end of its segment",
            false => "in the middle of a record",
        };
        let why = format!(
            "the saved cursor ({} {}) is {what}; delivering from the record boundary before it ({} {before})",
            pos.segment, pos.offset, pos.segment
        );
        (
            Position {
                segment: pos.segment,
                offset: before,
            },
            Some(why),
        )
    }

    /// Saves a cursor. The file is overwritten in place with a line of fixed
    /// width: no new file, so it works on a full disk (a rename of a fresh
    /// file would not, and after a restart the receiver would get again what
    /// it already had). Not fsynced: after a crash a receiver may get a few
    /// alerts twice, never none.
    pub fn save_cursor(&self, receiver: &str, pos: Position) -> Result<(), SpoolError> {
        use std::os::unix::fs::FileExt;
        let path = self.dir.join(format!("{receiver}.cursor"));
        let line = format!("{:020} {:020}\n", pos.segment, pos.offset);
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(SpoolError::io(&path))?;
        f.write_all_at(line.as_bytes(), 0)
            .and_then(|_| match f.metadata()?.len() == line.len() as u64 {
                true => Ok(()),
                false => f.set_len(line.len() as u64),
            })
            .map_err(SpoolError::io(&path))
    }
}

/// Counts the records after `from` by reading the segment files, without
/// opening the spool (for `netsentry status`, another process than the agent).
pub fn count_after_on_disk(dir: &Path, from: Option<Position>) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut ids: Vec<u64> = entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".seg")
                .and_then(|n| n.parse().ok())
        })
        .collect();
    ids.sort_unstable();
    let from = from.unwrap_or(Position {
        segment: ids.first().copied().unwrap_or(0),
        offset: 0,
    });
    let mut count = 0u64;
    for id in ids.into_iter().filter(|id| *id >= from.segment) {
        let Ok(bytes) = std::fs::read(segment_path(dir, id)) else {
            continue;
        };
        let start = if id == from.segment {
            (from.offset as usize).min(bytes.len())
        } else {
            0
        };
        let _ = scan(&bytes, start, usize::MAX, |_, _| count += 1);
    }
    count
}

/// Reads a saved cursor without opening the spool.
pub fn read_cursor(dir: &Path, receiver: &str) -> Option<Position> {
    let text = std::fs::read_to_string(dir.join(format!("{receiver}.cursor"))).ok()?;
    let mut parts = text.split_whitespace();
    Some(Position {
        segment: parts.next()?.parse().ok()?,
        offset: parts.next()?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
        range
            .map(|i| format!("{{\"id\":\"alert-{i}\"}}").into_bytes())
            .collect()
    }

    fn append(s: &mut Spool, p: &[Vec<u8>]) -> Position {
        let refs: Vec<&[u8]> = p.iter().map(|v| v.as_slice()).collect();
        s.append(&refs).unwrap()
    }

    #[test]
    fn round_trip_with_cursors() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, rec) = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(rec, Recovery::default());
        append(&mut s, &payloads(0..10));
        let got = s.read(s.start(), 4).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[3].0, b"{\"id\":\"alert-3\"}");
        s.save_cursor("r1", got[3].1).unwrap();
        let (s2, rec) = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(rec.records, 10);
        let rest = s2.read(s2.load_cursor("r1").unwrap(), 100).unwrap();
        assert_eq!(rest.len(), 6);
        assert_eq!(rest[0].0, b"{\"id\":\"alert-4\"}");
        assert_eq!(s2.load_cursor("never-saved"), None);
        assert_eq!(
            count_after_on_disk(dir.path(), read_cursor(dir.path(), "r1")),
            6
        );
        assert_eq!(count_after_on_disk(dir.path(), None), 10);
        // The same counts from memory: in the writer that appended them, and
        // in one that reopened the spool.
        assert_eq!(s.count_after(got[3].1), 6);
        assert_eq!(s2.count_after(s2.load_cursor("r1").unwrap()), 6);
        assert_eq!(s2.count_after(s2.start()), 10);
        assert_eq!(s2.count_after(s2.end()), 0);
    }

    #[test]
    fn pending_counts_from_memory_match_the_files_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 30).unwrap();
        // Records of ~100 KiB: a new segment every ten or so.
        let big: Vec<Vec<u8>> = (0..35)
            .map(|i| vec![b'a' + (i % 26) as u8; 100 << 10])
            .collect();
        for chunk in big.chunks(3) {
            let refs: Vec<&[u8]> = chunk.iter().map(|p| p.as_slice()).collect();
            s.append(&refs).unwrap();
        }
        assert!(s.segments.len() > 2, "{} segments", s.segments.len());
        let all = s.read(s.start(), 100).unwrap();
        assert_eq!(all.len(), 35);
        for (i, (_, after)) in all.iter().enumerate() {
            let want = 35 - (i as u64 + 1);
            assert_eq!(s.count_after(*after), want, "after record {i}");
            assert_eq!(count_after_on_disk(dir.path(), Some(*after)), want);
        }
    }

    #[test]
    fn a_torn_last_record_is_cut_and_appending_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 30).unwrap();
        append(&mut s, &payloads(0..3));
        drop(s);
        // A crash in the middle of writing the fourth record.
        let seg = segment_path(dir.path(), 1);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"NS\x40\x00\x00\x00\x01\x02\x03\x04{\"id\":\"al")
            .unwrap();
        drop(f);
        let (mut s, rec) = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(rec.records, 3);
        assert_eq!(rec.torn_bytes, 19);
        append(&mut s, &payloads(3..5));
        let all = s.read(s.start(), 100).unwrap();
        let ids: Vec<String> = all
            .iter()
            .map(|(p, _)| String::from_utf8(p.clone()).unwrap())
            .collect();
        assert_eq!(ids.len(), 5);
        assert!(ids[3].contains("alert-3") && ids[4].contains("alert-4"));
    }

    fn ids(s: &Spool) -> Vec<String> {
        s.read(s.start(), 1000)
            .unwrap()
            .iter()
            .map(|(p, _)| String::from_utf8_lossy(p).into_owned())
            .collect()
    }

    #[test]
    fn damage_costs_only_the_damaged_record() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 30).unwrap();
        append(&mut s, &payloads(0..3));
        let mid = s.end();
        append(&mut s, &payloads(3..10));
        // Flip a byte inside record 4's payload (the newest segment).
        let seg = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[mid.offset as usize + 12] ^= 0xff;
        std::fs::write(&seg, &bytes).unwrap();
        let (mut s, rec) = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(rec.records, 9);
        assert!(rec.damaged_bytes > 0 && rec.torn_bytes == 0, "{rec:?}");
        let got = ids(&s);
        assert_eq!(got.len(), 9, "{got:?}");
        assert!(!got.iter().any(|p| p.contains("alert-3\"")));
        assert_eq!(s.count_after(s.start()), 9);
        // Appending goes on after the intact records.
        append(&mut s, &payloads(10..11));
        assert_eq!(ids(&s).len(), 10);
        // Junk in front of the first record: every record is kept.
        let front = dir.path().join("front");
        let (mut f, _) = Spool::open(&front, 1 << 30).unwrap();
        append(&mut f, &payloads(0..10));
        drop(f);
        let seg = segment_path(&front, 1);
        let mut bytes = b"\x00NS\x01".to_vec();
        bytes.extend(std::fs::read(&seg).unwrap());
        std::fs::write(&seg, &bytes).unwrap();
        let (f, _) = Spool::open(&front, 1 << 30).unwrap();
        assert_eq!(ids(&f).len(), 10);
        assert_eq!(count_after_on_disk(&front, None), 10);
    }

    #[test]
    fn bad_cursors_go_back_to_a_record_boundary_and_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 30).unwrap();
        append(&mut s, &payloads(0..5));
        let all = s.read(s.start(), 100).unwrap();
        let second = all[1].1;
        // A boundary is fine as it is.
        assert_eq!(s.checked_cursor(second), (second, None));
        // In the middle of record 3: back to its start (delivered again).
        let mid = Position {
            offset: second.offset + 5,
            ..second
        };
        let (c, why) = s.checked_cursor(mid);
        assert_eq!(c, second);
        assert!(why.unwrap().contains("in the middle of a record"));
        assert_eq!(s.read(c, 1).unwrap()[0].0, b"{\"id\":\"alert-2\"}");
        // Past the end of the segment (it was cut after damage): the last boundary.
        let (c, why) = s.checked_cursor(Position {
            segment: 1,
            offset: 1 << 20,
        });
        assert_eq!(c, s.end());
        assert!(why.unwrap().contains("past the end"));
        // A segment that is not there: from the oldest record.
        let (c, why) = s.checked_cursor(Position {
            segment: 7,
            offset: 0,
        });
        assert_eq!(c, s.start());
        assert!(why.unwrap().contains("segment 7"));
        // Saved and loaded in place, whatever was in the file before.
        std::fs::write(
            dir.path().join("r.cursor"),
            "junk that is long, longer than the fixed width of a cursor line\n",
        )
        .unwrap();
        s.save_cursor("r", second).unwrap();
        assert_eq!(s.load_cursor("r"), Some(second));
    }

    #[test]
    fn a_segment_id_at_the_end_of_u64_is_not_ours() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(format!("{}.seg", u64::MAX)), b"").unwrap();
        let (mut s, rec) = Spool::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(rec.segments, 0);
        append(&mut s, &payloads(0..2));
        assert_eq!(s.end().segment, 1);
        assert_eq!(ids(&s).len(), 2);
        assert!(
            s.read(
                Position {
                    segment: u64::MAX,
                    offset: 0
                },
                10
            )
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn segments_rotate_collect_and_respect_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![b'x'; 100_000];
        let (mut s, _) = Spool::open(dir.path(), 1 << 30).unwrap();
        for _ in 0..25 {
            s.append(&[&big]).unwrap();
        }
        assert!(s.segments.len() >= 3, "{}", s.segments.len());
        let all = s.read(s.start(), 1000).unwrap();
        assert_eq!(all.len(), 25);
        // Both receivers are past the first segment: it goes.
        let first = s.start().segment;
        s.collect(&[all[20].1, all[24].1]);
        assert!(s.start().segment > first);
        assert!(!segment_path(dir.path(), first).exists());
        // A cap of ~1.5 segments drops the oldest and counts what it dropped.
        let (mut capped, _) = Spool::open(&dir.path().join("c"), 1_500_000).unwrap();
        for _ in 0..40 {
            capped.append(&[&big]).unwrap();
        }
        assert!(capped.bytes() <= 1_500_000 + SEGMENT_BYTES);
        let dropped = capped.take_dropped();
        assert!(dropped >= 10, "{dropped}");
        assert_eq!(
            capped.read(Position::default(), 1000).unwrap().len() as u64 + dropped,
            40
        );
    }
}
