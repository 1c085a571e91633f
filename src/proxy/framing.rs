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

/// Largest chunk-size or trailer line the scanner accepts.
const MAX_LINE: usize = 4096;
/// Most header fields the scanner parses (the configured limit, capped).
const MAX_SCANNED_HEADERS: usize = 256;

/// Where an [`H1Scanner`] is in the client's byte stream.
#[derive(Debug)]
enum ScanState {
    /// Collecting a request head.
    Head(Vec<u8>),
    /// Inside a body of known length: bytes left.
    Fixed(u64),
    /// Collecting a chunk-size line.
    ChunkSize(Vec<u8>),
    /// Inside a chunk: bytes left, then its CRLF.
    ChunkData(u64),
    /// The CRLF after a chunk's data: bytes of it seen so far.
    ChunkEnd(u8),
    /// Trailer section: the current line so far.
    Trailer(Vec<u8>),
    /// A violation was found; nothing more is scanned.
    Failed,
}

/// Scans the raw bytes a client sends on an HTTP/1.x connection and finds
/// framing that the HTTP parser would silently repair.
///
/// hyper drops a `Content-Length` that comes with `Transfer-Encoding`, and
/// the second of two equal `Content-Length` headers, before the request is
/// handed to mdgate, so these cannot be seen on the parsed request. The
/// scanner sees every byte before the parser does: it parses each request
/// head itself, checks the framing headers, and follows the body (fixed
/// length or chunked) to the next head. Its first violation taints the
/// connection: that request and every later one on it is refused, and the
/// connection is closed. It never changes the bytes.
#[derive(Debug)]
pub struct H1Scanner {
    state: ScanState,
    max_head: usize,
    max_headers: usize,
}

impl H1Scanner {
    pub fn new(max_head: usize, max_headers: usize) -> Self {
        H1Scanner {
            state: ScanState::Head(Vec::new()),
            max_head,
            max_headers,
        }
    }

    /// Whether part of a request head has arrived and the rest has not:
    /// the time that takes is what `header_read_timeout` bounds.
    pub fn in_head(&self) -> bool {
        matches!(&self.state, ScanState::Head(buf) if !buf.is_empty())
    }

    /// Feeds bytes read from the client. Returns the reason of the first
    /// violation, once; later calls return `Ok` and scan nothing.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), &'static str> {
        while !bytes.is_empty() {
            match self.step(bytes) {
                Ok(used) => bytes = &bytes[used..],
                Err(reason) => {
                    self.state = ScanState::Failed;
                    return Err(reason);
                }
            }
        }
        Ok(())
    }

    /// Consumes a prefix of `bytes`, returning its length.
    fn step(&mut self, bytes: &[u8]) -> Result<usize, &'static str> {
        match &mut self.state {
            ScanState::Failed => Ok(bytes.len()),
            ScanState::Head(buf) => {
                // Most heads arrive whole in one read: parse them in place and
                // copy only a partial head.
                let before = buf.len();
                let data: &[u8] = if before == 0 {
                    bytes
                } else {
                    buf.extend_from_slice(bytes);
                    buf
                };
                let mut storage = [httparse::EMPTY_HEADER; MAX_SCANNED_HEADERS];
                let mut req = httparse::Request::new(
                    &mut storage[..self.max_headers.min(MAX_SCANNED_HEADERS)],
                );
                match req.parse(data) {
                    Ok(httparse::Status::Partial) => {
                        if data.len() > self.max_head {
                            // The parser refuses this head itself (431).
                            return Err("request_head_too_large");
                        }
                        if before == 0 {
                            buf.extend_from_slice(bytes);
                        }
                        Ok(bytes.len())
                    }
                    Ok(httparse::Status::Complete(head_len)) => {
                        let next = body_state(req.headers)?;
                        self.state = next;
                        Ok(head_len - before)
                    }
                    Err(httparse::Error::TooManyHeaders) => Err("too_many_headers"),
                    Err(_) => Err("malformed_request"),
                }
            }
            ScanState::Fixed(left) => {
                let n = (*left).min(bytes.len() as u64);
                *left -= n;
                if *left == 0 {
                    self.state = ScanState::Head(Vec::new());
                }
                Ok(n as usize)
            }
            ScanState::ChunkSize(line) => {
                let (used, done) = take_line(line, bytes)?;
                if done {
                    let size = match httparse::parse_chunk_size(line) {
                        Ok(httparse::Status::Complete((_, size))) => size,
                        _ => return Err("malformed_chunk"),
                    };
                    self.state = if size == 0 {
                        ScanState::Trailer(Vec::new())
                    } else {
                        ScanState::ChunkData(size)
                    };
                }
                Ok(used)
            }
            ScanState::ChunkData(left) => {
                let n = (*left).min(bytes.len() as u64);
                *left -= n;
                if *left == 0 {
                    self.state = ScanState::ChunkEnd(0);
                }
                Ok(n as usize)
            }
            ScanState::ChunkEnd(seen) => {
                let expected = if *seen == 0 { b'\r' } else { b'\n' };
                if bytes[0] != expected {
                    return Err("malformed_chunk");
                }
                if *seen == 0 {
                    *seen = 1;
                } else {
                    self.state = ScanState::ChunkSize(Vec::new());
                }
                Ok(1)
            }
            ScanState::Trailer(line) => {
                let (used, done) = take_line(line, bytes)?;
                if done {
                    if line.as_slice() == b"\r\n" || line.as_slice() == b"\n" {
                        self.state = ScanState::Head(Vec::new());
                    } else {
                        line.clear();
                    }
                }
                Ok(used)
            }
        }
    }
}

