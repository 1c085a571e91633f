//! Servers that trust each other only through keys published in their own
//! DNS: a real authoritative DNS server on loopback (in-process), several
//! mdgates, real mutual TLS.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http_body_util::BodyExt;
use mdgate::dns::record::{IndexRecord, KeyAlgorithm, KeyRecord, Selector};
use mdgate::dns::testserver::{Mode, TestDnsServer};
use mdgate::serve::{self, Running};
use mdgate::tls::pki::{self, LeafSpec};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::gate;
use crate::support::Upstream;

const ZONE: &str = "mdgate.test";

/// A key pair and the SHA-256 of its SubjectPublicKeyInfo.
struct Key {
    cert: String,
    key: String,
    spki: Vec<u8>,
}

fn key_for(fqdn: &str) -> Key {
    let (cert, key) = pki::self_signed(fqdn).unwrap();
    key_from(cert, key)
}

fn key_from(cert: String, key: String) -> Key {
    let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    let spki = parsed.tbs_certificate.subject_pki.raw.to_vec();
    Key { cert, key, spki }
}

fn tls_record(key: &Key) -> String {
    KeyRecord::tls_hash(KeyAlgorithm::P256, &key.spki).to_string()
}

async fn publish(dns: &TestDnsServer, fqdn: &str, port: u16, selectors: &[(&str, Option<&Key>)]) {
    let mut index = IndexRecord::new(
        selectors
            .iter()
            .map(|(s, _)| Selector::parse(s).unwrap())
            .collect(),
    );
    index.federation_port = port;
    dns.set_txt(&format!("_mdgate.{fqdn}."), &[&index.to_string()])
        .await
        .unwrap();
    for (sel, key) in selectors {
        let text = match key {
            Some(k) => tls_record(k),
            None => "v=mdgate1; u=tls; a=p256; h=".to_owned(),
        };
        dns.set_txt(&format!("{sel}._mdgate.{fqdn}."), &[&text])
            .await
            .unwrap();
    }
    dns.set_a(&format!("{fqdn}."), Ipv4Addr::LOCALHOST)
        .await
        .unwrap();
}

/// One mdgate server named `fqdn`, trusting peers through DNS.
struct Server {
    fqdn: String,
    _dir: TempDir,
    running: Option<Running>,
    _key: Key,
}

impl Server {
    async fn start(fqdn: &str, upstream: &str, dns: &TestDnsServer, extra_trust: &str) -> Server {
        Self::start_with(fqdn, upstream, dns, extra_trust, "").await
    }

    async fn start_with(
        fqdn: &str,
        upstream: &str,
        dns: &TestDnsServer,
        extra_trust: &str,
        extra_dns: &str,
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let key = key_for(fqdn);
        gate::write_pair(dir.path(), "fed", &key.cert, &key.key);
        let text = config(
            dir.path(),
            fqdn,
            upstream,
            &dns.addr().to_string(),
            extra_trust,
            extra_dns,
        );
        let path = dir.path().join("mdgate.toml");
        std::fs::write(&path, text).unwrap();
        let config = mdgate::config::load(&path).unwrap_or_else(|e| panic!("{}", e.report()));
        let running = serve::start(config).await.expect("mdgate starts");
        let port = running.federation_addr.unwrap().port();
        publish(dns, fqdn, port, &[("tls1", Some(&key))]).await;
        Server {
            fqdn: fqdn.to_owned(),
            _dir: dir,
            running: Some(running),
            _key: key,
        }
    }

    fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    fn port(&self) -> u16 {
        self.running().federation_addr.unwrap().port()
    }

