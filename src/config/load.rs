//! Parsing and validation into runtime types (stub until the config work lands).
use super::Config;
use std::path::Path;

/// A configuration error with the key and position it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
    load_str(&text, path)
}

/// Validates configuration text; `origin` names it in messages.
pub fn load_str(_text: &str, origin: &Path) -> Result<Config, ConfigError> {
    Err(ConfigError(format!(
        "{}: configuration loading is not built yet",
        origin.display()
    )))
}

/// `check-config` (placeholder).
pub fn check(path: &Path) -> Result<String, ConfigError> {
    load(path).map(|c| format!("{} ok", c.source.display()))
}
