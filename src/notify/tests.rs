//! The webhook client against local servers: plain HTTP and TLS with a
//! generated CA.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use http::HeaderMap;
use hyper::body::Incoming;
use hyper::service::service_fn;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;
use crate::tls::pki::{LeafSpec, TestCa};

/// What the test server saw of one request.
#[derive(Debug)]
struct Received {
    method: http::Method,
    target: String,
    headers: HeaderMap,
    body: Bytes,
}

/// How the test server answers.
#[derive(Clone, Copy)]
struct Answer {
    status: StatusCode,
    delay: Duration,
}

impl Answer {
    fn status(status: u16) -> Self {
        Answer {
            status: StatusCode::from_u16(status).expect("status"),
            delay: Duration::ZERO,
        }
    }
}

/// A server on loopback that records requests and answers with `answer`.
async fn server(
    tls: Option<Arc<ServerConfig>>,
    answer: Answer,
) -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let _ = tx.send(Received {
                            method: parts.method,
                            target: parts.uri.to_string(),
                            headers: parts.headers,
                            body,
                        });
                        tokio::time::sleep(answer.delay).await;
                        let mut response = http::Response::new(Full::new(Bytes::from_static(
                            b"{\"answer\":\"not read\"}",
                        )));
                        *response.status_mut() = answer.status;
                        Ok::<_, Infallible>(response)
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                    }
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// A CA and a server TLS configuration for 127.0.0.1 issued by it.
fn tls_server() -> (TestCa, Arc<ServerConfig>) {
    let ca = TestCa::new().expect("ca");
    let mut spec = LeafSpec::dns(&["webhook.test"]);
    spec.ip_addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let (cert, key) = ca.issue_with(&spec).expect("leaf");
    let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert")];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
    let config = ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    (ca, Arc::new(config))
}

fn roots_of(ca: &TestCa) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).expect("ca"))
        .expect("add");
    roots
}

fn event() -> serde_json::Value {
    json!({
        "event": "access.requested",
        "at": "2026-11-22T10:00:00Z",
        "patient": "0b8f1d3e-5a57-4a39-9d3b-1f0c1a2b3c4d@server1.example.org",
        "doctor": "drhouse@server2.example.org",
        "server": "server2.example.org",
        "role": "viewer",
        "request": "6f9a0c1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b",
    })
}

fn webhook(url: &str, timeout: Duration) -> Webhook {
    Webhook::new(
        url.parse().expect("url"),
        timeout,
        tls_config_with(RootCertStore::empty()).expect("tls"),
    )
    .expect("webhook")
}

const SECRET: &str = "s3cret";

#[tokio::test]
async fn posts_json_with_our_headers() {
    let (addr, mut seen) = server(None, Answer::status(204)).await;
    let url = format!("http://hook:p%40ss@{addr}/hooks/mdgate?token={SECRET}");
    let hook = webhook(&url, Duration::from_secs(5));
    hook.post(&event()).await.expect("delivered");
    let got = seen.recv().await.expect("request");
    assert_eq!(got.method, http::Method::POST);
    assert_eq!(got.target, format!("/hooks/mdgate?token={SECRET}"));
    assert_eq!(got.headers[CONTENT_TYPE], "application/json");
    assert_eq!(
        got.headers[USER_AGENT],
        format!("mdgate/{}", env!("CARGO_PKG_VERSION"))
    );
    // Userinfo becomes Basic credentials, percent-decoded.
    assert_eq!(
        got.headers[AUTHORIZATION],
        format!("Basic {}", STANDARD.encode("hook:p@ss"))
    );
    assert_eq!(got.headers["host"], addr.to_string());
    let body: serde_json::Value = serde_json::from_slice(&got.body).expect("json");
    assert_eq!(body, event());

    // The pooled connection is reused for the next event.
    hook.post(&json!({"event": "access.granted"}))
        .await
        .expect("second");
    assert_eq!(
        seen.recv().await.expect("second").body.as_ref(),
        br#"{"event":"access.granted"}"#
    );
}

