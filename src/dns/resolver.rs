//! [`KeyResolver`]: a peer's keys from its DNS, cached, and the decisions
//! on presented keys.
//!
//! # Data flow
//!
//! A call names a peer FQDN. The cache (a moka cache of per-FQDN slots,
//! bounded by `cache_entries`) answers from memory when it can; otherwise
//! one caller fetches and the others wait for that fetch:
//!
//! 1. TXT `_mdgate.F` → [`IndexRecord`] (NXDOMAIN, NODATA or no `mdgate1`
//!    record: `no_record`, cached for `negative_ttl`);
//! 2. TXT `<sel>._mdgate.F` for every selector, concurrently;
//! 3. with `dnssec = "validate"` and a secure index, TLSA
//!    `_<fp>._tcp.F`.
//!
//! The result, [`PeerKeys`], lives for the smallest TTL seen, clamped to
//! `[min_ttl, max_ttl]`. Any query that fails (SERVFAIL, timeout, network,
//! bogus) fails the whole fetch, so a decision never rests on half a key
//! set.
//!
//! # Cache rules
//!
//! * **One fetch in flight per name.** Each slot has an async fetch lock
//!   and a generation counter. A caller that finds nothing usable notes
//!   the generation and takes the lock; if the generation moved while it
//!   waited, another caller fetched and it uses that result (answer or
//!   failure) instead of asking again. moka's own `get_with` only creates
//!   the slot; it does not cache errors, so negative answers and failures
//!   are state in the slot.
//! * **Negative caching**: `no_record` and `invalid_record` answers are
//!   cached for `negative_ttl` and replace any earlier good answer (the
//!   zone said so).
//! * **Failures** (not answers) are remembered for [`FAILURE_HOLD`]:
//!   callers in that time get the same failure without a query (RFC 9520
//!   §3.2 asks for at least one second), so an outage costs one timeout
//!   per name per hold, not one per request.
//! * **Stale-if-error**: while refreshes fail, the last good answer is
//!   served until `expires_at + stale_if_error`, then the peer is refused
//!   (`stale_expired`). Once a failure is known, stale answers are served
//!   at once and DNS is retried in the background (at most once per
//!   hold), so requests do not wait on a resolver that is down. A bogus
//!   answer is never covered up this way: it fails at once. When DNS
//!   answers again, the next fetch replaces the failure; nothing needs a
//!   restart.
//! * **Background refresh**: a hit in the last quarter of an answer's
//!   lifetime starts a refresh task, so warm peers never wait for DNS.
//! * **Unknown keys**: a presented key that matches nothing cached may
//!   force one refetch per FQDN per [`FORCED_REFETCH_INTERVAL`]; callers
//!   that arrive while it runs wait for it rather than asking again.
//! * **Revocation memory**: when a selector's record turns revoked, the
//!   key hash it had is kept with the entry, so that key is refused as
//!   `revoked` (not merely `key_mismatch`) for as long as the record stays
//!   revoked.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;

use super::client::{Client, QueryFailure, QueryOutcome};
use super::record::{self, IndexRecord, KeyRecord, KeyUse, RecordError, Selector, Tlsa};
use super::{Clock, DnsError, KeyRefusal, Security, SystemClock};
use crate::admin::metrics::Metrics;
use crate::config::{self, DnssecMode};

/// How long a failed fetch is reused before DNS is asked again.
pub const FAILURE_HOLD: Duration = Duration::from_secs(5);
/// At most one forced refetch per FQDN in this interval.
pub const FORCED_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// A peer's keys as its DNS published them.
#[derive(Debug, Clone)]
pub struct PeerKeys {
    /// The peer (lower case, no trailing dot).
    pub fqdn: String,
    pub index: IndexRecord,
    /// One entry per selector of the index, in index order.
    pub records: Vec<KeyEntry>,
    /// TLSA records for the federation port; only looked up, and only
    /// used, when the index answer is DNSSEC-secure. Empty: none published.
    pub tlsa: Vec<Tlsa>,
    /// The weakest DNSSEC status among the answers used.
    pub security: Security,
    pub fetched_at: Instant,
    /// After this, the answer is stale.
    pub expires_at: Instant,
    /// A hit after this starts a background refresh.
    pub refresh_at: Instant,
    /// Key hashes of selectors that were live earlier in this process and
    /// are revoked now.
    pub revoked_keys: Vec<(Selector, [u8; 32])>,
}

