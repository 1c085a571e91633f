//! Configuration errors: what is wrong, with the file, the dotted key and
//! the position, printed one per line like `nginx -t`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::position::Position;
use super::secret::SecretError;

/// What is wrong, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// The configuration file itself could not be read.
    #[error("cannot read the configuration file: {0}")]
    Read(#[source] std::io::Error),
    /// Not valid TOML.
    #[error("TOML syntax error: {0}")]
    Syntax(String),
    /// A key no table of mdgate's knows (often a typo).
    #[error("unknown key `{key}` in {table} ({expected})")]
    UnknownKey {
        key: String,
        /// `[public.limits]`, or `the top-level table`.
        table: String,
        /// serde's list of the keys that table accepts.
        expected: String,
    },
    /// A required key or table is absent.
    #[error("{0}")]
    Missing(String),
    /// A value of the wrong type or out of range, or malformed.
    #[error("{0}")]
    Invalid(String),
    /// A file named by the configuration is missing, unreadable, or (for
    /// keys) too widely readable.
    #[error("{0}")]
    File(SecretError),
    /// Two listeners would bind the same address.
    #[error("{address} overlaps {other}; every listener needs its own address")]
    AddressConflict { address: SocketAddr, other: String },
    /// A setting reserved for a later version.
    #[error("{0}")]
    Unsupported(String),
}

/// A configuration error: the file, the dotted key, the position and what
/// to do. `Display` gives one line in the manner of `nginx -t`:
///
/// ```text
/// mdgate: /etc/mdgate/mdgate.toml:12:11: public.tls.key_file: /etc/mdgate/key.pem is readable by group or others (mode 0644); run chmod 600 on it
/// ```
///
/// Validation collects every problem; the earliest in the file is this
/// error and the others are in [`ConfigError::also`]. [`ConfigError::report`]
/// prints them all.
#[derive(Debug)]
pub struct ConfigError {
    /// The configuration file (absolute).
    pub file: PathBuf,
    /// The dotted key, as in `public.tls.key_file`, when one is concerned.
    pub key: Option<String>,
    /// Where the key's value is (else its table, else unknown).
    pub position: Option<Position>,
    /// What is wrong (boxed to keep `Result<_, ConfigError>` small).
    pub kind: Box<ErrorKind>,
    /// Further errors found in the same pass, in file order.
    pub also: Vec<ConfigError>,
}

impl ConfigError {
    pub(super) fn new(
        file: &Path,
        key: Option<String>,
        position: Option<Position>,
        kind: ErrorKind,
    ) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            key,
            position,
            kind: Box::new(kind),
            also: Vec::new(),
        }
    }

    /// This error followed by the others found in the same pass.
    pub fn all(&self) -> impl Iterator<Item = &ConfigError> {
        std::iter::once(self).chain(self.also.iter())
    }

    /// Every error, one per line, then the `test failed` line, for
    /// `check-config` and for startup failures.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for error in self.all() {
            error.write_line(&mut out);
            out.push('\n');
        }
        out.push_str(&format!(
            "mdgate: configuration file {} test failed",
            self.file.display()
        ));
        out
    }

    fn write_line(&self, out: &mut String) {
        out.push_str(&format!("mdgate: {}:", self.file.display()));
        if let Some(position) = self.position {
            out.push_str(&format!("{position}:"));
        }
        if let Some(key) = &self.key {
            out.push_str(&format!(" {key}:"));
        }
        out.push_str(&format!(" {}", self.kind));
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = String::new();
        self.write_line(&mut line);
        f.write_str(&line)?;
        match self.also.len() {
            0 => Ok(()),
            1 => f.write_str(" (and 1 more error)"),
            n => write!(f, " (and {n} more errors)"),
        }
    }
}

impl std::error::Error for ConfigError {}
