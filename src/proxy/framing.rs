//! Request-smuggling and ambiguity defences, as pure checks on a request head.
//!
//! Each check returns the machine-readable reason of the refusal. The caller
//! answers 400 and closes the connection (the rest of the byte stream cannot
//! be trusted once framing is ambiguous), and nothing reaches the upstream.

use http::header::{self, HeaderMap};
use http::{Method, Uri, Version};

use crate::error::RequestError;

/// Framing of an HTTP/1.x request: `Content-Length` and `Transfer-Encoding`.
///
/// Refused: both present; more than one `Content-Length` (equal or not);
/// any transfer coding other than a single, final `chunked`.
pub fn check_framing(version: Version, headers: &HeaderMap) -> Result<(), RequestError> {
    let cl_count = headers.get_all(header::CONTENT_LENGTH).iter().count();
    let te: Vec<_> = headers.get_all(header::TRANSFER_ENCODING).iter().collect();
    if cl_count > 1 {
        return Err(RequestError::BadRequest("duplicate_content_length"));
    }
    if te.is_empty() {
        return Ok(());
    }
    if version == Version::HTTP_2 || version == Version::HTTP_3 {
        return Err(RequestError::BadRequest("transfer_encoding_not_allowed"));
    }
    if cl_count > 0 {
        return Err(RequestError::BadRequest(
            "content_length_with_transfer_encoding",
        ));
    }
    let single_chunked = te.len() == 1
        && te[0]
            .to_str()
            .map(|v| v.trim().eq_ignore_ascii_case("chunked"))
            .unwrap_or(false);
    if !single_chunked {
        return Err(RequestError::BadRequest("unsupported_transfer_encoding"));
    }
    Ok(())
}

/// The request target: origin-form only, no `;` path parameters (the
/// upstream's Jetty honours `;jsessionid=`), no encoded NUL or `;`.
pub fn check_target(method: &Method, uri: &Uri) -> Result<(), RequestError> {
    if method == Method::CONNECT {
        return Err(RequestError::MethodNotAllowed);
    }
    let path = uri.path();
    if !path.starts_with('/') {
        return Err(RequestError::BadRequest("invalid_request_target"));
    }
    if path.contains(';') {
        return Err(RequestError::BadRequest("path_parameter"));
    }
    let lower_has = |needle: &str| {
        path.as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    };
    if lower_has("%3b") {
        return Err(RequestError::BadRequest("path_parameter"));
    }
    if lower_has("%00") {
        return Err(RequestError::BadRequest("invalid_request_target"));
    }
    Ok(())
}

/// The authority the client asked for: the `Host` header (HTTP/1.1) or the
/// `:authority` pseudo-header (HTTP/2). Both present and different, several
/// `Host` headers, or neither on HTTP/1.1: refused.
pub fn request_host<'a>(
    version: Version,
    uri: &'a Uri,
    headers: &'a HeaderMap,
) -> Result<&'a str, RequestError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(RequestError::BadRequest("duplicate_host")),
        (Some(h), None) => Some(
            h.to_str()
                .map_err(|_| RequestError::BadRequest("invalid_host"))?,
        ),
        (None, _) => None,
    };
    let authority = uri.authority().map(|a| a.as_str());
    let chosen = match (host, authority) {
        (Some(h), Some(a)) if !h.eq_ignore_ascii_case(a) => {
            return Err(RequestError::BadRequest("host_mismatch"))
        }
        (Some(h), _) => h,
        (None, Some(a)) => a,
        (None, None) => {
            if version == Version::HTTP_10 {
                ""
            } else {
                return Err(RequestError::BadRequest("missing_host"));
            }
        }
    };
    if !chosen.is_empty() && chosen.parse::<http::uri::Authority>().is_err() {
        return Err(RequestError::BadRequest("invalid_host"));
    }
    if chosen.contains('@') {
        return Err(RequestError::BadRequest("invalid_host"));
    }
    Ok(chosen)
}

