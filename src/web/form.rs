//! POST bodies and query strings: what the pages accept, and the checks
//! every POST passes before any field is looked at.
//!
//! A POST is refused unless (in this order, first failure wins):
//!
//! 1. `Sec-Fetch-Site`, when sent, is `same-origin` or `none` (a browser
//!    sets it and no page can forge it);
//! 2. `Origin`, or when absent `Referer`, names this very origin (scheme,
//!    host, port): `null`, another host or neither header is refused;
//! 3. the body is `application/x-www-form-urlencoded` and at most
//!    [`MAX_FORM_BYTES`], read within [`BODY_TIMEOUT`];
//! 4. it parses: UTF-8 after decoding, no field twice, at most
//!    [`MAX_FIELDS`] fields;
//! 5. the `csrf` field is the session's token (checked by the caller,
//!    which knows the session).

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http_body::Body;
use http_body_util::{BodyExt as _, Limited};

use crate::proxy::framing::host_without_port;

/// The largest form body accepted.
pub const MAX_FORM_BYTES: usize = 16 * 1024;
/// The most fields in one form or query.
pub const MAX_FIELDS: usize = 32;
/// How long a form body may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a POST was refused before its fields were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("cross-site request (Sec-Fetch-Site)")]
    CrossSite,
    #[error("Origin is not this site")]
    WrongOrigin,
    #[error("neither Origin nor Referer")]
    NoOrigin,
    #[error("CSRF token missing or wrong")]
    BadToken,
    #[error("not a form body")]
    NotForm,
    #[error("form body too large")]
    TooLarge,
    #[error("form body unreadable")]
    Unreadable,
    #[error("malformed form")]
    Malformed,
}

impl Refusal {
    /// A stable label for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::CrossSite => "csrf_cross_site",
            Refusal::WrongOrigin => "csrf_origin",
            Refusal::NoOrigin => "csrf_no_origin",
            Refusal::BadToken => "csrf_token",
            Refusal::NotForm => "form_content_type",
            Refusal::TooLarge => "form_too_large",
            Refusal::Unreadable => "form_unreadable",
            Refusal::Malformed => "form_malformed",
        }
    }

    /// Whether this is a cross-site request forgery refusal (403) rather
    /// than a bad body.
    pub fn is_csrf(self) -> bool {
        match self {
            Refusal::CrossSite | Refusal::WrongOrigin | Refusal::NoOrigin | Refusal::BadToken => {
                true
            }
            Refusal::NotForm | Refusal::TooLarge | Refusal::Unreadable | Refusal::Malformed => {
                false
            }
        }
    }
}

/// Checks 1 and 2: the request comes from a page of this origin.
/// `scheme` is `https` or `http` (the connection's), `host` the request's
/// authority (`Host` or `:authority`).
pub fn check_origin(headers: &HeaderMap, scheme: &str, host: &str) -> Result<(), Refusal> {
    if let Some(site) = headers.get("sec-fetch-site") {
        match site.as_bytes() {
            b"same-origin" | b"none" => {}
            _ => return Err(Refusal::CrossSite),
        }
    }
    let claimed = match headers.get(header::ORIGIN) {
        Some(o) => o.to_str().map_err(|_| Refusal::WrongOrigin)?,
        None => {
            let r = headers.get(header::REFERER).ok_or(Refusal::NoOrigin)?;
            r.to_str().map_err(|_| Refusal::WrongOrigin)?
        }
    };
    if same_origin(claimed, scheme, host) {
        Ok(())
    } else {
        Err(Refusal::WrongOrigin)
    }
}

/// Whether `url` (an `Origin` value or a `Referer` URL) has the origin
/// `scheme://host`. Host names compare without case, a default port
/// equals no port, and user info is never accepted.
pub fn same_origin(url: &str, scheme: &str, host: &str) -> bool {
    let Some(rest) = url.strip_prefix(scheme).and_then(|r| r.strip_prefix("://")) else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || host.is_empty() || authority.contains('@') {
        return false;
    }
    let default_port = if scheme == "https" { 443 } else { 80 };
    match (
        split_port(authority, default_port),
        split_port(host, default_port),
    ) {
        (Some((h1, p1)), Some((h2, p2))) => p1 == p2 && h1.eq_ignore_ascii_case(h2),
        _ => false,
    }
}

