//! demo (to be written).
