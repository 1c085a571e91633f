//! `mdgate check-peer` (placeholder while being written).
