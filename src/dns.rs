//! DNS-anchored peer keys (placeholder, filled in below).

pub mod record;