/// One selector of the index and what its record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub selector: Selector,
    pub record: Result<KeyRecord, KeyProblem>,
}

/// Why a listed selector has no usable record (it is skipped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyProblem {
    #[error("no v=mdgate1 record at {0}")]
    Missing(String),
    #[error("invalid record at {name}: {error}")]
    Invalid { name: String, error: RecordError },
}

/// An accepted TLS key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsKeyVerdict {
    /// The selector whose record matched.
    pub selector: Selector,
    pub security: Security,
    /// A secure TLSA 3 1 1 record matched too.
    pub dane: bool,
    /// The answer was past its TTL, served within `stale_if_error`.
    pub stale: bool,
}

/// Everything `mdgate check-peer` shows: each query with its outcome.
#[derive(Debug, Clone)]
pub struct LookupReport {
    pub fqdn: String,
    pub dnssec: DnssecMode,
    pub steps: Vec<LookupStep>,
    /// The keys, or why there are none.
    pub result: Result<PeerKeys, DnsError>,
}

/// One query of a [`LookupReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupStep {
    /// The absolute name asked.
    pub name: String,
    /// `TXT` or `TLSA`.
    pub record_type: &'static str,
    pub outcome: StepOutcome,
    pub security: Option<Security>,
    /// The answer's TTL in seconds.
    pub ttl: Option<u32>,
    pub elapsed: Duration,
    /// The records as text (TXT strings concatenated, TLSA presentation).
    pub records: Vec<String>,
}

/// What one query gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// A usable record.
    Ok,
    NxDomain,
    NoData,
    /// TXT records, none of them `v=mdgate1`.
    NotOurs,
    /// Ours, but invalid.
    Invalid(RecordError),
    Bogus,
    ServFail,
    Timeout,
    Error(String),
}

impl std::fmt::Display for StepOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepOutcome::Ok => f.write_str("ok"),
            StepOutcome::NxDomain => f.write_str("NXDOMAIN"),
            StepOutcome::NoData => f.write_str("no records of this type"),
            StepOutcome::NotOurs => f.write_str("TXT records, none with v=mdgate1"),
            StepOutcome::Invalid(e) => write!(f, "invalid: {e}"),
            StepOutcome::Bogus => f.write_str("DNSSEC bogus"),
            StepOutcome::ServFail => f.write_str("SERVFAIL"),
            StepOutcome::Timeout => f.write_str("timeout"),
            StepOutcome::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// Looks up and caches peers' keys; see the module documentation.
#[derive(Clone)]
pub struct KeyResolver {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    cache: moka::future::Cache<String, Arc<Slot>>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    config: config::Dns,
}

/// The cache entry of one FQDN.
#[derive(Default)]
struct Slot {
    state: std::sync::Mutex<SlotState>,
    /// Held by the one caller that fetches.
    fetch: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct SlotState {
    good: Option<Arc<PeerKeys>>,
    /// A cached `no_record`/`invalid_record` answer and its expiry.
    negative: Option<(DnsError, Instant)>,
    /// The last failed fetch and when it failed.
    failure: Option<(DnsError, Instant)>,
    /// Bumped by every completed fetch.
    generation: u64,
    refreshing: bool,
    /// When the last forced refetch started, and the generation it was
    /// forced from (callers join it while no fetch has completed since).
    last_forced: Option<(Instant, u64)>,
}

/// A cached answer or the fetch to make.
enum Cached {
    /// An answer (`true`: stale) with nothing to do.
    Hit(Arc<PeerKeys>, bool),
    /// A stale answer to serve while a background refresh tries again.
    Stale(Arc<PeerKeys>),
    /// Fetch now, from this generation.
    Fetch(u64),
}

impl KeyResolver {
    /// A resolver with the system clock.
    pub fn new(config: &config::Dns, metrics: Arc<Metrics>) -> Result<KeyResolver, DnsError> {
        Self::with_clock(config, metrics, Arc::new(SystemClock))
    }

