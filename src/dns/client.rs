//! The thin adapter over hickory-resolver: one query in, one
//! [`QueryOutcome`] out, with the DNSSEC status of the answer.
//!
//! hickory's own response cache is switched off (`cache_size = 0`): the
//! resolver's cache above is the only one, so its TTL clamp, negative TTL,
//! stale window and forced refetch mean what they say, and a test server
//! sees every query. (hickory's DNSSEC validation cache of signature
//! checks stays on; it only saves CPU.) The search list never applies:
//! names are absolute.
//!
//! Error mapping, the part that decides refusal reasons:
//!
//! | hickory                                        | here                  |
//! |------------------------------------------------|-----------------------|
//! | `NoRecordsFound`, rcode NXDOMAIN               | `NxDomain`            |
//! | `NoRecordsFound`, rcode NOERROR                | `NoData`              |
//! | `DnssecBogus`, `Nsec { proof: Bogus }`, or any Bogus record | `Bogus`  |
//! | `Nsec { proof: Insecure }`                     | `NxDomain`/`NoData`, insecure |
//! | `Nsec { proof: Indeterminate }`                | `Failed(Other)`: retry, not bogus (hickory #3932) |
//! | rcode SERVFAIL                                 | `ServFail`            |
//! | `Timeout`                                      | `Timeout`             |
//! | anything else (REFUSED, I/O, no connections)   | `Other`               |

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::dnssec::Proof;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, Record, RecordType};
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::TokioResolver;

use super::record::Tlsa;
use super::Security;
use crate::admin::metrics::Metrics;
use crate::config::{self, DnssecMode};

/// One query's result.
#[derive(Debug, Clone)]
pub(crate) enum QueryOutcome<T> {
    /// Records of the asked type (possibly after a CNAME chain).
    Answer {
        records: Vec<T>,
        /// The smallest TTL in the answer.
        ttl: u32,
        security: Security,
    },
    /// The name does not exist.
    NxDomain { security: Security },
    /// The name exists without records of this type.
    NoData { security: Security },
    /// No usable answer.
    Failed(QueryFailure),
}

/// Why a query gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum QueryFailure {
    Bogus,
    ServFail,
    Timeout,
    Other(String),
}

impl<T> QueryOutcome<T> {
    /// The label of `mdgate_dns_lookups_total{result}`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            QueryOutcome::Answer { .. } => "answer",
            QueryOutcome::NxDomain { .. } => "nxdomain",
            QueryOutcome::NoData { .. } => "nodata",
            QueryOutcome::Failed(QueryFailure::Bogus) => "bogus",
            QueryOutcome::Failed(QueryFailure::ServFail) => "servfail",
            QueryOutcome::Failed(QueryFailure::Timeout) => "timeout",
            QueryOutcome::Failed(QueryFailure::Other(_)) => "error",
        }
    }
}

/// The hickory resolver with mdgate's options.
pub(crate) struct Client {
    resolver: TokioResolver,
    validate: bool,
    metrics: Arc<Metrics>,
}

