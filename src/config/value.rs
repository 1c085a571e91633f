//! Parsers for single values that need more than serde: server names,
//! the upstream URL, SPKI pins, and whether two listen addresses collide.
//! Pure functions; errors are the reason, without the key (the caller adds
//! it).

use std::net::{IpAddr, SocketAddr};

/// Checks and normalises a server name: lower case, no trailing dot, at
/// least two LDH labels, not an IP address, no wildcard.
pub fn parse_fqdn(text: &str) -> Result<String, String> {
    let lower = text.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() {
        return Err("empty; set this server's DNS name, as in \"records.example.org\"".to_owned());
    }
    if name.parse::<IpAddr>().is_ok() || name.starts_with('[') {
        return Err(format!(
            "{text:?} is an IP address; use the DNS name peers will look up"
        ));
    }
    if name.contains('*') {
        return Err(format!(
            "{text:?} is a wildcard; use this server's own name"
        ));
    }
    if name.len() > 253 {
        return Err(format!("longer than 253 characters ({})", name.len()));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Err(format!(
            "{text:?} needs at least two labels, as in \"records.example.org\""
        ));
    }
    for label in &labels {
        if label.is_empty() {
            return Err(format!("{text:?} has an empty label"));
        }
        if label.len() > 63 {
            return Err(format!("label {label:?} is longer than 63 characters"));
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!(
                "label {label:?} may only hold letters, digits and '-' \
                 (write internationalised names in their xn-- form)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!(
            "{text:?} ends in a numeric label; use a DNS name, not an address"
        ));
    }
    Ok(name.to_owned())
}

/// `http://host:port` → the authority; port 80 when absent.
pub fn parse_upstream_url(text: &str) -> Result<http::uri::Authority, String> {
    const FORM: &str = "expected http://host:port, as in \"http://127.0.0.1:7000\"";
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("not a valid URL; {FORM}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(
                "https is not supported: mdgate speaks plain HTTP to an upstream on loopback \
                 or a private network; use http://"
                    .to_owned(),
            )
        }
        Some(other) => return Err(format!("scheme {other:?} is not supported; {FORM}")),
        None => return Err(format!("missing http://; {FORM}")),
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("missing host; {FORM}"));
    };
    // Deliberately not echoed: user info would be a password.
    if authority.as_str().contains('@') {
        return Err("must not contain a user name or password".to_owned());
    }
    if authority.host().is_empty() {
        return Err(format!("missing host; {FORM}"));
    }
    let path = uri.path();
    if uri.query().is_some() || !(path.is_empty() || path == "/") {
        return Err(
            "must not have a path or query: request paths are forwarded unchanged".to_owned(),
        );
    }
    if authority.port_u16().is_some() {
        return Ok(authority.clone());
    }
    format!("{}:80", authority.as_str())
        .parse()
        .map_err(|_| format!("not a valid host; {FORM}"))
}

/// A SHA-256 SPKI pin: 64 hex digits (colons allowed, as openssl prints
/// them) or base64 (with or without padding).
pub fn parse_pin(text: &str) -> Result<[u8; 32], String> {
    use base64::Engine as _;
    const FORM: &str =
        "expected a SHA-256 of a SubjectPublicKeyInfo as 64 hex digits or 44 base64 characters";
    let text = text.trim();
    let compact: String = text.chars().filter(|c| *c != ':').collect();
    let bytes = if compact.len() == 64 && compact.chars().all(|c| c.is_ascii_hexdigit()) {
        hex::decode(&compact).map_err(|_| FORM.to_owned())?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .map_err(|_| FORM.to_owned())?
    };
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("decodes to {} bytes, not 32; {FORM}", bytes.len()))
}

/// Whether two listen addresses could not both be bound. `[::]` is taken
/// to be dual-stack (the Linux default), so it covers IPv4 too.
pub fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let covers =
        |wild: IpAddr, other: IpAddr| wild.is_unspecified() && (wild.is_ipv6() || other.is_ipv4());
    a.ip() == b.ip() || covers(a.ip(), b.ip()) || covers(b.ip(), a.ip())
}
