//! The network side of `check-peer`: TCP to each address in turn, TLS
//! presenting our certificate (the peer's is judged afterwards), one
//! HTTP/1.1 `GET` read whole, and the key document over HTTPS with the
//! web's roots. Everything here reports what happened; the parent module
//! judges it.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{connect_failed, Check, KEYS_PATH, MAX_BODY};
use crate::config::{self, Config};
use crate::tls::{self, CertReloader};

/// Connects to the first address that answers; on failure, why each one
/// did not.
pub(super) async fn connect_any(
    addrs: &[std::net::IpAddr],
    port: u16,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), Vec<(SocketAddr, String)>> {
    let mut failures = Vec::new();
    for ip in addrs {
        let addr = SocketAddr::new(*ip, port);
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok((stream, addr)),
            Ok(Err(e)) => failures.push((addr, connect_error(&e))),
            Err(_) => failures.push((
                addr,
                format!(
                    "no answer within {} (a firewall drops the packets, or the address is wrong)",
                    config::format_duration(timeout)
                ),
            )),
        }
    }
    Err(failures)
}

pub(super) fn connect_error(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => {
            "connection refused (nothing listens on that port, or a firewall rejects it)".to_owned()
        }
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
            format!("unreachable from here ({e})")
        }
        _ => e.to_string(),
    }
}

/// Who we are to the peer: our FQDN and, when configured, the certificate
/// we present on egress (the federation listener's).
pub(super) struct Ours {
    pub(super) fqdn: String,
    pub(super) cert: Option<Result<Arc<CertReloader>, String>>,
}

pub(super) fn our_identity(config: &Config) -> Ours {
    Ours {
        fqdn: config.server.fqdn.clone(),
        cert: config.federation.as_ref().map(|fed| {
            CertReloader::new(fed.tls.clone())
                .map(Arc::new)
                .map_err(|e| e.to_string())
        }),
    }
}

