//! Starting mdgate in-process for tests: a test CA, certificate files,
//! a configuration written as TOML and loaded through the real loader, and
//! clients that speak TLS to it by name.

#![allow(dead_code)] // Not every test module uses every helper.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mdgate::serve::{self, Running};
use mdgate::tls::pki::{self, TestCa};
use rustls::pki_types::{CertificateDer, ServerName};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The name the test server answers to.
pub const FQDN: &str = "gate.mdgate.test";

/// What to vary between test gates.
#[derive(Clone)]
pub struct GateOptions {
    /// `host:port` of the upstream.
    pub upstream: String,
    /// Extra lines for `[public.limits]`.
    pub public_limits: String,
    /// Extra lines for `[upstream]`.
    pub upstream_extra: String,
    /// Serve the federation listener, trusting the test CA.
    pub federation: bool,
    /// Extra lines for `[federation.trust]` (e.g. pins).
    pub federation_trust: String,
    /// Trust the test CA on the federation listener.
    pub federation_trust_ca: bool,
    pub workers: usize,
}

impl GateOptions {
    pub fn new(upstream: &str) -> Self {
        GateOptions {
            upstream: upstream
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned(),
            public_limits: String::new(),
            upstream_extra: String::new(),
            federation: false,
            federation_trust: String::new(),
            federation_trust_ca: true,
            workers: 1,
        }
    }
}

/// A running mdgate with its test PKI.
pub struct Gate {
    pub dir: TempDir,
    pub ca: TestCa,
    pub running: Option<Running>,
    pub public: SocketAddr,
    pub federation: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
}

/// Writes a certificate (0644) and its key (0600) into `dir`.
pub fn write_pair(dir: &Path, name: &str, cert_pem: &str, key_pem: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, cert_pem).unwrap();
    let _ = std::fs::remove_file(&key);
    pki::write_private(&key, key_pem.as_bytes()).unwrap();
    (cert, key)
}

/// The configuration text of a test gate.
pub fn config_text(dir: &Path, opts: &GateOptions) -> String {
    let mut text = format!(
        r#"
[server]
fqdn = "{FQDN}"

[upstream]
url = "http://{upstream}"
connect_timeout = "1s"
response_timeout = "5s"
{upstream_extra}

[public]
listen = "127.0.0.1:0"

[public.tls]
cert_file = "public.crt"
key_file = "public.key"

[public.limits]
header_read_timeout = "2s"
{public_limits}

[admin]
listen = "127.0.0.1:0"

[store]
path = "{store}"

[runtime]
workers = {workers}
drain_timeout = "3s"
"#,
        upstream = opts.upstream,
        upstream_extra = opts.upstream_extra,
        public_limits = opts.public_limits,
        store = dir.join("mdgate.db").display(),
        workers = opts.workers,
    );
    if opts.federation {
        let ca_line = if opts.federation_trust_ca {
            "ca_file = \"ca.crt\"\n"
        } else {
            ""
        };
        text.push_str(&format!(
            r#"
[federation]
listen = "127.0.0.1:0"

[federation.tls]
cert_file = "public.crt"
key_file = "public.key"

[federation.trust]
{ca_line}{trust}
"#,
            trust = opts.federation_trust
        ));
    }
    text
}

impl Gate {
    /// Starts a gate in front of `opts.upstream`.
    pub async fn start(opts: GateOptions) -> Gate {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new().unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
        let (cert, key) = ca.issue(&[FQDN]).unwrap();
        write_pair(dir.path(), "public", &cert, &key);
        let text = config_text(dir.path(), &opts);
        let config_path = dir.path().join("mdgate.toml");
        std::fs::write(&config_path, &text).unwrap();
        let config =
            mdgate::config::load(&config_path).unwrap_or_else(|e| panic!("{}", e.report()));
        let running = serve::start(config).await.expect("mdgate starts");
        Gate {
            public: running.public_addr,
            federation: running.federation_addr,
            admin: running.admin_addr,
            running: Some(running),
            dir,
            ca,
            config_path,
        }
    }

    /// `https://gate.mdgate.test:<port>`.
    pub fn base(&self) -> String {
        format!("https://{FQDN}:{}", self.public.port())
    }

    fn builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca.cert_pem().as_bytes()).unwrap(),
            )
            .resolve(FQDN, self.public)
            .no_gzip()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
    }

    /// A client that reaches the public listener by name over TLS.
    pub fn http(&self) -> reqwest::Client {
        self.builder().build().unwrap()
    }

    /// Like [`Gate::http`], HTTP/1.1 only.
    pub fn http1(&self) -> reqwest::Client {
        self.builder().http1_only().build().unwrap()
    }

    /// A client for the federation listener presenting `identity_pem`
    /// (certificate then key), or no certificate.
    pub fn federation_client(&self, identity_pem: Option<&str>) -> reqwest::Client {
        let addr = self.federation.expect("federation listener");
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca.cert_pem().as_bytes()).unwrap(),
            )
            .resolve(FQDN, addr)
            .no_proxy()
            .timeout(Duration::from_secs(10));
        if let Some(pem) = identity_pem {
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        b.build().unwrap()
    }

    /// `https://gate.mdgate.test:<federation port>`.
    pub fn federation_base(&self) -> String {
        format!(
            "https://{FQDN}:{}",
            self.federation.expect("federation listener").port()
        )
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// A raw TLS exchange with the public listener: sends `request` bytes
    /// with SNI `sni`, returns everything read until the server closes or
    /// `wait` passes, and the certificate the server presented.
    pub async fn raw(
        &self,
        sni: &str,
        request: &[u8],
        wait: Duration,
    ) -> (String, Vec<CertificateDer<'static>>) {
        raw_tls(self.public, &self.ca.cert_pem(), sni, request, wait).await
    }

    /// A TLS connection to the public listener by `sni`.
    pub async fn tls(&self, sni: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
        connect_tls(self.public, &self.ca.cert_pem(), sni).await
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// A TLS client config trusting one CA PEM.
pub fn client_tls(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(mdgate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

use rustls::pki_types::pem::PemObject;

/// See [`Gate::raw`].
pub async fn raw_tls(
    addr: SocketAddr,
    ca_pem: &str,
    sni: &str,
    request: &[u8],
    wait: Duration,
) -> (String, Vec<CertificateDer<'static>>) {
    let mut tls = connect_tls(addr, ca_pem, sni).await;
    let certs = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    tls.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, tls.read_to_end(&mut out)).await;
    (String::from_utf8_lossy(&out).into_owned(), certs)
}

/// A TLS connection to `addr` by `sni`, trusting `ca_pem`.
async fn connect_tls(
    addr: SocketAddr,
    ca_pem: &str,
    sni: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(client_tls(ca_pem));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    connector.connect(name, tcp).await.expect("TLS handshake")
}

/// The value of a Prometheus sample whose line starts with `prefix`, or 0.
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
