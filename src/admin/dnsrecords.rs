//! `mdgate dns-records`: the zone-file lines this server must publish, and
//! `--check`, which looks at what is live and says what is missing.
//!
//! ```text
//! Config ──token::publish::own_keys──▶ OwnKeys ──plan──▶ ZonePlan ──zone_text──▶ stdout
//!                                                           │
//!                             KeyResolver (the [dns] resolvers, uncached)
//!                                                           ▼
//!                                                  check ──▶ Report (current keys;
//!                                                            next keys apart)
//! ```
//!
//! The plan holds the index (`_mdgate.F`: every current, next and kept
//! selector, `fp=` and `wp=`), one key record per key (`tls` keys as `h=`,
//! the SHA-256 of the certificate's SubjectPublicKeyInfo; `sig` keys as
//! `k=`, the SubjectPublicKeyInfo itself), and a TLSA `3 1 1` record per
//! TLS key at `_<fp>._tcp.F`. The text comes from `dns::record`'s
//! formatters (`txt_zone_line` splits strings over 255 bytes), so what is
//! printed is exactly what the resolver parses.
//!
//! The ports are the configured listen ports unless overridden: behind NAT
//! or a TLS-terminating proxy the port peers reach is not the one mdgate
//! binds. A port of 0 (chosen at start, as in tests) must be overridden.
//!
//! `--check` asks every name the plan publishes, through the configured
//! `[dns]` resolvers and around every cache, and compares the answers with
//! the keys this server holds. Current keys decide the exit status; next
//! keys are reported apart, as "safe to switch" or "do not switch"
//! (`docs/protocol.md` § Rotation: never use a key before its record is
//! visible from outside).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::checks::{answer_facts, dns_failure, step_detail, Check, Report, Status};
use super::metrics::Metrics;
use crate::config::{self, Config, DnssecMode};
use crate::dns::probe::KeyProbe;
use crate::dns::record::{
    self, IndexRecord, KeyAlgorithm, KeyMaterial, KeyRecord, KeyUse, RecordError, Selector, Tlsa,
    MAX_SELECTORS,
};
use crate::dns::{DnsError, KeyResolver, LookupStep, Security, StepOutcome};
use crate::token::publish::{own_keys, KeyRole, OwnKey, PublishError};
use crate::token::{KeyAlg, KeyUsage};

/// The TTL written when none is asked for (the protocol's examples).
pub const DEFAULT_TTL: u32 = 3600;

/// What `mdgate dns-records` was asked for beyond the configuration.
#[derive(Debug, Clone)]
pub struct DnsRecordsArgs {
    /// The federation port peers reach (`fp=`, and the TLSA name), when it
    /// is not `[federation] listen`'s.
    pub federation_port: Option<u16>,
    /// The HTTPS port of the key document (`wp=`), when it is not
    /// `[public] listen`'s.
    pub web_port: Option<u16>,
    /// Selectors to keep listed in the index although the configuration
    /// no longer names them: a previous key after a switch, until its
    /// last use plus the longest token lifetime and the TTL have passed,
    /// or a revoked one.
    pub keep: Vec<String>,
    /// TTL of every record.
    pub ttl: u32,
}

impl Default for DnsRecordsArgs {
    fn default() -> Self {
        DnsRecordsArgs {
            federation_port: None,
            web_port: None,
            keep: Vec::new(),
            ttl: DEFAULT_TTL,
        }
    }
}

/// Why the records cannot be planned or checked.
#[derive(Debug, thiserror::Error)]
pub enum DnsRecordsError {
    #[error(transparent)]
    Keys(#[from] PublishError),
    #[error(
        "{what} listens on port 0 (a port chosen at start), which cannot be published: \
         give {flag} with the port peers reach"
    )]
    PortZero {
        what: &'static str,
        flag: &'static str,
    },
    #[error("--keep {selector:?}: {source}")]
    KeepSelector {
        selector: String,
        #[source]
        source: RecordError,
    },
    #[error("--keep {0}: the configuration already publishes this selector")]
    KeepDuplicate(String),
    #[error(
        "the index would list {0} selectors; at most {MAX_SELECTORS} are allowed: \
         drop retired selectors from --keep"
    )]
    TooManySelectors(usize),
    #[error("cannot set up the DNS resolver from [dns]: {0}")]
    Resolver(#[from] DnsError),
}