    async fn failures(&self, reason: &str) -> f64 {
        let prefix = format!(
            "mdgate_tls_handshake_failures_total{{listener=\"federation\",reason=\"{reason}\"}}"
        );
        for _ in 0..100 {
            let v = gate::metric(&self.running().metrics.encode(), &prefix);
            if v > 0.0 {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        0.0
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

fn config(
    dir: &Path,
    fqdn: &str,
    upstream: &str,
    dns: &str,
    extra_trust: &str,
    extra_dns: &str,
) -> String {
    format!(
        r#"
[server]
fqdn = "{fqdn}"

[upstream]
url = "{upstream}"

[public]
listen = "127.0.0.1:0"

[public.tls]
cert_file = "fed.crt"
key_file = "fed.key"

[federation]
listen = "127.0.0.1:0"

[federation.tls]
cert_file = "fed.crt"
key_file = "fed.key"

[federation.trust]
dns = true
{extra_trust}

[dns]
nameservers = ["{dns}"]
timeout = "300ms"
min_ttl = "1s"
max_ttl = "1s"
negative_ttl = "1s"
stale_if_error = "3s"
{extra_dns}

[admin]
listen = "127.0.0.1:0"

[store]
path = "{store}"

[runtime]
workers = 1
drain_timeout = "2s"
"#,
        store = dir.join("mdgate.db").display()
    )
}

/// Accepts any server certificate: the peer under test is the server.
#[derive(Debug)]
struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        mdgate::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A bare peer: presents `cert`/`key` to `server` and asks who it is.
/// `Ok(body)` when served, `Err` when the connection was refused.
async fn knock(server: &Server, cert: &str, key: &str) -> Result<Value, String> {
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(mdgate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_client_auth_cert(chain, key)
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    let name = ServerName::try_from(server.fqdn.clone()).unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET /federation/v1/identity HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        server.fqdn
    );
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .ok_or_else(|| format!("refused: {text:?}"))?;
    serde_json::from_str(body).map_err(|e| format!("{e}: {text}"))
}

async fn dns_server() -> TestDnsServer {
    let dns = TestDnsServer::builder().zone(ZONE).start().await.unwrap();
    dns.set_ttl(1);
    dns
}

#[tokio::test]
async fn two_servers_federate_and_each_sees_the_other() {
    let up = Upstream::start().await;
    let dns = dns_server().await;
    let a = Server::start("a.mdgate.test", up.base(), &dns, "").await;
    let b = Server::start("b.mdgate.test", up.base(), &dns, "").await;

    let egress = a.running().egress.clone().unwrap();
    let answer = egress
        .send(&b.fqdn, Method::GET, "/federation/v1/identity", None)
        .await
        .expect("A reaches B");
    assert_eq!(
        answer.peer.as_ref().map(|p| p.fqdn()),
        Some("b.mdgate.test"),
        "A sees B"
    );
    let body = answer
        .response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["server"], "b.mdgate.test");
    assert_eq!(body["peer"], "a.mdgate.test", "B sees A");

    let back = b.running().egress.clone().unwrap();
    let answer = back
        .send(&a.fqdn, Method::GET, "/federation/v1/identity", None)
        .await
        .expect("B reaches A");
    let body = answer
        .response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["peer"], "b.mdgate.test");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn peers_are_refused_each_with_its_own_reason() {
    let up = Upstream::start().await;
    let dns = dns_server().await;
    let b = Server::start(
        "b.mdgate.test",
        up.base(),
        &dns,
        "deny = [\"evil.mdgate.test\"]",
    )
    .await;

    // No record at all.
    let c = key_for("c.mdgate.test");
    assert!(knock(&b, &c.cert, &c.key).await.is_err());
    assert!(b.failures("no_record").await >= 1.0);

    // A record for another key.
    let other = key_for("d.mdgate.test");
    publish(&dns, "d.mdgate.test", 1, &[("tls1", Some(&other))]).await;
    let d = key_for("d.mdgate.test");
    assert!(knock(&b, &d.cert, &d.key).await.is_err());
    assert!(b.failures("key_mismatch").await >= 1.0);

    // A certificate naming another server (b's own name, another key).
    let impostor = key_for("b.mdgate.test");
    assert!(knock(&b, &impostor.cert, &impostor.key).await.is_err());
    assert!(b.failures("key_mismatch").await >= 2.0);

    // A certificate naming several servers.
    let (cert, key) =
        pki::self_signed_with(&LeafSpec::dns(&["e.mdgate.test", "f.mdgate.test"])).unwrap();
    assert!(knock(&b, &cert, &key).await.is_err());
    assert!(b.failures("identity").await >= 1.0);

    // A revoked key.
    let g = key_for("g.mdgate.test");
    publish(&dns, "g.mdgate.test", 1, &[("tls1", None)]).await;
    assert!(knock(&b, &g.cert, &g.key).await.is_err());
    assert!(b.failures("revoked").await >= 1.0);

    // Published correctly, but on the deny-list.
    let evil = key_for("evil.mdgate.test");
    publish(&dns, "evil.mdgate.test", 1, &[("tls1", Some(&evil))]).await;
    assert!(knock(&b, &evil.cert, &evil.key).await.is_err());
    assert!(b.failures("denied").await >= 1.0);

    // And a well-published peer is served.
    let h = key_for("h.mdgate.test");
    publish(&dns, "h.mdgate.test", 1, &[("tls1", Some(&h))]).await;
    let who = knock(&b, &h.cert, &h.key)
        .await
        .expect("published peer served");
    assert_eq!(who["peer"], "h.mdgate.test");
    let refusals = b.running().metrics.encode();
    assert!(
        gate::metric(
            &refusals,
            "mdgate_peer_key_refusals_total{reason=\"no_record\"}"
        ) >= 1.0,
        "{refusals}"
    );
    b.stop().await;
}

#[tokio::test]
async fn rotation_overlaps_then_retires_the_old_key() {
    let up = Upstream::start().await;
    let dns = dns_server().await;
    let b = Server::start("b.mdgate.test", up.base(), &dns, "").await;
    let old = key_for("r.mdgate.test");
    publish(&dns, "r.mdgate.test", 1, &[("tls1", Some(&old))]).await;
    knock(&b, &old.cert, &old.key).await.expect("old key");

    // The next key is published beside the current one: both work.
    let new = key_for("r.mdgate.test");
    publish(
        &dns,
        "r.mdgate.test",
        1,
        &[("tls1", Some(&old)), ("tls2", Some(&new))],
    )
    .await;
    knock(&b, &new.cert, &new.key)
        .await
        .expect("new key during the overlap");
    knock(&b, &old.cert, &old.key)
        .await
        .expect("old key during the overlap");

    // The old selector leaves the index: once the cached answer expires,
    // the old key is refused and the new one still works.
    publish(&dns, "r.mdgate.test", 1, &[("tls2", Some(&new))]).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        knock(&b, &old.cert, &old.key).await.is_err(),
        "old key retired"
    );
    knock(&b, &new.cert, &new.key)
        .await
        .expect("new key after the rotation");
    b.stop().await;
}

#[tokio::test]
async fn a_dns_outage_is_bridged_for_the_stale_window_then_fails_closed() {
    let up = Upstream::start().await;
    let dns = dns_server().await;
    let b = Server::start("b.mdgate.test", up.base(), &dns, "").await;
    let p = key_for("p.mdgate.test");
    publish(&dns, "p.mdgate.test", 1, &[("tls1", Some(&p))]).await;
    knock(&b, &p.cert, &p.key).await.expect("before the outage");

    dns.set_mode(Mode::Drop);
    // Past the 1 s TTL, within the 3 s stale window: cached keys still work.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    knock(&b, &p.cert, &p.key)
        .await
        .expect("within the stale window");
    // Past TTL + stale window: refused.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(
        knock(&b, &p.cert, &p.key).await.is_err(),
        "fails closed after the window"
    );

    // DNS returns: accepted again, no restart.
    dns.set_mode(Mode::Answer);
    let mut back = false;
    for _ in 0..20 {
        if knock(&b, &p.cert, &p.key).await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(back, "works again once DNS answers");
    b.stop().await;
}

#[tokio::test]
async fn many_connections_from_a_new_peer_cause_one_lookup() {
    let up = Upstream::start().await;
    let dns = dns_server().await;
    let b = Server::start("b.mdgate.test", up.base(), &dns, "").await;
    let n = key_for("n.mdgate.test");
    publish(&dns, "n.mdgate.test", 1, &[("tls1", Some(&n))]).await;
    dns.reset_counts();
    let b = Arc::new(b);
    let n = Arc::new(n);
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (b, n) = (b.clone(), n.clone());
        tasks.push(tokio::spawn(
            async move { knock(&b, &n.cert, &n.key).await },
        ));
    }
    for t in tasks {
        t.await.unwrap().expect("served");
    }
    assert_eq!(
        dns.query_count("_mdgate.n.mdgate.test."),
        1,
        "{:?}",
        dns.counts()
    );
    assert_eq!(
        dns.query_count("tls1._mdgate.n.mdgate.test."),
        1,
        "{:?}",
        dns.counts()
    );
    if let Ok(b) = Arc::try_unwrap(b) {
        b.stop().await;
    }
}

#[tokio::test]
async fn a_dnssec_bogus_answer_is_refused_when_validating() {
    let up = Upstream::start().await;
    let dns = TestDnsServer::builder()
        .signed_zone("test")
        .start()
        .await
        .unwrap();
    dns.set_ttl(1);
    let dir = tempfile::tempdir().unwrap();
    let anchor = dir.path().join("anchor.txt");
    dns.write_trust_anchor("test", &anchor).unwrap();
    let extra = format!(
        "dnssec = \"validate\"\ntrust_anchor_file = \"{}\"",
        anchor.display()
    );
    let b = Server::start_with("b.test", up.base(), &dns, "", &extra).await;
    let s = key_for("s.test");
    publish(&dns, "s.test", 1, &[("tls1", Some(&s))]).await;
    knock(&b, &s.cert, &s.key)
        .await
        .expect("secure and published");

    // An on-path forgery: the index changed, the signatures did not.
    dns.tamper_txt("_mdgate.s.test.", &["v=mdgate1; s=tls1,evil"])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        knock(&b, &s.cert, &s.key).await.is_err(),
        "bogus answers refuse"
    );
    assert!(b.failures("dnssec_bogus").await >= 1.0);
    b.stop().await;
}

