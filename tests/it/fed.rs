//! Federation test fixtures: a peer mdgate with `[keys]`, its key document
//! served over HTTPS, its records in a test DNS server, and "our" side's
//! configuration for `check-peer` and `dns-records`.
//!
//! The peer is an in-process mdgate started by [`crate::gate::Gate`]
//! (named [`FQDN`]), with a `[keys]` section added; its DNS records are the
//! lines `mdgate dns-records` prints for it, loaded into the DNS server by
//! [`load_zone`], so the tests exercise the printed text itself. Its public
//! listener serves its key document; [`KeyDocServer`] serves one the test
//! controls (a stale or forged document) on another port, which `wp=` then
//! names.

#![allow(dead_code)] // Not every test uses every helper.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mdgate::admin::dnsrecords::{self, DnsRecordsArgs};
use mdgate::config::Config;
use mdgate::dns::record::Tlsa;
use mdgate::dns::testserver::TestDnsServer;
use mdgate::tls::pki::{self, TestCa};
use mdgate::token::SigningKey;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::gate::{write_pair, Gate, GateOptions, FQDN};

/// Our server's name in the `check-peer` and `dns-records` tests.
pub const US: &str = "us.mdgate.test";
/// The zone both servers' records live in.
pub const ZONE: &str = "mdgate.test";

/// A DNS server answering for [`ZONE`] (unsigned), or, with `signed`, for
/// a signed `test.` (the trust anchor) that delegates to a signed
/// [`ZONE`]. Returns the anchor file path when signed.
pub async fn dns_server(signed: bool, dir: &Path) -> (TestDnsServer, Option<PathBuf>) {
    let builder = TestDnsServer::builder();
    let builder = if signed {
        builder.signed_zone("test").signed_zone(ZONE)
    } else {
        builder.zone(ZONE)
    };
    let server = builder.start().await.expect("test DNS server");
    let anchor = if signed {
        let path = dir.join("anchor.txt");
        server.write_trust_anchor("test", &path).expect("anchor");
        Some(path)
    } else {
        None
    };
    (server, anchor)
}

/// Loads zone-file lines as `mdgate dns-records` prints them (comments,
/// TXT with quoted strings, TLSA `3 1 1 <hex>`) into the DNS server,
/// replacing the RRsets they name.
pub async fn load_zone(dns: &TestDnsServer, text: &str) {
    let mut txt: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    let mut tlsa: BTreeMap<String, Vec<Tlsa>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(';') {
            continue;
        }
        let mut fields = line.splitn(5, ' ');
        let name = fields.next().unwrap().to_owned();
        let _ttl: u32 = fields.next().unwrap().parse().unwrap();
        assert_eq!(fields.next(), Some("IN"), "{line}");
        let kind = fields.next().unwrap();
        let rest = fields.next().unwrap();
        match kind {
            "TXT" => txt.entry(name).or_default().push(quoted_strings(rest)),
            "TLSA" => {
                let parts: Vec<&str> = rest.split(' ').collect();
                tlsa.entry(name).or_default().push(Tlsa {
                    usage: parts[0].parse().unwrap(),
                    selector: parts[1].parse().unwrap(),
                    matching: parts[2].parse().unwrap(),
                    data: hex::decode(parts[3]).unwrap(),
                });
            }
            other => panic!("unexpected record type {other} in {line}"),
        }
    }
    for (name, records) in &txt {
        let strings: Vec<Vec<&str>> = records
            .iter()
            .map(|r| r.iter().map(String::as_str).collect())
            .collect();
        let refs: Vec<&[&str]> = strings.iter().map(Vec::as_slice).collect();
        dns.set_txt_records(name, &refs).await.expect("TXT");
    }
    for (name, records) in &tlsa {
        dns.set_tlsa(name, records).await.expect("TLSA");
    }
}

fn quoted_strings(rest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut s = String::new();
        loop {
            match chars.next().expect("closing quote") {
                '"' => break,
                '\\' => s.push(chars.next().expect("escaped character")),
                c => s.push(c),
            }
        }
        out.push(s);
    }
    out
}

/// Writes a signing key (mode 0600) and returns its path.
pub fn write_signing_key(dir: &Path, key: &SigningKey) -> PathBuf {
    let path = dir.join(format!("signing-{}.key", key.selector()));
    pki::write_private(&path, key.to_pkcs8_pem().as_bytes()).unwrap();
    path
}

/// A peer: an mdgate with `[keys]` (signing key `sig1`, TLS key `tls1` =
/// its federation certificate), and its key document on HTTPS.
pub struct Peer {
    pub gate: Gate,
    pub keys_dir: TempDir,
    pub signing: SigningKey,
    /// The peer's configuration as loaded (for `key_document` and
    /// `dns-records`).
    pub config: Config,
    pub web: KeyDocServer,
}

