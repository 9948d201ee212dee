//! Reading the files the configuration names (the configuration itself,
//! certificates, secrets, API keys): regular files only, and bounded, so that a
//! FIFO, a device or a huge file is a clear error instead of a hang.

use std::io::{self, Read};
use std::path::Path;

/// The largest configuration, certificate, secret or key file read.
pub const MAX_FILE: u64 = 4 << 20;

/// Reads a regular file of at most [`MAX_FILE`] bytes.
pub fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    // Opened without blocking: opening a FIFO for reading would wait for a writer.
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, device or directory cannot be read here)",
        ));
    }
    if meta.len() > MAX_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_FILE} bytes"),
        ));
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE + 1).read_to_end(&mut data)?;
    Ok(data)
}

/// [`read_regular`] as UTF-8 text.
pub fn read_regular_text(path: &Path) -> io::Result<String> {
    String::from_utf8(read_regular(path)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifos_and_directories_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let started = std::time::Instant::now();
        let err = read_regular(&fifo).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(read_regular(dir.path()).is_err());
        let file = dir.path().join("f");
        std::fs::write(&file, "x = 1\n").unwrap();
        assert_eq!(read_regular_text(&file).unwrap(), "x = 1\n");
    }
}