#[tokio::test]
async fn the_public_listener_serves_the_signed_key_document() {
    let up = Upstream::start().await;
    let dns = dns_server().await;
    let signing = mdgate::token::SigningKey::generate("sig1").unwrap();
    let holder = tempfile::tempdir().unwrap();
    let key_path = holder.path().join("signing.key");
    pki::write_private(&key_path, signing.to_pkcs8_pem().as_bytes()).unwrap();
    let keys = format!(
        "[keys]\nsigning_key_file = \"{}\"\nsigning_selector = \"sig1\"\ntls_selector = \"tls1\"\n",
        key_path.display()
    );
    // The [keys] table goes after [dns] (the last lines of the [dns] table).
    let b = Server::start_with("k.mdgate.test", up.base(), &dns, "", &format!("\n{keys}")).await;
    let public = b.running().public_addr;

    let config = rustls::ClientConfig::builder_with_provider(mdgate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(public).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("k.mdgate.test").unwrap(), tcp)
        .await
        .unwrap();
    let request =
        "GET /.well-known/mdgate/keys HTTP/1.1\r\nHost: k.mdgate.test\r\nConnection: close\r\n\r\n";
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: application/jose"),
        "{text}"
    );
    let jws = text.split("\r\n\r\n").nth(1).unwrap().trim();
    let doc = mdgate::token::KeyDocument::verify(
        jws,
        "k.mdgate.test",
        Duration::from_secs(60),
        |kid| (kid == "sig1").then(|| signing.verifying_key().clone()),
        std::time::SystemTime::now(),
    )
    .expect("signed by the server's key");
    assert_eq!(doc.server, "k.mdgate.test");
    let selectors: Vec<&str> = doc.keys.iter().map(|k| k.selector.as_str()).collect();
    assert!(
        selectors.contains(&"sig1") && selectors.contains(&"tls1"),
        "{selectors:?}"
    );
    b.stop().await;
}
