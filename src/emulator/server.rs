//! The HTTP/1.1 server around the emulated application: one hyper
//! connection task per accepted socket, Jetty/Javalin framing on the way out
//! (`Server: Javalin`, the session cookie with Jetty's `Expires` header,
//! gzip for bodies of 1500 bytes or more when the client accepts it).

use std::convert::Infallible;
use std::io::Write as _;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderValue, ACCEPT_ENCODING, CACHE_CONTROL, CONNECTION, CONTENT_ENCODING, CONTENT_TYPE,
    EXPIRES, SERVER, SET_COOKIE,
};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::api::{self, ContentType, Outcome};
use super::session::set_cookie_value;
use super::{RecordedRequest, Shared};

/// Bodies from this size on are compressed (Javalin's `minSizeForCompression`).
const MIN_GZIP_SIZE: usize = 1500;
/// Request bodies above this are refused; the real server has no limit, but
/// a test tool should not buffer unbounded input.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// How long shutdown waits for open connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

const JAVALIN: HeaderValue = HeaderValue::from_static("Javalin");
const EPOCH: HeaderValue = HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-cache, no-store, must-revalidate");
const GZIP: HeaderValue = HeaderValue::from_static("gzip");
/// What Jetty 9.4.31 (Javalin 3.11's) says about itself on its own errors.
const JETTY: HeaderValue = HeaderValue::from_static("Jetty(9.4.31.v20200723)");
const CLOSE: HeaderValue = HeaderValue::from_static("close");

/// Compresses like Javalin (`GZIPOutputStream`, level 6, OS byte 0).
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::GzBuilder::new().operating_system(0).write(
        Vec::with_capacity(data.len() / 3 + 32),
        flate2::Compression::new(6),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

/// Accepts connections until `stop` fires, then drains them.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = Arc::clone(&shared);
                    let service = service_fn(move |req| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, Infallible>(respond(&shared, req).await) }
                    });
                    let conn = http1::Builder::new()
                        .title_case_headers(true)
                        .serve_connection(TokioIo::new(stream), service);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(error) = conn.await {
                            tracing::debug!(client.addr = %peer, %error, "emulator connection ended");
                        }
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(%error, "emulator accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
}

/// Serves one request.
async fn respond(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE),
    };
    if let Some(recorder) = &shared.recorder {
        let record = RecordedRequest::new(&parts, body.len());
        recorder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }
    let request = api::Request {
        method: &parts.method,
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        body: &body,
    };
    let outcome = api::handle(shared, &request);
    let accepts_gzip = parts
        .headers
        .get(ACCEPT_ENCODING)
        .is_some_and(|v| contains_ignore_case(v.as_bytes(), b"gzip"));
    frame(outcome, accepts_gzip)
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Turns an outcome into a response with Jetty and Javalin's headers.
fn frame(outcome: Outcome, accepts_gzip: bool) -> Response<Full<Bytes>> {
    let compress = accepts_gzip && outcome.body.len() >= MIN_GZIP_SIZE;
    let body = match (compress, outcome.gzipped) {
        (false, _) => outcome.body,
        (true, Some(ready)) => ready,
        (true, None) => Bytes::from(gzip(&outcome.body)),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = outcome.status;
    let headers = response.headers_mut();
    if outcome.from_jetty {
        headers.insert(SERVER, JETTY);
        headers.insert(CONNECTION, CLOSE);
    } else {
        headers.insert(SERVER, JAVALIN);
    }
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(outcome.content_type.as_str()),
    );
    if let Some(id) = outcome.new_session {
        if let Ok(cookie) = HeaderValue::from_str(&set_cookie_value(&id)) {
            headers.insert(SET_COOKIE, cookie);
            headers.insert(EXPIRES, EPOCH);
        }
    }
    if outcome.no_store {
        headers.insert(CACHE_CONTROL, NO_STORE);
    }
    if compress {
        headers.insert(CONTENT_ENCODING, GZIP);
    }
    response
}

fn plain(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response.headers_mut().insert(SERVER, JAVALIN);
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(ContentType::Text.as_str()),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn gzip_round_trips_with_java_header() {
        let data = "x".repeat(4000);
        let packed = gzip(data.as_bytes());
        assert_eq!(&packed[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(packed[9], 0, "OS byte as Java writes it");
        let mut out = String::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn accept_encoding_is_case_insensitive() {
        assert!(contains_ignore_case(b"deflate, GZip;q=1", b"gzip"));
        assert!(!contains_ignore_case(b"br", b"gzip"));
    }
}
