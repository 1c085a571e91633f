//! Pass-through forwarding to the upstream for the server's own users.
//!
//! One request goes through named phases:
//!
//! 1. **filter**: framing (smuggling defences), target, host, SNI, size;
//! 2. **rewrite**: strip hop-by-hop and reserved headers, set the
//!    forwarding headers and the request id, point the URI at the upstream;
//! 3. **exchange**: send with the response timeout, streaming the body;
//! 4. **response filter**: strip hop-by-hop, add `Secure` to cookies on
//!    TLS, echo the request id;
//! 5. **account**: metrics (and, for errors, one log line with the detail).
//!
//! Errors end as a [`RequestError`], whose mapping to status and JSON body
//! lives in one place (`crate::error`). Bodies are streamed both ways; the
//! only bodies held whole are mdgate's own small error bodies.

pub mod body;
pub mod framing;
pub mod headers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rand::Rng;
use tokio::time::Instant;

use crate::admin::Metrics;
use crate::config;
use crate::error::RequestError;
use body::{LimitedBody, ProxyBody};

pub use body::BoxError;

/// What is known about a client connection, computed once when it opens.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The listener's name in metrics and logs (`public`, `federation`).
    pub listener: &'static str,
    pub client: SocketAddr,
    /// Whether the connection is TLS (then `Secure` cookies, `https`).
    pub tls: bool,
    /// The TLS server name the client sent, lower case.
    pub sni: Option<Arc<str>>,
    /// The authenticated peer server on the federation listener.
    pub peer: Option<crate::tls::PeerId>,
    /// Set once when the raw byte stream showed ambiguous HTTP/1 framing
    /// (see [`framing::H1Scanner`]); every request on the connection is
    /// then refused.
    pub framing_violation: std::sync::OnceLock<&'static str>,
}

impl ConnInfo {
    /// The refusal owed to every request on a connection whose framing was
    /// found ambiguous.
    pub fn check_framing(&self) -> Result<(), RequestError> {
        match self.framing_violation.get() {
            Some(reason) => Err(RequestError::BadRequest(reason)),
            None => Ok(()),
        }
    }
}

/// The pooled HTTP/1.1 client to the upstream.
pub type UpstreamClient = Client<HttpConnector, LimitedBody>;

/// Builds a pooled upstream client with the configured timeouts, for any
/// request body type (streamed client bodies, or mdgate's own small ones).
pub fn upstream_client<B>(cfg: &config::Upstream) -> Client<HttpConnector, B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(cfg.connect_timeout));
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(cfg.pool_idle_timeout)
        .pool_max_idle_per_host(cfg.pool_max_idle)
        .http1_preserve_header_case(false)
        .build(connector)
}

/// The path of this server's signed key document (docs/protocol.md).
pub const KEY_DOCUMENT_PATH: &str = "/.well-known/mdgate/keys";

/// The current signed key document, re-signed in the background.
pub type KeyDocumentCell = std::sync::RwLock<Option<Bytes>>;

/// The pass-through proxy of one worker.
pub struct Proxy {
    client: UpstreamClient,
    key_document: Option<Arc<KeyDocumentCell>>,
    /// The patients' and doctors' pages (shared by every worker: the
    /// sessions live in it); `None` without the access flow.
    web: Option<Arc<crate::web::Web>>,
    authority: Authority,
    connect_timeout: Duration,
    response_timeout: Duration,
    max_body: u64,
    metrics: Arc<Metrics>,
}

/// A request id: 128 random bits in hex (unique across restarts and workers).
pub fn new_request_id() -> HeaderValue {
    let id: u128 = rand::thread_rng().gen();
    let text = format!("{id:032x}");
    // 32 ASCII hex digits are always a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The route class of a public-listener path, a small fixed label set.
pub fn route_class(path: &str) -> &'static str {
    if path == "/api/login" || path == "/api/login/" {
        "login"
    } else if path.starts_with("/api/") {
        "api"
    } else if path.starts_with("/static/") || path.starts_with("/webjars/") {
        "static"
    } else if path == "/federation"
        || path.starts_with("/federation/")
        || path.starts_with("/.well-known/")
    {
        "federation_ui"
    } else {
        "page"
    }
}

/// The response for an error, with the JSON body and the request id header.
pub fn error_response(err: &RequestError, request_id: &HeaderValue) -> Response<ProxyBody> {
    let rid = request_id.to_str().unwrap_or("");
    let (status, hdrs, body) = err.to_response_parts(rid);
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    for (k, v) in hdrs {
        resp.headers_mut().insert(k, v);
    }
    resp.headers_mut()
        .insert(headers::REQUEST_ID.clone(), request_id.clone());
    resp
}

impl Proxy {
    pub fn new(
        upstream: &config::Upstream,
        limits: &config::Limits,
        metrics: Arc<Metrics>,
        key_document: Option<Arc<KeyDocumentCell>>,
        web: Option<Arc<crate::web::Web>>,
    ) -> Self {
        Proxy {
            client: upstream_client(upstream),
            key_document,
            web,
            authority: upstream.authority.clone(),
            connect_timeout: upstream.connect_timeout,
            response_timeout: upstream.response_timeout,
            max_body: limits.max_body_bytes,
            metrics,
        }
    }

