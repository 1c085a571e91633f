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
        // `test.` is signed and is the only trust anchor; it delegates to
        // the signed `secure.test.` (with a DS) and to the unsigned
        // `example.test.` (whose missing DS its NSEC proves).
        let server = TestDnsServer::builder()
            .signed_zone("test")
            .zone("example.test")
            .signed_zone("secure.test")
            .start()
            .await
            .expect("test DNS server");
        let dir = tempfile::tempdir().expect("tempdir");
        let anchor = dir.path().join("anchor.txt");
        server.write_trust_anchor("test", &anchor).expect("anchor");
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
        let resolver =
            KeyResolver::with_clock(&config, metrics.clone(), clock.clone()).expect("resolver");
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
    h.publish(
        PEER,
        &[("tls1", tls_record(&tls)), ("sig1", sig_record(&sig))],
    )
    .await;

    let verdict = h.check(PEER, &tls).await.expect("accepted");
    assert_eq!(verdict.selector, sel("tls1"));
    assert_eq!(verdict.security, Security::Unvalidated);
    assert!(!verdict.dane && !verdict.stale);

    let signing = h.resolver.signing_key(PEER, "sig1").await.expect("sig key");
    assert_eq!(signing.spki(), Some(sig.as_slice()));

    let keys = h
        .resolver
        .peer_keys("Peer.Example.Test.")
        .await
        .expect("keys");
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
async fn dane_tlsa_is_enforced_on_secure_answers() {
    let h = Harness::validating().await;
    let tls = tls_key();
    let other = tls_key();
    h.publish(
        SECURE_PEER,
        &[("tls1", tls_record(&tls)), ("tls2", tls_record(&other))],
    )
    .await;
    h.server
        .set_tlsa(&tlsa_name(8443, SECURE_PEER), &[Tlsa::dane_ee(tls.hash)])
        .await
        .expect("tlsa");
    let verdict = h.check(SECURE_PEER, &tls).await.expect("accepted");
    assert!(verdict.dane);
    assert_eq!(verdict.security, Security::Secure);
    // `other` is live in DNS but not pinned by TLSA: refused.
    let refusal = h.refusal(SECURE_PEER, &other).await;
    assert_eq!(refusal.as_str(), "tlsa_mismatch", "{refusal}");
}

#[tokio::test]
async fn tlsa_is_ignored_without_validation() {
    let h = Harness::new(|_| {}).await;
    let tls = tls_key();
    h.publish(SECURE_PEER, &[("tls1", tls_record(&tls))]).await;
    h.server
        .set_tlsa(&tlsa_name(8443, SECURE_PEER), &[Tlsa::dane_ee([9; 32])])
        .await
        .expect("tlsa");
    let verdict = h.check(SECURE_PEER, &tls).await.expect("accepted");
    assert!(!verdict.dane);
    assert_eq!(
        h.server
            .query_count_of(&tlsa_name(8443, SECURE_PEER), "TLSA"),
        0
    );
}

// ----------------------------------------------------------------- refusals

