//! Patient transfer: the whole record moves to another server, encrypted
//! with a key the patient's browser made (the seed's second flow).
//!
//! The parts that take no I/O decisions live in submodules:
//!
//! * [`seal`]: the chunked, streaming AEAD the ciphertext is made with;
//! * [`bundle`]: the record bundle (JSON lines, per-part hashes, a signed
//!   manifest), written and read as a stream;
//! * [`fhir`]: the same bundle rendered as a FHIR R4 `Bundle`;
//! * [`jsonarray`]: splits an upstream JSON array into elements as bytes
//!   arrive, so a long list never sits in memory whole.

pub mod bundle;
pub mod fhir;
pub mod jsonarray;
pub mod machine;
pub mod seal;
