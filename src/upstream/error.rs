//! What can go wrong talking to access.md.
//!
//! [`UpstreamError`] names the route of every failure (`R20 GET
//! /api/doctor/patient/:id`, a template without ids) and what happened.
//! Messages never hold a password, a cookie or a link code, and never the
//! upstream's response body except the few fixed Javalin and Java messages
//! recognised in [`describe_body`]: other bodies may echo patient data (a
//! Derby truncation message quotes the value), so only their length is
//! kept.

use std::time::Duration;

use http::StatusCode;

/// Why an exchange with access.md failed. Each variant carries the route
/// template (`route`) it happened on.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection, or the connection broke before a whole response.
    #[error("access.md is unreachable ({route}): {source}")]
    Unreachable {
        route: &'static str,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The connection broke while the response body was being read.
    #[error("access.md closed the connection mid-response ({route})")]
    Interrupted { route: &'static str },
    /// No whole response within the configured response timeout.
    #[error("access.md did not answer within {after:?} ({route})")]
    Timeout {
        route: &'static str,
        after: Duration,
    },
    /// 401: the session is unknown (the upstream restarted) or has the
    /// wrong role. An [`UpstreamIdentity`](super::UpstreamIdentity) has
    /// already logged in again and retried once when it returns this; for
    /// a patient's borrowed session it means the patient must sign in again.
    #[error("access.md refused the session (401, {route})")]
    Unauthorized { route: &'static str },
    /// 403 on login: unknown username or wrong password.
    #[error("access.md rejected the username or password (403, {route})")]
    CredentialsRejected { route: &'static str },
    /// Login failed because several accounts share the username (the
    /// upstream does not check uniqueness when the admin creates doctors).
    #[error("access.md has several accounts with this username ({route})")]
    DuplicateUsername { route: &'static str },
    /// The per-patient 500 of a doctor route (§5): the patient does not
    /// exist or is not linked to this doctor account.
    #[error("the patient is not linked to this access.md account ({route})")]
    NotLinked { route: &'static str },
    /// 400 from Javalin: the request body or a path parameter was refused.
    #[error("access.md refused the request (400, {route}): {detail}")]
    BadRequest { route: &'static str, detail: String },
    /// Any other status, including 500s that are not the route's documented
    /// "not linked" answer.
    #[error("access.md answered {status} ({route}): {detail}")]
    Failed {
        route: &'static str,
        status: StatusCode,
        detail: String,
    },
    /// The status was right but the body was not what the route returns.
    #[error("access.md sent an unexpected body ({route}): {what}")]
    UnexpectedBody {
        route: &'static str,
        what: &'static str,
    },
    /// The body is not the JSON shape expected (without the value, which
    /// could be patient data).
    #[error("access.md sent JSON that does not fit ({route}): {category} error at line {line} column {column}")]
    InvalidJson {
        route: &'static str,
        category: &'static str,
        line: usize,
        column: usize,
    },
    /// The body, after decompression, is over mdgate's limit.
    #[error("access.md sent more than {limit} bytes ({route})")]
    TooLarge { route: &'static str, limit: usize },
    /// A `Content-Encoding` that is not gzip, or gzip that does not decode.
    #[error("access.md sent an undecodable body ({route}): {what}")]
    Encoding {
        route: &'static str,
        what: &'static str,
    },
    /// A successful login without a `JSESSIONID` cookie.
    #[error("access.md answered the login without a session cookie ({route})")]
    NoSessionCookie { route: &'static str },
    /// mdgate built a request access.md must not see (a bad path, a body
    /// key outside the whitelist, a value it cannot serialise).
    #[error("refused to send to access.md ({route}): {what}")]
    InvalidRequest { route: &'static str, what: String },
}

impl UpstreamError {
    /// The route template the failure happened on.
    pub fn route(&self) -> &'static str {
        match self {
            UpstreamError::Unreachable { route, .. }
            | UpstreamError::Interrupted { route }
            | UpstreamError::Timeout { route, .. }
            | UpstreamError::Unauthorized { route }
            | UpstreamError::CredentialsRejected { route }
            | UpstreamError::DuplicateUsername { route }
            | UpstreamError::NotLinked { route }
            | UpstreamError::BadRequest { route, .. }
            | UpstreamError::Failed { route, .. }
            | UpstreamError::UnexpectedBody { route, .. }
            | UpstreamError::InvalidJson { route, .. }
            | UpstreamError::TooLarge { route, .. }
            | UpstreamError::Encoding { route, .. }
            | UpstreamError::NoSessionCookie { route }
            | UpstreamError::InvalidRequest { route, .. } => route,
        }
    }

    /// Whether the upstream is down or overloaded (retry later), as
    /// opposed to having answered something definite.
    pub fn is_unavailable(&self) -> bool {
        match self {
            UpstreamError::Unreachable { .. }
            | UpstreamError::Interrupted { .. }
            | UpstreamError::Timeout { .. } => true,
            UpstreamError::Failed { status, .. } => matches!(
                *status,
                StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            ),
            UpstreamError::Unauthorized { .. }
            | UpstreamError::CredentialsRejected { .. }
            | UpstreamError::DuplicateUsername { .. }
            | UpstreamError::NotLinked { .. }
            | UpstreamError::BadRequest { .. }
            | UpstreamError::UnexpectedBody { .. }
            | UpstreamError::InvalidJson { .. }
            | UpstreamError::TooLarge { .. }
            | UpstreamError::Encoding { .. }
            | UpstreamError::NoSessionCookie { .. }
            | UpstreamError::InvalidRequest { .. } => false,
        }
    }

    pub(crate) fn json(route: &'static str, e: &serde_json::Error) -> UpstreamError {
        let category = match e.classify() {
            serde_json::error::Category::Io => "read",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "shape",
            serde_json::error::Category::Eof => "truncation",
        };
        UpstreamError::InvalidJson {
            route,
            category,
            line: e.line(),
            column: e.column(),
        }
    }
}

/// The Kotlin message of `ctx.json(null)` (500N in the upstream document).
pub(crate) const NULL_JSON_MESSAGE: &str =
    "Parameter specified as non-null is null: method io.javalin.http.Context.json, parameter obj";

/// A description of an error body that is safe to log: the fixed messages
/// access.md is known to send, else only the length.
pub(crate) fn describe_body(body: &[u8]) -> String {
    // Javalin's own 400s (bad body, null body, bad path parameter) and the
    // Java exceptions the document lists. A path parameter is an id mdgate
    // chose, so echoing it is harmless; everything is bounded in length.
    const KNOWN: &[&str] = &[
        "Couldn't deserialize body to ",
        "Request body as ",
        "Path parameter '",
        "query did not return a unique result",
        "Not found",
        NULL_JSON_MESSAGE,
        "ARJUNA",
        "class java.lang.",
    ];
    if body.is_empty() {
        return "empty body".to_owned();
    }
    match std::str::from_utf8(body) {
        Ok(text)
            if text.len() <= 200
                && !text.contains(['\n', '\r'])
                && KNOWN.iter().any(|k| text.starts_with(k)) =>
        {
            text.to_owned()
        }
        _ => format!("{} bytes not shown", body.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_bodies_are_described() {
        assert_eq!(describe_body(b""), "empty body");
        assert_eq!(
            describe_body(b"Couldn't deserialize body to Question"),
            "Couldn't deserialize body to Question"
        );
        assert_eq!(
            describe_body(b"ARJUNA016053: Could not commit transaction."),
            "ARJUNA016053: Could not commit transaction."
        );
        // A message that may quote a value is not echoed.
        assert_eq!(
            describe_body(
                b"A truncation error was encountered trying to shrink VARCHAR 'my private note"
            ),
            "76 bytes not shown"
        );
        assert_eq!(
            describe_body(b"<html><login></login>"),
            "21 bytes not shown"
        );
        let long = format!("Couldn't deserialize body to {}", "x".repeat(300));
        assert_eq!(describe_body(long.as_bytes()), "329 bytes not shown");
    }

    #[test]
    fn json_errors_keep_no_values() {
        let e = serde_json::from_str::<Vec<i64>>(r#"["Alice Private"]"#).expect_err("shape");
        let e = UpstreamError::json("R18 GET /api/doctor/patient", &e);
        let text = e.to_string();
        assert!(!text.contains("Alice"), "{text}");
        assert!(text.contains("shape error at line 1"), "{text}");
    }
}