/// One key record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedKey {
    pub selector: Selector,
    pub record: KeyRecord,
    pub role: KeyRole,
}

/// One TLSA `3 1 1` record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTlsa {
    /// The selector of the TLS key it pins.
    pub selector: Selector,
    pub tlsa: Tlsa,
    pub role: KeyRole,
}

/// Everything to publish for this server.
#[derive(Debug, Clone)]
pub struct ZonePlan {
    pub fqdn: String,
    pub ttl: u32,
    pub index: IndexRecord,
    /// Current keys, then next keys.
    pub keys: Vec<PlannedKey>,
    /// Selectors listed in the index whose records are already published
    /// and are left alone.
    pub kept: Vec<Selector>,
    /// One DANE-EE record per TLS key, at `_<fp>._tcp.F`.
    pub tlsa: Vec<PlannedTlsa>,
    /// Things the admin should know (printed on stderr).
    pub warnings: Vec<String>,
}

/// Plans the records from the configuration and the arguments.
pub fn plan(config: &Config, args: &DnsRecordsArgs) -> Result<ZonePlan, DnsRecordsError> {
    let own = own_keys(config)?;
    let mut warnings = Vec::new();
    let federation_port = match (args.federation_port, &config.federation) {
        (Some(port), _) => port,
        (None, Some(fed)) => fed.listen.port(),
        // own_keys refuses a configuration without [federation].
        (None, None) => return Err(PublishError::NoFederation.into()),
    };
    let web_port = match args.web_port {
        Some(port) => port,
        None if config.public.tls.is_none() => {
            warnings.push(
                "the public listener serves plain HTTP behind a TLS proxy, so wp= is that \
                 proxy's HTTPS port: 443 is assumed; give --web-port if it is another"
                    .to_owned(),
            );
            record::DEFAULT_WEB_PORT
        }
        None => config.public.listen.port(),
    };
    if federation_port == 0 {
        return Err(DnsRecordsError::PortZero {
            what: "[federation]",
            flag: "--federation-port",
        });
    }
    if web_port == 0 {
        return Err(DnsRecordsError::PortZero {
            what: "[public]",
            flag: "--web-port",
        });
    }

    let mut keys = Vec::new();
    for role in [KeyRole::Current, KeyRole::Next] {
        for key in own.with_role(role) {
            keys.push(PlannedKey {
                // Config validated the selector syntax already.
                selector: Selector::parse(&key.selector).map_err(|source| {
                    DnsRecordsError::KeepSelector {
                        selector: key.selector.clone(),
                        source,
                    }
                })?,
                record: key_record(key),
                role,
            });
            if let Some(Err(why)) = key.cert.as_ref().map(|c| &c.identity) {
                warnings.push(format!(
                    "the certificate of {} has no usable identity ({why}); peers will refuse it",
                    key.selector
                ));
            }
            if let Some(Ok(name)) = key.cert.as_ref().map(|c| &c.identity) {
                if *name != own.fqdn {
                    warnings.push(format!(
                        "the certificate of {} names {name}, not this server ({}); peers will \
                         refuse it",
                        key.selector, own.fqdn
                    ));
                }
            }
        }
    }
    let mut kept = Vec::new();
    for text in &args.keep {
        let selector = Selector::parse(text).map_err(|source| DnsRecordsError::KeepSelector {
            selector: text.clone(),
            source,
        })?;
        if keys.iter().any(|k| k.selector == selector) {
            return Err(DnsRecordsError::KeepDuplicate(text.clone()));
        }
        if !kept.contains(&selector) {
            kept.push(selector);
        }
    }
    let selectors: Vec<Selector> = keys
        .iter()
        .map(|k| k.selector.clone())
        .chain(kept.iter().cloned())
        .collect();
    if selectors.len() > MAX_SELECTORS {
        return Err(DnsRecordsError::TooManySelectors(selectors.len()));
    }
    let tlsa = keys
        .iter()
        .filter_map(|k| {
            Some(PlannedTlsa {
                selector: k.selector.clone(),
                tlsa: Tlsa::dane_ee(match (k.record.usage, k.record.spki_sha256()) {
                    (KeyUse::Tls, Some(hash)) => hash,
                    _ => return None,
                }),
                role: k.role,
            })
        })
        .collect();
    Ok(ZonePlan {
        fqdn: own.fqdn.clone(),
        ttl: args.ttl,
        index: IndexRecord {
            selectors,
            federation_port,
            web_port,
        },
        keys,
        kept,
        tlsa,
        warnings,
    })
}

