//! The egress client: mdgate dialling a peer's federation listener.
//!
//! A connection to peer `F` is made by [`Connector`]:
//!
//! 1. locate `F`'s federation listener through DNS (its A/AAAA records and
//!    the `fp=` port of its `_mdgate` index);
//! 2. connect over TCP (with the connect timeout), then TLS presenting our
//!    federation certificate; the handshake verifier requires the peer's
//!    certificate to name exactly `F` and to prove possession of its key;
//! 3. before any request, the [`PeerGate`] admits the peer: deny/allow
//!    lists, then its key against `F`'s DNS-published keys (or the CA/pins
//!    the admin configured).
//!
//! Connections are pooled per peer by hyper-util's client, so steps 1-3
//! happen once per connection, not per request. The peer's identity rides
//! along in each response's extensions ([`PeerId`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::dns::{DnsError, KeyResolver};
use crate::tls::{self, CertReloader, PeerGate, PeerId, TlsError};

/// Why an egress request failed. Clonable (I/O errors are kept as text),
/// because the connection pool hands the connector's error back wrapped.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EgressError {
    #[error("{fqdn} is not a valid server name")]
    InvalidName { fqdn: String },
    #[error("locating {fqdn}: {source}")]
    Locate { fqdn: String, source: DnsError },
    #[error("connecting to {fqdn}: {detail}")]
    Connect { fqdn: String, detail: String },
    #[error("connecting to {fqdn}: timed out")]
    ConnectTimeout { fqdn: String },
    #[error("TLS with {fqdn} failed ({reason}): {detail}")]
    Handshake {
        fqdn: String,
        reason: &'static str,
        detail: String,
    },
    #[error("{fqdn} refused: {reason}")]
    Refused { fqdn: String, reason: &'static str },
    #[error("no answer from {fqdn} within {timeout:?}")]
    Timeout { fqdn: String, timeout: Duration },
    #[error("exchange with {fqdn} failed: {detail}")]
    Exchange { fqdn: String, detail: String },
}

impl EgressError {
    /// A stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            EgressError::InvalidName { .. } => "invalid_name",
            EgressError::Locate { source, .. } => source.reason(),
            EgressError::Connect { .. } => "connect",
            EgressError::ConnectTimeout { .. } => "connect_timeout",
            EgressError::Handshake { reason, .. } => reason,
            EgressError::Refused { reason, .. } => reason,
            EgressError::Timeout { .. } => "timeout",
            EgressError::Exchange { .. } => "exchange",
        }
    }
}

/// A TLS connection to an admitted peer.
pub struct PeerStream {
    io: TokioIo<TlsStream<TcpStream>>,
    peer: PeerId,
}

impl Connection for PeerStream {
    fn connected(&self) -> Connected {
        Connected::new().extra(self.peer.clone())
    }
}

impl hyper::rt::Read for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Makes admitted TLS connections to peers (a hyper-util connector).
#[derive(Clone)]
pub struct Connector {
    resolver: Arc<KeyResolver>,
    tls: tokio_rustls::TlsConnector,
    gate: Arc<PeerGate>,
    connect_timeout: Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = PeerStream;
    type Error = EgressError;
    type Future = Pin<Box<dyn Future<Output = Result<PeerStream, EgressError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), EgressError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(uri).await })
    }
}

impl Connector {
    async fn connect(&self, uri: Uri) -> Result<PeerStream, EgressError> {
        let fqdn = uri.host().unwrap_or_default().to_ascii_lowercase();
        let name = tls::normalize_fqdn(&fqdn)
            .ok()
            .and_then(|n| ServerName::try_from(n).ok())
            .ok_or_else(|| EgressError::InvalidName { fqdn: fqdn.clone() })?;
        let addrs = self
            .resolver
            .locate(&fqdn)
            .await
            .map_err(|source| EgressError::Locate {
                fqdn: fqdn.clone(),
                source,
            })?;
        let tcp = self.tcp(&fqdn, &addrs).await?;
        let stream =
            self.tls
                .connect(name.clone(), tcp)
                .await
                .map_err(|e| EgressError::Handshake {
                    fqdn: fqdn.clone(),
                    reason: tls::handshake_failure_reason(&e),
                    detail: e.to_string(),
                })?;
        let session = stream.get_ref().1;
        let chain = session.peer_certificates().unwrap_or(&[]);
        let refused = |reason| EgressError::Refused {
            fqdn: fqdn.clone(),
            reason,
        };
        let peer = self
            .gate
            .identify(
                chain,
                session.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
                Some(&name),
            )
            .map_err(|(reason, _)| refused(reason))?;
        self.gate
            .admit(&peer, chain, Some(&name))
            .await
            .map_err(refused)?;
        Ok(PeerStream {
            io: TokioIo::new(stream),
            peer,
        })
    }

