//! Header hygiene: what is stripped, what is set, on the way in and out.
//!
//! Names are compared after normalisation (ASCII lower case, `_` read as
//! `-`), because some backends fold underscores into dashes and a client
//! could otherwise smuggle `X_Forwarded_For` past a dash-only strip list.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers (RFC 9110 §7.6.1 and the legacy `Proxy-*`/`Keep-Alive`).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Forwarding and identity headers that only mdgate may set upstream. A
/// client-supplied copy (in any case, with `_` or `-`) is always removed.
const FORWARDING_EXACT: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-request-id",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Prefixes of header families reserved in the same way.
const FORWARDING_PREFIXES: &[&str] = &["x-forwarded-", "x-mdgate-"];

/// The request-id header mdgate sets on both sides.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Compares a header name with a lower-case dash form, reading `_` as `-`.
fn normalized_eq(name: &str, target: &str) -> bool {
    name.len() == target.len()
        && name
            .bytes()
            .zip(target.bytes())
            .all(|(a, b)| normalize_byte(a) == b)
}

fn normalized_starts_with(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name
            .bytes()
            .zip(prefix.bytes())
            .all(|(a, b)| normalize_byte(a) == b)
}

fn normalize_byte(b: u8) -> u8 {
    match b {
        b'_' => b'-',
        _ => b.to_ascii_lowercase(),
    }
}

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| normalized_eq(name, h))
}

/// Whether a request header is reserved for mdgate (never taken from a client).
pub fn is_reserved(name: &str) -> bool {
    FORWARDING_EXACT.iter().any(|h| normalized_eq(name, h))
        || FORWARDING_PREFIXES
            .iter()
            .any(|p| normalized_starts_with(name, p))
}

/// Removes hop-by-hop headers and every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Names listed in Connection are hop-by-hop for this exchange too.
    let listed: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase().replace('_', "-"))
        .filter(|t| !t.is_empty())
        .collect();
    if listed.is_empty() && !headers.keys().any(|n| is_hop_by_hop(n.as_str())) {
        return;
    }
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| {
            is_hop_by_hop(n.as_str()) || listed.iter().any(|l| normalized_eq(n.as_str(), l))
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
}

/// Removes client-supplied forwarding and identity headers.
pub fn strip_reserved(headers: &mut HeaderMap) {
    if !headers.keys().any(|n| is_reserved(n.as_str())) {
        return;
    }
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_reserved(n.as_str()))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
}

/// What mdgate saw of the client, used to set the forwarding headers.
pub struct Forwarding<'a> {
    pub client: SocketAddr,
    pub proto: &'static str,
    /// The validated `Host` (authority) the client asked for.
    pub host: &'a str,
    pub request_id: &'a HeaderValue,
}

/// Sets `Forwarded`, `X-Forwarded-For/-Proto/-Host` and `X-Request-Id` from
/// what mdgate saw. Call after [`strip_reserved`].
pub fn set_forwarding(headers: &mut HeaderMap, f: &Forwarding<'_>) {
    let ip = f.client.ip();
    let for_node = match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    // The host was validated as an authority (no quotes, no controls), so
    // quoting it is enough to make it a valid quoted-string.
    let forwarded = format!("for={for_node};proto={};host=\"{}\"", f.proto, f.host);
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        headers.insert(header::FORWARDED, v);
    }
    if let Ok(v) = HeaderValue::from_str(&ip.to_string()) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(f.proto));
    if let Ok(v) = HeaderValue::from_str(f.host) {
        headers.insert(X_FORWARDED_HOST.clone(), v);
    }
    headers.insert(REQUEST_ID.clone(), f.request_id.clone());
}

/// Adds the `Secure` attribute to every `Set-Cookie` that lacks it.
pub fn secure_cookies(headers: &mut HeaderMap) {
    if !headers.contains_key(header::SET_COOKIE) {
        return;
    }
    let cookies: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for cookie in cookies {
        let secured = match cookie.to_str() {
            Ok(text) if !has_secure_attribute(text) => {
                HeaderValue::from_str(&format!("{text}; Secure")).unwrap_or(cookie)
            }
            _ => cookie,
        };
        headers.append(header::SET_COOKIE, secured);
    }
}

fn has_secure_attribute(cookie: &str) -> bool {
    cookie
        .split(';')
        .skip(1)
        .any(|attr| attr.trim().eq_ignore_ascii_case("secure"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_listed_are_stripped() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret, x_other"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["accept"]);
    }

    #[test]
    fn reserved_headers_are_stripped_in_every_spelling() {
        let cases = [
            "x-forwarded-for",
            "X-Forwarded-Proto",
            "x_forwarded_for",
            "X_Forwarded-Host",
            "x-forwarded_port",
            "forwarded",
            "x-real-ip",
            "x_real_ip",
            "x-request-id",
            "x-mdgate-peer",
            "x_mdgate_grant",
            "x-http-method-override",
        ];
        for name in cases {
            let mut h = map(&[(name, "1.2.3.4"), ("accept", "*/*")]);
            strip_reserved(&mut h);
            assert_eq!(h.len(), 1, "{name} survived");
            assert!(h.contains_key("accept"));
        }
        let mut keep = map(&[("x-forwarding-note", "a"), ("cookie", "JSESSIONID=1")]);
        strip_reserved(&mut keep);
        assert_eq!(keep.len(), 2);
    }

    #[test]
    fn forwarding_headers_replace_client_values() {
        let mut h = map(&[("x-forwarded-for", "6.6.6.6"), ("forwarded", "for=6.6.6.6")]);
        strip_reserved(&mut h);
        let id = HeaderValue::from_static("rid");
        set_forwarding(
            &mut h,
            &Forwarding {
                client: "192.0.2.7:5555".parse().unwrap(),
                proto: "https",
                host: "a.example.org:8443",
                request_id: &id,
            },
        );
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "a.example.org:8443");
        assert_eq!(
            h["forwarded"],
            "for=192.0.2.7;proto=https;host=\"a.example.org:8443\""
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        let mut h6 = HeaderMap::new();
        set_forwarding(
            &mut h6,
            &Forwarding {
                client: "[2001:db8::1]:5555".parse().unwrap(),
                proto: "http",
                host: "h",
                request_id: &id,
            },
        );
        assert_eq!(
            h6["forwarded"],
            "for=\"[2001:db8::1]\";proto=http;host=\"h\""
        );
    }

    #[test]
    fn set_cookie_gets_secure_once() {
        let mut h = map(&[
            ("set-cookie", "JSESSIONID=node0abc.node0; Path=/; HttpOnly"),
            ("set-cookie", "b=2; Secure; Path=/"),
            ("set-cookie", "c=secure"),
        ]);
        secure_cookies(&mut h);
        let all: Vec<&str> = h
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            all,
            vec![
                "JSESSIONID=node0abc.node0; Path=/; HttpOnly; Secure",
                "b=2; Secure; Path=/",
                "c=secure; Secure",
            ]
        );
    }
}