    /// A resolver whose "now" comes from `clock` (tests).
    pub fn with_clock(
        config: &config::Dns,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Result<KeyResolver, DnsError> {
        let client = Client::new(config, metrics.clone()).map_err(DnsError::Setup)?;
        let cache = moka::future::Cache::builder()
            .max_capacity(config.cache_entries)
            .build();
        Ok(KeyResolver {
            inner: Arc::new(Inner {
                client,
                cache,
                clock,
                metrics,
                config: config.clone(),
            }),
        })
    }

    /// The peer's keys, from the cache when possible.
    pub async fn peer_keys(&self, fqdn: &str) -> Result<Arc<PeerKeys>, DnsError> {
        let fqdn = normalise(fqdn)?;
        self.inner.resolve(&fqdn, None).await.map(|(keys, _)| keys)
    }

    /// Decides whether `spki_sha256` (SHA-256 of the DER
    /// SubjectPublicKeyInfo of the certificate the peer presented) is a
    /// live TLS key of `fqdn`. Refusals are counted in
    /// `mdgate_peer_key_refusals_total{reason}`.
    pub async fn check_tls_key(
        &self,
        fqdn: &str,
        spki_sha256: &[u8; 32],
    ) -> Result<TlsKeyVerdict, KeyRefusal> {
        let result = self.inner.check_tls_key(fqdn, spki_sha256).await;
        if let Err(refusal) = &result {
            self.inner.metrics.peer_key_refusal(refusal.as_str());
        }
        result
    }

    /// The live Ed25519 signing key of `fqdn` at `selector` (a JWS `kid`).
    pub async fn signing_key(&self, fqdn: &str, selector: &str) -> Result<KeyRecord, KeyRefusal> {
        let result = self.inner.signing_key(fqdn, selector).await;
        if let Err(refusal) = &result {
            self.inner.metrics.peer_key_refusal(refusal.as_str());
        }
        result
    }

    /// The DNS client, for the one-off lookups in `dns::addr` and
    /// `dns::probe` (which bypass the cache as `lookup_report` does).
    pub(super) fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Every query for `fqdn`, made now, bypassing and not touching the
    /// cache (for `mdgate check-peer`).
    pub async fn lookup_report(&self, fqdn: &str) -> LookupReport {
        let dnssec = self.inner.config.dnssec;
        let name = match normalise(fqdn) {
            Ok(name) => name,
            Err(e) => {
                return LookupReport {
                    fqdn: fqdn.to_owned(),
                    dnssec,
                    steps: Vec::new(),
                    result: Err(e),
                }
            }
        };
        let (result, steps) = self.inner.fetch(&name).await;
        LookupReport {
            fqdn: name,
            dnssec,
            steps,
            result,
        }
    }
}

impl Inner {
    async fn check_tls_key(
        self: &Arc<Self>,
        fqdn: &str,
        spki: &[u8; 32],
    ) -> Result<TlsKeyVerdict, KeyRefusal> {
        let fqdn = normalise(fqdn)?;
        let (keys, stale) = self.resolve(&fqdn, None).await?;
        match evaluate_tls(&keys, spki, stale) {
            Err(KeyRefusal::KeyMismatch { .. } | KeyRefusal::TlsaMismatch { .. }) => {}
            decided => return decided,
        }
        // An unknown key: the peer may have rotated since we cached.
        let Some(generation) = self.forced_refetch(&fqdn).await else {
            return evaluate_tls(&keys, spki, stale);
        };
        let (keys, stale) = self.resolve(&fqdn, Some(generation)).await?;
        evaluate_tls(&keys, spki, stale)
    }