    async fn tcp(&self, fqdn: &str, addrs: &[SocketAddr]) -> Result<TcpStream, EgressError> {
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Ok(Err(e)) => last = Some(e),
                Err(_) => {
                    last = Some(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
                }
            }
        }
        match last {
            Some(e) if e.kind() == io::ErrorKind::TimedOut => Err(EgressError::ConnectTimeout {
                fqdn: fqdn.to_owned(),
            }),
            Some(e) => Err(EgressError::Connect {
                fqdn: fqdn.to_owned(),
                detail: e.to_string(),
            }),
            None => Err(EgressError::Locate {
                fqdn: fqdn.to_owned(),
                source: DnsError::NoRecord {
                    name: fqdn.to_owned(),
                    what: "no address",
                },
            }),
        }
    }
}

/// The pooled client for requests to peers.
pub struct Egress {
    client: Client<Connector, Full<Bytes>>,
    response_timeout: Duration,
}

/// A peer's answer: the response and who answered.
pub struct PeerResponse {
    pub peer: Option<PeerId>,
    pub response: Response<Incoming>,
}

impl Egress {
    /// An egress client presenting `certs` and admitting peers by `gate`.
    pub fn new(
        certs: Arc<CertReloader>,
        gate: Arc<PeerGate>,
        resolver: Arc<KeyResolver>,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<Self, TlsError> {
        let config = tls::client_config(certs, gate.verifier())?;
        // The pool speaks HTTP/1.1; offer only that.
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = Connector {
            resolver,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            gate,
            connect_timeout,
        };
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(8)
            .build(connector);
        Ok(Egress {
            client,
            response_timeout,
        })
    }

    /// Sends `method path` to peer `fqdn` with an optional JSON body.
    pub async fn send(
        &self,
        fqdn: &str,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<PeerResponse, EgressError> {
        self.send_with(fqdn, method, path, http::HeaderMap::new(), body)
            .await
    }

    /// [`Egress::send`] with extra request headers (e.g. the grant token).
    pub async fn send_with(
        &self,
        fqdn: &str,
        method: Method,
        path: &str,
        headers: http::HeaderMap,
        body: Option<Bytes>,
    ) -> Result<PeerResponse, EgressError> {
        let uri: Uri =
            format!("https://{fqdn}{path}")
                .parse()
                .map_err(|_| EgressError::InvalidName {
                    fqdn: fqdn.to_owned(),
                })?;
        let mut req = Request::builder().method(method).uri(uri);
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        if let Some(h) = req.headers_mut() {
            h.extend(headers);
        }
        let req =
            req.body(Full::new(body.unwrap_or_default()))
                .map_err(|e| EgressError::Exchange {
                    fqdn: fqdn.to_owned(),
                    detail: e.to_string(),
                })?;
        let response =
            match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
                Err(_) => {
                    return Err(EgressError::Timeout {
                        fqdn: fqdn.to_owned(),
                        timeout: self.response_timeout,
                    })
                }
                Ok(Err(e)) => return Err(unwrap_connect_error(fqdn, e)),
                Ok(Ok(r)) => r,
            };
        Ok(PeerResponse {
            peer: response.extensions().get::<PeerId>().cloned(),
            response,
        })
    }
}

/// The connector's own error when that is what failed, else the exchange.
fn unwrap_connect_error(fqdn: &str, e: hyper_util::client::legacy::Error) -> EgressError {
    use std::error::Error as _;
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(inner) = s.downcast_ref::<EgressError>() {
            return inner.clone();
        }
        source = s.source();
    }
    EgressError::Exchange {
        fqdn: fqdn.to_owned(),
        detail: format!("{e:?}"),
    }
}
