//! Request codes, invitation tokens and the QR payload: pure functions,
//! randomness passed in (docs/protocol.md § Access).
//!
//! * A **request code** is 10 symbols of Crockford's base32 (50 bits),
//!   shown as `XXXXX-XXXXX`. Typing is forgiving: case, spaces and dashes
//!   are ignored, `O` reads as `0` and `I`/`L` as `1`. The patient's server
//!   only ever sees [`code_hash`], bound to the request id.
//! * An **invitation token** is 128 random bits, base64url without
//!   padding; the store keeps its SHA-256.
//! * The **QR payload** is `mdgate:<federation id>@<fqdn>?invitation=<token>`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::parse_fqdn;

/// Crockford's base32 alphabet: no I, L, O or U.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Symbols in a request code (5 bits each).
pub const CODE_SYMBOLS: usize = 10;
/// The scheme of the QR payload.
pub const PAYLOAD_SCHEME: &str = "mdgate:";
/// Domain separation for the code hash.
const CODE_HASH_CONTEXT: &[u8] = b"mdgate-request-code/v1\0";

/// A fresh request code from 50 random bits (the low 50 of `random`),
/// grouped for reading aloud.
pub fn new_code(random: u64) -> String {
    let mut out = String::with_capacity(CODE_SYMBOLS + 1);
    for i in 0..CODE_SYMBOLS {
        if i == CODE_SYMBOLS / 2 {
            out.push('-');
        }
        let shift = 5 * (CODE_SYMBOLS - 1 - i);
        let index = ((random >> shift) & 31) as usize;
        out.push(char::from(ALPHABET[index]));
    }
    out
}

/// The canonical form of a typed code, or `None` when it cannot be one
/// (wrong length or a symbol outside the alphabet).
pub fn normalize_code(typed: &str) -> Option<String> {
    let mut out = String::with_capacity(CODE_SYMBOLS);
    for c in typed.chars() {
        let c = match c.to_ascii_uppercase() {
            ' ' | '-' | '\t' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) {
            return None;
        }
        out.push(c);
        if out.len() > CODE_SYMBOLS {
            return None;
        }
    }
    (out.len() == CODE_SYMBOLS).then_some(out)
}

/// What the requesting server sends and the patient's server stores:
/// SHA-256 over a context string, the request id and the canonical code.
/// `None` when `code` is not a well-formed code.
pub fn code_hash(request: Uuid, code: &str) -> Option<[u8; 32]> {
    let code = normalize_code(code)?;
    let mut h = Sha256::new();
    h.update(CODE_HASH_CONTEXT);
    h.update(request.as_hyphenated().to_string().as_bytes());
    h.update([0u8]);
    h.update(code.as_bytes());
    Some(h.finalize().into())
}

/// A fresh invitation token from 16 random bytes.
pub fn new_invitation_token(random: [u8; 16]) -> String {
    URL_SAFE_NO_PAD.encode(random)
}

/// The stored form of an invitation token. `None` unless `token` has the
/// token syntax (22 base64url characters).
pub fn invitation_hash(token: &str) -> Option<[u8; 32]> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    if bytes.len() != 16 || token.len() != 22 {
        return None;
    }
    Some(Sha256::digest(token.as_bytes()).into())
}

/// A patient address `<federation id>@<fqdn>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub patient: Uuid,
    pub fqdn: String,
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.patient.as_hyphenated(), self.fqdn)
    }
}

/// Why a payload or address was refused (for the doctor's page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("it does not start with mdgate:")]
    Scheme,
    #[error("the patient address is not <id>@<server>")]
    Address,
    #[error("the patient id is not a valid id")]
    PatientId,
    #[error("the server name is not a valid DNS name")]
    Server,
    #[error("the invitation is missing or malformed")]
    Invitation,
}

/// Parses a patient address. The id must be a canonical lower-case UUID.
pub fn parse_address(text: &str) -> Result<Address, PayloadError> {
    let text = text.strip_prefix("acct:").unwrap_or(text);
    let (id, fqdn) = text.split_once('@').ok_or(PayloadError::Address)?;
    let patient = Uuid::try_parse(id).map_err(|_| PayloadError::PatientId)?;
    if patient.as_hyphenated().to_string() != id {
        return Err(PayloadError::PatientId);
    }
    let fqdn = parse_fqdn(fqdn).map_err(|_| PayloadError::Server)?;
    Ok(Address { patient, fqdn })
}