    /// Serves one request of the public listener, whatever happens.
    pub async fn handle(&self, conn: &ConnInfo, req: Request<Incoming>) -> Response<ProxyBody> {
        let start = Instant::now();
        let request_id = new_request_id();
        let class = route_class(req.uri().path());
        let method = req.method().clone();
        // One span per request; its fields are set once, before forwarding.
        let span = tracing::debug_span!(
            "request",
            request.id = request_id.to_str().unwrap_or(""),
            http.method = %method,
            route = class,
        );
        let forwarded =
            tracing::Instrument::instrument(self.forward(conn, req, &request_id), span).await;
        let resp = match forwarded {
            Ok(resp) => resp,
            Err(err) => {
                let rid = request_id.to_str().unwrap_or("");
                match err.side() {
                    crate::error::Side::Client => {
                        self.metrics.rejected(conn.listener, err.reason());
                        tracing::info!(request.id = rid, http.method = %method, route = class, reason = err.reason(), "request refused: {err}");
                    }
                    _ => {
                        tracing::warn!(request.id = rid, http.method = %method, route = class, "request failed: {err}")
                    }
                }
                error_response(&err, &request_id)
            }
        };
        self.metrics.request(
            conn.listener,
            class,
            resp.status().as_u16(),
            start.elapsed().as_secs_f64(),
        );
        resp
    }

    async fn forward(
        &self,
        conn: &ConnInfo,
        req: Request<Incoming>,
        request_id: &HeaderValue,
    ) -> Result<Response<ProxyBody>, RequestError> {
        // Filter.
        conn.check_framing()?;
        framing::check_target(req.method(), req.uri())?;
        if req.version() != Version::HTTP_2 {
            framing::check_framing(req.version(), req.headers())?;
        }
        let host = framing::request_host(req.version(), req.uri(), req.headers())?.to_owned();
        if conn.tls {
            framing::check_sni(conn.sni.as_deref(), &host)?;
        }
        if req.uri().path() == KEY_DOCUMENT_PATH {
            return self.key_document(req.method());
        }
        // mdgate's own pages: never passed to access.md, even when this
        // server has no access flow.
        if crate::web::Web::serves(req.uri().path()) {
            return match &self.web {
                Some(web) => Ok(web.handle(conn, req).await),
                None => Err(RequestError::NotFound),
            };
        }
        if let Some(len) = content_length(req.headers())? {
            if len > self.max_body {
                return Err(RequestError::BodyTooLarge {
                    limit: self.max_body,
                });
            }
        }

        // Rewrite.
        let (mut parts, body) = req.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::strip_reserved(&mut parts.headers);
        headers::set_forwarding(
            &mut parts.headers,
            &headers::Forwarding {
                client: conn.client,
                proto: if conn.tls { "https" } else { "http" },
                host: &host,
                request_id,
            },
        );
        if !parts.headers.contains_key(header::HOST) && !host.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&host) {
                parts.headers.insert(header::HOST, v);
            }
        }
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = upstream_uri(&self.authority, path)?;
        parts.version = Version::HTTP_11;
        let upstream_req = Request::from_parts(parts, LimitedBody::new(body, self.max_body));

        // Exchange.
        let resp =
            match tokio::time::timeout(self.response_timeout, self.client.request(upstream_req))
                .await
            {
                Err(_) => {
                    self.metrics.upstream_error("response_timeout");
                    return Err(RequestError::UpstreamTimeout(self.response_timeout));
                }
                Ok(Err(e)) => return Err(self.classify(e)),
                Ok(Ok(resp)) => resp,
            };

        // Response filter.
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        if conn.tls {
            headers::secure_cookies(&mut parts.headers);
        }
        parts
            .headers
            .insert(headers::REQUEST_ID.clone(), request_id.clone());
        Ok(Response::from_parts(parts, ProxyBody::Upstream(body)))
    }

    /// `GET /.well-known/mdgate/keys`: answered here, never forwarded.
    fn key_document(&self, method: &http::Method) -> Result<Response<ProxyBody>, RequestError> {
        if method != http::Method::GET && method != http::Method::HEAD {
            return Err(RequestError::MethodNotAllowed);
        }
        let doc = self
            .key_document
            .as_ref()
            .and_then(|cell| cell.read().ok().and_then(|d| d.clone()))
            .ok_or(RequestError::NotFound)?;
        let body = if method == http::Method::HEAD {
            ProxyBody::empty()
        } else {
            ProxyBody::full(doc)
        };
        let mut resp = Response::new(body);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/jose"),
        );
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=3600"),
        );
        Ok(resp)
    }

    fn classify(&self, e: hyper_util::client::legacy::Error) -> RequestError {
        if let Some(limit) = body::caused_by_body_limit(&e) {
            return RequestError::BodyTooLarge { limit };
        }
        if e.is_connect() {
            if body::caused_by_timeout(&e) {
                self.metrics.upstream_error("connect_timeout");
                return RequestError::UpstreamTimeout(self.connect_timeout);
            }
            self.metrics.upstream_error("connect");
            return RequestError::UpstreamUnavailable(format!("{e:?}"));
        }
        self.metrics.upstream_error("exchange");
        RequestError::UpstreamUnavailable(format!("{e:?}"))
    }
}

/// The declared body length, refusing a malformed value.
fn content_length(h: &http::HeaderMap) -> Result<Option<u64>, RequestError> {
    match h.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or(RequestError::BadRequest("invalid_content_length")),
    }
}

fn upstream_uri(authority: &Authority, path: PathAndQuery) -> Result<Uri, RequestError> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority.clone());
    parts.path_and_query = Some(path);
    Uri::from_parts(parts).map_err(|e| RequestError::Internal(format!("upstream uri: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_classes() {
        assert_eq!(route_class("/api/login"), "login");
        assert_eq!(route_class("/api/doctor/patient/5"), "api");
        assert_eq!(route_class("/static/js/app.js"), "static");
        assert_eq!(route_class("/dashboard"), "page");
        assert_eq!(route_class("/federation/"), "federation_ui");
    }

    #[test]
    fn request_ids_are_unique_hex() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.to_str().unwrap().bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
