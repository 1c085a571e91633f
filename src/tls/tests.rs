//! Real handshakes over in-memory pipes (tokio-rustls on `duplex`), with a
//! PKI generated at run time.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, HandshakeKind, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

use super::pki::{self, LeafSpec, TestCa};
use super::*;
use crate::config::{PeerTrust, TlsFiles};

type ServerTls = server::TlsStream<DuplexStream>;
type ClientTls = client::TlsStream<DuplexStream>;

const SERVER: &str = "server1.example.org";
const PEER: &str = "server2.example.org";

// ---------------------------------------------------------------- helpers

/// Writes a PEM pair (key with mode 0600, replacing any previous file).
fn write_pair(dir: &Path, name: &str, cert_pem: &str, key_pem: &str) -> TlsFiles {
    let cert_file = dir.join(format!("{name}.crt"));
    let key_file = dir.join(format!("{name}.key"));
    fs::write(&cert_file, cert_pem).unwrap();
    let _ = fs::remove_file(&key_file);
    pki::write_private(&key_file, key_pem.as_bytes()).unwrap();
    TlsFiles {
        cert_file,
        key_file,
    }
}

fn reloader(dir: &Path, name: &str, pair: &(String, String)) -> Arc<CertReloader> {
    Arc::new(CertReloader::new(write_pair(dir, name, &pair.0, &pair.1)).unwrap())
}

fn der(cert_pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()
}

fn spki(cert_pem: &str) -> [u8; 32] {
    pki::spki_sha256_of_pem(cert_pem).unwrap()
}

fn roots(ca: &TestCa) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.add(der(&ca.cert_pem())).unwrap();
    roots
}

fn pins(keys: &[[u8; 32]]) -> Option<Arc<dyn PinnedKeys>> {
    Some(Arc::new(StaticPins::new(keys.iter().copied())))
}

fn verifier(roots: Option<RootCertStore>, pins: Option<Arc<dyn PinnedKeys>>) -> Arc<PeerVerifier> {
    Arc::new(PeerVerifier::new(roots, pins).unwrap())
}

/// A federation client with no certificate, trusting `server` by pin.
fn anonymous_client(server_spki: [u8; 32]) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier(None, pins(&[server_spki])))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Runs both ends of one handshake over an in-memory pipe.
async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: &str,
) -> (io::Result<ServerTls>, io::Result<ClientTls>) {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from(name.to_owned()).unwrap();
    tokio::join!(
        TlsAcceptor::from(server).accept(server_io),
        TlsConnector::from(client).connect(name, client_io),
    )
}

/// Sends a few bytes server → client, so the client also processes the
/// session tickets that precede them.
async fn exchange(server: &mut ServerTls, client: &mut ClientTls) {
    server.write_all(b"ok").await.unwrap();
    server.flush().await.unwrap();
    let mut buf = [0u8; 2];
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ok");
}

/// The label the client ends up with: from `connect`, or (TLS 1.3 client
/// auth completes on the client first) from the first read.
async fn client_failure(client: io::Result<ClientTls>) -> &'static str {
    match client {
        Err(e) => handshake_failure_reason(&e),
        Ok(mut stream) => {
            // A server that accepted us sends nothing: don't wait forever.
            let mut buf = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf));
            match read.await {
                Ok(Err(e)) => handshake_failure_reason(&e),
                Ok(Ok(_)) | Err(_) => "no error",
            }
        }
    }
}

fn server_failure(server: io::Result<ServerTls>) -> &'static str {
    match server {
        Err(e) => handshake_failure_reason(&e),
        Ok(_) => "no error",
    }
}

fn presented_leaf(client: &ClientTls) -> CertificateDer<'static> {
    client.get_ref().1.peer_certificates().unwrap()[0].clone()
}

fn peer_of(server: &ServerTls) -> PeerId {
    let certs = server.get_ref().1.peer_certificates().unwrap();
    peer_identity(&certs[0]).unwrap()
}

/// A federation server for `SERVER`, signed by `ca` (or self-signed).
struct Federation {
    _dir: TempDir,
    server_pair: (String, String),
    config: Arc<ServerConfig>,
}