/// The host part of an authority, without port or IPv6 brackets.
pub fn host_without_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// On TLS listeners the SNI name must be present and equal to the host the
/// request names (case-insensitive, trailing dot ignored).
pub fn check_sni(sni: Option<&str>, host: &str) -> Result<(), RequestError> {
    let Some(sni) = sni else {
        return Err(RequestError::Misdirected("sni_required"));
    };
    let h = host_without_port(host).trim_end_matches('.');
    if h.eq_ignore_ascii_case(sni.trim_end_matches('.')) {
        Ok(())
    } else {
        Err(RequestError::Misdirected("sni_host_mismatch"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);

    #[test]
    fn framing_table() {
        let v11 = Version::HTTP_11;
        let cases: &[Case<'_>] = &[
            (&[("content-length", "5")], None),
            (&[("transfer-encoding", "chunked")], None),
            (&[("transfer-encoding", " Chunked ")], None),
            (&[], None),
            (
                &[("content-length", "5"), ("transfer-encoding", "chunked")],
                Some("content_length_with_transfer_encoding"),
            ),
            (
                &[("content-length", "5"), ("content-length", "5")],
                Some("duplicate_content_length"),
            ),
            (
                &[("content-length", "5"), ("content-length", "6")],
                Some("duplicate_content_length"),
            ),
            (
                &[("transfer-encoding", "gzip, chunked")],
                Some("unsupported_transfer_encoding"),
            ),
            (
                &[
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ],
                Some("unsupported_transfer_encoding"),
            ),
            (
                &[("transfer-encoding", "identity")],
                Some("unsupported_transfer_encoding"),
            ),
        ];
        for (pairs, want) in cases {
            let got = check_framing(v11, &headers(pairs))
                .err()
                .map(|e| e.reason());
            assert_eq!(got, *want, "{pairs:?}");
        }
    }

    #[test]
    fn targets() {
        let ok = [
            "/",
            "/api/login",
            "/api/doctor/patient/5?x=1",
            "/static/a%20b.css",
        ];
        for t in ok {
            assert!(
                check_target(&Method::GET, &t.parse().unwrap()).is_ok(),
                "{t}"
            );
        }
        let bad = [
            ("/api/patient;jsessionid=node01", "path_parameter"),
            ("/api/patient%3Bjsessionid=x", "path_parameter"),
            ("/a%00b", "invalid_request_target"),
        ];
        for (t, reason) in bad {
            let err = check_target(&Method::GET, &t.parse().unwrap()).unwrap_err();
            assert_eq!(err.reason(), reason, "{t}");
        }
        assert!(check_target(&Method::CONNECT, &"/".parse().unwrap()).is_err());
    }

    #[test]
    fn host_selection() {
        let uri: Uri = "/x".parse().unwrap();
        let h = headers(&[("host", "a.example.org")]);
        assert_eq!(
            request_host(Version::HTTP_11, &uri, &h).unwrap(),
            "a.example.org"
        );
        let none = HeaderMap::new();
        assert_eq!(
            request_host(Version::HTTP_11, &uri, &none)
                .unwrap_err()
                .reason(),
            "missing_host"
        );
        let abs: Uri = "https://b.example.org/x".parse().unwrap();
        assert_eq!(
            request_host(Version::HTTP_11, &abs, &h)
                .unwrap_err()
                .reason(),
            "host_mismatch"
        );
        let two = headers(&[("host", "a"), ("host", "b")]);
        assert_eq!(
            request_host(Version::HTTP_11, &uri, &two)
                .unwrap_err()
                .reason(),
            "duplicate_host"
        );
        let userinfo = headers(&[("host", "u@a.example.org")]);
        assert!(request_host(Version::HTTP_11, &uri, &userinfo).is_err());
    }

    #[test]
    fn sni_agreement() {
        assert!(check_sni(Some("a.example.org"), "A.example.org:443").is_ok());
        assert!(check_sni(Some("a.example.org"), "a.example.org.").is_ok());
        assert_eq!(
            check_sni(Some("a.example.org"), "b.example.org")
                .unwrap_err()
                .reason(),
            "sni_host_mismatch"
        );
        assert_eq!(check_sni(None, "a").unwrap_err().reason(), "sni_required");
        assert_eq!(host_without_port("[::1]:8443"), "::1");
    }
}
