//! Logging: tracing to stderr, human-readable or JSON, with secrets redacted.
//!
//! mdgate never logs header values it does not own. Where a header map is
//! worth logging (debugging), [`redacted_headers`] replaces the value of
//! every credential-bearing header, so `Cookie`, `Set-Cookie`,
//! `Authorization`, tokens and codes never reach a log line.

use http::HeaderMap;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{Log, LogFormat};

/// Header names whose values are secrets (compared in lower case, `_` as `-`).
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-grant-token",
    "x-mdgate-token",
    "x-request-code",
];

/// Whether a header's value must never be logged.
pub fn is_secret_header(name: &str) -> bool {
    let norm = name.to_ascii_lowercase().replace('_', "-");
    SECRET_HEADERS.contains(&norm.as_str()) || norm.contains("token") || norm.contains("secret")
}

/// A loggable rendering of headers with every secret value replaced.
pub fn redacted_headers(headers: &HeaderMap) -> String {
    let mut out = String::new();
    for (name, value) in headers {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(name.as_str());
        out.push_str(": ");
        if is_secret_header(name.as_str()) {
            out.push_str("[redacted]");
        } else {
            out.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
    }
    out
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides the
/// configured filter. Calling it twice is harmless (the second is ignored).
pub fn init(cfg: &Log) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(&cfg.filter).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match cfg.format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // An already-installed subscriber (tests, demo) is fine.
    let _ = result;
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn secrets_are_redacted() {
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            HeaderValue::from_static("JSESSIONID=node0secret.node0"),
        );
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer abc.def.ghi"),
        );
        h.insert("x_grant_token", HeaderValue::from_static("tok"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        let line = redacted_headers(&h);
        assert!(!line.contains("node0secret"));
        assert!(!line.contains("abc.def"));
        assert!(!line.contains("tok,") && !line.ends_with("tok"));
        assert!(line.contains("accept: */*"));
        assert_eq!(line.matches("[redacted]").count(), 3);
    }
}
