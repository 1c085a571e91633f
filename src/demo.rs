//! `mdgate demo`: a complete deployment on loopback, for a first look.
//!
//! It starts the access.md emulator, generates a throw-away CA and the
//! certificates, writes a real configuration file, starts mdgate from it,
//! walks through a few requests printing each one, then stays up (unless
//! `--once`) and prints what a person can try by hand. Nothing here is used
//! by `mdgate serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::{json, Value};

use crate::emulator::{Emulator, EmulatorOptions};
use crate::tls::pki::{self, TestCa};

/// The name the demo's public listener answers to.
const PUBLIC_NAME: &str = "localhost";
/// The demo server's federation identity.
const FQDN: &str = "server1.demo.mdgate.test";
/// A peer the demo pretends to be on the federation listener.
const PEER: &str = "server2.demo.mdgate.test";
const ADMIN_PASSWORD: &str = "demo-admin-pw";

type DemoResult<T> = Result<T, String>;

fn err<E: std::fmt::Display>(context: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{context}: {e}")
}

/// A port on loopback: `preferred` when it is free, else any.
fn loopback(preferred: u16) -> SocketAddr {
    let want = SocketAddr::from(([127, 0, 0, 1], preferred));
    match std::net::TcpListener::bind(want) {
        Ok(l) => {
            drop(l);
            want
        }
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
    }
}

/// A minimal HTTPS client for the walk-through (one connection per call).
struct Https {
    tls: tokio_rustls::TlsConnector,
    addr: SocketAddr,
    name: &'static str,
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn cookie(&self) -> Option<String> {
        self.headers
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_owned)
    }
}

impl Https {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        cookie: Option<&str>,
    ) -> DemoResult<Answer> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(err("connect"))?;
        let name = ServerName::try_from(self.name).map_err(err("server name"))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(err("TLS handshake"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(err("HTTP handshake"))?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, format!("{}:{}", self.name, self.addr.port()));
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        let payload = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(payload)).map_err(err("request"))?;
        let resp = sender.send_request(req).await.map_err(err("request"))?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(err("response body"))?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

fn client_config(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> DemoResult<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(err("CA"))?).map_err(err("CA"))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(err("TLS"))?
        .with_root_certificates(roots);
    let cfg = match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(err("client certificate"))?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(err("client key"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(err("client certificate"))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

fn step(n: usize, what: &str) {
    println!("\n[{n}] {what}");
}

fn show(answer: &Answer, note: &str) {
    let body = String::from_utf8_lossy(&answer.body);
    let body: String = body.chars().take(160).collect();
    println!("    -> {} {note}", answer.status);
    if !body.is_empty() {
        println!("       {body}");
    }
}

/// Writes the demo's files and returns the configuration path.
fn write_files(
    dir: &Path,
    ca: &TestCa,
    upstream: SocketAddr,
    public: SocketAddr,
    federation: SocketAddr,
    admin: SocketAddr,
) -> DemoResult<PathBuf> {
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).map_err(err("write demo file"))
    };
    let write_key = |name: &str, text: &str| {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        pki::write_private(&path, text.as_bytes()).map_err(err("write demo key"))
    };
    write("ca.crt", &ca.cert_pem())?;
    let (cert, key) = ca.issue(&[PUBLIC_NAME]).map_err(err("certificate"))?;
    write("public.crt", &cert)?;
    write_key("public.key", &key)?;
    let (cert, key) = ca.issue(&[FQDN]).map_err(err("certificate"))?;
    write("federation.crt", &cert)?;
    write_key("federation.key", &key)?;
    let (cert, key) = ca.issue(&[PEER]).map_err(err("certificate"))?;
    write("peer.crt", &cert)?;
    write_key("peer.key", &key)?;
    let config = format!(
        r#"# Written by `mdgate demo`. Check it with: mdgate check-config -c {dir}/mdgate.toml
[server]
fqdn = "{FQDN}"

[upstream]
url = "http://{upstream}"

[public]
listen = "{public}"

[public.tls]
cert_file = "public.crt"
key_file = "public.key"

[federation]
listen = "{federation}"

[federation.tls]
cert_file = "federation.crt"
key_file = "federation.key"

[federation.trust]
ca_file = "ca.crt"

[admin]
listen = "{admin}"

[store]
path = "mdgate.db"

[runtime]
workers = 1
drain_timeout = "5s"
"#,
        dir = dir.display()
    );
    let path = dir.join("mdgate.toml");
    write("mdgate.toml", &config)?;
    Ok(path)
}

