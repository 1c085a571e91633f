//! Secret files: private keys and, later, upstream credentials.
//!
//! A secret is only ever read from a file, never from the command line or
//! from the configuration text itself. Two sources are accepted:
//!
//! * a plain path, which must name a regular file with no permission bits
//!   for group or others (`mode & 0o077 == 0`, i.e. `chmod 600` or `400`);
//! * `credential:NAME`, which names a systemd credential
//!   (`LoadCredential=NAME:/path` in the unit) and resolves to
//!   `$CREDENTIALS_DIRECTORY/NAME`. systemd already protects those files;
//!   the same checks apply anyway, so a wrong setup is caught early.
//!
//! [`check_secret_file`] performs the checks without reading the content
//! (used by `check-config`); [`read_secret_file`] performs them on the open
//! handle and then reads the bytes.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The prefix of a configuration value that names a systemd credential.
pub const CREDENTIAL_PREFIX: &str = "credential:";

/// Why a secret (or any file the configuration names) cannot be used.
///
/// Every message names the path, so it stands on its own in a log line.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file does not exist.
    #[error("{} does not exist", path.display())]
    NotFound { path: PathBuf },
    /// The file exists but could not be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A directory, socket, FIFO or device where a file was expected.
    #[error("{} is not a regular file (it is a {kind})", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    /// Group or others may read the file.
    #[error(
        "{} is readable by group or others (mode {mode:04o}); run chmod 600 on it",
        path.display()
    )]
    Readable { path: PathBuf, mode: u32 },
    /// Group or others have write or execute permission, but not read.
    #[error(
        "{} has permissions for group or others (mode {mode:04o}); run chmod 600 on it",
        path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    /// `credential:NAME` was used outside a systemd service with credentials.
    #[error(
        "credential:{name} needs $CREDENTIALS_DIRECTORY, which is not set; \
         run mdgate from a systemd unit with LoadCredential={name}:/path/to/file"
    )]
    NoCredentialsDirectory { name: String },
    /// `credential:NAME` with a name that is not a plain file name.
    #[error("credential name {name:?} must be a plain file name (no '/', not '.' or '..')")]
    BadCredentialName { name: String },
}

/// Resolves a configured secret location: `credential:NAME` becomes
/// `credentials_dir/NAME`; anything else is returned unchanged.
///
/// `credentials_dir` is the value of `$CREDENTIALS_DIRECTORY` (passed in so
/// that tests do not depend on the process environment).
pub fn resolve_credential(
    value: &Path,
    credentials_dir: Option<&Path>,
) -> Result<PathBuf, SecretError> {
    let Some(name) = value
        .to_str()
        .and_then(|s| s.strip_prefix(CREDENTIAL_PREFIX))
    else {
        return Ok(value.to_path_buf());
    };
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(SecretError::BadCredentialName {
            name: name.to_owned(),
        });
    }
    match credentials_dir {
        Some(dir) => Ok(dir.join(name)),
        None => Err(SecretError::NoCredentialsDirectory {
            name: name.to_owned(),
        }),
    }
}

/// The `$CREDENTIALS_DIRECTORY` of this process, if systemd set one.
pub fn credentials_directory() -> Option<PathBuf> {
    std::env::var_os("CREDENTIALS_DIRECTORY")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// Checks that `path` is a secret file mdgate may use, without reading it.
pub fn check_secret_file(path: &Path) -> Result<(), SecretError> {
    open_secret(path).map(drop)
}

/// Reads a secret file, refusing anything but a regular file that only its
/// owner can access.
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, SecretError> {
    let mut file = open_secret(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|source| SecretError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(bytes)
}

/// Checks that `path` names a regular file this process can open for
/// reading (certificates, CA bundles: not secret, so no mode check).
pub fn check_readable_file(path: &Path) -> Result<(), SecretError> {
    open_regular(path).map(drop)
}

/// Opens a regular file and checks its mode on the open handle.
fn open_secret(path: &Path) -> Result<File, SecretError> {
    let (file, meta) = open_regular(path)?;
    check_mode(path, &meta)?;
    Ok(file)
}

/// Opens `path` after checking it is a regular file, then checks again on
/// the open handle, so a file swapped in between is still caught.
fn open_regular(path: &Path) -> Result<(File, Metadata), SecretError> {
    // Checking before opening keeps us from blocking on a FIFO; the check
    // on the handle below is the one that counts.
    let before = std::fs::metadata(path).map_err(|e| io_error(path, e))?;
    require_regular(path, &before)?;
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    let meta = file.metadata().map_err(|e| io_error(path, e))?;
    require_regular(path, &meta)?;
    Ok((file, meta))
}

fn require_regular(path: &Path, meta: &Metadata) -> Result<(), SecretError> {
    if meta.is_file() {
        return Ok(());
    }
    Err(SecretError::NotRegular {
        path: path.to_path_buf(),
        kind: file_kind(meta),
    })
}

#[cfg(unix)]
fn check_mode(path: &Path, meta: &Metadata) -> Result<(), SecretError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o044 != 0 {
        return Err(SecretError::Readable {
            path: path.to_path_buf(),
            mode,
        });
    }
    if mode & 0o077 != 0 {
        return Err(SecretError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

// Without Unix permission bits there is nothing meaningful to check; mdgate
// is deployed on Linux, this only keeps the crate building elsewhere.
#[cfg(not(unix))]
fn check_mode(_path: &Path, _meta: &Metadata) -> Result<(), SecretError> {
    Ok(())
}

fn file_kind(meta: &Metadata) -> &'static str {
    if meta.is_dir() {
        return "directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "FIFO";
        }
        if t.is_socket() {
            return "socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "device";
        }
    }
    "special file"
}

fn io_error(path: &Path, source: io::Error) -> SecretError {
    if source.kind() == io::ErrorKind::NotFound {
        SecretError::NotFound {
            path: path.to_path_buf(),
        }
    } else {
        SecretError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
