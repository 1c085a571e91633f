//! Resolver tests against the in-process DNS server, over real UDP on
//! loopback. Time that matters to the cache comes from a [`ManualClock`],
//! so TTLs and stale windows pass without sleeping.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::record::{
    index_name, key_name, tlsa_name, IndexRecord, KeyAlgorithm, KeyMaterial, KeyRecord, KeyUse,
    Selector, Tlsa,
};
use super::testserver::{Mode, TestDnsServer};
use super::*;
use crate::admin::metrics::Metrics;
use crate::config::{self, DnssecMode};

const PEER: &str = "peer.example.test";
const SECURE_PEER: &str = "peer.secure.test";

/// A test DNS server, a resolver pointed at it, and the clock.
struct Harness {
    server: TestDnsServer,
    resolver: KeyResolver,
    clock: Arc<ManualClock>,
    metrics: Arc<Metrics>,
    config: config::Dns,
    _dir: tempfile::TempDir,
}

/// A TLS key: its SPKI and the SHA-256 the TLS layer would compute.
struct TlsKey {
    spki: Vec<u8>,
    hash: [u8; 32],
}

fn tls_key() -> TlsKey {
    let spki = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .expect("keygen")
        .public_key_der();
    let hash = Sha256::digest(&spki).into();
    TlsKey { spki, hash }
}

fn sig_spki() -> Vec<u8> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .expect("keygen")
        .public_key_der()
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).expect("selector")
}

fn tls_record(key: &TlsKey) -> KeyRecord {
    KeyRecord::tls_hash(KeyAlgorithm::P256, &key.spki)
}

fn sig_record(spki: &[u8]) -> KeyRecord {
    KeyRecord {
        usage: KeyUse::Sig,
        algorithm: KeyAlgorithm::Ed25519,
        material: KeyMaterial::Spki(spki.to_vec()),
    }
}

fn revoked(usage: KeyUse) -> KeyRecord {
    let algorithm = match usage {
        KeyUse::Tls => KeyAlgorithm::P256,
        KeyUse::Sig => KeyAlgorithm::Ed25519,
    };
    KeyRecord {
        usage,
        algorithm,
        material: KeyMaterial::Revoked,
    }
}

impl Harness {
    async fn new(tweak: impl FnOnce(&mut config::Dns)) -> Harness {
        let server = TestDnsServer::builder()
            .zone("example.test")
            .signed_zone("secure.test")
            .start()
            .await
            .expect("test DNS server");
        let dir = tempfile::tempdir().expect("tempdir");
        let anchor = dir.path().join("anchor.txt");
        server
            .write_trust_anchor("secure.test", &anchor)
            .expect("anchor");
        let mut config = config::Dns {
            nameservers: vec![server.addr()],
            timeout: Duration::from_millis(300),
            trust_anchor_file: Some(anchor),
            ..config::Dns::defaults()
        };
        tweak(&mut config);
        if config.dnssec == DnssecMode::Off {
            config.trust_anchor_file = None;
        }
        let metrics = Arc::new(Metrics::new());
        let clock = Arc::new(ManualClock::new());
        let resolver = KeyResolver::with_clock(&config, metrics.clone(), clock.clone())
            .expect("resolver");
        Harness {
            server,
            resolver,
            clock,
            metrics,
            config,
            _dir: dir,
        }
    }

    async fn validating() -> Harness {
        Harness::new(|c| c.dnssec = DnssecMode::Validate).await
    }

    /// Publishes an index listing `keys` and one record per key.
    async fn publish(&self, fqdn: &str, keys: &[(&str, KeyRecord)]) {
        let index = IndexRecord::new(keys.iter().map(|(s, _)| sel(s)).collect());
        self.server
            .set_txt(&index_name(fqdn), &[&index.to_string()])
            .await
            .expect("index");
        for (s, record) in keys {
            self.set_key(fqdn, s, record).await;
        }
    }