fn federation(ca: Option<&TestCa>, verifier: Arc<dyn ClientCertVerifier>) -> Federation {
    let dir = TempDir::new().unwrap();
    let server_pair = match ca {
        Some(ca) => ca.issue(&[SERVER]).unwrap(),
        None => pki::self_signed(SERVER).unwrap(),
    };
    let certs = reloader(dir.path(), "server", &server_pair);
    Federation {
        _dir: dir,
        config: federation_server_config(certs, verifier).unwrap(),
        server_pair,
    }
}

/// A federation client presenting `pair`, verifying the server with
/// `server_verifier`.
fn peer_client(
    dir: &Path,
    pair: &(String, String),
    server_verifier: Arc<dyn ServerCertVerifier>,
) -> Arc<ClientConfig> {
    client_config(reloader(dir, "peer", pair), server_verifier).unwrap()
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 24 * 3600)
}

// ---------------------------------------------------------------- public

#[tokio::test]
async fn public_config_negotiates_alpn_and_versions() {
    let ca = TestCa::new().unwrap();
    let dir = TempDir::new().unwrap();
    let certs = reloader(dir.path(), "public", &ca.issue(&[SERVER]).unwrap());
    let server = public_server_config(certs).unwrap();

    // (ALPN offered by the client, protocol expected, TLS version)
    type Case = (
        &'static [&'static [u8]],
        Option<&'static [u8]>,
        &'static rustls::SupportedProtocolVersion,
    );
    let cases: [Case; 5] = [
        (&[b"h2", b"http/1.1"], Some(b"h2"), &TLS13),
        (&[b"http/1.1", b"h2"], Some(b"h2"), &TLS13),
        (&[b"http/1.1"], Some(b"http/1.1"), &TLS13),
        (&[], None, &TLS13),
        (&[b"h2"], Some(b"h2"), &TLS12),
    ];
    for (offer, want, version) in cases {
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots(&ca))
            .with_no_client_auth();
        client.alpn_protocols = offer.iter().map(|p| p.to_vec()).collect();
        let (s, c) = handshake(server.clone(), Arc::new(client), SERVER).await;
        let (s, c) = (s.unwrap(), c.unwrap());
        assert_eq!(s.get_ref().1.alpn_protocol(), want, "offer {offer:?}");
        assert_eq!(c.get_ref().1.alpn_protocol(), want, "offer {offer:?}");
        assert_eq!(
            c.get_ref().1.protocol_version(),
            Some(version.version),
            "offer {offer:?}"
        );
        assert!(s.get_ref().1.peer_certificates().is_none());
    }
}

#[tokio::test]
async fn public_config_resumes_sessions() {
    let ca = TestCa::new().unwrap();
    let dir = TempDir::new().unwrap();
    let certs = reloader(dir.path(), "public", &ca.issue(&[SERVER]).unwrap());
    let server = public_server_config(certs).unwrap();
    let client = Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&TLS13])
            .unwrap()
            .with_root_certificates(roots(&ca))
            .with_no_client_auth(),
    );
    let (s, c) = handshake(server.clone(), client.clone(), SERVER).await;
    let (mut s, mut c) = (s.unwrap(), c.unwrap());
    exchange(&mut s, &mut c).await;
    // Stateless tickets, not only the session cache.
    assert!(server.ticketer.enabled());
    let (s, _c) = handshake(server, client, SERVER).await;
    assert_eq!(
        s.unwrap().get_ref().1.handshake_kind(),
        Some(HandshakeKind::Resumed)
    );
}

// ---------------------------------------------------------------- federation

#[tokio::test]
async fn federation_refuses_client_without_certificate() {
    let ca = TestCa::new().unwrap();
    let fed = federation(Some(&ca), verifier(Some(roots(&ca)), None));
    let client = anonymous_client(spki(&fed.server_pair.0));
    let (s, c) = handshake(fed.config, client, SERVER).await;
    assert_eq!(server_failure(s), "no_client_cert");
    assert_eq!(client_failure(c).await, "no_client_cert");
}