/// Runs the demo; with `once`, exits after the walk-through.
pub async fn run(dir: Option<PathBuf>, once: bool) -> DemoResult<()> {
    let (_temp, dir) = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d).map_err(err("demo directory"))?;
            (None, d)
        }
        None => {
            let t = tempfile_dir()?;
            let p = t.clone();
            (Some(TempDirGuard(t)), p)
        }
    };
    let ca = TestCa::new().map_err(err("CA"))?;

    let emulator = Emulator::bind(
        loopback(7000),
        EmulatorOptions {
            admin_password: Some(ADMIN_PASSWORD.into()),
            ..EmulatorOptions::default()
        },
    )
    .await
    .map_err(err("access.md emulator"))?;
    let config_path = write_files(
        &dir,
        &ca,
        emulator.addr(),
        loopback(8443),
        loopback(8444),
        loopback(9090),
    )?;
    let config = crate::config::load(&config_path).map_err(|e| e.report())?;
    let running = crate::serve::start(config).await.map_err(err("mdgate"))?;
    let public = running.public_addr;
    let federation = running.federation_addr.ok_or("no federation listener")?;
    let admin = running.admin_addr;

    println!("mdgate demo: an access.md emulator with mdgate in front of it, on loopback.");
    println!("files (CA, certificates, config, store): {}", dir.display());
    println!(
        "access.md emulator (the upstream): http://{}",
        emulator.addr()
    );
    println!(
        "mdgate public listener:            https://{PUBLIC_NAME}:{}",
        public.port()
    );
    println!(
        "mdgate federation listener (mTLS): https://{FQDN}:{} (on 127.0.0.1)",
        federation.port()
    );
    println!("mdgate admin listener:             http://{admin}/metrics");

    let web = Https {
        tls: tokio_rustls::TlsConnector::from(client_config(&ca.cert_pem(), None)?),
        addr: public,
        name: PUBLIC_NAME,
    };
    walk_through(&web, &ca, federation, admin).await?;

    println!("\nTry it yourself (the CA is {}/ca.crt):", dir.display());
    println!("  accounts: admin / {ADMIN_PASSWORD}; patient demo-patient / patient-pw; doctor demo-doctor / doctor-pw");
    println!(
        "  curl --cacert {d}/ca.crt -i https://{PUBLIC_NAME}:{p}/api/login -d '{{\"username\":\"demo-patient\",\"password\":\"patient-pw\"}}'",
        d = dir.display(),
        p = public.port()
    );
    println!(
        "  curl --cacert {d}/ca.crt -i 'https://{PUBLIC_NAME}:{p}/api/patient/profile;jsessionid=x'   # refused: path parameter",
        d = dir.display(),
        p = public.port()
    );
    println!(
        "  curl --cacert {d}/ca.crt --cert {d}/peer.crt --key {d}/peer.key --resolve {FQDN}:{p}:127.0.0.1 https://{FQDN}:{p}/federation/v1/identity",
        d = dir.display(),
        p = federation.port()
    );
    println!("  curl -s http://{admin}/metrics | grep mdgate_requests_total");
    if once {
        running.shutdown().await;
        emulator.shutdown().await;
        return Ok(());
    }
    println!("\nmdgate demo is running; press Ctrl-C to stop.");
    tokio::signal::ctrl_c().await.map_err(err("signal"))?;
    println!("stopping: draining connections");
    running.shutdown().await;
    emulator.shutdown().await;
    Ok(())
}

