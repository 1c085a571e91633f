//! emulator (to be written).