/// `(host, port)` of an authority, the port defaulted; `None` when the
/// port is not a number.
fn split_port(authority: &str, default_port: u16) -> Option<(&str, u16)> {
    let host = host_without_port(authority);
    let after = if authority.starts_with('[') {
        authority.split_once(']').map(|(_, p)| p).unwrap_or("")
    } else {
        &authority[host.len()..]
    };
    let port = match after.strip_prefix(':') {
        None if after.is_empty() => default_port,
        Some(p) => p.parse().ok()?,
        None => return None,
    };
    Some((host, port))
}

/// Check 3, the content type: `application/x-www-form-urlencoded` with
/// optional parameters (browsers send none, or a charset).
pub fn check_content_type(headers: &HeaderMap) -> Result<(), Refusal> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or(Refusal::NotForm)?;
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Ok(())
    } else {
        Err(Refusal::NotForm)
    }
}

/// Check 3, the body: read whole, at most [`MAX_FORM_BYTES`], within
/// [`BODY_TIMEOUT`].
pub async fn read_body<B>(headers: &HeaderMap, body: B) -> Result<Bytes, Refusal>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_FORM_BYTES as u64) {
        return Err(Refusal::TooLarge);
    }
    let limited = Limited::new(body, MAX_FORM_BYTES);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Err(Refusal::Unreadable),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Refusal::TooLarge),
        Ok(Err(_)) => Err(Refusal::Unreadable),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// A parsed form (or query string): each name at most once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Form {
    fields: Vec<(String, String)>,
}

impl Form {
    /// Parses `application/x-www-form-urlencoded` bytes: `&`-separated
    /// `name=value` pairs, `+` for space, `%XX` escapes, UTF-8 after
    /// decoding (no silent replacement: a password must arrive exactly
    /// or not at all). Empty pairs are skipped; a pair without `=` has an
    /// empty value.
    pub fn parse(raw: &[u8]) -> Result<Form, Refusal> {
        let fields = pairs(raw)?;
        for (i, (name, _)) in fields.iter().enumerate() {
            if fields[..i].iter().any(|(n, _)| n == name) {
                return Err(Refusal::Malformed);
            }
        }
        Ok(Form { fields })
    }

    /// The value of `name`, if sent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, `None` when absent or empty after trimming.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }

    /// Takes the value of `name` out of the form (for the password, so
    /// that only one copy lives on).
    pub fn take(&mut self, name: &str) -> Option<String> {
        let i = self.fields.iter().position(|(n, _)| n == name)?;
        Some(self.fields.swap_remove(i).1)
    }
}

/// The decoded `name=value` pairs of a form or query, in order, repeats
/// kept (WebFinger's `rel` may repeat); the rules of [`Form::parse`].
pub fn pairs(raw: &[u8]) -> Result<Vec<(String, String)>, Refusal> {
    let mut fields = Vec::new();
    for pair in raw.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        if fields.len() == MAX_FIELDS {
            return Err(Refusal::Malformed);
        }
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        fields.push((decode(name)?, decode(value)?));
    }
    Ok(fields)
}

fn decode(raw: &[u8]) -> Result<String, Refusal> {
    let plus: Cow<'_, [u8]> = if raw.contains(&b'+') {
        Cow::Owned(
            raw.iter()
                .map(|&b| if b == b'+' { b' ' } else { b })
                .collect(),
        )
    } else {
        Cow::Borrowed(raw)
    };
    let bytes: Vec<u8> = percent_encoding::percent_decode(&plus).collect();
    String::from_utf8(bytes).map_err(|_| Refusal::Malformed)
}
