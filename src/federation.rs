//! The server-to-server listener: `/federation/v1/...` over mutual TLS.
//!
//! Every connection reaching a handler here has already been authenticated
//! (the peer's certificate was verified during the handshake and its single
//! DNS name extracted, see `crate::tls`). This listener never forwards
//! anything to the upstream on its own: a path outside `/federation/v1/`
//! is answered 404 here.

pub mod access;
pub mod egress;

use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::admin::Metrics;
use crate::error::RequestError;
use crate::proxy::body::ProxyBody;
use crate::proxy::{error_response, new_request_id, ConnInfo};

/// The versioned prefix of every federation route.
pub const PREFIX: &str = "/federation/v1/";

/// The federation API of this server.
pub struct Federation {
    fqdn: Arc<str>,
    metrics: Arc<Metrics>,
}

impl Federation {
    pub fn new(fqdn: &str, metrics: Arc<Metrics>) -> Self {
        Federation {
            fqdn: Arc::from(fqdn),
            metrics,
        }
    }

    /// Serves one request from an authenticated peer.
    pub async fn handle(&self, conn: &ConnInfo, req: Request<Incoming>) -> Response<ProxyBody> {
        let start = Instant::now();
        let request_id = new_request_id();
        let (class, result) = self.route(conn, &req);
        let resp = match result {
            Ok(resp) => resp,
            Err(err) => {
                self.metrics.rejected(conn.listener, err.reason());
                tracing::info!(
                    request.id = request_id.to_str().unwrap_or(""),
                    peer.fqdn = conn.peer.as_ref().map(|p| p.fqdn()).unwrap_or("-"),
                    reason = err.reason(),
                    "federation request refused: {err}"
                );
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

    fn route(
        &self,
        conn: &ConnInfo,
        req: &Request<Incoming>,
    ) -> (&'static str, Result<Response<ProxyBody>, RequestError>) {
        if let Err(e) = conn.check_framing() {
            return ("framing", Err(e));
        }
        let path = req.uri().path();
        let Some(rest) = path.strip_prefix(PREFIX) else {
            return ("outside", Err(RequestError::NotFound));
        };
        match rest {
            "identity" => {
                if req.method() != Method::GET && req.method() != Method::HEAD {
                    return ("identity", Err(RequestError::MethodNotAllowed));
                }
                ("identity", Ok(self.identity(conn)))
            }
            _ => ("unknown", Err(RequestError::NotFound)),
        }
    }

    /// `GET /federation/v1/identity`: who this server is and who it sees.
    fn identity(&self, conn: &ConnInfo) -> Response<ProxyBody> {
        let body = serde_json::json!({
            "server": &*self.fqdn,
            "peer": conn.peer.as_ref().map(|p| p.fqdn().to_owned()),
        });
        let mut resp = Response::new(ProxyBody::full(body.to_string()));
        *resp.status_mut() = StatusCode::OK;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}
