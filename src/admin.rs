//! The admin listener: `/live`, `/ready` and `/metrics`; and the admin
//! commands: `keygen`, `dns-records` (with `--check`) and `check-peer`,
//! whose reports share [`checks`].
//!
//! The listener binds to loopback by default and serves plain HTTP/1.1. Readiness is a
//! set of flags that the serving loop updates (store open, upstream answered,
//! not draining); this module only reads them, so it needs no access to the
//! store or the upstream itself.

pub mod checkpeer;
pub mod checks;
pub mod dnsrecords;
pub mod keygen;
pub mod metrics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use metrics::Metrics;

/// What `/ready` reports. Each flag is written by the part that owns it.
#[derive(Debug, Default)]
pub struct Readiness {
    pub store_open: AtomicBool,
    pub upstream_ok: AtomicBool,
    pub draining: AtomicBool,
}

impl Readiness {
    /// Ready means: the store is open, the upstream answered its last probe,
    /// and the process is not shutting down.
    pub fn is_ready(&self) -> bool {
        self.store_open.load(Ordering::Acquire)
            && self.upstream_ok.load(Ordering::Acquire)
            && !self.draining.load(Ordering::Acquire)
    }

    fn report(&self) -> String {
        serde_json::json!({
            "ready": self.is_ready(),
            "store_open": self.store_open.load(Ordering::Acquire),
            "upstream_ok": self.upstream_ok.load(Ordering::Acquire),
            "draining": self.draining.load(Ordering::Acquire),
        })
        .to_string()
    }
}

/// Shared state of the admin listener.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Answers one admin request.
pub fn handle(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "application/json",
            r#"{"error":"method_not_allowed"}"#.into(),
        );
    }
    match req.uri().path() {
        "/live" => respond(
            StatusCode::OK,
            "application/json",
            r#"{"live":true}"#.into(),
        ),
        "/ready" => {
            let status = if state.readiness.is_ready() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            respond(status, "application/json", state.readiness.report())
        }
        "/metrics" => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.encode(),
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            "application/json",
            r#"{"error":"not_found"}"#.into(),
        ),
    }
}

/// Serves the admin listener until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
            _ = crate::serve::stopped(&mut shutdown) => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let resp = handle(&state, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5));
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!(client.addr = %peer, error = %e, "admin connection ended with an error");
            }
        });
    }
}

/// Binds the admin listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