    async fn set_index(&self, fqdn: &str, selectors: &[&str]) {
        let index = IndexRecord::new(selectors.iter().map(|s| sel(s)).collect());
        self.server
            .set_txt(&index_name(fqdn), &[&index.to_string()])
            .await
            .expect("index");
    }

    async fn set_key(&self, fqdn: &str, selector: &str, record: &KeyRecord) {
        self.server
            .set_txt(&key_name(&sel(selector), fqdn), &[&record.to_string()])
            .await
            .expect("key record");
    }

    async fn check(&self, fqdn: &str, key: &TlsKey) -> Result<TlsKeyVerdict, KeyRefusal> {
        self.resolver.check_tls_key(fqdn, &key.hash).await
    }

    async fn refusal(&self, fqdn: &str, key: &TlsKey) -> KeyRefusal {
        match self.check(fqdn, key).await {
            Ok(verdict) => panic!("expected a refusal, got {verdict:?}"),
            Err(refusal) => refusal,
        }
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    fn txt_queries(&self, name: &str) -> u64 {
        self.server.query_count_of(name, "TXT")
    }

    fn metric(&self, needle: &str) -> u64 {
        let text = self.metrics.encode();
        text.lines()
            .find_map(|line| line.strip_prefix(needle)?.trim().parse().ok())
            .unwrap_or(0)
    }
}

// ------------------------------------------------------------------ basics

#[tokio::test]
async fn good_records_are_found_and_cached() {
    let h = Harness::new(|_| {}).await;
    let tls = tls_key();
    let sig = sig_spki();
    h.publish(PEER, &[("tls1", tls_record(&tls)), ("sig1", sig_record(&sig))])
        .await;

    let verdict = h.check(PEER, &tls).await.expect("accepted");
    assert_eq!(verdict.selector, sel("tls1"));
    assert_eq!(verdict.security, Security::Unvalidated);
    assert!(!verdict.dane && !verdict.stale);

    let signing = h.resolver.signing_key(PEER, "sig1").await.expect("sig key");
    assert_eq!(signing.spki(), Some(sig.as_slice()));

    let keys = h.resolver.peer_keys("Peer.Example.Test.").await.expect("keys");
    assert_eq!(keys.fqdn, PEER);
    assert_eq!(keys.index.selectors, vec![sel("tls1"), sel("sig1")]);
    assert_eq!(keys.records.len(), 2);

    // Everything after the first call came from the cache.
    assert_eq!(h.txt_queries(&index_name(PEER)), 1);
    assert_eq!(h.txt_queries(&key_name(&sel("tls1"), PEER)), 1);
    assert_eq!(h.metric(r#"mdgate_dns_cache_total{outcome="miss"}"#), 1);
    assert_eq!(h.metric(r#"mdgate_dns_cache_total{outcome="hit"}"#), 2);
    assert_eq!(h.metric(r#"mdgate_dns_lookups_total{result="answer"}"#), 3);
}

#[tokio::test]
async fn dnssec_secure_answers_are_marked_secure() {
    let h = Harness::validating().await;
    let tls = tls_key();
    h.publish(SECURE_PEER, &[("tls1", tls_record(&tls))]).await;
    let verdict = h.check(SECURE_PEER, &tls).await.expect("accepted");
    assert_eq!(verdict.security, Security::Secure);
    assert!(!verdict.dane, "no TLSA published");
}

#[tokio::test]
async fn zz_debug_nxdomain() {
    let _ = tracing_subscriber::fmt().with_env_filter("hickory_net::dnssec=trace,hickory_resolver=debug").with_test_writer().try_init();
    let h = Harness::validating().await;
    let tls = tls_key();
    h.publish(SECURE_PEER, &[("tls1", tls_record(&tls))]).await;
    let r = h.resolver.lookup_report(SECURE_PEER).await;
    for s in &r.steps { eprintln!("{} {} {:?} {:?}", s.name, s.record_type, s.outcome, s.security); }
}