#[tokio::test]
async fn federation_refuses_unknown_self_signed_certificate() {
    let ca = TestCa::new().unwrap();
    let stranger = pki::self_signed(PEER).unwrap();
    let other = pki::self_signed("other.example.org").unwrap();
    // (trust, expected label on the server)
    let cases = [
        (verifier(Some(roots(&ca)), None), "unknown_issuer"),
        (verifier(None, pins(&[spki(&other.0)])), "not_pinned"),
        (
            verifier(Some(roots(&ca)), pins(&[spki(&other.0)])),
            "unknown_issuer",
        ),
    ];
    for (trust, want) in cases {
        let fed = federation(Some(&ca), trust);
        let dir = TempDir::new().unwrap();
        let client = peer_client(dir.path(), &stranger, verifier(Some(roots(&ca)), None));
        let (s, c) = handshake(fed.config, client, SERVER).await;
        assert_eq!(server_failure(s), want);
        // The peer learns only what an alert can say.
        let seen = client_failure(c).await;
        assert!(
            ["unknown_issuer", "bad_certificate"].contains(&seen),
            "client saw {seen}"
        );
    }
}

#[tokio::test]
async fn federation_accepts_ca_issued_client_and_extracts_identity() {
    let ca = TestCa::new().unwrap();
    let fed = federation(Some(&ca), verifier(Some(roots(&ca)), None));
    let dir = TempDir::new().unwrap();
    let pair = ca.issue(&["Server2.Example.ORG"]).unwrap();
    let client = peer_client(dir.path(), &pair, verifier(Some(roots(&ca)), None));
    let (s, c) = handshake(fed.config, client, SERVER).await;
    let (mut s, mut c) = (s.unwrap(), c.unwrap());
    exchange(&mut s, &mut c).await;
    let peer = peer_of(&s);
    assert_eq!(peer.fqdn(), PEER);
    assert_eq!(peer.spki_sha256(), &spki(&pair.0));
    let cert_hash: [u8; 32] = Sha256::digest(der(&pair.0).as_ref()).into();
    assert_eq!(peer.cert_sha256(), &cert_hash);
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn federation_accepts_pinned_self_signed_client() {
    let peer_pair = pki::self_signed(PEER).unwrap();
    let server_pair = pki::self_signed(SERVER).unwrap();
    let fed_verifier = verifier(None, pins(&[spki(&peer_pair.0)]));
    let dir = TempDir::new().unwrap();
    let certs = reloader(dir.path(), "server", &server_pair);
    let server = federation_server_config(certs, fed_verifier).unwrap();
    let client = peer_client(
        dir.path(),
        &peer_pair,
        verifier(None, pins(&[spki(&server_pair.0)])),
    );
    let (s, c) = handshake(server, client, SERVER).await;
    let (mut s, mut c) = (s.unwrap(), c.unwrap());
    exchange(&mut s, &mut c).await;
    assert_eq!(peer_of(&s).fqdn(), PEER);
    assert_eq!(peer_of(&s).spki_sha256(), &spki(&peer_pair.0));
}

/// Presents a fixed `CertifiedKey`, even one whose key does not match.
#[derive(Debug)]
struct Impostor(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Impostor {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn federation_refuses_a_pinned_certificate_without_its_key() {
    // The attacker has the victim's (public) certificate but not its key:
    // the pin matches, the handshake signature must not.
    let victim = pki::self_signed(PEER).unwrap();
    let attacker = pki::self_signed(PEER).unwrap();
    let fed = federation(None, verifier(None, pins(&[spki(&victim.0)])));
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(attacker.1.as_bytes()).unwrap();
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
    let forged = rustls::sign::CertifiedKey::new(vec![der(&victim.0)], signer);
    let mut client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier(None, pins(&[spki(&fed.server_pair.0)])))
        .with_client_cert_resolver(Arc::new(Impostor(Arc::new(forged))));
    client.alpn_protocols = vec![b"h2".to_vec()];
    let (s, _c) = handshake(fed.config, Arc::new(client), SERVER).await;
    let err = s.unwrap_err();
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(
            inner,
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadSignature
            ))
        ),
        "{err:?}"
    );
    assert_eq!(handshake_failure_reason(&err), "bad_certificate");
}