#[tokio::test]
async fn each_refusal_reason_is_distinct() {
    let h = Harness::new(|_| {}).await;
    let tls = tls_key();
    let sig = sig_spki();

    // No index at all: NXDOMAIN.
    let nx = h.refusal("nobody.example.test", &tls).await;
    assert_eq!(nx.as_str(), "no_record", "{nx}");
    assert!(nx.to_string().contains("NXDOMAIN"), "{nx}");

    // TXT records there, none of them ours.
    h.server
        .set_txt(&index_name("other.example.test"), &["v=spf1 -all"])
        .await
        .unwrap();
    let not_ours = h.refusal("other.example.test", &tls).await;
    assert_eq!(not_ours.as_str(), "no_record", "{not_ours}");

    // The name exists, but has no TXT (NODATA).
    h.server
        .set_tlsa(
            &index_name("nodata.example.test"),
            &[Tlsa::dane_ee([1; 32])],
        )
        .await
        .unwrap();
    let nodata = h.refusal("nodata.example.test", &tls).await;
    assert_eq!(nodata.as_str(), "no_record", "{nodata}");

    // Ours, but broken.
    h.server
        .set_txt(&index_name("broken.example.test"), &["v=mdgate1; s=a; s=b"])
        .await
        .unwrap();
    let broken = h.refusal("broken.example.test", &tls).await;
    assert_eq!(broken.as_str(), "invalid_record", "{broken}");
    assert!(broken.to_string().contains("appears twice"), "{broken}");

    // Two mdgate1 records at the index name.
    h.server
        .set_txt_records(
            &index_name("twice.example.test"),
            &[&["v=mdgate1; s=a"], &["v=mdgate1; s=b"]],
        )
        .await
        .unwrap();
    assert_eq!(
        h.refusal("twice.example.test", &tls).await.as_str(),
        "invalid_record"
    );

    // Another key.
    h.publish(
        PEER,
        &[("tls1", tls_record(&tls_key())), ("sig1", sig_record(&sig))],
    )
    .await;
    let mismatch = h.refusal(PEER, &tls).await;
    assert_eq!(
        mismatch,
        KeyRefusal::KeyMismatch {
            fqdn: PEER.into(),
            live: 1
        }
    );

    // Signing keys.
    assert!(h.resolver.signing_key(PEER, "sig1").await.is_ok());
    let wrong_use = h.resolver.signing_key(PEER, "tls1").await.unwrap_err();
    assert_eq!(wrong_use.as_str(), "not_signing_key", "{wrong_use}");
    let unknown = h.resolver.signing_key(PEER, "sig9").await.unwrap_err();
    assert_eq!(unknown.as_str(), "unknown_selector", "{unknown}");
    let bad_kid = h.resolver.signing_key(PEER, "../etc").await.unwrap_err();
    assert_eq!(bad_kid.as_str(), "unknown_selector", "{bad_kid}");

    // Not a server name.
    let name = h.refusal("not a name", &tls).await;
    assert_eq!(name.as_str(), "invalid_name", "{name}");

    // Every refusal was counted under its own label.
    for label in [
        "no_record",
        "invalid_record",
        "key_mismatch",
        "not_signing_key",
    ] {
        let line = format!(r#"mdgate_peer_key_refusals_total{{reason="{label}"}}"#);
        assert!(h.metric(&line) >= 1, "{label}: {}", h.metrics.encode());
    }
}

#[tokio::test]
async fn a_revoked_selector_refuses_its_key() {
    let h = Harness::new(|_| {}).await;
    let old = tls_key();
    let new = tls_key();
    let sig = sig_spki();
    h.publish(
        PEER,
        &[
            ("tls1", tls_record(&old)),
            ("tls2", tls_record(&new)),
            ("sig1", sig_record(&sig)),
        ],
    )
    .await;
    h.check(PEER, &old).await.expect("live before revocation");

    h.set_key(PEER, "tls1", &revoked(KeyUse::Tls)).await;
    h.set_key(PEER, "sig1", &revoked(KeyUse::Sig)).await;
    // Until the cached answer expires, the old key still works (TTL 300 s).
    h.check(PEER, &old).await.expect("cached");
    h.advance(Duration::from_secs(301));
    let refusal = h.refusal(PEER, &old).await;
    assert_eq!(
        refusal,
        KeyRefusal::Revoked {
            fqdn: PEER.into(),
            selector: "tls1".into()
        }
    );
    h.check(PEER, &new)
        .await
        .expect("the other selector stays live");
    let sig_refusal = h.resolver.signing_key(PEER, "sig1").await.unwrap_err();
    assert_eq!(sig_refusal.as_str(), "revoked");

    // The revocation is remembered across refreshes while the record stays.
    h.advance(Duration::from_secs(301));
    assert_eq!(h.refusal(PEER, &old).await.as_str(), "revoked");

    // A resolver that never saw the key live cannot tell it was revoked:
    // it refuses all the same.
    let fresh = KeyResolver::new(&h.config, Arc::new(Metrics::new())).expect("resolver");
    let refusal = fresh.check_tls_key(PEER, &old.hash).await.unwrap_err();
    assert_eq!(refusal.as_str(), "key_mismatch");
}

#[tokio::test]
async fn servfail_nxdomain_and_timeout_are_told_apart() {
    let h = Harness::new(|_| {}).await;
    let tls = tls_key();
    h.server.set_mode(Mode::ServFail);
    let servfail = h.refusal(PEER, &tls).await;
    assert_eq!(servfail.as_str(), "dns_servfail", "{servfail}");

    h.server.set_mode(Mode::Drop);
    h.advance(resolver::FAILURE_HOLD);
    let timeout = h.refusal(PEER, &tls).await;
    assert_eq!(timeout.as_str(), "dns_timeout", "{timeout}");

    h.server.set_mode(Mode::Answer);
    h.advance(resolver::FAILURE_HOLD);
    let nx = h.refusal(PEER, &tls).await;
    assert_eq!(nx.as_str(), "no_record", "{nx}");

    // A stopped server (port closed) is a network error.
    h.server.stop().await;
    let down = h.refusal("down.example.test", &tls).await;
    assert!(
        matches!(down.as_str(), "dns_error" | "dns_timeout"),
        "{down}"
    );
    assert_eq!(
        h.metric(r#"mdgate_dns_failures_total{reason="dns_servfail"}"#),
        1
    );
    assert!(h.metric(r#"mdgate_dns_failures_total{reason="dns_timeout"}"#) >= 1);
}

#[tokio::test]
async fn bogus_answers_fail_and_are_never_absent() {
    let h = Harness::validating().await;
    let tls = tls_key();
    h.publish(SECURE_PEER, &[("tls1", tls_record(&tls))]).await;
    h.server
        .tamper_txt(&index_name(SECURE_PEER), &["v=mdgate1; s=evil"])
        .await
        .unwrap();
    let refusal = h.refusal(SECURE_PEER, &tls).await;
    assert_eq!(refusal.as_str(), "dnssec_bogus", "{refusal}");

    // Bogus is not covered by a stale answer either: with a good answer
    // cached and expired, a bogus refresh fails at once.
    let h = Harness::validating().await;
    h.publish(SECURE_PEER, &[("tls1", tls_record(&tls))]).await;
    h.check(SECURE_PEER, &tls).await.expect("secure and good");
    h.server
        .tamper_txt(
            &key_name(&sel("tls1"), SECURE_PEER),
            &["v=mdgate1; u=tls; a=p256; h="],
        )
        .await
        .unwrap();
    h.advance(Duration::from_secs(301));
    let refusal = h.refusal(SECURE_PEER, &tls).await;
    assert_eq!(refusal.as_str(), "dnssec_bogus", "{refusal}");

    let report = h.resolver.lookup_report(SECURE_PEER).await;
    let step = report
        .steps
        .iter()
        .find(|s| s.name == key_name(&sel("tls1"), SECURE_PEER))
        .expect("key step");
    assert_eq!(step.outcome, StepOutcome::Bogus);
}

#[tokio::test]
async fn unsigned_zones_are_insecure_and_tlsa_is_not_used() {
    let h = Harness::validating().await;
    let tls = tls_key();
    h.publish(PEER, &[("tls1", tls_record(&tls))]).await;
    // A TLSA that would refuse the key, were it trusted.
    h.server
        .set_tlsa(&tlsa_name(8443, PEER), &[Tlsa::dane_ee([7; 32])])
        .await
        .unwrap();
    let verdict = h.check(PEER, &tls).await.expect("accepted");
    assert_eq!(verdict.security, Security::Insecure);
    assert!(!verdict.dane);
    assert_eq!(h.server.query_count_of(&tlsa_name(8443, PEER), "TLSA"), 0);
    // A negative answer from the unsigned zone is insecure too, and still
    // a plain `no_record`.
    let report = h.resolver.lookup_report("nobody.example.test").await;
    assert_eq!(report.steps[0].outcome, StepOutcome::NxDomain);
    assert_eq!(report.steps[0].security, Some(Security::Insecure));
    assert_eq!(report.result.unwrap_err().reason(), "no_record");
}

// ----------------------------------------------------------------- caching

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_query_per_name() {
    let h = Arc::new(Harness::new(|_| {}).await);
    let tls = tls_key();
    let sig = sig_spki();
    h.publish(
        PEER,
        &[("tls1", tls_record(&tls)), ("sig1", sig_record(&sig))],
    )
    .await;
    let hash = tls.hash;
    let calls = (0..100).map(|_| {
        let h = h.clone();
        tokio::spawn(async move { h.resolver.check_tls_key(PEER, &hash).await })
    });
    for result in futures_util::future::join_all(calls).await {
        result.expect("task").expect("accepted");
    }
    for name in [
        index_name(PEER),
        key_name(&sel("tls1"), PEER),
        key_name(&sel("sig1"), PEER),
    ] {
        assert_eq!(h.txt_queries(&name), 1, "{name}");
    }

    // The same holds for a failure: 100 callers, one SERVFAIL query.
    h.server.set_mode(Mode::ServFail);
    let calls = (0..100).map(|_| {
        let h = h.clone();
        tokio::spawn(async move { h.resolver.check_tls_key("new.example.test", &hash).await })
    });
    for result in futures_util::future::join_all(calls).await {
        let refusal = result.expect("task").unwrap_err();
        assert_eq!(refusal.as_str(), "dns_servfail");
    }
    // One lookup; hickory itself asks again once after SERVFAIL
    // (one retry), so the server sees at most two queries.
    assert_eq!(
        h.metric(r#"mdgate_dns_lookups_total{result="servfail"}"#),
        1
    );
    let queries = h.txt_queries(&index_name("new.example.test"));
    assert!((1..=2).contains(&queries), "{queries} queries");
}

#[tokio::test]
async fn ttls_are_clamped() {
    let h = Harness::new(|c| {
        c.min_ttl = Duration::from_secs(60);
        c.max_ttl = Duration::from_secs(3600);
    })
    .await;
    let tls = tls_key();
    h.server.set_ttl(5);
    h.publish(PEER, &[("tls1", tls_record(&tls))]).await;
    let keys = h.resolver.peer_keys(PEER).await.unwrap();
    assert_eq!(keys.expires_at - keys.fetched_at, Duration::from_secs(60));
    h.advance(Duration::from_secs(59));
    h.check(PEER, &tls).await.unwrap();
    assert_eq!(
        h.txt_queries(&index_name(PEER)),
        1,
        "5 s TTL held for min_ttl"
    );
    h.advance(Duration::from_secs(2));
    h.check(PEER, &tls).await.unwrap();
    assert_eq!(h.txt_queries(&index_name(PEER)), 2);

    let other = "big.example.test";
    h.server.set_ttl(7 * 86_400);
    h.publish(other, &[("tls1", tls_record(&tls))]).await;
    let keys = h.resolver.peer_keys(other).await.unwrap();
    assert_eq!(keys.expires_at - keys.fetched_at, Duration::from_secs(3600));
}

#[tokio::test]
async fn negative_answers_are_cached_for_negative_ttl() {
    let h = Harness::new(|c| c.negative_ttl = Duration::from_secs(60)).await;
    let tls = tls_key();
    assert_eq!(h.refusal(PEER, &tls).await.as_str(), "no_record");
    // Published now, but the negative answer is cached.
    h.publish(PEER, &[("tls1", tls_record(&tls))]).await;
    h.advance(Duration::from_secs(59));
    assert_eq!(h.refusal(PEER, &tls).await.as_str(), "no_record");
    assert_eq!(h.txt_queries(&index_name(PEER)), 1);
    assert_eq!(h.metric(r#"mdgate_dns_cache_total{outcome="negative"}"#), 1);
    h.advance(Duration::from_secs(2));
    h.check(PEER, &tls).await.expect("seen after negative_ttl");
    assert_eq!(h.txt_queries(&index_name(PEER)), 2);

    // A zone that drops its index replaces a good answer once it expires.
    h.server.remove(&index_name(PEER)).await.unwrap();
    h.advance(Duration::from_secs(301));
    assert_eq!(h.refusal(PEER, &tls).await.as_str(), "no_record");
}

#[tokio::test]
async fn background_refresh_keeps_lookups_off_dns() {
    let h = Harness::new(|_| {}).await;
    let tls = tls_key();
    h.publish(PEER, &[("tls1", tls_record(&tls))]).await; // TTL 300 s
    h.check(PEER, &tls).await.unwrap();
    // In the last quarter of the lifetime a hit starts a refresh.
    h.advance(Duration::from_secs(240));
    h.check(PEER, &tls).await.unwrap();
    let index = index_name(PEER);
    for _ in 0..200 {
        if h.txt_queries(&index) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(h.txt_queries(&index), 2, "background refresh ran");
    // Wait for the refresh to store its answer.
    for _ in 0..200 {
        let keys = h.resolver.peer_keys(PEER).await.unwrap();
        if keys.fetched_at > h.clock.now() - Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Past the first answer's expiry, the refreshed one serves: no query.
    h.advance(Duration::from_secs(100));
    let verdict = h.check(PEER, &tls).await.unwrap();
    assert!(!verdict.stale);
    assert_eq!(h.txt_queries(&index), 2);
}

#[tokio::test]
async fn unknown_keys_refetch_at_most_once_per_interval() {
    let h = Harness::new(|_| {}).await;
    let tls = tls_key();
    let stranger = tls_key();
    h.publish(PEER, &[("tls1", tls_record(&tls))]).await;
    h.check(PEER, &tls).await.unwrap();
    let index = index_name(PEER);
    assert_eq!(h.txt_queries(&index), 1);

    assert_eq!(h.refusal(PEER, &stranger).await.as_str(), "key_mismatch");
    assert_eq!(h.txt_queries(&index), 2, "one forced refetch");
    for _ in 0..5 {
        assert_eq!(h.refusal(PEER, &stranger).await.as_str(), "key_mismatch");
    }
    h.advance(Duration::from_secs(29));
    assert_eq!(h.refusal(PEER, &stranger).await.as_str(), "key_mismatch");
    assert_eq!(h.txt_queries(&index), 2, "no more within 30 s");
    h.advance(Duration::from_secs(2));
    assert_eq!(h.refusal(PEER, &stranger).await.as_str(), "key_mismatch");
    assert_eq!(h.txt_queries(&index), 3, "one more after 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unknown_keys_share_one_forced_refetch() {
    let h = Arc::new(Harness::new(|_| {}).await);
    let tls = tls_key();
    h.publish(PEER, &[("tls1", tls_record(&tls))]).await;
    h.check(PEER, &tls).await.unwrap();
    let calls = (0..20).map(|_| {
        let h = h.clone();
        let stranger = tls_key().hash;
        tokio::spawn(async move { h.resolver.check_tls_key(PEER, &stranger).await })
    });
    for result in futures_util::future::join_all(calls).await {
        assert_eq!(result.expect("task").unwrap_err().as_str(), "key_mismatch");
    }
    assert_eq!(
        h.txt_queries(&index_name(PEER)),
        2,
        "one forced refetch in all"
    );
}

// ---------------------------------------------------------------- rotation

#[tokio::test]
async fn rotation_accepts_both_keys_during_overlap() {
    let h = Harness::new(|_| {}).await;
    let old = tls_key();
    let new = tls_key();
    h.publish(PEER, &[("tls2026a", tls_record(&old))]).await;
    h.check(PEER, &old).await.expect("old key");

    // Step 2: publish the next key beside the current one.
    h.publish(
        PEER,
        &[
            ("tls2026a", tls_record(&old)),
            ("tls2026b", tls_record(&new)),
        ],
    )
    .await;
    // The cached index does not list it yet; the unknown key refetches.
    let verdict = h.check(PEER, &new).await.expect("new key after refetch");
    assert_eq!(verdict.selector, sel("tls2026b"));
    h.check(PEER, &old).await.expect("old key still live");

    // Step 4: the old selector leaves the index; once the cached answer
    // expires, the old key is refused.
    h.set_index(PEER, &["tls2026b"]).await;
    h.server
        .remove(&key_name(&sel("tls2026a"), PEER))
        .await
        .unwrap();
    h.check(PEER, &old)
        .await
        .expect("cached until the TTL passes");
    h.advance(Duration::from_secs(301));
    assert_eq!(h.refusal(PEER, &old).await.as_str(), "key_mismatch");
    h.check(PEER, &new).await.expect("new key");
}

// ------------------------------------------------------------------ outage

#[tokio::test]
async fn outage_serves_stale_within_the_window_then_fails_closed() {
    let h = Harness::new(|c| c.stale_if_error = Duration::from_secs(600)).await;
    let tls = tls_key();
    h.publish(PEER, &[("tls1", tls_record(&tls))]).await; // TTL 300 s
    h.check(PEER, &tls).await.expect("warm");
    h.server.stop().await;

    // Expired, DNS down: the last good answer, marked stale.
    h.advance(Duration::from_secs(301));
    let verdict = h.check(PEER, &tls).await.expect("stale answer");
    assert!(verdict.stale);
    // Near the end of the window, still served (failures are retried
    // after FAILURE_HOLD, not on every call).
    h.advance(Duration::from_secs(590));
    assert!(h.check(PEER, &tls).await.expect("still stale").stale);
    assert!(h.metric(r#"mdgate_dns_cache_total{outcome="stale"}"#) >= 2);

    // Past expiry + stale_if_error: refused.
    h.advance(Duration::from_secs(15));
    let refusal = h.refusal(PEER, &tls).await;
    assert_eq!(refusal.as_str(), "stale_expired", "{refusal}");
    assert!(refusal.to_string().contains("expired"), "{refusal}");

    // DNS back: the next lookup after the failure hold succeeds, no
    // restart needed.
    h.server.restart().await.expect("restart");
    h.advance(resolver::FAILURE_HOLD);
    let verdict = h.check(PEER, &tls).await.expect("fresh again");
    assert!(!verdict.stale);
}

#[tokio::test]
async fn outage_without_a_cached_answer_fails_at_once() {
    let h = Harness::new(|_| {}).await;
    let tls = tls_key();
    h.server.set_mode(Mode::Drop);
    assert_eq!(h.refusal(PEER, &tls).await.as_str(), "dns_timeout");
    // Within the hold, the failure is reused without a query.
    let before = h.txt_queries(&index_name(PEER));
    assert_eq!(h.refusal(PEER, &tls).await.as_str(), "dns_timeout");
    assert_eq!(h.txt_queries(&index_name(PEER)), before);
}

// ------------------------------------------------------------------ report

#[tokio::test]
async fn lookup_report_lists_every_step_uncached() {
    let h = Harness::validating().await;
    let tls = tls_key();
    h.publish(
        SECURE_PEER,
        &[("tls1", tls_record(&tls)), ("gone", tls_record(&tls_key()))],
    )
    .await;
    h.server
        .remove(&key_name(&sel("gone"), SECURE_PEER))
        .await
        .unwrap();
    h.server
        .set_tlsa(&tlsa_name(8443, SECURE_PEER), &[Tlsa::dane_ee(tls.hash)])
        .await
        .unwrap();
    for _ in 0..2 {
        let report = h.resolver.lookup_report(SECURE_PEER).await;
        let summary: Vec<(String, &str, StepOutcome, Option<Security>)> = report
            .steps
            .iter()
            .map(|s| (s.name.clone(), s.record_type, s.outcome.clone(), s.security))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    index_name(SECURE_PEER),
                    "TXT",
                    StepOutcome::Ok,
                    Some(Security::Secure)
                ),
                (
                    key_name(&sel("tls1"), SECURE_PEER),
                    "TXT",
                    StepOutcome::Ok,
                    Some(Security::Secure)
                ),
                (
                    key_name(&sel("gone"), SECURE_PEER),
                    "TXT",
                    StepOutcome::NxDomain,
                    Some(Security::Secure)
                ),
                (
                    tlsa_name(8443, SECURE_PEER),
                    "TLSA",
                    StepOutcome::Ok,
                    Some(Security::Secure)
                ),
            ]
        );
        let keys = report.result.expect("keys");
        assert!(matches!(
            keys.records[1].record,
            Err(KeyProblem::Missing(_))
        ));
        assert_eq!(keys.tlsa, vec![Tlsa::dane_ee(tls.hash)]);
    }
    // Uncached: every report asked again.
    assert_eq!(h.txt_queries(&index_name(SECURE_PEER)), 2);
    // And the missing selector shortens the cache lifetime to negative_ttl.
    let keys = h.resolver.peer_keys(SECURE_PEER).await.unwrap();
    assert_eq!(keys.expires_at - keys.fetched_at, h.config.negative_ttl);

    let report = h.resolver.lookup_report("nobody.secure.test").await;
    assert_eq!(report.steps.len(), 1);
    assert_eq!(report.steps[0].outcome, StepOutcome::NxDomain);
    assert_eq!(report.steps[0].security, Some(Security::Secure));
    assert_eq!(report.result.unwrap_err().reason(), "no_record");
}

#[test]
fn refusal_labels_are_stable_and_distinct() {
    let mut labels = KeyRefusal::ALL.to_vec();
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), KeyRefusal::ALL.len());
}

#[test]
fn trust_anchor_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("anchor");
    std::fs::write(&path, "").unwrap();
    let error = |path: &std::path::Path| load_trust_anchors(path).err().unwrap_or_default();
    assert!(error(&path).contains("no DNSKEY"));
    std::fs::write(&path, "not a record\n").unwrap();
    assert!(load_trust_anchors(&path).is_err());
    assert!(error(&dir.path().join("missing")).contains("cannot read"));
}

#[tokio::test]
async fn stale_answers_do_not_wait_for_a_failing_resolver() {
    let h = Harness::new(|c| c.timeout = Duration::from_millis(400)).await;
    let tls = tls_key();
    h.publish(PEER, &[("tls1", tls_record(&tls))]).await;
    h.check(PEER, &tls).await.expect("warm");
    h.server.set_mode(Mode::Drop);
    h.advance(Duration::from_secs(301));
    // The first caller after expiry finds out that DNS is down.
    let started = std::time::Instant::now();
    assert!(h.check(PEER, &tls).await.expect("stale").stale);
    assert!(started.elapsed() >= Duration::from_millis(400));
    let index = index_name(PEER);
    let asked = h.txt_queries(&index);

    // After the hold, callers get the stale answer at once while DNS is
    // retried in the background.
    h.advance(resolver::FAILURE_HOLD);
    let started = std::time::Instant::now();
    assert!(h.check(PEER, &tls).await.expect("stale").stale);
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "waited {:?}",
        started.elapsed()
    );
    for _ in 0..200 {
        if h.txt_queries(&index) > asked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(h.txt_queries(&index) > asked, "background retry");

    // DNS back: a background retry picks it up and the answer is fresh.
    h.server.set_mode(Mode::Answer);
    tokio::time::sleep(Duration::from_millis(1000)).await; // the retry in flight times out
    h.advance(resolver::FAILURE_HOLD);
    h.check(PEER, &tls).await.expect("stale, retrying");
    let mut fresh = false;
    for _ in 0..200 {
        if !h.check(PEER, &tls).await.expect("served").stale {
            fresh = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(fresh, "the background refresh stored a fresh answer");
}

#[tokio::test]
async fn a_resolver_anchored_on_another_key_does_not_trust_the_zone() {
    // Anchor the resolver on a second signed zone's key only: the chain
    // for secure.test then leads to no anchor.
    let h = Harness::new(|c| c.dnssec = DnssecMode::Validate).await;
    let other = TestDnsServer::builder()
        .signed_zone("secure.test")
        .start()
        .await
        .expect("second server");
    let anchor = h._dir.path().join("other-anchor.txt");
    other.write_trust_anchor("secure.test", &anchor).unwrap();
    let config = config::Dns {
        trust_anchor_file: Some(anchor),
        ..h.config.clone()
    };
    let resolver = KeyResolver::new(&config, Arc::new(Metrics::new())).expect("resolver");
    let tls = tls_key();
    h.publish(SECURE_PEER, &[("tls1", tls_record(&tls))]).await;
    match resolver.check_tls_key(SECURE_PEER, &tls.hash).await {
        Ok(verdict) => panic!("accepted with a foreign anchor: {verdict:?}"),
        Err(refusal) => assert_eq!(refusal.as_str(), "dnssec_bogus", "{refusal}"),
    }
}
