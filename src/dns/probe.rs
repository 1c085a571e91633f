//! One-off lookups of single records, for `mdgate dns-records --check`.
//!
//! [`KeyResolver::lookup_report`] follows the index: it asks only for the
//! selectors that the published index lists. Checking one's own records
//! needs more: a next key's record is published *before* its selector
//! joins the index, and the TLSA record should be looked at even where the
//! answer is not DNSSEC-secure (to warn before the zone gets signed). These
//! probes ask one name, uncached, and report it as a [`LookupStep`] with
//! what the answer holds.

use std::time::Instant;

use super::addr::step_of;
use super::client::QueryOutcome;
use super::record::{self, KeyRecord, RecordError, Selector, Tlsa};
use super::{KeyResolver, LookupStep, StepOutcome};

/// A key record asked directly, whether or not the index lists it.
#[derive(Debug, Clone)]
pub struct KeyProbe {
    pub step: LookupStep,
    /// `None`: no `v=mdgate1` record there (or the query failed).
    pub record: Option<Result<KeyRecord, RecordError>>,
}

/// The TLSA records at `_<port>._tcp.F`.
#[derive(Debug, Clone)]
pub struct TlsaProbe {
    pub step: LookupStep,
    /// Every TLSA record of the answer, whatever its usage.
    pub records: Vec<Tlsa>,
}

impl KeyResolver {
    /// TXT `<selector>._mdgate.<fqdn>`, asked now.
    pub async fn probe_key_record(&self, fqdn: &str, selector: &Selector) -> KeyProbe {
        let name = record::key_name(selector, fqdn);
        let started = Instant::now();
        let outcome = self.client().txt(&name).await;
        let elapsed = started.elapsed();
        let (answered, parsed) = match &outcome {
            QueryOutcome::Answer { records, .. } => match record::parse_key_rrset(records) {
                Ok(Some(r)) => (StepOutcome::Ok, Some(Ok(r))),
                Ok(None) => (StepOutcome::NotOurs, None),
                Err(e) => (StepOutcome::Invalid(e.clone()), Some(Err(e))),
            },
            _ => (StepOutcome::Ok, None),
        };
        let text = texts(outcome);
        KeyProbe {
            step: step_of(&name, "TXT", &text, elapsed, answered),
            record: parsed,
        }
    }

    /// TLSA `_<port>._tcp.<fqdn>`, asked now, whatever the DNSSEC status.
    pub async fn probe_tlsa(&self, fqdn: &str, port: u16) -> TlsaProbe {
        let name = record::tlsa_name(port, fqdn);
        let started = Instant::now();
        let outcome = self.client().tlsa(&name).await;
        let step = step_of(&name, "TLSA", &outcome, started.elapsed(), StepOutcome::Ok);
        let records = match outcome {
            QueryOutcome::Answer { records, .. } => records,
            _ => Vec::new(),
        };
        TlsaProbe { step, records }
    }
}

/// TXT records as their concatenated text, for the report.
fn texts(outcome: QueryOutcome<Vec<Box<[u8]>>>) -> QueryOutcome<String> {
    match outcome {
        QueryOutcome::Answer {
            records,
            ttl,
            security,
        } => QueryOutcome::Answer {
            records: records
                .iter()
                .map(|strings| {
                    String::from_utf8_lossy(&record::concat_strings(strings)).into_owned()
                })
                .collect(),
            ttl,
            security,
        },
        QueryOutcome::NxDomain { security } => QueryOutcome::NxDomain { security },
        QueryOutcome::NoData { security } => QueryOutcome::NoData { security },
        QueryOutcome::Failed(f) => QueryOutcome::Failed(f),
    }
}