#[tokio::test]
async fn federation_checks_dates_of_pinned_certificates() {
    let now = SystemTime::now();
    let expired = LeafSpec {
        not_before: now - days(10),
        not_after: now - days(1),
        ..LeafSpec::dns(&[PEER])
    };
    let future = LeafSpec {
        not_before: now + days(1),
        not_after: now + days(10),
        ..LeafSpec::dns(&[PEER])
    };
    for (spec, want) in [(expired, "expired"), (future, "not_yet_valid")] {
        let pair = pki::self_signed_with(&spec).unwrap();
        let fed = federation(None, verifier(None, pins(&[spki(&pair.0)])));
        let dir = TempDir::new().unwrap();
        let client = peer_client_unchecked(dir.path(), &pair, spki(&fed.server_pair.0));
        let (s, _c) = handshake(fed.config, client, SERVER).await;
        assert_eq!(server_failure(s), want);
    }
}

/// Like `peer_client`, for a client certificate `CertReloader` would refuse
/// to load (expired): builds the `CertifiedKey` directly.
fn peer_client_unchecked(
    dir: &Path,
    pair: &(String, String),
    server_spki: [u8; 32],
) -> Arc<ClientConfig> {
    let files = write_pair(dir, "stale", &pair.0, &pair.1);
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&files.key_file).unwrap();
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier(None, pins(&[server_spki])))
        .with_client_auth_cert(vec![der(&pair.0)], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn federation_refuses_certificates_without_a_single_fqdn() {
    let ca = TestCa::new().unwrap();
    for names in [&[PEER, "alias.example.org"][..], &["*.example.org"][..]] {
        let fed = federation(Some(&ca), verifier(Some(roots(&ca)), None));
        let dir = TempDir::new().unwrap();
        let pair = ca.issue(names).unwrap();
        let client = peer_client(dir.path(), &pair, verifier(Some(roots(&ca)), None));
        let (s, _c) = handshake(fed.config, client, SERVER).await;
        assert_eq!(server_failure(s), "identity", "{names:?}");
    }
}

#[tokio::test]
async fn federation_resumption_keeps_identity_and_can_be_rechecked() {
    let peer_pair = pki::self_signed(PEER).unwrap();
    let fed = federation(None, verifier(None, pins(&[spki(&peer_pair.0)])));
    let dir = TempDir::new().unwrap();
    let client = peer_client(
        dir.path(),
        &peer_pair,
        verifier(None, pins(&[spki(&fed.server_pair.0)])),
    );

    assert!(fed.config.ticketer.enabled());
    let (s, c) = handshake(fed.config.clone(), client.clone(), SERVER).await;
    let (mut s, mut c) = (s.unwrap(), c.unwrap());
    assert_eq!(s.get_ref().1.handshake_kind(), Some(HandshakeKind::Full));
    exchange(&mut s, &mut c).await;
    let first = peer_of(&s);

    let (s, c) = handshake(fed.config.clone(), client, SERVER).await;
    let (mut s, mut c) = (s.unwrap(), c.unwrap());
    exchange(&mut s, &mut c).await;
    assert_eq!(s.get_ref().1.handshake_kind(), Some(HandshakeKind::Resumed));
    assert_eq!(
        peer_of(&s),
        first,
        "resumed sessions carry the client chain"
    );

    // rustls does not re-run the verifier on resumption; `recheck` does.
    let chain = s.get_ref().1.peer_certificates().unwrap();
    let same = verifier(None, pins(&[spki(&peer_pair.0)]));
    assert_eq!(same.recheck(chain, None, UnixTime::now()).unwrap(), first);
    let withdrawn = verifier(None, pins(&[[0u8; 32]]));
    let err = withdrawn.recheck(chain, None, UnixTime::now()).unwrap_err();
    assert_eq!(
        HandshakeFailure::from_rustls(&err),
        HandshakeFailure::NotPinned
    );
    let later = UnixTime::since_unix_epoch(
        (SystemTime::now() + days(400))
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap(),
    );
    let err = same.recheck(chain, None, later).unwrap_err();
    assert_eq!(
        HandshakeFailure::from_rustls(&err),
        HandshakeFailure::Expired
    );
}

// ---------------------------------------------------------------- egress

#[tokio::test]
async fn egress_client_requires_the_dialled_name() {
    let ca = TestCa::new().unwrap();
    let dir = TempDir::new().unwrap();
    let me = pki::self_signed(PEER).unwrap();

    // Pinned server: its single SAN is SERVER, so dialling another name
    // fails even though the key is pinned.
    let fed = federation(None, verifier(None, pins(&[spki(&me.0)])));
    let client = peer_client(
        dir.path(),
        &me,
        verifier(None, pins(&[spki(&fed.server_pair.0)])),
    );
    let (s, c) = handshake(fed.config.clone(), client.clone(), SERVER).await;
    assert!(s.is_ok() && c.is_ok());
    let (_s, c) = handshake(fed.config, client, "server9.example.org").await;
    assert_eq!(client_failure(c).await, "identity");

    // CA-issued server with an extra name: refused, one name only.
    let dir2 = TempDir::new().unwrap();
    let two_names = ca.issue(&[SERVER, "www.example.org"]).unwrap();
    let certs = reloader(dir2.path(), "server", &two_names);
    let server = federation_server_config(certs, verifier(None, pins(&[spki(&me.0)]))).unwrap();
    let client = peer_client(dir.path(), &me, verifier(Some(roots(&ca)), None));
    let (_s, c) = handshake(server, client, SERVER).await;
    assert_eq!(client_failure(c).await, "identity");

    // CA-issued server, correct name: accepted through the CA path.
    let fed = federation(Some(&ca), verifier(None, pins(&[spki(&me.0)])));
    let client = peer_client(dir.path(), &me, verifier(Some(roots(&ca)), None));
    let (s, c) = handshake(fed.config, client, SERVER).await;
    let (mut s, mut c) = (s.unwrap(), c.unwrap());
    exchange(&mut s, &mut c).await;
    assert_eq!(presented_leaf(&c), der(&fed.server_pair.0));
}

// ---------------------------------------------------------------- reload

#[tokio::test]
async fn reload_keeps_the_last_good_certificate() {
    let ca = TestCa::new().unwrap();
    let dir = TempDir::new().unwrap();
    let old = ca.issue(&[SERVER]).unwrap();
    let new = ca.issue(&[SERVER]).unwrap();
    let files = write_pair(dir.path(), "server", &old.0, &old.1);
    let certs = Arc::new(CertReloader::new(files.clone()).unwrap());
    let server = public_server_config(certs.clone()).unwrap();
    let client = Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&TLS13])
            .unwrap()
            .with_root_certificates(roots(&ca))
            .with_no_client_auth(),
    );
    let presented = || async {
        let (s, c) = handshake(server.clone(), client.clone(), SERVER).await;
        let (_s, c) = (s.unwrap(), c.unwrap());
        presented_leaf(&c)
    };
    assert_eq!(presented().await, der(&old.0));
    let old_spki = certs.spki_sha256();

    // Garbage in the certificate file.
    fs::write(
        &files.cert_file,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n",
    )
    .unwrap();
    assert!(matches!(certs.reload(), Err(TlsError::CertPem { .. })));
    assert_eq!(presented().await, der(&old.0));

    // A valid certificate with somebody else's key.
    write_pair(dir.path(), "server", &new.0, &old.1);
    assert!(matches!(certs.reload(), Err(TlsError::KeyMismatch { .. })));
    assert_eq!(presented().await, der(&old.0));
    assert_eq!(certs.spki_sha256(), old_spki);

    // The key file gone half-way through a rotation.
    fs::remove_file(&files.key_file).unwrap();
    assert!(matches!(certs.reload(), Err(TlsError::KeyRead { .. })));
    assert_eq!(presented().await, der(&old.0));

    // The new pair, complete.
    write_pair(dir.path(), "server", &new.0, &new.1);
    certs.reload().unwrap();
    assert_eq!(presented().await, der(&new.0));
    assert_eq!(certs.spki_sha256(), spki(&new.0));
    assert_ne!(certs.spki_sha256(), old_spki);
}