    async fn signing_key(
        self: &Arc<Self>,
        fqdn: &str,
        selector: &str,
    ) -> Result<KeyRecord, KeyRefusal> {
        let fqdn = normalise(fqdn)?;
        let unknown = || KeyRefusal::UnknownSelector {
            fqdn: fqdn.clone(),
            selector: selector.chars().take(63).collect(),
        };
        let selector = Selector::parse(selector).map_err(|_| unknown())?;
        let (mut keys, _) = self.resolve(&fqdn, None).await?;
        if !keys.index.contains(&selector) {
            // A new selector the cached index does not list yet.
            if let Some(generation) = self.forced_refetch(&fqdn).await {
                keys = self.resolve(&fqdn, Some(generation)).await?.0;
            }
        }
        let entry = keys
            .records
            .iter()
            .find(|e| e.selector == selector)
            .ok_or_else(unknown)?;
        match &entry.record {
            Err(problem) => Err(KeyRefusal::InvalidRecord(DnsError::Other {
                name: record::key_name(&selector, &fqdn),
                detail: problem.to_string(),
            })),
            Ok(r) if r.is_revoked() => Err(KeyRefusal::Revoked {
                fqdn,
                selector: selector.to_string(),
            }),
            Ok(r) if r.usage != KeyUse::Sig => Err(KeyRefusal::NotSigningKey {
                fqdn,
                selector: selector.to_string(),
                usage: r.usage.as_str(),
            }),
            Ok(r) => Ok(r.clone()),
        }
    }

    /// Whether this caller may force a refetch, or join one in flight;
    /// `Some(generation)` to pass to [`Self::resolve`].
    ///
    /// Joining is keyed on the generation, not on a flag, so a forcing
    /// caller that is cancelled cannot leave the slot "forcing" for ever:
    /// the first joiner then fetches instead, once.
    async fn forced_refetch(&self, fqdn: &str) -> Option<u64> {
        let slot = self.slot(fqdn).await;
        let now = self.clock.now();
        let mut st = lock(&slot.state);
        match st.last_forced {
            Some((at, generation))
                if now.saturating_duration_since(at) < FORCED_REFETCH_INTERVAL =>
            {
                (st.generation == generation).then_some(generation)
            }
            _ => {
                st.last_forced = Some((now, st.generation));
                Some(st.generation)
            }
        }
    }

    async fn slot(&self, fqdn: &str) -> Arc<Slot> {
        self.cache
            .get_with(fqdn.to_owned(), async { Arc::new(Slot::default()) })
            .await
    }

    /// The keys of `fqdn` and whether they are stale. `force`: fetch
    /// unless a fetch completed after that generation.
    async fn resolve(
        self: &Arc<Self>,
        fqdn: &str,
        force: Option<u64>,
    ) -> Result<(Arc<PeerKeys>, bool), DnsError> {
        let slot = self.slot(fqdn).await;
        let generation = match force {
            Some(generation) => generation,
            None => match self.cached(&slot, self.clock.now()) {
                Ok(Cached::Hit(keys, stale)) => {
                    let now = self.clock.now();
                    if now >= keys.refresh_at && now < keys.expires_at {
                        self.refresh_in_background(fqdn, &slot);
                    }
                    return Ok((keys, stale));
                }
                Ok(Cached::Stale(keys)) => {
                    self.refresh_in_background(fqdn, &slot);
                    return Ok((keys, true));
                }
                Ok(Cached::Fetch(generation)) => generation,
                Err(e) => return Err(e),
            },
        };

        let _fetching = slot.fetch.lock().await;
        // If someone fetched while we waited, their result is ours.
        if lock(&slot.state).generation == generation {
            let (result, _) = self.fetch(fqdn).await;
            self.store(&slot, result);
        }
        let settled = self.settled(fqdn, &slot, self.clock.now());
        self.metrics.dns_cache(match &settled {
            Ok((_, true)) => "stale",
            _ => "miss",
        });
        settled
    }

