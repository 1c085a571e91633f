//! Webhook notifications: tell an operator's endpoint (a chat bot, a
//! paging system, a clinic's own service) that an access request, grant,
//! revocation or denial happened (`docs/operations.md` § Notifications).
//!
//! ```text
//! flow ──event JSON──▶ outbox (durable, retried) ──▶ Webhook::post ──POST──▶ [notify] webhook_url
//! ```
//!
//! [`Webhook::post`] is one attempt: a `POST` of the event with
//! `Content-Type: application/json` within `[notify] webhook_timeout`,
//! where a 2xx answer is success and anything else an error naming the
//! status. Retrying is the outbox's business, so `post` keeps no state but
//! a connection pool.
//!
//! The URL is a secret in practice: services put a token in its query, its
//! userinfo, or (Slack, Discord, Teams) its path. So it is never logged or
//! put in an error as given; [`Webhook::redacted`] (scheme, host and port
//! only) is what goes into logs, errors and the outbox's `last_error`.
//! Userinfo in the URL is sent as HTTP Basic credentials, not in the
//! request line.
//!
//! HTTPS uses rustls with the system's root certificates
//! (rustls-native-certs). The connector here is a few lines over
//! hyper-util's `HttpConnector` and tokio-rustls, both already
//! dependencies, rather than hyper-rustls, whose extra dependency would
//! buy nothing more for one POST.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::config;

/// `User-Agent` of every notification.
const USER_AGENT_VALUE: &str = concat!("mdgate/", env!("CARGO_PKG_VERSION"));
/// Most of an answer's body read (and thrown away) so that the connection
/// can be reused; a longer body closes it.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// Why a notification was not delivered. No variant carries the URL as
/// configured: only [`Webhook::redacted`].
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `https://` and no usable root certificate on the system.
    #[error(
        "no root certificates to verify the webhook's HTTPS certificate: install the system's \
         CA bundle (ca-certificates)"
    )]
    NoRoots,
    /// The URL cannot be used (not http/https, no host, bad userinfo).
    #[error("webhook URL {url}: {reason}")]
    InvalidUrl { url: String, reason: &'static str },
    /// The TLS configuration could not be built.
    #[error("webhook TLS configuration: {0}")]
    Tls(String),
    #[error("webhook {url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    /// Answered, but not with a 2xx.
    #[error("webhook {url} answered {status}")]
    Status { url: String, status: StatusCode },
    /// Connecting, the TLS handshake, or the exchange failed.
    #[error("webhook {url}: {detail}")]
    Send { url: String, detail: String },
}

impl NotifyError {
    /// A stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            NotifyError::NoRoots => "no_roots",
            NotifyError::InvalidUrl { .. } => "invalid_url",
            NotifyError::Tls(_) => "tls_config",
            NotifyError::Timeout { .. } => "timeout",
            NotifyError::Status { .. } => "status",
            NotifyError::Send { .. } => "send",
        }
    }
}

