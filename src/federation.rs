//! federation (to be written).