/// The QR payload for `address` and an invitation token.
pub fn payload(address: &Address, invitation: &str) -> String {
    format!("{PAYLOAD_SCHEME}{address}?invitation={invitation}")
}

/// Parses a QR payload (surrounding white space ignored) into the address
/// and the invitation token.
pub fn parse_payload(text: &str) -> Result<(Address, String), PayloadError> {
    let text = text.trim();
    let rest = text
        .strip_prefix(PAYLOAD_SCHEME)
        .ok_or(PayloadError::Scheme)?;
    let (address, query) = rest.split_once('?').ok_or(PayloadError::Invitation)?;
    let token = query
        .strip_prefix("invitation=")
        .ok_or(PayloadError::Invitation)?;
    if invitation_hash(token).is_none() {
        return Err(PayloadError::Invitation);
    }
    Ok((parse_address(address)?, token.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_fifty_bits_in_an_unambiguous_alphabet() {
        assert_eq!(new_code(0), "00000-00000");
        assert_eq!(new_code((1 << 50) - 1), "ZZZZZ-ZZZZZ");
        let c = new_code(0x0123_4567_89ab_cdef);
        assert_eq!(c.len(), 11);
        assert!(c
            .chars()
            .all(|ch| ch == '-' || ALPHABET.contains(&(ch as u8))));
        for bad in ['I', 'L', 'O', 'U'] {
            assert!(!ALPHABET.contains(&(bad as u8)));
        }
        // Different bits, different codes.
        assert_ne!(new_code(1), new_code(2));
    }

    #[test]
    fn typing_is_forgiving_but_exact() {
        let code = new_code(0x3_1234_5678_9abc);
        let lower = code.to_lowercase();
        assert_eq!(normalize_code(&lower), normalize_code(&code));
        assert_eq!(normalize_code(" 0o1il-23456 "), Some("0011123456".into()));
        assert_eq!(normalize_code("12345"), None);
        assert_eq!(normalize_code("12345-123456"), None);
        assert_eq!(normalize_code("12345-1234U"), None);
        assert_eq!(normalize_code("12345-1234é"), None);
    }

    #[test]
    fn code_hash_binds_the_request() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let code = new_code(42);
        assert_eq!(code_hash(a, &code), code_hash(a, &code.to_lowercase()));
        assert_ne!(code_hash(a, &code), code_hash(b, &code));
        assert_eq!(code_hash(a, "nope"), None);
    }

    #[test]
    fn payload_round_trip_and_refusals() {
        let address = Address {
            patient: Uuid::from_u128(0xabc),
            fqdn: "one.example.org".into(),
        };
        let token = new_invitation_token([7; 16]);
        let p = payload(&address, &token);
        assert!(p.starts_with(
            "mdgate:00000000-0000-0000-0000-000000000abc@one.example.org?invitation="
        ));
        assert_eq!(
            parse_payload(&format!("  {p}\n")),
            Ok((address, token.clone()))
        );
        assert_eq!(parse_payload("https://x"), Err(PayloadError::Scheme));
        assert_eq!(
            parse_payload("mdgate:00000000-0000-0000-0000-000000000abc@one.example.org"),
            Err(PayloadError::Invitation)
        );
        assert_eq!(
            parse_payload(&format!("mdgate:nope@one.example.org?invitation={token}")),
            Err(PayloadError::PatientId)
        );
        assert_eq!(
            parse_payload(&format!(
                "mdgate:00000000-0000-0000-0000-000000000ABC@one.example.org?invitation={token}"
            )),
            Err(PayloadError::PatientId)
        );
        assert_eq!(
            parse_payload(&format!(
                "mdgate:00000000-0000-0000-0000-000000000abc@one?invitation={token}"
            )),
            Err(PayloadError::Server)
        );
        assert_eq!(
            parse_payload(
                "mdgate:00000000-0000-0000-0000-000000000abc@one.example.org?invitation=short"
            ),
            Err(PayloadError::Invitation)
        );
        assert!(invitation_hash(&token).is_some());
    }
}
