//! Purpose-built upstreams for proxy properties the access.md emulator
//! cannot show: a server that never answers, and one whose bodies arrive
//! in steps the test controls (to prove streaming without buffering).
//! They stand in for no access.md behaviour.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Channel, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Mutex};

/// Accepts TCP connections and never answers them.
pub async fn silent_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    addr
}

/// An address where nothing listens.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// A stepwise upstream.
///
/// * `GET /stream`: sends `first`, then waits for [`Stepper::release`]
///   before sending `rest` and ending the body.
/// * `POST /upload`: reports each received chunk's size on `chunks`, and
///   answers with the total length once the body ends.
pub struct Stepper {
    pub addr: SocketAddr,
    release: mpsc::Sender<()>,
    pub chunks: Mutex<mpsc::Receiver<usize>>,
}

impl Stepper {
    pub async fn start() -> Arc<Stepper> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (release_tx, release_rx) = mpsc::channel::<()>(4);
        let (chunk_tx, chunk_rx) = mpsc::channel::<usize>(1024);
        let release_rx = Arc::new(Mutex::new(release_rx));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let release_rx = release_rx.clone();
                let chunk_tx = chunk_tx.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let release_rx = release_rx.clone();
                        let chunk_tx = chunk_tx.clone();
                        async move { Ok::<_, Infallible>(answer(req, release_rx, chunk_tx).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Arc::new(Stepper {
            addr,
            release: release_tx,
            chunks: Mutex::new(chunk_rx),
        })
    }

    /// Lets a waiting `/stream` response finish.
    pub async fn release(&self) {
        self.release.send(()).await.unwrap();
    }
}

type StepBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    req: Request<Incoming>,
    release_rx: Arc<Mutex<mpsc::Receiver<()>>>,
    chunk_tx: mpsc::Sender<usize>,
) -> Response<StepBody> {
    match req.uri().path() {
        "/stream" => {
            let (mut tx, body) = Channel::<Bytes, Infallible>::new(4);
            tokio::spawn(async move {
                let _ = tx.send_data(Bytes::from_static(b"first;")).await;
                let _ = release_rx.lock().await.recv().await;
                let _ = tx.send_data(Bytes::from_static(b"rest")).await;
            });
            Response::new(body.boxed())
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut total = 0usize;
            while let Some(frame) = body.frame().await {
                let Ok(frame): Result<Frame<Bytes>, _> = frame else {
                    break;
                };
                if let Some(data) = frame.data_ref() {
                    total += data.len();
                    let _ = chunk_tx.send(data.len()).await;
                }
            }
            Response::new(Full::new(Bytes::from(total.to_string())).boxed())
        }
        _ => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"no")).boxed());
            *r.status_mut() = hyper::StatusCode::NOT_FOUND;
            r
        }
    }
}