/// The client config for the federation port: our certificate (if any),
/// the peer's taken as presented (judged later), HTTP/1.1.
pub(super) fn federation_tls(ours: &Ours) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Observe::new()));
    let mut config = match &ours.cert {
        Some(Ok(certs)) => builder.with_client_cert_resolver(certs.clone()),
        Some(Err(e)) => {
            return Err(format!(
                "cannot load this server's [federation.tls] certificate to present: {e} (run \
                 check-peer as the user mdgate runs as)"
            ))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

pub(super) type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

pub(super) async fn handshake(
    config: Arc<ClientConfig>,
    fqdn: &str,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<(TlsStream, Vec<CertificateDer<'static>>), HandshakeError> {
    let name =
        ServerName::try_from(fqdn.to_owned()).map_err(|e| HandshakeError::Other(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Err(_) => return Err(HandshakeError::Timeout),
        Ok(Err(e)) => return Err(HandshakeError::Io(e)),
        Ok(Ok(stream)) => stream,
    };
    let chain = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    Ok((stream, chain))
}

#[derive(Debug)]
pub(super) enum HandshakeError {
    Timeout,
    Io(std::io::Error),
    Other(String),
}

/// The TLS alert the peer sent, anywhere in an error's chain.
pub(super) fn tls_alert(error: &(dyn StdError + 'static)) -> Option<AlertDescription> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(rustls::Error::AlertReceived(alert)) = e.downcast_ref::<rustls::Error>() {
            return Some(*alert);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(found) = tls_alert(inner) {
                    return Some(found);
                }
            }
        }
        current = e.source();
    }
    None
}

/// Accepts the peer's certificate as presented (it is judged after the
/// handshake) but verifies the handshake signature, so the peer proves it
/// holds the certificate's key.
#[derive(Debug)]
pub(super) struct Observe {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl Observe {
    fn new() -> Observe {
        Observe {
            algorithms: tls::provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for Observe {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// An HTTP response, read whole.
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) date: Option<SystemTime>,
    pub(super) content_type: Option<String>,
    pub(super) body: Bytes,
    pub(super) received_at: SystemTime,
}

#[derive(Debug)]
pub(super) enum HttpError {
    Timeout,
    /// The connection ended without a response; the TLS alert if one came.
    Closed {
        alert: Option<AlertDescription>,
        detail: String,
    },
    Body(String),
}

pub(super) fn host_header(fqdn: &str, port: u16, default: u16) -> String {
    if port == default {
        fqdn.to_owned()
    } else {
        format!("{fqdn}:{port}")
    }
}

/// `GET path` on a connection (HTTP/1.1), response and body read whole.
pub(super) async fn http_get<S>(
    stream: S,
    host: &str,
    path: &str,
    timeout: Duration,
    clock: fn() -> SystemTime,
) -> Result<Reply, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| closed(&e, None))?;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = done_tx.send(conn.await);
        });
        let request = Request::get(path)
            .header(header::HOST, host)
            .header(
                header::USER_AGENT,
                concat!("mdgate-check-peer/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| HttpError::Body(e.to_string()))?;
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(e) => {
                // The connection task knows why the connection ended (a
                // TLS alert arrives there).
                let conn_error = tokio::time::timeout(Duration::from_secs(1), done_rx)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .and_then(Result::err);
                return Err(closed(&e, conn_error.as_ref()));
            }
        };
        let received_at = clock();
        let status = response.status();
        let headers = response.headers().clone();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| HttpError::Body(e.to_string()))?
            .to_bytes();
        Ok(Reply {
            status,
            date: headers
                .get(header::DATE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok()),
            content_type: headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body,
            received_at,
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::Timeout),
    }
}

pub(super) fn closed(e: &hyper::Error, conn: Option<&hyper::Error>) -> HttpError {
    let alert = tls_alert(e).or_else(|| conn.and_then(|c| tls_alert(c)));
    let detail = match conn {
        Some(c) => format!("{e} ({c})"),
        None => e.to_string(),
    };
    HttpError::Closed { alert, detail }
}

/// The TLS config for the peer's public HTTPS: the web's roots (or
/// `[federation.trust] web_ca_file`).
pub(super) fn web_tls(config: &Config) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let ca_file = config
        .federation
        .as_ref()
        .and_then(|f| f.trust.web_ca_file.as_ref());
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read web_ca_file {}: {e}", path.display()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("web_ca_file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("web_ca_file {}: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system root that rustls cannot use is skipped, as
                // browsers do; the others still verify.
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(
            "no root certificates to verify the peer's HTTPS certificate: install the system's \
             CA bundle (ca-certificates) or set [federation.trust] web_ca_file"
                .to_owned(),
        );
    }
    let mut tls = ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

pub(super) async fn fetch_document(
    config: &Config,
    fqdn: &str,
    addrs: &[std::net::IpAddr],
    port: u16,
    timeout: Duration,
    clock: fn() -> SystemTime,
) -> Result<Reply, Check> {
    let name = "keydoc.fetch";
    let url = format!("https://{}{KEYS_PATH}", host_header(fqdn, port, 443));
    let tls = web_tls(config).map_err(|e| Check::fail(name, e))?;
    let (tcp, addr) = connect_any(addrs, port, timeout)
        .await
        .map_err(|failures| connect_failed(name, port, "web (wp=)", &failures, timeout))?;
    let server =
        ServerName::try_from(fqdn.to_owned()).map_err(|e| Check::fail(name, e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(tls);
    let stream = match tokio::time::timeout(timeout, connector.connect(server, tcp)).await {
        Err(_) => {
            return Err(Check::fail(
                name,
                format!(
                    "the TLS handshake with {addr} for {url} did not finish within {}",
                    config::format_duration(timeout)
                ),
            )
            .label("tls_timeout"))
        }
        Ok(Err(e)) => {
            let why = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(rustls::Error::InvalidCertificate(c)) => format!(
                    "its HTTPS certificate is not trusted ({c:?}); the key document must be \
                     served with a certificate that chains to the web's roots (or set [federation.trust] \
                     web_ca_file here)"
                ),
                _ => format!("the TLS handshake failed: {e}"),
            };
            return Err(Check::fail(name, format!("{url} at {addr}: {why}")).label("tls_error"));
        }
        Ok(Ok(stream)) => stream,
    };
    let reply = http_get(
        stream,
        &host_header(fqdn, port, 443),
        KEYS_PATH,
        timeout,
        clock,
    )
    .await
    .map_err(|e| {
        let why = match e {
            HttpError::Timeout => format!("no answer within {}", config::format_duration(timeout)),
            HttpError::Closed { detail, .. } => {
                format!("the server closed the connection without answering ({detail})")
            }
            HttpError::Body(e) => format!("the answer was cut off or too large: {e}"),
        };
        Check::fail(name, format!("GET {url}: {why}"))
    })?;
    if reply.status != StatusCode::OK {
        let hint = if reply.status == StatusCode::NOT_FOUND {
            ": the peer does not serve its key document there (is port wp= mdgate's public \
             listener, and does a proxy in front pass /.well-known/mdgate/ through?)"
        } else {
            ""
        };
        return Err(
            Check::fail(name, format!("GET {url} answered {}{hint}", reply.status))
                .label("no_document")
                .with("status", reply.status.as_u16()),
        );
    }
    Ok(reply)
}