/// The DNS record of one of our keys.
fn key_record(key: &OwnKey) -> KeyRecord {
    let algorithm = match key.alg {
        KeyAlg::P256 => KeyAlgorithm::P256,
        KeyAlg::Ed25519 => KeyAlgorithm::Ed25519,
    };
    match key.usage {
        KeyUsage::Tls => KeyRecord::tls_hash(algorithm, &key.spki),
        KeyUsage::Sig => KeyRecord {
            usage: KeyUse::Sig,
            algorithm,
            material: KeyMaterial::Spki(key.spki.clone()),
        },
    }
}

impl ZonePlan {
    /// The index name, `_mdgate.F.`.
    pub fn index_name(&self) -> String {
        record::index_name(&self.fqdn)
    }

    /// The TLSA name, `_<fp>._tcp.F.`.
    pub fn tlsa_name(&self) -> String {
        record::tlsa_name(self.index.federation_port, &self.fqdn)
    }

    /// The zone-file text: comments (`;`) and records, ready to paste.
    pub fn zone_text(&self) -> String {
        let mut out = String::new();
        let ttl = self.ttl;
        let fqdn = &self.fqdn;
        let _ = writeln!(
            out,
            "; mdgate DNS records for {fqdn} (docs/protocol.md, Keys)."
        );
        let _ = writeln!(
            out,
            "; Publish them in the zone of {fqdn}, then run `mdgate dns-records --check`\n\
             ; until it passes: peers trust this server only once they see them."
        );
        let _ = writeln!(
            out,
            ";\n; The index: every live selector, the federation port (fp) and the HTTPS\n\
             ; port of the key document (wp)."
        );
        let _ = writeln!(
            out,
            "{}",
            record::txt_zone_line(&self.index_name(), ttl, &self.index.to_string())
        );
        let current: Vec<&PlannedKey> = self
            .keys
            .iter()
            .filter(|k| k.role == KeyRole::Current)
            .collect();
        let next: Vec<&PlannedKey> = self
            .keys
            .iter()
            .filter(|k| k.role == KeyRole::Next)
            .collect();
        let _ = writeln!(out, ";\n; Current keys: in use now.");
        for key in &current {
            self.key_line(&mut out, key);
        }
        if !next.is_empty() {
            let _ = writeln!(
                out,
                ";\n; NEXT KEYS: PUBLISH NOW, USE LATER. Switch to them only when\n\
                 ; `mdgate dns-records --check` says \"safe to switch\" and the previous\n\
                 ; index's TTL has passed since you published this one."
            );
            for key in &next {
                self.key_line(&mut out, key);
            }
        }
        if !self.kept.is_empty() {
            let _ = writeln!(
                out,
                ";\n; Kept in the index (--keep): leave their records as they are now. To\n\
                 ; revoke one, publish its record with an empty key, e.g.\n\
                 ; \"v=mdgate1; u=tls; a=p256; h=\" or \"v=mdgate1; u=sig; a=ed25519; k=\"."
            );
            for selector in &self.kept {
                let _ = writeln!(out, ";   {}", record::key_name(selector, fqdn));
            }
        }
        let _ = writeln!(
            out,
            ";\n; DANE for the federation port: peers use it only where the zone is\n\
             ; DNSSEC-signed (then it must match the key presented)."
        );
        for planned in &self.tlsa {
            let what = match planned.role {
                KeyRole::Current => "current key",
                KeyRole::Next => "next key: publish now, use later",
            };
            let _ = writeln!(out, "; {} ({what})", planned.selector);
            let _ = writeln!(
                out,
                "{}",
                record::tlsa_zone_line(&self.tlsa_name(), ttl, &planned.tlsa)
            );
        }
        out
    }

    fn key_line(&self, out: &mut String, key: &PlannedKey) {
        let name = record::key_name(&key.selector, &self.fqdn);
        let _ = writeln!(
            out,
            "{}",
            record::txt_zone_line(&name, self.ttl, &key.record.to_string())
        );
    }
}