#[tokio::test]
async fn reload_refuses_an_expired_certificate() {
    let ca = TestCa::new().unwrap();
    let dir = TempDir::new().unwrap();
    let good = ca.issue(&[SERVER]).unwrap();
    let now = SystemTime::now();
    let stale = ca
        .issue_with(&LeafSpec {
            not_before: now - days(10),
            not_after: now - days(1),
            ..LeafSpec::dns(&[SERVER])
        })
        .unwrap();
    let files = write_pair(dir.path(), "server", &good.0, &good.1);
    let certs = CertReloader::new(files).unwrap();
    let not_after = certs.not_after();
    assert!(not_after.as_secs() > UnixTime::now().as_secs());
    write_pair(dir.path(), "server", &stale.0, &stale.1);
    assert!(matches!(certs.reload(), Err(TlsError::Expired { .. })));
    assert_eq!(certs.not_after(), not_after);
}

// ---------------------------------------------------------------- loading

#[test]
fn loads_pkcs8_sec1_and_pkcs1_keys() {
    let ca = TestCa::new().unwrap();
    let dir = TempDir::new().unwrap();
    let cases = [
        (
            include_str!("testdata/p256.pkcs8.pem"),
            include_str!("testdata/p256.pkcs8.pem"),
        ),
        (
            include_str!("testdata/p256.pkcs8.pem"),
            include_str!("testdata/p256.sec1.pem"),
        ),
        (
            include_str!("testdata/rsa2048.pkcs8.pem"),
            include_str!("testdata/rsa2048.pkcs1.pem"),
        ),
    ];
    for (pkcs8, on_disk) in cases {
        let cert = ca.issue_for_key(&LeafSpec::dns(&[SERVER]), pkcs8).unwrap();
        let files = write_pair(dir.path(), "k", &cert, on_disk);
        let key = load_certified_key(&files).unwrap();
        assert_eq!(key.end_entity_cert().unwrap(), &der(&cert));
    }
}

