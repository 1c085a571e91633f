//! The server-to-server listener: `/federation/v1/...` over mutual TLS.
//!
//! Every connection reaching a handler here has already been authenticated
//! (the peer's certificate was verified during the handshake and its single
//! DNS name extracted, see `crate::tls`). This listener never forwards
//! anything to the upstream on its own: a path outside `/federation/v1/`
//! is answered 404 here.

pub mod access;
pub mod egress;
pub mod outbox;
pub mod transfer;

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;
use uuid::Uuid;

use access::wire;
use access::{Access, PeerError};

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
    /// The access flow; absent when this server has no `[keys]`.
    access: Option<Access>,
}

/// What a route produced.
enum Outcome {
    Response(Response<ProxyBody>),
    Refused(RequestError),
    Peer(PeerError),
}

fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<ProxyBody> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(ProxyBody::full(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

impl Federation {
    pub fn new(fqdn: &str, metrics: Arc<Metrics>, access: Option<Access>) -> Self {
        Federation {
            fqdn: Arc::from(fqdn),
            metrics,
            access,
        }
    }

    /// Serves one request from an authenticated peer.
    pub async fn handle(&self, conn: &ConnInfo, req: Request<Incoming>) -> Response<ProxyBody> {
        let start = Instant::now();
        let request_id = new_request_id();
        let (class, outcome) = self.route(conn, req).await;
        let peer = conn.peer.as_ref().map(|p| p.fqdn()).unwrap_or("-");
        let resp = match outcome {
            Outcome::Response(resp) => resp,
            Outcome::Refused(err) => {
                self.metrics.rejected(conn.listener, err.reason());
                tracing::info!(
                    request.id = request_id.to_str().unwrap_or(""),
                    peer.fqdn = peer,
                    reason = err.reason(),
                    "federation request refused: {err}"
                );
                error_response(&err, &request_id)
            }
            Outcome::Peer(err) => {
                self.metrics.rejected(conn.listener, err.reason);
                tracing::info!(
                    request.id = request_id.to_str().unwrap_or(""),
                    peer.fqdn = peer,
                    route = class,
                    reason = err.reason,
                    "federation request refused"
                );
                let mut resp = json_response(err.status, &err.body());
                resp.headers_mut().insert("x-request-id", request_id);
                resp
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

    async fn route(&self, conn: &ConnInfo, req: Request<Incoming>) -> (&'static str, Outcome) {
        if let Err(e) = conn.check_framing() {
            return ("framing", Outcome::Refused(e));
        }
        let path = req.uri().path();
        let Some(rest) = path.strip_prefix(PREFIX) else {
            return ("outside", Outcome::Refused(RequestError::NotFound));
        };
        if rest == "identity" {
            if req.method() != Method::GET && req.method() != Method::HEAD {
                return ("identity", Outcome::Refused(RequestError::MethodNotAllowed));
            }
            return ("identity", Outcome::Response(self.identity(conn)));
        }
        let (Some(access), Some(peer)) = (&self.access, conn.peer.as_ref()) else {
            return ("unknown", Outcome::Refused(RequestError::NotFound));
        };
        let method = req.method().clone();
        let rest = rest.to_owned();
        let (class, result) = match (method, rest.as_str()) {
            (_, r) if r.starts_with("records/") => {
                let result =
                    access::peer::data(access, peer, req)
                        .await
                        .map(|(status, ct, body)| {
                            let mut resp = Response::new(ProxyBody::full(body));
                            *resp.status_mut() = status;
                            if let Some(ct) = ct {
                                resp.headers_mut().insert(header::CONTENT_TYPE, ct);
                            }
                            resp.headers_mut().insert(
                                header::CACHE_CONTROL,
                                HeaderValue::from_static("no-store"),
                            );
                            resp
                        });
                ("records", result)
            }
            (Method::POST, wire::ACCESS_REQUESTS) => {
                let result = match access::peer::read_json(req.into_body()).await {
                    Ok(msg) => access::peer::accept_request(access, peer, msg)
                        .await
                        .map(|(status, body)| json_response(status, &body)),
                    Err(e) => Err(e),
                };
                ("access_request", result)
            }
            (Method::GET, r) if r.starts_with("access-requests/") => {
                let id = r["access-requests/".len()..].parse::<Uuid>();
                let result = match id {
                    Ok(id) => access::peer::request_status(access, peer, id)
                        .await
                        .map(|body| json_response(StatusCode::OK, &body)),
                    Err(_) => Err(PeerError::new(StatusCode::NOT_FOUND, "unknown_request")),
                };
                ("access_status", result)
            }
            (Method::POST, wire::DECISIONS) => {
                let result = match access::peer::read_json(req.into_body()).await {
                    Ok(msg) => access::peer::accept_decision(access, peer, msg)
                        .await
                        .map(|()| json_response(StatusCode::OK, &serde_json::json!({"ok": true}))),
                    Err(e) => Err(e),
                };
                ("decision", result)
            }
            (Method::POST, wire::REVOCATIONS) => {
                let result = match access::peer::read_json(req.into_body()).await {
                    Ok(msg) => access::peer::accept_revocation(access, peer, msg)
                        .await
                        .map(|()| json_response(StatusCode::OK, &serde_json::json!({"ok": true}))),
                    Err(e) => Err(e),
                };
                ("revocation", result)
            }
            (method, r) if r.starts_with("transfers/") => {
                let result = self
                    .transfer(access, peer, method, &r["transfers/".len()..], req)
                    .await;
                ("transfer", result)
            }
            (_, wire::ACCESS_REQUESTS | wire::DECISIONS | wire::REVOCATIONS) => {
                return ("unknown", Outcome::Refused(RequestError::MethodNotAllowed));
            }
            _ => return ("unknown", Outcome::Refused(RequestError::NotFound)),
        };
        match result {
            Ok(resp) => (class, Outcome::Response(resp)),
            Err(e) => (class, Outcome::Peer(e)),
        }
    }

    /// `transfers/{id}`, `transfers/{id}/ciphertext`,
    /// `transfers/{id}/confirmation`.
    async fn transfer(
        &self,
        access: &Access,
        peer: &crate::tls::PeerId,
        method: Method,
        rest: &str,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, PeerError> {
        use transfer::peer as tp;
        let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let id = id
            .parse::<Uuid>()
            .map_err(|_| PeerError::new(StatusCode::NOT_FOUND, "unknown_transfer"))?;
        let ok = |body: &transfer::wire::ReceiptMsg| json_response(StatusCode::OK, body);
        match (method, tail) {
            (Method::GET, "") => tp::status(access, peer, id).await.map(|r| ok(&r)),
            (Method::PUT, "ciphertext") => {
                let headers = req.headers().clone();
                let body =
                    access::peer::read_limited(req.into_body(), transfer::wire::PIECE).await?;
                tp::piece(access, peer, id, &headers, body)
                    .await
                    .map(|r| ok(&r))
            }
            (Method::POST, "confirmation") => {
                let msg = access::peer::read_json(req.into_body()).await?;
                tp::confirmation(access, peer, id, msg)
                    .await
                    .map(|()| json_response(StatusCode::OK, &serde_json::json!({"ok": true})))
            }
            (_, "" | "ciphertext" | "confirmation") => Err(PeerError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
            )),
            _ => Err(PeerError::new(StatusCode::NOT_FOUND, "unknown_route")),
        }
    }

    /// `GET /federation/v1/identity`: who this server is and who it sees.
    fn identity(&self, conn: &ConnInfo) -> Response<ProxyBody> {
        let body = serde_json::json!({
            "server": &*self.fqdn,
            "peer": conn.peer.as_ref().map(|p| p.fqdn().to_owned()),
        });
        json_response(StatusCode::OK, &body)
    }
}
