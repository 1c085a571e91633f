//! The emulator's control API, for tests that run it as a separate process.
//! It listens on loopback only and is not part of the emulated server.
//!
//! | request | effect |
//! |---|---|
//! | `POST /restart` | drop every session (a server restart); 204 |
//! | `GET /received` | the recorded requests as a JSON array |
//! | `DELETE /received` | forget them; 204 |
//! | `POST /clock/advance?seconds=N` | move the clock forward; 200 `{"now":<ms>}` |
//! | `POST /codes/expire` | run the code-expiry task now; 204 |

use std::convert::Infallible;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{routes, Shared};

/// Serves control requests until `stop` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let shared = Arc::clone(&shared);
                let service = service_fn(move |req| {
                    let shared = Arc::clone(&shared);
                    async move { Ok::<_, Infallible>(answer(&shared, &req)) }
                });
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = stop.changed() => break,
        }
    }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

fn answer(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let no_content = || reply(StatusCode::NO_CONTENT, "text/plain", Bytes::new());
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/restart") => {
            shared.sessions.clear();
            no_content()
        }
        (&Method::GET, "/received") => {
            let recorded = shared.recorder.as_ref().map_or_else(Vec::new, |r| {
                r.lock().unwrap_or_else(PoisonError::into_inner).clone()
            });
            match serde_json::to_vec(&recorded) {
                Ok(json) => reply(StatusCode::OK, "application/json", json),
                Err(_) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    Bytes::new(),
                ),
            }
        }
        (&Method::DELETE, "/received") => {
            if let Some(recorder) = &shared.recorder {
                recorder
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clear();
            }
            no_content()
        }
        (&Method::POST, "/clock/advance") => {
            let seconds = routes::parse_query(req.uri().query().unwrap_or(""))
                .ok()
                .and_then(|q| q.into_iter().find(|(k, _)| k == "seconds"))
                .and_then(|(_, v)| v.into_iter().next())
                .and_then(|v| v.parse::<u64>().ok());
            match seconds {
                Some(seconds) => {
                    shared.clock.advance(Duration::from_secs(seconds));
                    let now = shared.clock.now_ms();
                    reply(
                        StatusCode::OK,
                        "application/json",
                        format!("{{\"now\":{now}}}"),
                    )
                }
                None => reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "expected ?seconds=<non-negative integer>",
                ),
            }
        }
        (&Method::POST, "/codes/expire") => {
            super::run_sweep(shared);
            no_content()
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "unknown control request",
        ),
    }
}