#[test]
fn load_errors_name_the_file() {
    let ca = TestCa::new().unwrap();
    let dir = TempDir::new().unwrap();
    let (cert, key) = ca.issue(&[SERVER]).unwrap();
    let (_, other_key) = ca.issue(&[SERVER]).unwrap();
    let missing = TlsFiles {
        cert_file: dir.path().join("missing.crt"),
        key_file: dir.path().join("missing.key"),
    };

    let check = |files: &TlsFiles, want_file: &Path, matches: fn(&TlsError) -> bool| {
        let err = load_certified_key(files).unwrap_err();
        assert!(matches(&err), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&*want_file.to_string_lossy()), "{text}");
    };

    check(&missing, &missing.cert_file, |e| {
        matches!(e, TlsError::CertRead { .. })
    });
    let f = write_pair(dir.path(), "nocert", "just text\n", &key);
    check(&f, &f.cert_file, |e| {
        matches!(e, TlsError::NoCertificates { .. })
    });
    let f = write_pair(
        dir.path(),
        "badpem",
        "-----BEGIN CERTIFICATE-----\n@@@\n",
        &key,
    );
    check(&f, &f.cert_file, |e| matches!(e, TlsError::CertPem { .. }));
    let f = write_pair(dir.path(), "nokey", &cert, &cert);
    check(&f, &f.key_file, |e| {
        matches!(e, TlsError::NoPrivateKey { .. })
    });
    let f = write_pair(dir.path(), "twokeys", &cert, &format!("{key}{other_key}"));
    check(&f, &f.key_file, |e| {
        matches!(e, TlsError::SeveralPrivateKeys { .. })
    });
    let f = write_pair(dir.path(), "mismatch", &cert, &other_key);
    check(&f, &f.key_file, |e| {
        matches!(e, TlsError::KeyMismatch { .. })
    });
    let f = write_pair(dir.path(), "ok", &cert, &key);
    assert!(load_certified_key(&f).is_ok());
}

/// Depends on `config::read_secret_file` refusing group/other-readable
/// files; fails while that function is still a stub.
#[test]
fn refuses_a_world_readable_key() {
    let ca = TestCa::new().unwrap();
    let dir = TempDir::new().unwrap();
    let (cert, key) = ca.issue(&[SERVER]).unwrap();
    let files = write_pair(dir.path(), "loose", &cert, &key);
    fs::set_permissions(&files.key_file, fs::Permissions::from_mode(0o644)).unwrap();
    let err = load_certified_key(&files).unwrap_err();
    assert!(matches!(err, TlsError::KeyRead { .. }), "{err:?}");
}