    /// The fast path: what the slot can answer without DNS.
    fn cached(&self, slot: &Slot, now: Instant) -> Result<Cached, DnsError> {
        let st = lock(&slot.state);
        if let Some(good) = &st.good {
            if now < good.expires_at {
                self.metrics.dns_cache("hit");
                return Ok(Cached::Hit(good.clone(), false));
            }
        }
        if let Some((error, until)) = &st.negative {
            if now < *until {
                self.metrics.dns_cache("negative");
                return Err(error.clone());
            }
        }
        if let Some((_, at)) = &st.failure {
            let held = now.saturating_duration_since(*at) < FAILURE_HOLD;
            if !held {
                // DNS is known to be failing: while the stale window
                // lasts, answer at once and retry in the background.
                if let Ok((keys, true)) = self.after_failure(&st, now) {
                    self.metrics.dns_cache("stale");
                    return Ok(Cached::Stale(keys));
                }
            }
            if held {
                let held = self.after_failure(&st, now);
                // A recent failure counts as negative unless the last good
                // answer covers it.
                self.metrics.dns_cache(match &held {
                    Ok((_, true)) => "stale",
                    Ok((_, false)) => "hit",
                    Err(_) => "negative",
                });
                return held.map(|(keys, stale)| Cached::Hit(keys, stale));
            }
        }
        Ok(Cached::Fetch(st.generation))
    }

    /// The outcome once a fetch has completed (ours or another caller's).
    fn settled(
        &self,
        fqdn: &str,
        slot: &Slot,
        now: Instant,
    ) -> Result<(Arc<PeerKeys>, bool), DnsError> {
        let st = lock(&slot.state);
        if let Some(good) = &st.good {
            if now < good.expires_at {
                return Ok((good.clone(), false));
            }
        }
        if let Some((error, _)) = &st.negative {
            return Err(error.clone());
        }
        if st.failure.is_some() {
            return self.after_failure(&st, now);
        }
        // Only a good answer that expired between the fetch and now (a
        // clock moved by a test) is left.
        match &st.good {
            Some(good) => Ok((good.clone(), now >= good.expires_at)),
            // Unreachable: every fetch stores an answer or a failure
            // before it releases the fetch lock.
            None => Err(DnsError::Other {
                name: record::index_name(fqdn),
                detail: "no answer stored".to_owned(),
            }),
        }
    }

    /// The last good answer within its stale window, or the failure.
    fn after_failure(
        &self,
        st: &SlotState,
        now: Instant,
    ) -> Result<(Arc<PeerKeys>, bool), DnsError> {
        let Some((error, _)) = &st.failure else {
            return Err(DnsError::Setup("no failure recorded".to_owned()));
        };
        let Some(good) = &st.good else {
            return Err(error.clone());
        };
        if now < good.expires_at {
            // A background refresh failed; the answer is still fresh.
            return Ok((good.clone(), false));
        }
        if matches!(error, DnsError::Bogus { .. }) {
            return Err(error.clone());
        }
        let expired_for = now.saturating_duration_since(good.expires_at);
        if expired_for < self.config.stale_if_error {
            Ok((good.clone(), true))
        } else {
            Err(DnsError::StaleExpired {
                expired_for,
                cause: Box::new(error.clone()),
            })
        }
    }

    /// Records a fetch's result in the slot.
    fn store(&self, slot: &Slot, result: Result<PeerKeys, DnsError>) {
        let now = self.clock.now();
        let mut st = lock(&slot.state);
        st.generation += 1;
        st.refreshing = false;
        match result {
            Ok(mut keys) => {
                if let Some(old) = &st.good {
                    keys.revoked_keys = remembered_revocations(old, &keys);
                }
                st.good = Some(Arc::new(keys));
                st.negative = None;
                st.failure = None;
            }
            Err(error) if error.is_answer() => {
                self.metrics.dns_failure(error.reason());
                st.negative = Some((error, now + self.config.negative_ttl));
                st.good = None;
                st.failure = None;
            }
            Err(error) => {
                self.metrics.dns_failure(error.reason());
                tracing::warn!(error = %error, "DNS refresh of peer keys failed");
                st.failure = Some((error, now));
            }
        }
    }

    /// Starts a background refresh of `fqdn` unless one is running or a
    /// failure is fresh (at most one attempt per [`FAILURE_HOLD`]).
    fn refresh_in_background(self: &Arc<Self>, fqdn: &str, slot: &Arc<Slot>) {
        let now = self.clock.now();
        let generation = {
            let mut st = lock(&slot.state);
            let held = st
                .failure
                .as_ref()
                .is_some_and(|(_, at)| now.saturating_duration_since(*at) < FAILURE_HOLD);
            if st.refreshing || held {
                return;
            }
            st.refreshing = true;
            st.generation
        };
        let inner = self.clone();
        let slot = slot.clone();
        let fqdn = fqdn.to_owned();
        tokio::spawn(async move {
            let _fetching = slot.fetch.lock().await;
            if lock(&slot.state).generation != generation {
                lock(&slot.state).refreshing = false;
                return;
            }
            let (result, _) = inner.fetch(&fqdn).await;
            inner.store(&slot, result);
        });
    }

