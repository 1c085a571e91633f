//! A federation on one machine: a real authoritative DNS server on
//! loopback and, per site, an access.md emulator and an mdgate whose keys
//! are published in that DNS. The demo runs on it, and so do the
//! integration tests of the flows.
//!
//! Each site gets three access.md accounts: the federation doctor account
//! (whose password goes to a 0600 file the configuration names), a local
//! doctor, and a patient. Public listeners speak plain HTTP on loopback
//! (`plain_http = true`); the federation listeners speak mutual TLS with
//! self-signed certificates trusted only through DNS.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::Method;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::dns::record::{IndexRecord, KeyAlgorithm, KeyMaterial, KeyRecord, KeyUse, Selector};
use crate::dns::testserver::TestDnsServer;
use crate::emulator::{Emulator, EmulatorHandle, EmulatorOptions};
use crate::serve::{self, Running};
use crate::tls::pki;
use crate::token::SigningKey;
use crate::upstream::{AccessMd, ApiRequest, Secret};

/// The zone every testbed site lives in.
pub const ZONE: &str = "mdgate.test";
/// The emulators' admin password.
pub const ADMIN_PASSWORD: &str = "testbed-admin-pw";
const TLS_SELECTOR: &str = "tls1";
const SIGNING_SELECTOR: &str = "sig1";

/// Credentials of one access.md account.
#[derive(Clone)]
pub struct Login {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// One server of the testbed.
pub struct Site {
    pub fqdn: String,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    /// The access.md emulator; `None` once stopped with
    /// [`Site::stop_upstream`], and for an emulator in its own process.
    pub upstream: Option<EmulatorHandle>,
    /// The emulator's process, with [`Upstreams::Processes`]; killed with
    /// the site.
    pub upstream_process: Option<UpstreamProcess>,
    pub running: Option<Running>,
    /// What the public listener speaks.
    pub public: PublicListener,
    pub doctor: Login,
    pub patient: Login,
    pub federation_account: Login,
}

impl Site {
    pub fn running(&self) -> &Running {
        // Invariant: `running` is only `None` between `stop` and `restart`.
        #[allow(clippy::expect_used)]
        self.running.as_ref().expect("site is running")
    }

    pub fn emulator(&self) -> &EmulatorHandle {
        // Invariant: `upstream` is only `None` after `stop_upstream`.
        #[allow(clippy::expect_used)]
        self.upstream.as_ref().expect("upstream is running")
    }

    /// Stops the access.md emulator for good (an upstream outage).
    pub async fn stop_upstream(&mut self) {
        if let Some(e) = self.upstream.take() {
            e.shutdown().await;
        }
        self.upstream_process.take();
    }

    /// The base URL of the public listener (`http://127.0.0.1:port`; with
    /// [`PublicListener::Tls`], `https://` and the site's name must go in
    /// SNI and `Host`).
    pub fn public_url(&self) -> String {
        let scheme = match self.public {
            PublicListener::PlainHttp => "http",
            PublicListener::Tls => "https",
        };
        format!("{scheme}://{}", self.running().public_addr)
    }