/// Builds a resolver for `[dns]` and runs [`check`].
pub async fn check_config(config: &Config, plan: &ZonePlan) -> Result<Report, DnsRecordsError> {
    let resolver = KeyResolver::new(&config.dns, Arc::new(Metrics::new()))?;
    Ok(check(plan, &resolver, &config.dns).await)
}

/// Looks up every record of `plan` through `resolver` (uncached) and
/// compares it with the plan. `checks` covers the current keys (and
/// decides `ok`); `next` the next keys.
pub async fn check(plan: &ZonePlan, resolver: &KeyResolver, dns: &config::Dns) -> Report {
    let fqdn = plan.fqdn.as_str();
    let report = resolver.lookup_report(fqdn).await;
    let mut checks = Vec::new();
    let mut next = Vec::new();

    // The index.
    let index_step = report.steps.first();
    let live = index_step.and_then(live_index);
    checks.push(match index_step {
        Some(step) => index_check(plan, step, live.as_ref(), dns),
        None => Check::fail(
            "index",
            match &report.result {
                Err(e) => e.to_string(),
                Ok(_) => "no index lookup was made".to_owned(),
            },
        ),
    });
    if let Some(live) = &live {
        let ours: HashSet<&Selector> = plan.index.selectors.iter().collect();
        let extra: Vec<String> = live
            .selectors
            .iter()
            .filter(|s| !ours.contains(s))
            .map(ToString::to_string)
            .collect();
        if !extra.is_empty() {
            checks.push(
                Check::warn(
                    "index.extra",
                    format!(
                        "the published index lists {} too, which this configuration does not \
                         name: if it is a previous key still needed (tokens it signed, peers' \
                         caches), keep it with `--keep`; if it is retired, revoke it or drop it \
                         from s=",
                        extra.join(", ")
                    ),
                )
                .with("selectors", extra),
            );
        }
    }
    let security = index_step
        .and_then(|s| s.security)
        .unwrap_or(Security::Unvalidated);

    // Every key, current and next, asked directly.
    for key in &plan.keys {
        let probe = resolver.probe_key_record(fqdn, &key.selector).await;
        let listed = live.as_ref().is_some_and(|l| l.contains(&key.selector));
        let check = key_check(key, &probe, listed, dns);
        match key.role {
            KeyRole::Current => checks.push(check),
            KeyRole::Next => next.push(next_verdict(check, index_step)),
        }
    }
    for selector in &plan.kept {
        let probe = resolver.probe_key_record(fqdn, selector).await;
        let listed = live.as_ref().is_some_and(|l| l.contains(selector));
        checks.push(kept_check(selector, &probe, listed, dns));
    }

    // TLSA, whatever the DNSSEC status: a wrong record in an unsigned
    // zone turns into refusals the day the zone is signed.
    let tlsa = resolver.probe_tlsa(fqdn, plan.index.federation_port).await;
    let pins: Vec<[u8; 32]> = tlsa
        .records
        .iter()
        .filter_map(Tlsa::dane_ee_spki_sha256)
        .collect();
    for planned in &plan.tlsa {
        let check = tlsa_check(&tlsa.step, &pins, planned, security, dns);
        match planned.role {
            KeyRole::Current => checks.push(check),
            KeyRole::Next => next.push(next_verdict(check, index_step)),
        }
    }
    checks.push(dnssec_check(security, dns.dnssec, index_step));
    Report::new(fqdn, checks, next)
}

/// The index of the step's records, when there is one of ours.
fn live_index(step: &LookupStep) -> Option<IndexRecord> {
    if step.outcome != StepOutcome::Ok {
        return None;
    }
    let records: Vec<Vec<&[u8]>> = step.records.iter().map(|t| vec![t.as_bytes()]).collect();
    record::parse_index_rrset(&records).ok().flatten()
}