impl Client {
    pub(crate) fn new(cfg: &config::Dns, metrics: Arc<Metrics>) -> Result<Client, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if cfg.nameservers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| {
                format!("cannot read the system resolver configuration (/etc/resolv.conf): {e}")
            })?
        } else {
            TokioResolver::builder_with_config(resolver_config(&cfg.nameservers), provider)
        };
        let options = builder.options_mut();
        options.timeout = cfg.timeout;
        // hickory counts retries: one retry, so a query is sent at most twice.
        options.attempts = 1;
        options.cache_size = 0;
        options.use_hosts_file = ResolveHosts::Never;
        options.ndots = 0;
        options.edns0 = true;
        // TCP only for truncated answers: a SERVFAIL or a timeout over
        // UDP says nothing that TCP would change.
        options.try_tcp_on_error = false;
        options.preserve_intermediates = true;
        let validate = cfg.dnssec == DnssecMode::Validate;
        options.validate = validate;
        if validate {
            let anchors = match &cfg.trust_anchor_file {
                Some(path) => super::load_trust_anchors(path)?,
                None => hickory_proto::dnssec::TrustAnchors::default(),
            };
            builder = builder.with_trust_anchor(Arc::new(anchors));
        }
        let resolver = builder
            .build()
            .map_err(|e| format!("cannot build the resolver: {e}"))?;
        Ok(Client {
            resolver,
            validate,
            metrics,
        })
    }

    /// TXT records at `name` (absolute), each as its character-strings.
    pub(crate) async fn txt(&self, name: &str) -> QueryOutcome<Vec<Box<[u8]>>> {
        self.query(name, RecordType::TXT, |data| match data {
            RData::TXT(txt) => Some(txt.txt_data.to_vec()),
            _ => None,
        })
        .await
    }

    /// TLSA records at `name` (absolute).
    pub(crate) async fn tlsa(&self, name: &str) -> QueryOutcome<Tlsa> {
        self.query(name, RecordType::TLSA, |data| match data {
            RData::TLSA(t) => Some(Tlsa {
                usage: t.cert_usage.into(),
                selector: t.selector.into(),
                matching: t.matching.into(),
                data: t.cert_data.clone(),
            }),
            _ => None,
        })
        .await
    }

    pub(super) async fn query<T>(
        &self,
        name: &str,
        record_type: RecordType,
        extract: impl Fn(&RData) -> Option<T>,
    ) -> QueryOutcome<T> {
        let outcome = match self.resolver.lookup(name, record_type).await {
            Ok(lookup) => self.answer(lookup.answers(), record_type, extract),
            Err(e) => self.failure(e),
        };
        self.metrics.dns_lookup(outcome.label());
        outcome
    }

    fn answer<T>(
        &self,
        answers: &[Record],
        record_type: RecordType,
        extract: impl Fn(&RData) -> Option<T>,
    ) -> QueryOutcome<T> {
        // The records that make the answer: the asked type and any CNAME
        // that led there (RRSIGs carry no proof of their own).
        let relevant: Vec<&Record> = answers
            .iter()
            .filter(|r| matches!(r.record_type(), t if t == record_type || t == RecordType::CNAME))
            .collect();
        let Some(security) = self.security(relevant.iter().map(|r| r.proof)) else {
            return QueryOutcome::Failed(QueryFailure::Bogus);
        };
        let records: Vec<T> = relevant.iter().filter_map(|r| extract(&r.data)).collect();
        if records.is_empty() {
            // hickory answers NOERROR with only a CNAME when the target
            // has no records of the type.
            return QueryOutcome::NoData { security };
        }
        let ttl = relevant.iter().map(|r| r.ttl).min().unwrap_or(0);
        QueryOutcome::Answer {
            records,
            ttl,
            security,
        }
    }

    fn failure<T>(&self, error: NetError) -> QueryOutcome<T> {
        let NetError::Dns(dns) = error else {
            return QueryOutcome::Failed(match error {
                NetError::Timeout => QueryFailure::Timeout,
                other => QueryFailure::Other(other.to_string()),
            });
        };
        match dns {
            HickoryDnsError::NoRecordsFound(no) => {
                let proofs: Vec<Proof> = no
                    .authorities
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .filter(|r| r.record_type() != RecordType::RRSIG)
                    .map(|r| r.proof)
                    .collect();
                // A validated negative answer with no authority records at
                // all cannot be proven: call it indeterminate.
                let security = if self.validate && proofs.is_empty() {
                    Some(Security::Indeterminate)
                } else {
                    self.security(proofs.into_iter())
                };
                let Some(security) = security else {
                    return QueryOutcome::Failed(QueryFailure::Bogus);
                };
                negative(no.response_code, security)
            }
            HickoryDnsError::Nsec {
                proof, response, ..
            } => match proof {
                Proof::Bogus => QueryOutcome::Failed(QueryFailure::Bogus),
                Proof::Insecure => negative(response.response_code, Security::Insecure),
                Proof::Secure => negative(response.response_code, Security::Secure),
                Proof::Indeterminate => QueryOutcome::Failed(QueryFailure::Other(
                    "DNSSEC status indeterminate (validation data could not be fetched)".to_owned(),
                )),
            },
            HickoryDnsError::DnssecBogus => QueryOutcome::Failed(QueryFailure::Bogus),
            HickoryDnsError::ResponseCode(ResponseCode::ServFail) => {
                QueryOutcome::Failed(QueryFailure::ServFail)
            }
            HickoryDnsError::ResponseCode(ResponseCode::NXDomain) => QueryOutcome::NxDomain {
                security: self.unproven(),
            },
            HickoryDnsError::ResponseCode(code) => {
                QueryOutcome::Failed(QueryFailure::Other(format!("the resolver answered {code}")))
            }
            other => QueryOutcome::Failed(QueryFailure::Other(other.to_string())),
        }
    }

    /// The weakest proof of a set of records; `None` when one is bogus.
    fn security(&self, proofs: impl Iterator<Item = Proof>) -> Option<Security> {
        if !self.validate {
            return Some(Security::Unvalidated);
        }
        let mut security = Security::Secure;
        let mut any = false;
        for proof in proofs {
            any = true;
            security = security.and(match proof {
                Proof::Secure => Security::Secure,
                Proof::Insecure => Security::Insecure,
                Proof::Indeterminate => Security::Indeterminate,
                Proof::Bogus => return None,
            });
        }
        Some(if any {
            security
        } else {
            Security::Indeterminate
        })
    }

    fn unproven(&self) -> Security {
        if self.validate {
            Security::Indeterminate
        } else {
            Security::Unvalidated
        }
    }
}

fn negative<T>(code: ResponseCode, security: Security) -> QueryOutcome<T> {
    match code {
        ResponseCode::NXDomain => QueryOutcome::NxDomain { security },
        ResponseCode::NoError => QueryOutcome::NoData { security },
        ResponseCode::ServFail => QueryOutcome::Failed(QueryFailure::ServFail),
        other => QueryOutcome::Failed(QueryFailure::Other(format!(
            "the resolver answered {other}"
        ))),
    }
}

/// UDP and TCP to each configured resolver.
fn resolver_config(nameservers: &[SocketAddr]) -> ResolverConfig {
    let servers = nameservers
        .iter()
        .map(|addr| {
            let mut server = NameServerConfig::udp_and_tcp(addr.ip());
            for connection in &mut server.connections {
                connection.port = addr.port();
            }
            server
        })
        .collect();
    ResolverConfig::from_name_servers(servers)
}
