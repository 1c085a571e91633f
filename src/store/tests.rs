//! Store tests (to be written).