    /// Queries DNS for `fqdn` (no cache): index, key records, TLSA.
    async fn fetch(&self, fqdn: &str) -> (Result<PeerKeys, DnsError>, Vec<LookupStep>) {
        let fetched_at = self.clock.now();
        let mut steps = Vec::new();
        let cfg = &self.config;

        // 1. The index.
        let index_name = record::index_name(fqdn);
        let (outcome, step) = self.txt_step(&index_name, index_check).await;
        steps.push(step);
        let (index_records, mut ttl, mut security) = match outcome {
            QueryOutcome::Answer {
                records,
                ttl,
                security,
            } => (records, ttl, security),
            QueryOutcome::NxDomain { .. } => {
                return (Err(no_record(&index_name, "NXDOMAIN")), steps);
            }
            QueryOutcome::NoData { .. } => {
                return (Err(no_record(&index_name, "no TXT records")), steps);
            }
            QueryOutcome::Failed(failure) => return (Err(failed(&index_name, failure)), steps),
        };
        let index = match record::parse_index_rrset(&index_records) {
            Ok(Some(index)) => index,
            Ok(None) => {
                return (
                    Err(no_record(&index_name, "no v=mdgate1 TXT record")),
                    steps,
                )
            }
            Err(error) => {
                return (
                    Err(DnsError::InvalidRecord {
                        name: index_name,
                        error,
                    }),
                    steps,
                )
            }
        };

        // 2. Every selector's record, concurrently (at most 16).
        let names: Vec<String> = index
            .selectors
            .iter()
            .map(|s| record::key_name(s, fqdn))
            .collect();
        let answers = join_all(names.iter().map(|name| self.txt_step(name, key_check))).await;
        let mut records = Vec::with_capacity(answers.len());
        let mut failure = None;
        let mut any_missing = false;
        for ((selector, name), (outcome, step)) in index.selectors.iter().zip(&names).zip(answers) {
            steps.push(step);
            let record = match outcome {
                QueryOutcome::Answer {
                    records: txt,
                    ttl: t,
                    security: s,
                } => {
                    ttl = ttl.min(t);
                    security = security.and(s);
                    match record::parse_key_rrset(&txt) {
                        Ok(Some(r)) => Ok(r),
                        Ok(None) => Err(KeyProblem::Missing(name.clone())),
                        Err(error) => Err(KeyProblem::Invalid {
                            name: name.clone(),
                            error,
                        }),
                    }
                }
                QueryOutcome::NxDomain { security: s } | QueryOutcome::NoData { security: s } => {
                    security = security.and(s);
                    Err(KeyProblem::Missing(name.clone()))
                }
                QueryOutcome::Failed(f) => {
                    failure.get_or_insert_with(|| failed(name, f));
                    continue;
                }
            };
            if record.is_err() {
                any_missing = true;
                tracing::debug!(peer = fqdn, selector = %selector, "skipping a listed selector without a usable record");
            }
            records.push(KeyEntry {
                selector: selector.clone(),
                record,
            });
        }
        if let Some(error) = failure {
            return (Err(error), steps);
        }

        // 3. DANE, only where DNSSEC proves the answers.
        let mut tlsa = Vec::new();
        if cfg.dnssec == DnssecMode::Validate && security == Security::Secure {
            let name = record::tlsa_name(index.federation_port, fqdn);
            let started = std::time::Instant::now();
            let outcome = self.client.tlsa(&name).await;
            let mut step = LookupStep {
                name: name.clone(),
                record_type: "TLSA",
                outcome: StepOutcome::Ok,
                security: None,
                ttl: None,
                elapsed: started.elapsed(),
                records: Vec::new(),
            };
            match outcome {
                QueryOutcome::Answer {
                    records: found,
                    ttl: t,
                    security: s,
                } => {
                    step.security = Some(s);
                    step.ttl = Some(t);
                    step.records = found.iter().map(Tlsa::to_string).collect();
                    // TLSA is only trusted from a secure answer (RFC 6698).
                    if s == Security::Secure {
                        ttl = ttl.min(t);
                        tlsa = found;
                    }
                }
                QueryOutcome::NxDomain { security: s } => {
                    step.outcome = StepOutcome::NxDomain;
                    step.security = Some(s);
                }
                QueryOutcome::NoData { security: s } => {
                    step.outcome = StepOutcome::NoData;
                    step.security = Some(s);
                }
                QueryOutcome::Failed(f) => {
                    step.outcome = failure_step(&f);
                    steps.push(step);
                    return (Err(failed(&name, f)), steps);
                }
            }
            steps.push(step);
        }

        let mut lifetime = Duration::from_secs(u64::from(ttl)).clamp(cfg.min_ttl, cfg.max_ttl);
        if any_missing {
            // Look again for a missing record as soon as a negative answer
            // would be looked up again.
            lifetime = lifetime.min(cfg.negative_ttl.max(cfg.min_ttl));
        }
        let keys = PeerKeys {
            fqdn: fqdn.to_owned(),
            index,
            records,
            tlsa,
            security,
            fetched_at,
            expires_at: fetched_at + lifetime,
            refresh_at: fetched_at + lifetime * 3 / 4,
            revoked_keys: Vec::new(),
        };
        (Ok(keys), steps)
    }

