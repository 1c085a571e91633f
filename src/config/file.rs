//! The file structs, exactly as the TOML is written (owned by the config work).