/// Appends bytes up to and including the next `\n` to `line`.
fn take_line(line: &mut Vec<u8>, bytes: &[u8]) -> Result<(usize, bool), &'static str> {
    let (used, done) = match bytes.iter().position(|&b| b == b'\n') {
        Some(i) => (i + 1, true),
        None => (bytes.len(), false),
    };
    line.extend_from_slice(&bytes[..used]);
    if line.len() > MAX_LINE {
        return Err("malformed_chunk");
    }
    Ok((used, done))
}

/// The body framing a request head announces, refusing ambiguity.
fn body_state(headers: &[httparse::Header<'_>]) -> Result<ScanState, &'static str> {
    let mut lengths = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"));
    let mut codings = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    let length = lengths.next();
    let coding = codings.next();
    if lengths.next().is_some() {
        return Err("duplicate_content_length");
    }
    match (length, coding) {
        (Some(_), Some(_)) => Err("content_length_with_transfer_encoding"),
        (None, Some(te)) => {
            let single_chunked = codings.next().is_none()
                && std::str::from_utf8(te.value)
                    .map(|v| v.trim().eq_ignore_ascii_case("chunked"))
                    .unwrap_or(false);
            if single_chunked {
                Ok(ScanState::ChunkSize(Vec::new()))
            } else {
                Err("unsupported_transfer_encoding")
            }
        }
        (Some(cl), None) => {
            let text = std::str::from_utf8(cl.value).map_err(|_| "invalid_content_length")?;
            let n: u64 = text.trim().parse().map_err(|_| "invalid_content_length")?;
            if !text.trim().bytes().all(|b| b.is_ascii_digit()) {
                return Err("invalid_content_length");
            }
            Ok(if n == 0 {
                ScanState::Head(Vec::new())
            } else {
                ScanState::Fixed(n)
            })
        }
        (None, None) => Ok(ScanState::Head(Vec::new())),
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

    fn scan(input: &[u8]) -> Result<(), &'static str> {
        let mut s = H1Scanner::new(16 * 1024, 100);
        s.feed(input)
    }

    #[test]
    fn scanner_accepts_well_framed_pipelines() {
        let pipeline = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello\
GET /b HTTP/1.1\r\nHost: h\r\n\r\n\
POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n\
GET /d HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(scan(pipeline), Ok(()));
        // The same bytes, one at a time.
        let mut s = H1Scanner::new(16 * 1024, 100);
        for b in pipeline.iter() {
            assert_eq!(s.feed(std::slice::from_ref(b)), Ok(()));
        }
    }

    #[test]
    fn scanner_finds_what_the_parser_would_repair() {
        let cases: &[(&[u8], &str)] = &[
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", "content_length_with_transfer_encoding"),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n", "content_length_with_transfer_encoding"),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab", "duplicate_content_length"),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "unsupported_transfer_encoding"),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "unsupported_transfer_encoding"),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n", "invalid_content_length"),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed_chunk"),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX", "malformed_chunk"),
        ];
        for (input, reason) in cases {
            assert_eq!(
                scan(input),
                Err(*reason),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        // A smuggled second request hidden in a first one's body is seen as
        // its own head once the declared body ends.
        let smuggle = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\nGET /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(scan(smuggle), Err("duplicate_content_length"));
    }

    #[test]
    fn scanner_knows_when_a_head_is_partly_in() {
        let mut s = H1Scanner::new(16 * 1024, 100);
        assert!(!s.in_head(), "nothing sent yet");
        s.feed(b"POST / HTTP/1.1\r\nHost: h\r\n").expect("scan");
        assert!(s.in_head());
        s.feed(b"Content-Length: 3\r\n\r\nab").expect("scan");
        assert!(!s.in_head(), "in the body");
        s.feed(b"cGE").expect("scan");
        assert!(s.in_head(), "the next head began");
        s.feed(b"T / HTTP/1.1\r\nHost: h\r\n\r\n").expect("scan");
        assert!(!s.in_head(), "between requests");
    }

    #[test]
    fn scanner_stops_after_the_first_violation() {
        let mut s = H1Scanner::new(16 * 1024, 100);
        assert!(s
            .feed(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n")
            .is_err());
        assert_eq!(s.feed(b"anything at all"), Ok(()));
    }
}
