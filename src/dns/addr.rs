//! A server's addresses, asked through the same resolvers as its keys.
//!
//! `mdgate check-peer` connects to a peer's federation port at the
//! addresses its A and AAAA records give. They are asked through the
//! `[dns]` resolvers, not the system's, so that the check reaches what
//! mdgate itself would reach, and each query is reported as a
//! [`LookupStep`] with its DNSSEC status, so a SERVFAIL or a timeout on the
//! address lookup is never mistaken for one on the key records. Like
//! [`KeyResolver::lookup_report`], nothing here reads or fills the cache.
//!
//! [`step_of`] turns one query's outcome into its report step; `probe`
//! uses it too.

use std::fmt::Display;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_proto::rr::{RData, RecordType};

use super::client::{QueryFailure, QueryOutcome};
use super::{DnsError, KeyResolver, LookupStep, StepOutcome};

/// The A and AAAA lookups of one name.
#[derive(Debug, Clone)]
pub struct IpLookup {
    /// The name asked (lower case, no trailing dot).
    pub fqdn: String,
    /// The A query, then the AAAA query.
    pub steps: Vec<LookupStep>,
    /// Every address found, IPv4 first, in answer order.
    pub addrs: Vec<IpAddr>,
}

impl IpLookup {
    /// The failure to report when no address was found: the first query
    /// that failed (SERVFAIL, timeout, bogus) outranks "no such name",
    /// because a failure says nothing about whether the name exists.
    pub fn failure(&self) -> Option<&LookupStep> {
        if !self.addrs.is_empty() {
            return None;
        }
        self.steps
            .iter()
            .find(|s| is_failure(&s.outcome))
            .or_else(|| self.steps.first())
    }
}

impl KeyResolver {
    /// The A and AAAA records of `fqdn`, asked now (uncached), both
    /// queries at once.
    pub async fn lookup_ip(&self, fqdn: &str) -> Result<IpLookup, DnsError> {
        let fqdn = crate::config::parse_fqdn(fqdn).map_err(|reason| DnsError::InvalidName {
            name: fqdn.chars().take(253).collect(),
            reason,
        })?;
        let name = format!("{fqdn}.");
        let client = self.client();
        let v4 = async {
            let started = Instant::now();
            let outcome = client
                .query(&name, RecordType::A, |data| match data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    _ => None,
                })
                .await;
            (outcome, started.elapsed())
        };
        let v6 = async {
            let started = Instant::now();
            let outcome = client
                .query(&name, RecordType::AAAA, |data| match data {
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })
                .await;
            (outcome, started.elapsed())
        };
        let ((a, a_elapsed), (aaaa, aaaa_elapsed)) = tokio::join!(v4, v6);
        let mut addrs = Vec::new();
        for outcome in [&a, &aaaa] {
            if let QueryOutcome::Answer { records, .. } = outcome {
                addrs.extend(records.iter().copied());
            }
        }
        Ok(IpLookup {
            steps: vec![
                step_of(&name, "A", &a, a_elapsed, StepOutcome::Ok),
                step_of(&name, "AAAA", &aaaa, aaaa_elapsed, StepOutcome::Ok),
            ],
            fqdn,
            addrs,
        })
    }
}

/// The report step of one query. `answered` is the outcome to record for
/// an answer (the caller may have judged its records: not ours, invalid).
pub(super) fn step_of<T: Display>(
    name: &str,
    record_type: &'static str,
    outcome: &QueryOutcome<T>,
    elapsed: Duration,
    answered: StepOutcome,
) -> LookupStep {
    let mut step = LookupStep {
        name: name.to_owned(),
        record_type,
        outcome: answered,
        security: None,
        ttl: None,
        elapsed,
        records: Vec::new(),
    };
    match outcome {
        QueryOutcome::Answer {
            records,
            ttl,
            security,
        } => {
            step.ttl = Some(*ttl);
            step.security = Some(*security);
            step.records = records.iter().map(ToString::to_string).collect();
        }
        QueryOutcome::NxDomain { security } => {
            step.outcome = StepOutcome::NxDomain;
            step.security = Some(*security);
        }
        QueryOutcome::NoData { security } => {
            step.outcome = StepOutcome::NoData;
            step.security = Some(*security);
        }
        QueryOutcome::Failed(failure) => {
            step.outcome = match failure {
                QueryFailure::Bogus => StepOutcome::Bogus,
                QueryFailure::ServFail => StepOutcome::ServFail,
                QueryFailure::Timeout => StepOutcome::Timeout,
                QueryFailure::Other(detail) => StepOutcome::Error(detail.clone()),
            };
        }
    }
    step
}

/// A query that got no answer at all (as opposed to an answer that says
/// "no such record").
pub fn is_failure(outcome: &StepOutcome) -> bool {
    matches!(
        outcome,
        StepOutcome::Bogus | StepOutcome::ServFail | StepOutcome::Timeout | StepOutcome::Error(_)
    )
}
