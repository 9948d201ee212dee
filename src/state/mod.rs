//! What the agent keeps in `state_dir`: the file names, atomic writes, and one
//! error type. The data types of the saved state live here too (the baseline,
//! the certificate history); detectors use the types, only `agent` and `cli`
//! read and write the files.

pub mod baseline;
pub mod certhistory;

use std::io::Write;
use std::path::{Path, PathBuf};

/// Station table of the packet detector, `interface ip mac first last previous`.
pub const STATIONS_FILE: &str = "stations.tsv";
/// Routers seen in router advertisements, `interface ip`.
pub const ROUTERS_FILE: &str = "routers.tsv";
/// Capture counters the running agent last wrote, for `netsentry status`.
pub const CAPTURE_FILE: &str = "capture.json";
/// The inbound-path detector's baselines and current window, per port.
pub const INBOUND_FILE: &str = "inbound.json";
/// The certificates of each TLS target's expected files, with when they were
/// replaced (so that a restart keeps the rotation grace), and the last results.
pub const TLS_FILE: &str = "tls.json";
/// The last result of each TLS check, for `netsentry status`.
pub const TLS_CHECKS_FILE: &str = "tls_checks.json";
/// CT positions per domain and the issuances already reported.
pub const CT_FILE: &str = "ct.json";
/// Every certificate seen in the expected files.
pub const HISTORY_FILE: &str = "cert_history.json";

/// Why a state file could not be used. A damaged or unreadable file is
/// replaced (never fatal); a failed write is logged and retried later.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The state file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file was read but does not hold what we wrote.
    #[error("{path} is corrupt ({reason}); starting a new baseline")]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The state file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new
/// file: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Reads a state file as text; `None` when it does not exist or cannot be read.
pub fn read_text(state_dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(state_dir.join(name)).ok()
}

/// Writes a state file atomically.
pub fn write_text(state_dir: &Path, name: &str, text: &str) -> Result<(), StateError> {
    let path = state_dir.join(name);
    write_atomically(&path, text.as_bytes()).map_err(|source| StateError::Write { path, source })
}