impl Peer {
    /// Starts a peer; `trust` goes into its `[federation.trust]` (the test
    /// CA is trusted too).
    pub async fn start(trust: &str) -> Peer {
        let keys_dir = tempfile::tempdir().unwrap();
        let signing = SigningKey::generate("sig1").unwrap();
        let key_file = write_signing_key(keys_dir.path(), &signing);
        let mut opts = GateOptions::new("http://127.0.0.1:9");
        opts.federation = true;
        opts.federation_trust = trust.to_owned();
        // `upstream_extra` ends the [upstream] table; a new table may follow.
        opts.upstream_extra = format!(
            "\n[keys]\nsigning_key_file = \"{}\"\nsigning_selector = \"sig1\"\ntls_selector = \"tls1\"\n",
            key_file.display()
        );
        let gate = Gate::start(opts).await;
        let config =
            mdgate::config::load(&gate.config_path).unwrap_or_else(|e| panic!("{}", e.report()));
        let (cert, key) = gate.ca.issue(&[FQDN]).unwrap();
        let web = KeyDocServer::start(&cert, &key).await;
        let peer = Peer {
            gate,
            keys_dir,
            signing,
            config,
            web,
        };
        peer.web.set(&peer.key_document());
        peer
    }

    /// The peer's key document, signed now.
    pub fn key_document(&self) -> String {
        mdgate::token::publish::key_document(&self.config, SystemTime::now()).expect("document")
    }

    /// The records `mdgate dns-records` prints for the peer, with the
    /// ports it really listens on.
    pub fn zone_text(&self) -> String {
        let args = DnsRecordsArgs {
            federation_port: Some(self.gate.federation.expect("federation").port()),
            web_port: Some(self.web.addr.port()),
            ..DnsRecordsArgs::default()
        };
        dnsrecords::plan(&self.config, &args)
            .expect("plan")
            .zone_text()
    }

    /// Publishes the peer's records and its address.
    pub async fn publish(&self, dns: &TestDnsServer) {
        load_zone(dns, &self.zone_text()).await;
        dns.set_a(FQDN, Ipv4Addr::LOCALHOST).await.unwrap();
    }

    /// Publishes the peer's records with `wp=` its public listener, which
    /// serves the key document mdgate itself signs.
    pub async fn publish_served_document(&self, dns: &TestDnsServer) {
        let args = DnsRecordsArgs {
            federation_port: Some(self.gate.federation.expect("federation").port()),
            web_port: Some(self.gate.public.port()),
            ..DnsRecordsArgs::default()
        };
        let text = dnsrecords::plan(&self.config, &args)
            .expect("plan")
            .zone_text();
        load_zone(dns, &text).await;
        dns.set_a(FQDN, Ipv4Addr::LOCALHOST).await.unwrap();
    }

    /// The test CA that issued the peer's certificates (also its web
    /// certificate), as a file.
    pub fn ca_file(&self) -> PathBuf {
        self.gate.dir.path().join("ca.crt")
    }

    /// The peer's TLS key, SHA-256 of its SubjectPublicKeyInfo.
    pub fn tls_key_hash(&self) -> [u8; 32] {
        let pem = std::fs::read_to_string(self.gate.dir.path().join("public.crt")).unwrap();
        pki::spki_sha256_of_pem(&pem).unwrap()
    }

    pub async fn stop(self) {
        self.gate.stop().await;
    }
}

/// An HTTPS server that answers `GET /.well-known/mdgate/keys` with the
/// document set by [`KeyDocServer::set`] (404 for anything else).
pub struct KeyDocServer {
    pub addr: SocketAddr,
    document: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl KeyDocServer {
    pub async fn start(cert_pem: &str, key_pem: &str) -> KeyDocServer {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(mdgate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let document = Arc::new(Mutex::new(String::new()));
        let doc = document.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let doc = doc.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    // One request per connection: read the head, answer, close.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let response = if head.starts_with("GET /.well-known/mdgate/keys ") {
                        let body = doc.lock().unwrap().clone();
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/jose\r\ndate: {}\r\n\
                             content-length: {}\r\nconnection: close\r\n\r\n{body}",
                            httpdate::fmt_http_date(SystemTime::now()),
                            body.len()
                        )
                    } else {
                        "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            .to_owned()
                    };
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        KeyDocServer {
            addr,
            document,
            task,
        }
    }

    /// The document served from now on.
    pub fn set(&self, jws: &str) {
        *self.document.lock().unwrap() = jws.to_owned();
    }
}