    /// One TXT query and its report step.
    async fn txt_step(
        &self,
        name: &str,
        check: RrsetCheck,
    ) -> (QueryOutcome<TxtRecord>, LookupStep) {
        let started = std::time::Instant::now();
        let outcome = self.client.txt(name).await;
        let mut step = LookupStep {
            name: name.to_owned(),
            record_type: "TXT",
            outcome: StepOutcome::Ok,
            security: None,
            ttl: None,
            elapsed: started.elapsed(),
            records: Vec::new(),
        };
        match &outcome {
            QueryOutcome::Answer {
                records,
                ttl,
                security,
            } => {
                step.ttl = Some(*ttl);
                step.security = Some(*security);
                step.records = records
                    .iter()
                    .map(|strings| {
                        String::from_utf8_lossy(&record::concat_strings(strings)).into_owned()
                    })
                    .collect();
                step.outcome = match check(records) {
                    Ok(true) => StepOutcome::Ok,
                    Ok(false) => StepOutcome::NotOurs,
                    Err(e) => StepOutcome::Invalid(e),
                };
            }
            QueryOutcome::NxDomain { security } => {
                step.outcome = StepOutcome::NxDomain;
                step.security = Some(*security);
            }
            QueryOutcome::NoData { security } => {
                step.outcome = StepOutcome::NoData;
                step.security = Some(*security);
            }
            QueryOutcome::Failed(f) => step.outcome = failure_step(f),
        }
        (outcome, step)
    }
}

/// Whether a TXT RRset holds a valid record of the expected kind.
type RrsetCheck = fn(&[TxtRecord]) -> Result<bool, RecordError>;

/// One TXT record's character-strings, as the client returns them.
type TxtRecord = Vec<Box<[u8]>>;

fn index_check(records: &[TxtRecord]) -> Result<bool, RecordError> {
    record::parse_index_rrset(records).map(|r| r.is_some())
}

fn key_check(records: &[TxtRecord]) -> Result<bool, RecordError> {
    record::parse_key_rrset(records).map(|r| r.is_some())
}

/// The decision on a presented TLS key, given the peer's keys.
fn evaluate_tls(
    keys: &PeerKeys,
    spki: &[u8; 32],
    stale: bool,
) -> Result<TlsKeyVerdict, KeyRefusal> {
    if let Some((selector, _)) = keys.revoked_keys.iter().find(|(_, h)| h == spki) {
        return Err(KeyRefusal::Revoked {
            fqdn: keys.fqdn.clone(),
            selector: selector.to_string(),
        });
    }
    let live_tls = keys
        .records
        .iter()
        .filter_map(|e| e.record.as_ref().ok().map(|r| (&e.selector, r)))
        .filter(|(_, r)| r.usage == KeyUse::Tls && !r.is_revoked());
    let mut live = 0;
    let mut matched = None;
    for (selector, record) in live_tls {
        live += 1;
        if matched.is_none() && record.matches_spki(spki) {
            matched = Some(selector.clone());
        }
    }
    let Some(selector) = matched else {
        // No live TLS key at all, and some revoked: the peer's keys are
        // revoked (more actionable than "another key").
        if live == 0 {
            let revoked = keys
                .records
                .iter()
                .find(|e| matches!(&e.record, Ok(r) if r.usage == KeyUse::Tls && r.is_revoked()));
            if let Some(entry) = revoked {
                return Err(KeyRefusal::Revoked {
                    fqdn: keys.fqdn.clone(),
                    selector: entry.selector.to_string(),
                });
            }
        }
        return Err(KeyRefusal::KeyMismatch {
            fqdn: keys.fqdn.clone(),
            live,
        });
    };
    // DANE-EE (RFC 7671): with a secure answer, published 3 1 1 records
    // must include the key. Other usages are not ours to check.
    let pins: Vec<[u8; 32]> = keys
        .tlsa
        .iter()
        .filter_map(Tlsa::dane_ee_spki_sha256)
        .collect();
    let dane = if keys.security == Security::Secure && !pins.is_empty() {
        if !pins.contains(spki) {
            return Err(KeyRefusal::TlsaMismatch {
                fqdn: keys.fqdn.clone(),
                name: record::tlsa_name(keys.index.federation_port, &keys.fqdn),
            });
        }
        true
    } else {
        false
    };
    Ok(TlsKeyVerdict {
        selector,
        security: keys.security,
        dane,
        stale,
    })
}

/// Revoked selectors of `new` whose key `old` still had live, plus those
/// `old` remembered that are still revoked.
fn remembered_revocations(old: &PeerKeys, new: &PeerKeys) -> Vec<(Selector, [u8; 32])> {
    let revoked_now = |selector: &Selector| {
        new.records
            .iter()
            .any(|e| &e.selector == selector && matches!(&e.record, Ok(r) if r.is_revoked()))
    };
    let mut out: Vec<(Selector, [u8; 32])> = old
        .revoked_keys
        .iter()
        .filter(|(s, _)| revoked_now(s))
        .cloned()
        .collect();
    for entry in &old.records {
        if let Ok(record) = &entry.record {
            if let Some(hash) = record.spki_sha256() {
                if revoked_now(&entry.selector) && !out.iter().any(|(_, h)| *h == hash) {
                    out.push((entry.selector.clone(), hash));
                }
            }
        }
    }
    out
}

fn no_record(name: &str, what: &'static str) -> DnsError {
    DnsError::NoRecord {
        name: name.to_owned(),
        what,
    }
}

fn failed(name: &str, failure: QueryFailure) -> DnsError {
    let name = name.to_owned();
    match failure {
        QueryFailure::Bogus => DnsError::Bogus { name },
        QueryFailure::ServFail => DnsError::ServFail { name },
        QueryFailure::Timeout => DnsError::Timeout { name },
        QueryFailure::Other(detail) => DnsError::Other { name, detail },
    }
}

fn failure_step(failure: &QueryFailure) -> StepOutcome {
    match failure {
        QueryFailure::Bogus => StepOutcome::Bogus,
        QueryFailure::ServFail => StepOutcome::ServFail,
        QueryFailure::Timeout => StepOutcome::Timeout,
        QueryFailure::Other(detail) => StepOutcome::Error(detail.clone()),
    }
}

/// Lower case, no trailing dot, a valid server name.
fn normalise(fqdn: &str) -> Result<String, DnsError> {
    config::parse_fqdn(fqdn).map_err(|reason| DnsError::InvalidName {
        name: fqdn.chars().take(253).collect(),
        reason,
    })
}

/// The slot state lock. Nothing panics while holding it, but a poisoned
/// lock still holds consistent state (every update is a few assignments),
/// so it is used as is.
fn lock(state: &std::sync::Mutex<SlotState>) -> std::sync::MutexGuard<'_, SlotState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}