async fn walk_through(
    web: &Https,
    ca: &TestCa,
    federation: SocketAddr,
    admin: SocketAddr,
) -> DemoResult<()> {
    step(
        1,
        "A patient signs up through mdgate (POST /api/patient/signup)",
    );
    let a = web
        .call(
            Method::POST,
            "/api/patient/signup",
            Some(json!({"username": "demo-patient", "password": "patient-pw", "firstName": "Dana", "lastName": "Demo"})),
            None,
        )
        .await?;
    show(&a, "(access.md answers an empty 200)");

    step(2, "The admin creates a doctor (POST /api/admin/doctor)");
    let admin_login = web
        .call(
            Method::POST,
            "/api/login",
            Some(json!({"username": "admin", "password": ADMIN_PASSWORD})),
            None,
        )
        .await?;
    let admin_cookie = admin_login.cookie().ok_or("admin login gave no session")?;
    let a = web
        .call(
            Method::POST,
            "/api/admin/doctor",
            Some(json!({"username": "demo-doctor", "password": "doctor-pw", "firstName": "Sam", "lastName": "Doctor"})),
            Some(&admin_cookie),
        )
        .await?;
    show(&a, "");

    step(
        3,
        "The patient logs in: the upstream's cookie comes back with `Secure` added by mdgate",
    );
    let login = web
        .call(
            Method::POST,
            "/api/login",
            Some(json!({"username": "demo-patient", "password": "patient-pw"})),
            None,
        )
        .await?;
    show(&login, "");
    if let Some(c) = login.headers.get(header::SET_COOKIE) {
        let text = c.to_str().unwrap_or("");
        let value_end = text.find(';').unwrap_or(text.len());
        println!("       Set-Cookie: JSESSIONID=…{}", &text[value_end..]);
    }
    let patient_cookie = login.cookie().ok_or("patient login gave no session")?;
    let patient_id = login.json()["id"].as_i64().unwrap_or_default();

    step(
        4,
        "The patient shows a link code; the doctor consumes it and reads the patient",
    );
    let code = web
        .call(
            Method::GET,
            "/api/patient/code",
            None,
            Some(&patient_cookie),
        )
        .await?;
    let code = code.json()["code"].as_str().unwrap_or_default().to_owned();
    println!("    code: {code}");
    let doctor = web
        .call(
            Method::POST,
            "/api/login",
            Some(json!({"username": "demo-doctor", "password": "doctor-pw"})),
            None,
        )
        .await?;
    let doctor_cookie = doctor.cookie().ok_or("doctor login gave no session")?;
    web.call(
        Method::POST,
        "/api/doctor/patient/add",
        Some(json!({ "code": code })),
        Some(&doctor_cookie),
    )
    .await?;
    let a = web
        .call(
            Method::GET,
            &format!("/api/doctor/patient/{patient_id}"),
            None,
            Some(&doctor_cookie),
        )
        .await?;
    show(&a, "");

    step(
        5,
        "The patient calls a doctor-only route: access.md's own 401 passes through unchanged",
    );
    let a = web
        .call(Method::GET, "/api/doctor/feed", None, Some(&patient_cookie))
        .await?;
    println!(
        "    -> {} {} ({} bytes of access.md's login page)",
        a.status,
        a.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        a.body.len()
    );

    step(
        6,
        "A `;jsessionid=` path (session fixation through the URL) is refused before the upstream",
    );
    let a = web
        .call(
            Method::GET,
            "/api/patient/profile;jsessionid=node0stolen.node0",
            None,
            None,
        )
        .await?;
    show(&a, "");

    step(
        7,
        "A peer server presents its certificate on the federation listener (mutual TLS)",
    );
    let (cert, key) = ca.issue(&[PEER]).map_err(err("peer certificate"))?;
    let fed = Https {
        tls: tokio_rustls::TlsConnector::from(client_config(&ca.cert_pem(), Some((&cert, &key)))?),
        addr: federation,
        name: "server1.demo.mdgate.test",
    };
    let a = fed
        .call(Method::GET, "/federation/v1/identity", None, None)
        .await?;
    show(&a, "");
    let a = fed
        .call(Method::GET, "/api/symptom/codes", None, None)
        .await?;
    show(&a, "(nothing outside /federation/v1/ is served there)");

    step(8, "The admin listener's metrics");
    let text = reqwest_free_get(admin, "/metrics").await?;
    for line in text
        .lines()
        .filter(|l| l.starts_with("mdgate_requests_total"))
    {
        println!("    {line}");
    }
    Ok(())
}

/// Plain-HTTP GET to the admin listener.
async fn reqwest_free_get(addr: SocketAddr, path: &str) -> DemoResult<String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(err("admin"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(err("admin"))?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))
        .map_err(err("admin"))?;
    let resp = sender.send_request(req).await.map_err(err("admin"))?;
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(err("admin"))?
        .to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// A private temporary directory, removed when the demo ends.
fn tempfile_dir() -> DemoResult<PathBuf> {
    let base = std::env::temp_dir().join(format!("mdgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&base).map_err(err("demo directory"))?;
    let _ = std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o700));
    Ok(base)
}

struct TempDirGuard(PathBuf);

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
