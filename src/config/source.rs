//! Where the configuration comes from: `-c FILE`, else the default file, else
//! the built-in defaults. Decided once here for every verb and for SIGHUP.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError, DEFAULT_PATH};

/// Where the configuration came from (and where a reload reads it again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// A file: given with `-c`, or the default file that exists.
    File(PathBuf),
    /// No file: the built-in defaults. A reload reads the default file if it
    /// has appeared since.
    Defaults,
}

impl ConfigSource {
    /// `-c FILE` when given; else the default file unless it does not exist.
    /// Only "not found" means absent: a default file that cannot be read (e.g.
    /// permission denied) is still the source, so loading it reports the error.
    pub fn resolve(explicit: Option<&Path>) -> ConfigSource {
        Self::resolve_with(explicit, Path::new(DEFAULT_PATH))
    }

    /// [`ConfigSource::resolve`] with another default file (for tests).
    fn resolve_with(explicit: Option<&Path>, default: &Path) -> ConfigSource {
        match explicit {
            Some(path) => ConfigSource::File(path.to_path_buf()),
            None => match std::fs::metadata(default) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => ConfigSource::Defaults,
                _ => ConfigSource::File(default.to_path_buf()),
            },
        }
    }

    /// Loads the configuration from this source (the defaults source looks
    /// for the default file again, for a reload after it was created).
    pub fn load(&self) -> Result<Config, ConfigError> {
        match self {
            ConfigSource::File(p) => Config::load(p),
            ConfigSource::Defaults => match ConfigSource::resolve(None) {
                ConfigSource::File(p) => Config::load(&p),
                ConfigSource::Defaults => Ok(Config::default()),
            },
        }
    }

    /// The file name, for messages and the `config_*` alerts.
    pub fn name(&self) -> String {
        match self {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::Defaults => DEFAULT_PATH.to_string(),
        }
    }

    /// What the agent's first log line and `check-config` say about the source.
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::File(p) => format!("configuration {}", p.display()),
            ConfigSource::Defaults => {
                format!("built-in defaults ({DEFAULT_PATH} does not exist)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missing_default_file_means_the_built_in_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        assert_eq!(
            ConfigSource::resolve_with(None, &missing),
            ConfigSource::Defaults
        );
        // There but unreadable (here: a directory; as a non-root user, a file
        // without read permission): the source is that file, and loading it
        // says why it cannot be read.
        let source = ConfigSource::resolve_with(None, dir.path());
        assert_eq!(source, ConfigSource::File(dir.path().to_path_buf()));
        let err = source.load().unwrap_err().to_string();
        assert!(err.contains("cannot read the configuration"), "{err}");
        let given = Path::new("/x/y.toml");
        assert_eq!(
            ConfigSource::resolve_with(Some(given), &missing),
            ConfigSource::File(given.to_path_buf())
        );
    }
}