    /// Stops this site's mdgate as SIGTERM does: drains its connections
    /// and closes its store (the audit journal is copied into the log).
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

/// Where the sites' access.md emulators run.
#[derive(Debug, Clone)]
pub enum Upstreams {
    /// In this process (tests drive them through [`Site::emulator`]).
    InProcess,
    /// Each in its own process, started from this `accessmd-emulator`
    /// binary: for measurements of mdgate's own memory, which an
    /// emulator holding a whole record would otherwise blur.
    Processes(PathBuf),
}

/// What the sites' public listeners speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicListener {
    /// Plain HTTP (`plain_http = true`), as behind a TLS-terminating
    /// proxy; what tests use.
    PlainHttp,
    /// TLS with the site's own certificate (the one its federation
    /// listener shows), as a site exposed directly serves its pages:
    /// `benches/access.sh` measures mdgate's pass-through this way too, so
    /// that it pays for TLS as the federation listener does.
    Tls,
}

/// An `accessmd-emulator` child process; killed when dropped.
#[derive(Debug)]
pub struct UpstreamProcess {
    child: std::process::Child,
}

impl UpstreamProcess {
    /// Its process id (to read its memory from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `bin` on a free loopback port with `admin_password_file`
    /// and waits until it accepts connections; returns it and its URL.
    async fn start(
        bin: &Path,
        admin_password_file: &Path,
    ) -> Result<(UpstreamProcess, String), TestbedError> {
        let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(err("free port"))?
            .port();
        let child = std::process::Command::new(bin)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--admin-password-file")
            .arg(admin_password_file)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let process = UpstreamProcess { child };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .await
                .is_ok()
            {
                return Ok((process, format!("http://127.0.0.1:{port}")));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("{} did not start listening", bin.display()));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for UpstreamProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The DNS server and the sites.
pub struct Testbed {
    pub dns: TestDnsServer,
    pub sites: Vec<Site>,
}

/// Why the testbed could not start.
pub type TestbedError = String;

fn err<E: std::fmt::Display>(context: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{context}: {e}")
}

impl Testbed {
    /// Starts the DNS server and one site per name (`<name>.mdgate.test`),
    /// each in `base/<name>` (created). `extra` is appended to every
    /// configuration file (e.g. `[access]` settings).
    pub async fn start(base: &Path, names: &[&str], extra: &str) -> Result<Testbed, TestbedError> {
        Testbed::start_with(base, names, extra, &Upstreams::InProcess).await
    }

    /// [`Testbed::start`] with the emulators where `upstreams` says.
    pub async fn start_with(
        base: &Path,
        names: &[&str],
        extra: &str,
        upstreams: &Upstreams,
    ) -> Result<Testbed, TestbedError> {
        Testbed::start_sites(base, names, extra, upstreams, PublicListener::PlainHttp).await
    }

    /// [`Testbed::start_with`] with the public listeners as `public` says.
    pub async fn start_sites(
        base: &Path,
        names: &[&str],
        extra: &str,
        upstreams: &Upstreams,
        public: PublicListener,
    ) -> Result<Testbed, TestbedError> {
        let dns = TestDnsServer::builder()
            .zone(ZONE)
            .start()
            .await
            .map_err(err("DNS server"))?;
        dns.set_ttl(1);
        let mut sites = Vec::new();
        for name in names {
            let fqdn = format!("{name}.{ZONE}");
            let dir = base.join(name);
            std::fs::create_dir_all(&dir).map_err(err("site directory"))?;
            sites.push(Site::create(&dns, &fqdn, &dir, extra, upstreams, public).await?);
        }
        Ok(Testbed { dns, sites })
    }

    /// Stops every mdgate and emulator.
    pub async fn shutdown(mut self) {
        for mut site in self.sites.drain(..) {
            site.stop().await;
            site.stop_upstream().await;
        }
    }

    /// Restarts a stopped site's mdgate from its configuration file (same
    /// store, keys and ports are new: DNS is updated).
    pub async fn restart(&mut self, index: usize) -> Result<(), TestbedError> {
        let site = &mut self.sites[index];
        site.stop().await;
        let config = crate::config::load(&site.config_path).map_err(|e| e.report())?;
        let running = serve::start(config).await.map_err(err("mdgate"))?;
        let port = running.federation_addr.map(|a| a.port()).unwrap_or(0);
        site.running = Some(running);
        publish(&self.dns, &site.fqdn, &site.dir, port).await
    }
}

async fn admin_call(
    access: &AccessMd,
    path: &'static str,
    body: serde_json::Value,
) -> Result<(), TestbedError> {
    let login = access
        .login("admin", &Secret::new(ADMIN_PASSWORD))
        .await
        .map_err(err("admin login"))?;
    let req = ApiRequest::with_json(path, Method::POST, path, Bytes::from(body.to_string()))
        .map_err(err("request"))?;
    let reply = access
        .send(&req, Some(&login.session))
        .await
        .map_err(err("access.md"))?;
    if !reply.status().is_success() {
        return Err(format!("{path}: access.md answered {}", reply.status()));
    }
    Ok(())
}

async fn signup(
    access: &AccessMd,
    login: &Login,
    first: &str,
    last: &str,
) -> Result<(), TestbedError> {
    let body = serde_json::json!({"username": login.username, "password": login.password,
        "telephoneNumber": "0790000000", "firstName": first, "lastName": last});
    let req = ApiRequest::with_json(
        "/api/patient/signup",
        Method::POST,
        "/api/patient/signup",
        Bytes::from(body.to_string()),
    )
    .map_err(err("request"))?;
    let reply = access.send(&req, None).await.map_err(err("access.md"))?;
    if !reply.status().is_success() {
        return Err(format!(
            "patient signup: access.md answered {}",
            reply.status()
        ));
    }
    Ok(())
}

impl Site {
    async fn create(
        dns: &TestDnsServer,
        fqdn: &str,
        dir: &Path,
        extra: &str,
        upstreams: &Upstreams,
        public: PublicListener,
    ) -> Result<Site, TestbedError> {
        let short = fqdn.split('.').next().unwrap_or("site").to_owned();
        let (emulator, upstream_process, upstream_url) = match upstreams {
            Upstreams::InProcess => {
                let emulator = Emulator::bind(
                    SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                    EmulatorOptions {
                        admin_password: Some(ADMIN_PASSWORD.to_owned()),
                        ..EmulatorOptions::default()
                    },
                )
                .await
                .map_err(err("emulator"))?;
                let url = emulator.base_url();
                (Some(emulator), None, url)
            }
            Upstreams::Processes(bin) => {
                let password_file = dir.join("emulator-admin.password");
                write_new(&password_file, ADMIN_PASSWORD.as_bytes(), true)?;
                let (process, url) = UpstreamProcess::start(bin, &password_file).await?;
                (None, Some(process), url)
            }
        };

        // Accounts.
        let upstream_cfg = crate::config::Upstream {
            authority: crate::config::parse_upstream_url(&upstream_url)
                .map_err(err("upstream URL"))?,
            connect_timeout: std::time::Duration::from_secs(2),
            response_timeout: std::time::Duration::from_secs(10),
            pool_idle_timeout: std::time::Duration::from_secs(30),
            pool_max_idle: 4,
            request_gzip: false,
            federation_account: None,
            enrolled: Vec::new(),
        };
        let access = AccessMd::new(&upstream_cfg);
        let federation_account = Login {
            username: format!("federation-{short}"),
            password: format!("fed-{}", random_word()),
        };
        let doctor = Login {
            username: format!("dr-{short}"),
            password: "doctor-pw".to_owned(),
        };
        let patient = Login {
            username: format!("patient-{short}"),
            password: "patient-pw".to_owned(),
        };
        for (login, first, last) in [
            (&federation_account, "Federation", "Account"),
            (&doctor, "Doctor", short.as_str()),
        ] {
            admin_call(
                &access,
                "/api/admin/doctor",
                serde_json::json!({"username": login.username, "password": login.password,
                    "firstName": first, "lastName": last}),
            )
            .await?;
        }
        signup(&access, &patient, "Pat", short.as_str()).await?;

        // Keys and certificates.
        let (cert, key) = pki::self_signed(fqdn).map_err(err("certificate"))?;
        write_new(&dir.join("fed.crt"), cert.as_bytes(), false)?;
        write_new(&dir.join("fed.key"), key.as_bytes(), true)?;
        let signing = SigningKey::generate(SIGNING_SELECTOR).map_err(err("signing key"))?;
        write_new(
            &dir.join("signing.key"),
            signing.to_pkcs8_pem().as_bytes(),
            true,
        )?;
        write_new(
            &dir.join("federation-account.password"),
            federation_account.password.as_bytes(),
            true,
        )?;

        let config_path = dir.join("mdgate.toml");
        let text = format!(
            r#"# A testbed site ({fqdn}); see src/demo/testbed.rs.
[server]
fqdn = "{fqdn}"

[upstream]
url = "{upstream_url}"

[upstream.federation_account]
username = "{fed_user}"
password_file = "federation-account.password"

[public]
listen = "127.0.0.1:0"
{public_transport}

[federation]
listen = "127.0.0.1:0"

[federation.tls]
cert_file = "fed.crt"
key_file = "fed.key"

[federation.trust]
dns = true

[dns]
nameservers = ["{dns}"]
timeout = "500ms"
min_ttl = "1s"
max_ttl = "5s"
negative_ttl = "1s"

[admin]
listen = "127.0.0.1:0"

[store]
path = "mdgate.db"

[runtime]
workers = 1
drain_timeout = "1s"

[keys]
signing_key_file = "signing.key"
signing_selector = "{SIGNING_SELECTOR}"
tls_selector = "{TLS_SELECTOR}"
{extra}
"#,
            fed_user = federation_account.username,
            dns = dns.addr(),
            public_transport = match public {
                PublicListener::PlainHttp => "plain_http = true",
                PublicListener::Tls => "tls = { cert_file = \"fed.crt\", key_file = \"fed.key\" }",
            },
        );
        std::fs::write(&config_path, text).map_err(err("configuration"))?;
        let config = crate::config::load(&config_path).map_err(|e| e.report())?;
        let running = serve::start(config).await.map_err(err("mdgate"))?;
        let port = running.federation_addr.map(|a| a.port()).unwrap_or(0);
        publish(dns, fqdn, dir, port).await?;
        Ok(Site {
            fqdn: fqdn.to_owned(),
            dir: dir.to_owned(),
            config_path,
            upstream: emulator,
            upstream_process,
            running: Some(running),
            public,
            doctor,
            patient,
            federation_account,
        })
    }
}

fn random_word() -> String {
    use rand::Rng as _;
    let n: u64 = rand::thread_rng().gen();
    format!("{n:016x}")
}

fn write_new(path: &Path, bytes: &[u8], private: bool) -> Result<(), TestbedError> {
    if private {
        pki::write_private(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
    } else {
        std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Publishes the site's records: the index (with the federation port),
/// the TLS key hash, the signing key, and the address.
async fn publish(
    dns: &TestDnsServer,
    fqdn: &str,
    dir: &Path,
    port: u16,
) -> Result<(), TestbedError> {
    let cert = std::fs::read(dir.join("fed.crt")).map_err(err("certificate"))?;
    let der = CertificateDer::from_pem_slice(&cert).map_err(err("certificate"))?;
    let id = crate::tls::peer_identity(&der).map_err(err("certificate"))?;
    let signing_pem = std::fs::read(dir.join("signing.key")).map_err(err("signing key"))?;
    let signing =
        SigningKey::from_pkcs8_pem(SIGNING_SELECTOR, &signing_pem).map_err(err("signing key"))?;
    let mut index = IndexRecord::new(vec![
        Selector::parse(TLS_SELECTOR).map_err(err("selector"))?,
        Selector::parse(SIGNING_SELECTOR).map_err(err("selector"))?,
    ]);
    index.federation_port = port;
    let tls = KeyRecord {
        usage: KeyUse::Tls,
        algorithm: KeyAlgorithm::P256,
        material: KeyMaterial::SpkiSha256(*id.spki_sha256()),
    };
    let sig = KeyRecord {
        usage: KeyUse::Sig,
        algorithm: KeyAlgorithm::Ed25519,
        material: KeyMaterial::Spki(signing.spki_der().to_vec()),
    };
    let dns_err = err("DNS update");
    dns.set_txt(&format!("_mdgate.{fqdn}."), &[&index.to_string()])
        .await
        .map_err(&dns_err)?;
    dns.set_txt(
        &format!("{TLS_SELECTOR}._mdgate.{fqdn}."),
        &[&tls.to_string()],
    )
    .await
    .map_err(&dns_err)?;
    dns.set_txt(
        &format!("{SIGNING_SELECTOR}._mdgate.{fqdn}."),
        &[&sig.to_string()],
    )
    .await
    .map_err(&dns_err)?;
    dns.set_a(&format!("{fqdn}."), Ipv4Addr::LOCALHOST)
        .await
        .map_err(&dns_err)?;
    Ok(())
}