#[test]
fn peer_trust_must_name_a_source() {
    assert!(matches!(
        PeerVerifier::from_trust(&PeerTrust::default()),
        Err(TlsError::NoPeerTrust)
    ));
    let dir = TempDir::new().unwrap();
    let ca = TestCa::new().unwrap();
    let ca_file = dir.path().join("ca.pem");
    fs::write(&ca_file, ca.cert_pem()).unwrap();
    let trust = PeerTrust {
        ca_file: Some(ca_file),
        pinned_spki_sha256: vec![],
        ..Default::default()
    };
    assert!(PeerVerifier::from_trust(&trust).is_ok());
    let trust = PeerTrust {
        ca_file: None,
        pinned_spki_sha256: vec![[7; 32]],
        ..Default::default()
    };
    assert!(PeerVerifier::from_trust(&trust).is_ok());
    let trust = PeerTrust {
        ca_file: Some(dir.path().join("absent.pem")),
        pinned_spki_sha256: vec![[7; 32]],
        ..Default::default()
    };
    assert!(matches!(
        PeerVerifier::from_trust(&trust),
        Err(TlsError::CertRead { .. })
    ));
}

// ---------------------------------------------------------------- identity

#[test]
fn identity_errors_for_each_bad_san_shape() {
    let ca = TestCa::new().unwrap();
    let ip = "192.0.2.7".parse().unwrap();
    let spec = |dns: &[&str], ips: Vec<std::net::IpAddr>| LeafSpec {
        ip_addresses: ips,
        ..LeafSpec::dns(dns)
    };
    let cases = [
        (spec(&[], vec![]), IdentityError::NoSan),
        (spec(&[], vec![ip]), IdentityError::IpSanOnly),
        (
            spec(&[PEER, "b.example.org"], vec![]),
            IdentityError::SeveralDnsNames { count: 2 },
        ),
        (spec(&["*.example.org"], vec![]), IdentityError::Wildcard),
        (
            spec(&["exa mple.org"], vec![]),
            IdentityError::InvalidName(FqdnError::BadCharacter),
        ),
        (
            spec(&["localhost"], vec![]),
            IdentityError::InvalidName(FqdnError::SingleLabel),
        ),
        (
            spec(&["192.0.2.7"], vec![]),
            IdentityError::InvalidName(FqdnError::NumericTopLabel),
        ),
    ];
    for (spec, want) in cases {
        let (cert, _) = ca.issue_with(&spec).unwrap();
        assert_eq!(peer_identity(&der(&cert)), Err(want), "{spec:?}");
    }

    // One DNS name beside an IP SAN is fine; case and trailing dot folded.
    let (cert, _) = ca
        .issue_with(&spec(&["Server2.Example.org."], vec![ip]))
        .unwrap();
    assert_eq!(peer_identity(&der(&cert)).unwrap().fqdn(), PEER);

    // The CN is never used: a SAN-less certificate whose CN is an FQDN.
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, PEER);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    assert_eq!(peer_identity(cert.der()), Err(IdentityError::NoSan));

    // A SAN with only a URI.
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://example.org/x".try_into().unwrap(),
    )];
    let cert = params.self_signed(&key).unwrap();
    assert_eq!(peer_identity(cert.der()), Err(IdentityError::NoDnsName));

    assert_eq!(
        peer_identity(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])),
        Err(IdentityError::Malformed)
    );
}

// ---------------------------------------------------------------- pki

#[test]
fn self_signed_has_the_fqdn_as_only_name() {
    let (cert, key) = pki::self_signed("Server1.Example.org").unwrap();
    assert!(key.contains("BEGIN PRIVATE KEY"));
    let id = peer_identity(&der(&cert)).unwrap();
    assert_eq!(id.fqdn(), SERVER);
    assert!(matches!(
        pki::self_signed("*.example.org"),
        Err(pki::PkiError::InvalidName { .. })
    ));
    // Renewal with the same key keeps the pin.
    let renewed = pki::self_signed_with_key(&LeafSpec::dns(&[SERVER]), &key).unwrap();
    assert_ne!(renewed, cert);
    assert_eq!(spki(&renewed), spki(&cert));
}

#[test]
fn write_private_creates_0600_and_never_overwrites() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("k.pem");
    pki::write_private(&path, b"secret").unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(fs::read(&path).unwrap(), b"secret");
    let err = pki::write_private(&path, b"other").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(fs::read(&path).unwrap(), b"secret");
}
