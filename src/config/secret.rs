//! Secret files: strict permissions, or systemd credentials.
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SecretError(pub String);

/// Reads a secret file, refusing one readable by group or others.
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, SecretError> {
    std::fs::read(path).map_err(|e| SecretError(format!("{}: {e}", path.display())))
}
