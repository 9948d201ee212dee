//! The expected certificate files, re-read when they change (renewals).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::cert::{CertFacts, read_leaf};

/// What identifies a version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    mtime_ns: i128,
    size: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        size: m.size(),
        inode: m.ino(),
    })
}

/// Remembers each file's certificate; a file is parsed again only when its
/// stamp changed (certbot replaces the symlink target: a new inode).
#[derive(Debug, Default)]
pub struct CertFiles {
    known: HashMap<PathBuf, Known>,
}

#[derive(Debug, Default)]
struct Known {
    stamp: Option<Stamp>,
    facts: Option<CertFacts>,
    problem: Option<String>,
}

impl CertFiles {
    /// The certificates the files hold now. A file that cannot be read keeps
    /// its last good certificate (a renewal may be half-way); each new problem
    /// is returned once so that it can be logged.
    pub fn current(&mut self, paths: &[PathBuf]) -> (Vec<(PathBuf, CertFacts)>, Vec<String>) {
        let mut found = Vec::new();
        let mut problems = Vec::new();
        for path in paths {
            let now = stamp(path);
            let known = self.known.entry(path.clone()).or_default();
            if now.is_none() || known.stamp != now || known.facts.is_none() {
                known.stamp = now;
                match read_leaf(path) {
                    Ok(facts) => {
                        known.facts = Some(facts);
                        known.problem = None;
                    }
                    Err(e) => {
                        let text = e.to_string();
                        if known.problem.as_ref() != Some(&text) {
                            problems.push(text.clone());
                        }
                        known.problem = Some(text);
                    }
                }
            }
            if let Some(facts) = &known.facts {
                found.push((path.clone(), facts.clone()));
            }
        }
        (found, problems)
    }
}