/// The `[notify]` webhook client.
pub struct Webhook {
    /// The URL without userinfo: what the request is sent to.
    target: Uri,
    /// `scheme://host[:port]/…`, for logs and errors.
    redacted: String,
    /// Basic credentials from the URL's userinfo (sensitive).
    authorization: Option<HeaderValue>,
    timeout: Duration,
    client: Client<Connector, Full<Bytes>>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.redacted)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// The webhook `[notify]` configures, `None` without a URL. HTTPS
    /// trusts the system's root certificates.
    pub fn from_config(notify: &config::Notify) -> Result<Option<Webhook>, NotifyError> {
        let Some(url) = &notify.webhook_url else {
            return Ok(None);
        };
        let tls = if url.scheme() == Some(&Scheme::HTTPS) {
            native_tls_config()?
        } else {
            // Never used for http://; a config without roots is enough.
            plain_tls_config()?
        };
        Webhook::new(url.clone(), notify.webhook_timeout, tls).map(Some)
    }

    /// A webhook for `url` whose HTTPS connections use `tls` (tests, or a
    /// private CA).
    pub fn new(
        url: Uri,
        timeout: Duration,
        tls: Arc<ClientConfig>,
    ) -> Result<Webhook, NotifyError> {
        let redacted = redact(&url);
        let invalid = |reason| NotifyError::InvalidUrl {
            url: redacted.clone(),
            reason,
        };
        let https = match url.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(invalid("the scheme must be http or https")),
        };
        let authority = url.authority().ok_or_else(|| invalid("no host"))?;
        let (userinfo, host_port) = match authority.as_str().rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority.as_str()),
        };
        let authorization = userinfo
            .map(|u| {
                let decoded = percent_decode(u).ok_or_else(|| invalid("malformed userinfo"))?;
                let mut value =
                    HeaderValue::try_from(format!("Basic {}", STANDARD.encode(decoded)))
                        .map_err(|_| invalid("malformed userinfo"))?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        let mut parts = url.clone().into_parts();
        parts.authority =
            Some(Authority::try_from(host_port).map_err(|_| invalid("malformed host"))?);
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        let target = Uri::from_parts(parts).map_err(|_| invalid("malformed URL"))?;
        if https && server_name(&target).is_none() {
            return Err(invalid("the host is not a valid TLS server name"));
        }

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let connector = Connector {
            http,
            tls: tokio_rustls::TlsConnector::from(tls),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(1)
            .build(connector);
        Ok(Webhook {
            target,
            redacted,
            authorization,
            timeout,
            client,
        })
    }

    /// The URL as it may be logged: scheme, host and port, the rest
    /// elided.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// One delivery attempt of `event`: `Ok` on a 2xx answer within the
    /// timeout.
    pub async fn post(&self, event: &serde_json::Value) -> Result<(), NotifyError> {
        let body = Bytes::from(event.to_string());
        let mut req = Request::post(self.target.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
            .body(Full::new(body))
            .map_err(|_| NotifyError::InvalidUrl {
                url: self.redacted.clone(),
                reason: "cannot build a request",
            })?;
        if let Some(auth) = &self.authorization {
            req.headers_mut().insert(AUTHORIZATION, auth.clone());
        }
        let exchange = async {
            let response = self
                .client
                .request(req)
                .await
                .map_err(|e| self.send_error(&e))?;
            let status = response.status();
            // Read a bounded answer so that the connection can be reused;
            // its content is not used (and never logged: it is the
            // receiver's).
            let _ = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await;
            Ok(status)
        };
        let status = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| NotifyError::Timeout {
                url: self.redacted.clone(),
                timeout: self.timeout,
            })??;
        if status.is_success() {
            Ok(())
        } else {
            Err(NotifyError::Status {
                url: self.redacted.clone(),
                status,
            })
        }
    }

    fn send_error(&self, e: &hyper_util::client::legacy::Error) -> NotifyError {
        // The client's own message is generic ("client error (Connect)");
        // the cause chain says what happened. None of it quotes the URL:
        // the connector's messages name the host only.
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        NotifyError::Send {
            url: self.redacted.clone(),
            detail,
        }
    }
}

/// `scheme://host[:port]/…`: everything that may carry a secret
/// (userinfo, path, query) left out.
pub fn redact(url: &Uri) -> String {
    let scheme = url.scheme_str().unwrap_or("?");
    let host = url.host().unwrap_or("?");
    let port = url.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    let rest = match url.path_and_query().map(|p| p.as_str()) {
        None | Some("/") | Some("") => "/",
        Some(_) => "/…",
    };
    format!("{scheme}://{host}{port}{rest}")
}

/// The TLS server name of an `https://` URL's host.
fn server_name(url: &Uri) -> Option<ServerName<'static>> {
    let host = url.host()?.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).ok()
}

/// `%XX` decoding of URL userinfo; `None` on a malformed escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

fn tls_builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, NotifyError>
{
    ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| NotifyError::Tls(e.to_string()))
}

/// rustls with the system's roots, HTTP/1.1 only.
fn native_tls_config() -> Result<Arc<ClientConfig>, NotifyError> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A root rustls cannot parse is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(NotifyError::NoRoots);
    }
    tls_config_with(roots)
}

fn plain_tls_config() -> Result<Arc<ClientConfig>, NotifyError> {
    tls_config_with(RootCertStore::empty())
}

/// A client TLS configuration trusting `roots` (HTTP/1.1 by ALPN).
pub fn tls_config_with(roots: RootCertStore) -> Result<Arc<ClientConfig>, NotifyError> {
    let mut tls = tls_builder()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// TCP by hyper-util's connector (DNS, connect timeout), then TLS for
/// `https://`.
#[derive(Clone)]
struct Connector {
    http: HttpConnector,
    tls: tokio_rustls::TlsConnector,
}

/// A webhook connection, plain or TLS (boxed: a TLS stream is over 1 KiB).
enum Stream {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl tower_service::Service<Uri> for Connector {
    type Response = Stream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.http.poll_ready(cx).map_err(io::Error::other)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        let name = server_name(&uri);
        let https = uri.scheme() == Some(&Scheme::HTTPS);
        let host = uri.host().unwrap_or_default().to_owned();
        let connecting = self.http.call(uri);
        Box::pin(async move {
            let tcp = connecting
                .await
                .map_err(|e| io::Error::other(format!("connecting to {host}: {e}")))?;
            if !https {
                return Ok(Stream::Plain(tcp));
            }
            let name = name.ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "not a TLS server name")
            })?;
            let stream = tls
                .connect(name, tcp.into_inner())
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("TLS with {host}: {e}")))?;
            Ok(Stream::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests;