fn index_check(
    plan: &ZonePlan,
    step: &LookupStep,
    live: Option<&IndexRecord>,
    dns: &config::Dns,
) -> Check {
    let name = "index";
    let facts = answer_facts(step);
    if let Some((reason, label)) = dns_failure(step, dns) {
        return Check::fail(name, reason)
            .label(label)
            .with("step", step_detail(step));
    }
    let check = match (&step.outcome, live) {
        (StepOutcome::NxDomain, _) => Check::fail(
            name,
            format!(
                "not published yet: {} does not exist (NXDOMAIN){facts}; publish the index line",
                step.name
            ),
        )
        .label("no_record"),
        (StepOutcome::NoData, _) => Check::fail(
            name,
            format!(
                "not published yet: {} exists but has no TXT record{facts}; publish the index line",
                step.name
            ),
        )
        .label("no_record"),
        (StepOutcome::NotOurs, _) => Check::fail(
            name,
            format!(
                "{} has TXT records, but none starts with v=mdgate1{facts}; publish the index line",
                step.name
            ),
        )
        .label("no_record"),
        (StepOutcome::Invalid(e), _) => Check::fail(
            name,
            format!(
                "the published index is invalid: {e}{facts}; publish the index line as printed"
            ),
        )
        .label("invalid_record"),
        (_, None) => Check::fail(name, format!("no usable index at {}{facts}", step.name)),
        (_, Some(live)) => {
            let missing: Vec<String> = plan
                .keys
                .iter()
                .filter(|k| k.role == KeyRole::Current && !live.contains(&k.selector))
                .map(|k| k.selector.to_string())
                .collect();
            let mut problems = Vec::new();
            if !missing.is_empty() {
                problems.push(format!(
                    "it does not list {} (current key{})",
                    missing.join(", "),
                    if missing.len() == 1 { "" } else { "s" }
                ));
            }
            if live.federation_port != plan.index.federation_port {
                problems.push(format!(
                    "it says fp={} but peers should reach the federation listener on {} \
                     (behind NAT? give --federation-port)",
                    live.federation_port, plan.index.federation_port
                ));
            }
            if live.web_port != plan.index.web_port {
                problems.push(format!(
                    "it says wp={} but the key document is served on {} (behind a proxy? give \
                     --web-port)",
                    live.web_port, plan.index.web_port
                ));
            }
            if problems.is_empty() {
                Check::pass(
                    name,
                    format!(
                        "{} lists {}; fp={} wp={}{facts}",
                        step.name,
                        join(&live.selectors),
                        live.federation_port,
                        live.web_port
                    ),
                )
            } else {
                Check::fail(
                    name,
                    format!(
                        "the published index ({}) is not this server's: {}; publish the index \
                         line as printed",
                        live,
                        problems.join("; ")
                    ),
                )
                .label("key_mismatch")
            }
        }
    };
    check.with("step", step_detail(step))
}

/// Whether a published record is the same key as ours.
enum Published {
    Same,
    Revoked,
    Different(String),
}

fn compare_record(ours: &KeyRecord, theirs: &KeyRecord) -> Published {
    if theirs.is_revoked() {
        return Published::Revoked;
    }
    if theirs.usage != ours.usage {
        return Published::Different(format!(
            "DNS says u={}, this key is u={}",
            theirs.usage, ours.usage
        ));
    }
    if theirs.algorithm != ours.algorithm {
        return Published::Different(format!(
            "DNS says a={}, this key is a={}",
            theirs.algorithm, ours.algorithm
        ));
    }
    match (theirs.spki_sha256(), ours.spki_sha256()) {
        (Some(a), Some(b)) if a == b => Published::Same,
        (theirs_hash, ours_hash) => Published::Different(format!(
            "DNS has the key with SHA-256 {}, this server holds {}",
            short_hash(theirs_hash),
            short_hash(ours_hash)
        )),
    }
}

fn short_hash(hash: Option<[u8; 32]>) -> String {
    match hash {
        Some(h) => {
            let b64 = STANDARD.encode(h);
            format!("{}…", &b64[..12.min(b64.len())])
        }
        None => "none".to_owned(),
    }
}