#[tokio::test]
async fn non_2xx_is_an_error_naming_the_status() {
    for status in [301, 400, 404, 500, 503] {
        let (addr, _seen) = server(None, Answer::status(status)).await;
        let hook = webhook(
            &format!("http://{addr}/hook?token={SECRET}"),
            Duration::from_secs(5),
        );
        let e = hook.post(&event()).await.expect_err("refused");
        assert!(
            matches!(e, NotifyError::Status { status: s, .. } if s.as_u16() == status),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(text.contains(&status.to_string()), "{text}");
        assert!(!text.contains(SECRET), "{text}");
        assert_eq!(e.reason(), "status");
    }
}

#[tokio::test]
async fn a_slow_answer_times_out() {
    let answer = Answer {
        status: StatusCode::OK,
        delay: Duration::from_secs(3),
    };
    let (addr, _seen) = server(None, answer).await;
    let hook = webhook(
        &format!("http://{addr}/hook?token={SECRET}"),
        Duration::from_millis(200),
    );
    let started = std::time::Instant::now();
    let e = hook.post(&event()).await.expect_err("timeout");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(e, NotifyError::Timeout { .. }), "{e:?}");
    assert_eq!(e.reason(), "timeout");
    assert!(!e.to_string().contains(SECRET), "{e}");
}

#[tokio::test]
async fn a_refused_connection_is_an_error() {
    // Bind then drop, to get a port nobody listens on.
    let addr = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let hook = webhook(
        &format!("http://user:{SECRET}@{addr}/?k={SECRET}"),
        Duration::from_secs(5),
    );
    let e = hook.post(&event()).await.expect_err("refused");
    assert!(matches!(e, NotifyError::Send { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("connect"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
}

#[tokio::test]
async fn posts_over_tls_to_a_trusted_server() {
    let (ca, config) = tls_server();
    let (addr, mut seen) = server(Some(config), Answer::status(200)).await;
    let hook = Webhook::new(
        format!("https://{addr}/hook?token={SECRET}")
            .parse()
            .expect("url"),
        Duration::from_secs(5),
        tls_config_with(roots_of(&ca)).expect("tls"),
    )
    .expect("webhook");
    hook.post(&event()).await.expect("delivered");
    let got = seen.recv().await.expect("request");
    assert_eq!(got.target, format!("/hook?token={SECRET}"));
    assert_eq!(got.headers[CONTENT_TYPE], "application/json");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&got.body).expect("json"),
        event()
    );
}

#[tokio::test]
async fn an_untrusted_tls_server_is_refused() {
    let (_ca, config) = tls_server();
    let other = TestCa::new().expect("other ca");
    let (addr, mut seen) = server(Some(config), Answer::status(200)).await;
    let hook = Webhook::new(
        format!("https://{addr}/hook?token={SECRET}")
            .parse()
            .expect("url"),
        Duration::from_secs(5),
        tls_config_with(roots_of(&other)).expect("tls"),
    )
    .expect("webhook");
    let e = hook.post(&event()).await.expect_err("untrusted");
    let text = e.to_string();
    assert!(matches!(e, NotifyError::Send { .. }), "{e:?}");
    assert!(text.contains("TLS"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    assert!(seen.try_recv().is_err(), "nothing was sent");
}

#[test]
fn redaction_keeps_only_scheme_host_and_port() {
    for (url, redacted) in [
        ("https://hooks.example.org/", "https://hooks.example.org/"),
        ("https://hooks.example.org", "https://hooks.example.org/"),
        (
            "https://user:pw@hooks.example.org:8443/x?token=1",
            "https://hooks.example.org:8443/…",
        ),
        (
            "https://hooks.slack.com/services/T000/B000/XXXX",
            "https://hooks.slack.com/…",
        ),
        ("http://[::1]:9000/?t=1", "http://[::1]:9000/…"),
    ] {
        let uri: Uri = url.parse().expect(url);
        assert_eq!(redact(&uri), redacted, "{url}");
        let hook = webhook(url, Duration::from_secs(1));
        assert_eq!(hook.redacted(), redacted);
        assert!(!format!("{hook:?}").contains("pw"));
    }
}

#[test]
fn from_config_without_a_url_is_none() {
    let none = Webhook::from_config(&config::Notify::default()).expect("ok");
    assert!(none.is_none());
    let plain = Webhook::from_config(&config::Notify {
        webhook_url: Some("http://hooks.example.org/x".parse().expect("url")),
        webhook_timeout: Duration::from_secs(5),
    })
    .expect("ok")
    .expect("some");
    assert_eq!(plain.redacted(), "http://hooks.example.org/…");
}

#[test]
fn bad_urls_are_refused() {
    for (url, reason) in [
        (
            "ftp://hooks.example.org/",
            "the scheme must be http or https",
        ),
        ("https://u%zz@hooks.example.org/", "malformed userinfo"),
    ] {
        let e = Webhook::new(
            url.parse().expect(url),
            Duration::from_secs(1),
            tls_config_with(RootCertStore::empty()).expect("tls"),
        )
        .expect_err(url);
        assert!(
            matches!(e, NotifyError::InvalidUrl { reason: r, .. } if r == reason),
            "{url}: {e:?}"
        );
        assert!(!e.to_string().contains("%zz"), "{e}");
    }
}