impl Drop for KeyDocServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Our side: a configuration for [`US`] whose federation certificate the
/// peer's CA issued (so the peer admits us), resolving through `dns`.
pub struct Us {
    pub dir: TempDir,
    pub config: Config,
    pub config_path: PathBuf,
    pub signing: SigningKey,
}

/// What to vary in [`Us`].
#[derive(Default)]
pub struct UsOptions {
    /// Our federation certificate's issuer (default: a new CA nobody
    /// trusts).
    pub ca: Option<String>,
    /// Extra lines for `[dns]`.
    pub dns: String,
    /// `web_ca_file` for `[federation.trust]`.
    pub web_ca_file: Option<PathBuf>,
    /// Next keys (`next_signing_*`, `next_tls_*`).
    pub next: bool,
    /// `[keys] clock_skew`.
    pub clock_skew: Option<&'static str>,
}

impl Us {
    /// Writes and loads our configuration; `ca` issues our certificate.
    pub fn new(dns: &TestDnsServer, ca: &TestCa, opts: UsOptions) -> Us {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ca.issue(&[US]).unwrap();
        write_pair(dir.path(), "federation", &cert, &key);
        let signing = SigningKey::generate("ussig1").unwrap();
        let key_file = write_signing_key(dir.path(), &signing);
        let mut keys = format!(
            "[keys]\nsigning_key_file = \"{}\"\nsigning_selector = \"ussig1\"\ntls_selector = \"ustls1\"\n",
            key_file.display()
        );
        if opts.next {
            let next = SigningKey::generate("ussig2").unwrap();
            let next_file = write_signing_key(dir.path(), &next);
            let (next_cert, next_key) = ca.issue(&[US]).unwrap();
            write_pair(dir.path(), "next", &next_cert, &next_key);
            keys.push_str(&format!(
                "next_signing_key_file = \"{}\"\nnext_signing_selector = \"ussig2\"\n\
                 next_tls_selector = \"ustls2\"\nnext_tls_cert_file = \"next.crt\"\n",
                next_file.display()
            ));
        }
        if let Some(skew) = opts.clock_skew {
            keys.push_str(&format!("clock_skew = \"{skew}\"\n"));
        }
        std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
        let web_ca = opts
            .web_ca_file
            .map(|p| format!("web_ca_file = \"{}\"\n", p.display()))
            .unwrap_or_default();
        let text = format!(
            r#"
[server]
fqdn = "{US}"

[upstream]
url = "http://127.0.0.1:9"

[public]
listen = "127.0.0.1:0"

[public.tls]
cert_file = "federation.crt"
key_file = "federation.key"

[federation]
listen = "127.0.0.1:0"

[federation.tls]
cert_file = "federation.crt"
key_file = "federation.key"

[federation.trust]
ca_file = "ca.crt"
{web_ca}
[store]
path = "{store}"

[dns]
nameservers = ["{ns}"]
timeout = "500ms"
{dns_extra}

{keys}
"#,
            store = dir.path().join("mdgate.db").display(),
            ns = dns.nameserver(),
            dns_extra = opts.dns,
        );
        let config_path = dir.path().join("mdgate.toml");
        std::fs::write(&config_path, text).unwrap();
        let config =
            mdgate::config::load(&config_path).unwrap_or_else(|e| panic!("{}", e.report()));
        Us {
            dir,
            config,
            config_path,
            signing,
        }
    }

    /// What `mdgate dns-records` prints for us (ports given, since ours
    /// are 0).
    pub fn zone_text(&self) -> String {
        self.plan().zone_text()
    }

    pub fn plan(&self) -> dnsrecords::ZonePlan {
        dnsrecords::plan(&self.config, &Self::args()).expect("plan")
    }

    pub fn args() -> DnsRecordsArgs {
        DnsRecordsArgs {
            federation_port: Some(8443),
            web_port: Some(443),
            ..DnsRecordsArgs::default()
        }
    }
}

/// Runs `check-peer` against `fqdn` as `us`, with a short timeout.
pub async fn check_peer(us: &Us, fqdn: &str) -> mdgate::admin::checks::Report {
    check_peer_with_clock(us, fqdn, SystemTime::now).await
}

pub async fn check_peer_with_clock(
    us: &Us,
    fqdn: &str,
    clock: fn() -> SystemTime,
) -> mdgate::admin::checks::Report {
    let args = mdgate::admin::checkpeer::CheckPeerArgs {
        fqdn: fqdn.to_owned(),
        timeout: Duration::from_secs(3),
    };
    mdgate::admin::checkpeer::check_peer(&us.config, &args, clock)
        .await
        .expect("check-peer runs")
}