fn key_check(key: &PlannedKey, probe: &KeyProbe, listed: bool, dns: &config::Dns) -> Check {
    let prefix = match key.role {
        KeyRole::Current => "key",
        KeyRole::Next => "next.key",
    };
    let name = format!("{prefix}.{}", key.selector);
    let step = &probe.step;
    let facts = answer_facts(step);
    let kind = key.record.usage;
    let check = if let Some((reason, label)) = dns_failure(step, dns) {
        Check::fail(name, reason).label(label)
    } else {
        match (&step.outcome, &probe.record) {
            (StepOutcome::NxDomain, _) => Check::fail(
                name,
                format!(
                    "not published yet: {} does not exist (NXDOMAIN){facts}; publish its line",
                    step.name
                ),
            )
            .label("no_record"),
            (StepOutcome::NoData, _) => Check::fail(
                name,
                format!(
                    "not published yet: {} has no TXT record{facts}; publish its line",
                    step.name
                ),
            )
            .label("no_record"),
            (_, Some(Err(e))) => Check::fail(
                name,
                format!("the published record is invalid: {e}{facts}; publish its line as printed"),
            )
            .label("invalid_record"),
            (_, None) => Check::fail(
                name,
                format!(
                    "{} has TXT records, but none starts with v=mdgate1{facts}; publish its line",
                    step.name
                ),
            )
            .label("no_record"),
            (_, Some(Ok(theirs))) => match compare_record(&key.record, theirs) {
                Published::Revoked => Check::fail(
                    name,
                    format!(
                        "revoked in DNS (its record has an empty key){facts}: peers refuse this \
                         {kind} key; if the revocation is a mistake publish its line, otherwise \
                         move to a new key (`mdgate keygen`)"
                    ),
                )
                .label("revoked"),
                Published::Different(why) => Check::fail(
                    name,
                    format!(
                        "a different key is published: {why}{facts}; publish its line as \
                         printed (an old record, or a zone not yet reloaded on every \
                         nameserver?)"
                    ),
                )
                .label("key_mismatch"),
                Published::Same if !listed => Check::fail(
                    name,
                    format!(
                        "the record is visible{facts}, but the index does not list {}: peers \
                         ignore it until s= does; publish the index line",
                        key.selector
                    ),
                )
                .label("unknown_selector"),
                Published::Same => Check::pass(
                    name,
                    format!("visible and matches this server's {kind} key{facts}"),
                ),
            },
        }
    };
    check.with("step", step_detail(step))
}

fn kept_check(selector: &Selector, probe: &KeyProbe, listed: bool, dns: &config::Dns) -> Check {
    let name = format!("kept.{selector}");
    let step = &probe.step;
    let facts = answer_facts(step);
    let check = if let Some((reason, label)) = dns_failure(step, dns) {
        Check::fail(name, reason).label(label)
    } else {
        match (&probe.record, listed) {
            (Some(Ok(r)), true) if r.is_revoked() => Check::pass(
                name,
                format!("listed and revoked{facts}: peers refuse its key"),
            ),
            (Some(Ok(r)), true) => {
                Check::pass(name, format!("listed and live ({} key){facts}", r.usage))
            }
            (Some(Ok(_)), false) => Check::warn(
                name,
                format!(
                    "its record is published{facts} but the index does not list it yet: publish \
                     the index line if the key must stay live"
                ),
            ),
            (Some(Err(e)), _) => Check::warn(
                name,
                format!("its record is invalid: {e}{facts}; peers skip it"),
            ),
            (None, _) => Check::warn(
                name,
                format!(
                    "no v=mdgate1 record at {}{facts}: listing it in the index serves nothing",
                    step.name
                ),
            ),
        }
    };
    check.with("step", step_detail(step))
}

