//! Prometheus metrics, in the text exposition format.
//!
//! Label values are always drawn from small fixed sets (`&'static str`), so
//! no client-controlled string can grow the series count.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::{Mutex, PoisonError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub listener: &'static str,
    pub route_class: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub listener: &'static str,
    pub route_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub listener: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub listener: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheOutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsReasonLabels {
    pub reason: &'static str,
}

/// Every metric mdgate exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabels, Histogram>,
    upstream_errors: Family<KindLabels, Counter>,
    connections_open: Family<ListenerLabels, Gauge>,
    connections: Family<ListenerLabels, Counter>,
    handshake_failures: Family<ReasonLabels, Counter>,
    cert_reloads: Family<ResultLabels, Counter>,
    rejected: Family<ReasonLabels, Counter>,
    dns_lookups: Family<DnsResultLabels, Counter>,
    dns_cache: Family<CacheOutcomeLabels, Counter>,
    dns_failures: Family<DnsReasonLabels, Counter>,
    peer_key_refusals: Family<DnsReasonLabels, Counter>,
    audit_group_entries: Histogram,
    audit_commit_duration: Histogram,
    audit_write_failures: Counter,
    audit_journal_pending: Gauge,
    /// Reads the journal's backlog when the metrics are encoded.
    journal_probe: Mutex<Option<JournalProbe>>,
}

