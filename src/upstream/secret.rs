//! Values that must never be printed: passwords and session cookies.
//!
//! [`Secret`] holds a password (or any credential) and prints as
//! `[redacted]` under `Debug`; it has no `Display`, no `Clone` and no
//! `Serialize`, so it cannot end up in a log line, an error message or a
//! JSON body by accident. The only way to the text is [`Secret::expose`],
//! which is easy to find in review. [`SessionCookie`] is an upstream
//! `JSESSIONID` value with the same property; it is cheap to clone because
//! every request of an identity carries it.

use std::fmt;
use std::sync::Arc;

/// A password or other credential: never printed, wiped (best effort) on drop.
pub struct Secret(String);

/// Why bytes read from a password file are not a usable password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretFormatError {
    /// The file holds nothing (or only a newline).
    #[error("the password file is empty")]
    Empty,
    /// The file is not UTF-8 text (access.md receives passwords in JSON).
    #[error("the password file is not UTF-8 text")]
    NotUtf8,
    /// A control character other than the final newline (often a second
    /// line, or a stray carriage return).
    #[error("the password contains a line break or another control character")]
    ControlCharacter,
}

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// Reads a password from the bytes of a password file: UTF-8, one
    /// trailing `\n` (or `\r\n`) dropped, nothing else changed, not empty.
    /// The input is wiped whatever the outcome.
    pub fn from_file_bytes(bytes: Vec<u8>) -> Result<Secret, SecretFormatError> {
        let text = match String::from_utf8(bytes) {
            Ok(text) => Secret(text),
            Err(e) => {
                wipe(e.into_bytes());
                return Err(SecretFormatError::NotUtf8);
            }
        };
        let value = text.expose();
        let value = value.strip_suffix('\n').unwrap_or(value);
        let value = value.strip_suffix('\r').unwrap_or(value);
        if value.is_empty() {
            return Err(SecretFormatError::Empty);
        }
        if value.chars().any(char::is_control) {
            return Err(SecretFormatError::ControlCharacter);
        }
        Ok(Secret::new(value))
    }

    /// The credential itself. Call this only where it is sent upstream.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        wipe(std::mem::take(&mut self.0).into_bytes());
    }
}

/// Overwrites a buffer before freeing it. Best effort: without `unsafe`
/// (forbidden in this crate) copies made earlier by reallocation or by
/// the request body cannot be reached, and `black_box` only discourages
/// the compiler from dropping the stores.
fn wipe(mut bytes: Vec<u8>) {
    bytes.fill(0);
    std::hint::black_box(&bytes);
}

/// An upstream `JSESSIONID` value: whoever holds it acts as that account,
/// so it is a credential like a password. Prints as `[redacted]`.
#[derive(Clone)]
pub struct SessionCookie(Arc<Secret>);

impl SessionCookie {
    /// Accepts a cookie value as RFC 6265 allows it (no white space, `;`,
    /// `,`, `"`, `\` or control characters), so it can be put back in a
    /// `Cookie` header verbatim. Jetty's look like `node0abc123.node0`.
    pub fn from_value(value: impl Into<String>) -> Option<SessionCookie> {
        let value = Secret::new(value);
        let ok = !value.expose().is_empty()
            && value
                .expose()
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"' | b'\\'));
        ok.then(|| SessionCookie(Arc::new(value)))
    }

    /// The `JSESSIONID` value. Call this only where it is sent upstream (or
    /// stored where mdgate keeps its sessions).
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl fmt::Debug for SessionCookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionCookie([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret:#?}"), "[redacted]");
        let cookie = SessionCookie::from_value("node0abc1.node0").expect("valid");
        assert_eq!(format!("{cookie:?}"), "SessionCookie([redacted])");
        assert_eq!(cookie.expose(), "node0abc1.node0");
    }

    #[test]
    fn password_files() {
        let cases: &[(&[u8], Result<&str, SecretFormatError>)] = &[
            (b"pw\n", Ok("pw")),
            (b"pw\r\n", Ok("pw")),
            (b"pw", Ok("pw")),
            (b" pw with spaces ", Ok(" pw with spaces ")),
            (b"p\xc3\xa4ss\n", Ok("p\u{e4}ss")),
            (b"", Err(SecretFormatError::Empty)),
            (b"\n", Err(SecretFormatError::Empty)),
            (b"pw\n\n", Err(SecretFormatError::ControlCharacter)),
            (b"pw\nsecond\n", Err(SecretFormatError::ControlCharacter)),
            (b"p\tw", Err(SecretFormatError::ControlCharacter)),
            (b"\xff\xfe", Err(SecretFormatError::NotUtf8)),
        ];
        for (bytes, want) in cases {
            let got = Secret::from_file_bytes(bytes.to_vec());
            let got = got.as_ref().map(Secret::expose).map_err(|e| *e);
            assert_eq!(got, *want, "{bytes:?}");
        }
    }

    #[test]
    fn cookie_values_must_fit_a_cookie_header() {
        for bad in ["", "a b", "a;b", "a,b", "a\"b", "a\\b", "a\nb", "\u{e9}"] {
            assert!(SessionCookie::from_value(bad).is_none(), "{bad:?}");
        }
        assert!(SessionCookie::from_value("node01k3x7x0.node0").is_some());
    }
}