fn tlsa_check(
    step: &LookupStep,
    pins: &[[u8; 32]],
    wanted: &PlannedTlsa,
    index_security: Security,
    dns: &config::Dns,
) -> Check {
    let hash = wanted.tlsa.dane_ee_spki_sha256().unwrap_or_default();
    let name = match wanted.role {
        KeyRole::Current => format!("tlsa.{}", wanted.selector),
        KeyRole::Next => format!("next.tlsa.{}", wanted.selector),
    };
    let facts = answer_facts(step);
    let secure = index_security == Security::Secure;
    let check = if let Some((reason, label)) = dns_failure(step, dns) {
        // A validating peer's fetch fails with its TLSA query.
        if secure {
            Check::fail(name, reason).label(label)
        } else {
            Check::warn(name, reason).label(label)
        }
    } else if pins.is_empty() {
        let why = match (&step.outcome, step.records.is_empty()) {
            (StepOutcome::NxDomain | StepOutcome::NoData, _) | (_, true) => "no TLSA record",
            _ => "no TLSA 3 1 1 record (records of other usages are ignored)",
        };
        if secure {
            Check::warn(
                name,
                format!(
                    "{why} at {}{facts}: optional, but on a DNSSEC-signed zone it pins the key \
                     for validating peers (DANE); publish the TLSA line",
                    step.name
                ),
            )
        } else {
            Check::skip(
                name,
                format!(
                    "{why} at {}{facts}: peers use TLSA only from DNSSEC-secure answers",
                    step.name
                ),
            )
        }
    } else if pins.contains(&hash) {
        let note = if secure {
            ""
        } else {
            "; peers use it once the zone is DNSSEC-signed"
        };
        Check::pass(name, format!("{} has this key{facts}{note}", step.name))
    } else if secure {
        Check::fail(
            name,
            format!(
                "{} pins other keys{facts}: validating peers refuse this key (DANE); publish the \
                 TLSA line as printed",
                step.name
            ),
        )
        .label("tlsa_mismatch")
    } else {
        Check::warn(
            name,
            format!(
                "{} pins other keys{facts}: harmless while the answer is not DNSSEC-secure, but \
                 peers will refuse this key once the zone is signed; publish the TLSA line as \
                 printed",
                step.name
            ),
        )
        .label("tlsa_mismatch")
    };
    check
        .with("sha256", hex::encode(hash))
        .with("step", step_detail(step))
}

fn dnssec_check(security: Security, mode: DnssecMode, step: Option<&LookupStep>) -> Check {
    let name = "dnssec";
    if step.is_some_and(|s| s.outcome == StepOutcome::Bogus) {
        return Check::fail(name, "bogus: see the index check").label("dnssec_bogus");
    }
    let check = match (mode, security) {
        (DnssecMode::Off, _) | (_, Security::Unvalidated) => Check::skip(
            name,
            "validation is off ([dns] dnssec = \"off\"), so this check cannot tell whether the \
             zone is signed; set dnssec = \"validate\" to see it as validating peers do",
        ),
        (_, Security::Secure) => Check::pass(name, "the answers are DNSSEC-secure"),
        (_, Security::Insecure) => Check::warn(
            name,
            "the zone is not DNSSEC-signed: peers accept the records but cannot use TLSA, and \
             only the HTTPS key document corroborates them; sign the zone for DANE",
        ),
        (_, Security::Indeterminate) => Check::warn(
            name,
            "the resolver could not establish the DNSSEC status (indeterminate): check that it \
             passes DNSSEC records through",
        ),
    };
    check.with("status", security.as_str())
}

/// Turns a next key's check into a rotation verdict.
fn next_verdict(mut check: Check, index: Option<&LookupStep>) -> Check {
    match check.status {
        Status::Pass => {
            let ttl = index.and_then(|s| s.ttl);
            check.reason = match ttl {
                Some(ttl) => format!(
                    "visible: safe to switch once {ttl} s (the index TTL) have passed since you \
                     published it; {}",
                    check.reason
                ),
                None => format!("visible: safe to switch; {}", check.reason),
            };
        }
        // A warning (a TLSA record that peers do not use yet) does not
        // block the switch.
        Status::Skip | Status::Warn => {}
        Status::Fail => {
            check.status = Status::Fail;
            check.reason = format!("not visible yet: do not switch; {}", check.reason);
        }
    }
    check
}

fn join(selectors: &[Selector]) -> String {
    selectors
        .iter()
        .map(Selector::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `dns-records --check` prints after the checks.
pub fn summary(report: &Report) -> String {
    let mut out = String::new();
    if report.ok {
        out.push_str("Current keys: all visible from outside.\n");
    } else {
        out.push_str(
            "Current keys: NOT all visible from outside: fix the lines marked ✘ (peers refuse \
             this server until then).\n",
        );
    }
    if !report.next.is_empty() {
        let ready = report.next.iter().all(|c| c.status != Status::Fail);
        out.push_str(if ready {
            "Next keys: visible: safe to switch (after the index TTL).\n"
        } else {
            "Next keys: not visible yet: do not switch.\n"
        });
    }
    out
}

#[cfg(test)]
mod tests;