/// How many audit entries wait in the journal to be copied.
pub type JournalProbe = Box<dyn Fn() -> usize + Send + Sync>;

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s in factors of 2.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mdgate");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration = Family::<RouteLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let upstream_errors = Family::<KindLabels, Counter>::default();
        let connections_open = Family::<ListenerLabels, Gauge>::default();
        let connections = Family::<ListenerLabels, Counter>::default();
        let handshake_failures = Family::<ReasonLabels, Counter>::default();
        let cert_reloads = Family::<ResultLabels, Counter>::default();
        let rejected = Family::<ReasonLabels, Counter>::default();
        let dns_lookups = Family::<DnsResultLabels, Counter>::default();
        let dns_cache = Family::<CacheOutcomeLabels, Counter>::default();
        let dns_failures = Family::<DnsReasonLabels, Counter>::default();
        let peer_key_refusals = Family::<DnsReasonLabels, Counter>::default();
        // 1 .. 512 entries in factors of 2 (a group holds at most 256).
        let audit_group_entries = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        let audit_commit_duration = latency_histogram();
        let audit_write_failures = Counter::default();
        let audit_journal_pending = Gauge::default();
        registry.register(
            "requests",
            "Requests answered, by listener, route class and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head, by listener and route class",
            request_duration.clone(),
        );
        registry.register(
            "upstream_errors",
            "Failed upstream exchanges, by kind",
            upstream_errors.clone(),
        );
        registry.register(
            "connections_open",
            "Client connections currently open, by listener",
            connections_open.clone(),
        );
        registry.register(
            "connections",
            "Client connections accepted, by listener",
            connections.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed, by listener and reason",
            handshake_failures.clone(),
        );
        registry.register(
            "certificate_reloads",
            "Certificate reloads, by listener and result",
            cert_reloads.clone(),
        );
        registry.register(
            "requests_rejected",
            "Requests refused before reaching the upstream, by listener and reason",
            rejected.clone(),
        );
        registry.register(
            "dns_lookups",
            "DNS queries sent for peer keys, by result (answer, nxdomain, nodata, servfail, \
             timeout, bogus, error)",
            dns_lookups.clone(),
        );
        registry.register(
            "dns_cache",
            "Peer key cache lookups, by outcome (hit, miss, stale, negative)",
            dns_cache.clone(),
        );
        registry.register(
            "dns_failures",
            "Failed fetches of a peer's key records, by reason",
            dns_failures.clone(),
        );
        registry.register(
            "peer_key_refusals",
            "Peer keys refused, by reason",
            peer_key_refusals.clone(),
        );
        registry.register(
            "audit_group_entries",
            "Audit entries of the data path per group commit (count: commits, sum: entries)",
            audit_group_entries.clone(),
        );
        registry.register(
            "audit_commit_duration_seconds",
            "Time a group of audit entries took to become durable, flush included",
            audit_commit_duration.clone(),
        );
        registry.register(
            "audit_write_failures",
            "Group commits of audit entries that failed (their requests were answered 500)",
            audit_write_failures.clone(),
        );
        registry.register(
            "audit_journal_pending",
            "Audit entries durable in the journal and not yet copied into the hash-chained log \
             (a backlog that keeps growing means the copier cannot write to the database)",
            audit_journal_pending.clone(),
        );
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_errors,
            connections_open,
            connections,
            handshake_failures,
            cert_reloads,
            rejected,
            dns_lookups,
            dns_cache,
            dns_failures,
            peer_key_refusals,
            audit_group_entries,
            audit_commit_duration,
            audit_write_failures,
            audit_journal_pending,
            journal_probe: Mutex::new(None),
        }
    }

    /// Reports the audit journal's backlog through `probe`, read at each
    /// scrape.
    pub fn watch_audit_journal(&self, probe: JournalProbe) {
        *self
            .journal_probe
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(probe);
    }

    /// One group commit of the data path's audit entries.
    pub fn audit_commit(&self, entries: usize, seconds: f64, ok: bool) {
        self.audit_group_entries.observe(entries as f64);
        self.audit_commit_duration.observe(seconds);
        if !ok {
            self.audit_write_failures.inc();
        }
    }

    /// Records one answered request.
    pub fn request(
        &self,
        listener: &'static str,
        route_class: &'static str,
        status: u16,
        seconds: f64,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                listener,
                route_class,
                status,
            })
            .inc();
        self.request_duration
            .get_or_create(&RouteLabels {
                listener,
                route_class,
            })
            .observe(seconds);
    }

    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    pub fn connection_opened(&self, listener: &'static str) {
        self.connections
            .get_or_create(&ListenerLabels { listener })
            .inc();
        self.connections_open
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }

    pub fn connection_closed(&self, listener: &'static str) {
        self.connections_open
            .get_or_create(&ListenerLabels { listener })
            .dec();
    }

    pub fn handshake_failure(&self, listener: &'static str, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&ReasonLabels { listener, reason })
            .inc();
    }

    pub fn cert_reload(&self, listener: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.cert_reloads
            .get_or_create(&ResultLabels { listener, result })
            .inc();
    }

    pub fn rejected(&self, listener: &'static str, reason: &'static str) {
        self.rejected
            .get_or_create(&ReasonLabels { listener, reason })
            .inc();
    }

    /// One DNS query for peer keys and its result.
    pub fn dns_lookup(&self, result: &'static str) {
        self.dns_lookups
            .get_or_create(&DnsResultLabels { result })
            .inc();
    }

    /// One peer key cache lookup: `hit`, `miss`, `stale` or `negative`.
    pub fn dns_cache(&self, outcome: &'static str) {
        self.dns_cache
            .get_or_create(&CacheOutcomeLabels { outcome })
            .inc();
    }

    /// One failed fetch of a peer's records.
    pub fn dns_failure(&self, reason: &'static str) {
        self.dns_failures
            .get_or_create(&DnsReasonLabels { reason })
            .inc();
    }

    /// One refused peer key.
    pub fn peer_key_refusal(&self, reason: &'static str) {
        self.peer_key_refusals
            .get_or_create(&DnsReasonLabels { reason })
            .inc();
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        if let Some(probe) = self
            .journal_probe
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            self.audit_journal_pending
                .set(i64::try_from(probe()).unwrap_or(i64::MAX));
        }
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail; an error here would only come
        // from a formatting bug, which we surface as a truncated page.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_contains_recorded_series() {
        let m = Metrics::new();
        m.request("public", "api", 200, 0.001);
        m.handshake_failure("federation", "no_client_cert");
        m.connection_opened("public");
        let text = m.encode();
        assert!(
            text.contains(
                r#"mdgate_requests_total{listener="public",route_class="api",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"mdgate_tls_handshake_failures_total{listener="federation",reason="no_client_cert"} 1"#));
        assert!(text.contains(r#"mdgate_connections_open{listener="public"} 1"#));
        assert!(text.contains("mdgate_request_duration_seconds_bucket"));
    }

    #[test]
    fn dns_families_are_exported() {
        let m = Metrics::new();
        m.dns_lookup("answer");
        m.dns_cache("hit");
        m.dns_failure("dns_timeout");
        m.peer_key_refusal("key_mismatch");
        let text = m.encode();
        for line in [
            r#"mdgate_dns_lookups_total{result="answer"} 1"#,
            r#"mdgate_dns_cache_total{outcome="hit"} 1"#,
            r#"mdgate_dns_failures_total{reason="dns_timeout"} 1"#,
            r#"mdgate_peer_key_refusals_total{reason="key_mismatch"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
