//! The report of `mdgate check-peer` and `mdgate dns-records --check`: a
//! list of named checks, each pass, fail, skip or warn with a reason a
//! person can act on, printed one line per check or as JSON.
//!
//! The JSON shape is stable for scripts and monitoring:
//!
//! ```json
//! {"fqdn": "server1.example.org", "ok": false,
//!  "checks": [{"name": "dns.index", "status": "fail",
//!              "reason": "...", "detail": {"label": "dns_servfail", ...}}]}
//! ```
//!
//! `ok` is true when no check in `checks` failed (warnings and skips do not
//! count). A report may carry a second list, `next`, for the keys of a
//! rotation: shown apart, never part of `ok`.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::config;
use crate::dns::{LookupStep, Security, StepOutcome};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    /// Not run: it does not apply, or an earlier check it needs failed
    /// (the reason says which).
    Skip,
    /// Works, but something deserves attention.
    Warn,
}

/// One named check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// Stable, dotted: `dns.index`, `tls.name`, `keydoc.agreement`.
    pub name: String,
    pub status: Status,
    /// One sentence: what was found and, on failure, what to do.
    pub reason: String,
    /// Machine-readable facts (names asked, DNSSEC status, refusal label).
    pub detail: Map<String, Value>,
}

/// Every check of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The server checked.
    pub fqdn: String,
    /// No check in `checks` failed.
    pub ok: bool,
    pub checks: Vec<Check>,
    /// The next keys of a rotation (`dns-records --check` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub next: Vec<Check>,
}

impl Status {
    /// The symbol of the human output.
    pub fn symbol(self) -> &'static str {
        match self {
            Status::Pass => "✔",
            Status::Fail => "✘",
            Status::Skip => "–",
            Status::Warn => "⚠",
        }
    }
}

impl Check {
    pub fn new(name: impl Into<String>, status: Status, reason: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status,
            reason: reason.into(),
            detail: Map::new(),
        }
    }

    pub fn pass(name: impl Into<String>, reason: impl Into<String>) -> Check {
        Check::new(name, Status::Pass, reason)
    }

    pub fn fail(name: impl Into<String>, reason: impl Into<String>) -> Check {
        Check::new(name, Status::Fail, reason)
    }

    pub fn skip(name: impl Into<String>, reason: impl Into<String>) -> Check {
        Check::new(name, Status::Skip, reason)
    }

    pub fn warn(name: impl Into<String>, reason: impl Into<String>) -> Check {
        Check::new(name, Status::Warn, reason)
    }

    /// Adds a detail field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Check {
        self.detail.insert(key.to_owned(), value.into());
        self
    }

    /// The refusal label of `docs/protocol.md` this finding corresponds to
    /// (`no_record`, `key_mismatch`, `dns_servfail`...), as `detail.label`.
    pub fn label(self, label: &str) -> Check {
        self.with("label", label)
    }
}

impl Report {
    pub fn new(fqdn: impl Into<String>, checks: Vec<Check>, next: Vec<Check>) -> Report {
        let ok = !checks.iter().any(|c| c.status == Status::Fail);
        Report {
            fqdn: fqdn.into(),
            ok,
            checks,
            next,
        }
    }

    /// The check named `name`, if any (tests and callers that branch).
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks
            .iter()
            .chain(&self.next)
            .find(|c| c.name == name)
    }

    /// Pretty JSON, the `--json` output.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            // Serializing strings, booleans and JSON values cannot fail;
            // keep the output parseable all the same.
            serde_json::json!({"fqdn": self.fqdn, "ok": false, "error": e.to_string()}).to_string()
        })
    }

    /// One line per check, `✔ name  reason`, names aligned; then the next
    /// keys under `next_title`.
    pub fn human(&self, next_title: &str) -> String {
        let width = self
            .checks
            .iter()
            .chain(&self.next)
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        let line = |out: &mut String, c: &Check| {
            let _ = writeln!(
                out,
                "{} {:<width$}  {}",
                c.status.symbol(),
                c.name,
                c.reason
            );
        };
        for c in &self.checks {
            line(&mut out, c);
        }
        if !self.next.is_empty() {
            let _ = writeln!(out, "\n{next_title}");
            for c in &self.next {
                line(&mut out, c);
            }
        }
        out
    }

    /// `3 passed, 1 failed, 2 skipped, 1 warning` over `checks`.
    pub fn tally(&self) -> String {
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        let warnings = count(Status::Warn);
        format!(
            "{} passed, {} failed, {} skipped, {} warning{}",
            count(Status::Pass),
            count(Status::Fail),
            count(Status::Skip),
            warnings,
            if warnings == 1 { "" } else { "s" }
        )
    }
}

/// Why a DNS query got no answer, in words an admin can act on, with the
/// refusal label peers would log. `None` when the query was answered
/// (positively or negatively). SERVFAIL, timeouts and bogus answers are
/// kept apart, and none of them is reported as "not published": a failure
/// says nothing about what the zone holds.
pub fn dns_failure(step: &LookupStep, dns: &config::Dns) -> Option<(String, &'static str)> {
    let name = &step.name;
    let kind = step.record_type;
    let resolvers = resolvers(dns);
    match &step.outcome {
        StepOutcome::Bogus => Some((
            format!(
                "DNSSEC validation failed (bogus) for {name} {kind}: its signatures do not verify \
                 (expired RRSIGs, a DS at the parent that matches no DNSKEY, or a forged answer); \
                 validating peers refuse this server until it is fixed; check the zone's signing \
                 and its DS record (e.g. with DNSViz)"
            ),
            "dnssec_bogus",
        )),
        StepOutcome::ServFail => Some((
            format!(
                "the resolver ({resolvers}) answered SERVFAIL for {name} {kind}: it could not get \
                 an answer at all (the zone's nameservers unreachable or lame, or a broken DNSSEC \
                 chain); this is not the same as \"not published\": try `dig {name} {kind}` and \
                 `dig +cd {name} {kind}` against that resolver"
            ),
            "dns_servfail",
        )),
        StepOutcome::Timeout => Some((
            format!(
                "no answer for {name} {kind} within the [dns] timeout ({}, tried twice) from \
                 {resolvers}: the resolvers are unreachable (firewall, UDP/TCP port 53), or they \
                 wait in vain on the zone's nameservers",
                config::format_duration(dns.timeout)
            ),
            "dns_timeout",
        )),
        StepOutcome::Error(detail) => Some((
            format!("the query for {name} {kind} to {resolvers} failed: {detail}"),
            "dns_error",
        )),
        StepOutcome::Ok
        | StepOutcome::NxDomain
        | StepOutcome::NoData
        | StepOutcome::NotOurs
        | StepOutcome::Invalid(_) => None,
    }
}

/// `(DNSSEC secure, TTL 300 s)`, the suffix of a reason about an answer.
pub fn answer_facts(step: &LookupStep) -> String {
    let mut parts = Vec::new();
    // Without validation there is no DNSSEC status to tell.
    if let Some(security) = step.security.filter(|s| *s != Security::Unvalidated) {
        parts.push(format!("DNSSEC {security}"));
    }
    if let Some(ttl) = step.ttl {
        parts.push(format!("TTL {ttl} s"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// The resolvers the `[dns]` section names, for messages.
pub fn resolvers(dns: &config::Dns) -> String {
    if dns.nameservers.is_empty() {
        "the system resolvers (/etc/resolv.conf)".to_owned()
    } else {
        dns.nameservers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The machine-readable facts of a DNS step, for `detail`.
pub fn step_detail(step: &LookupStep) -> Value {
    serde_json::json!({
        "name": step.name,
        "type": step.record_type,
        "outcome": step.outcome.to_string(),
        "dnssec": step.security.map(|s| s.as_str()),
        "ttl": step.ttl,
        "records": step.records,
        "elapsed_ms": u64::try_from(step.elapsed.as_millis()).unwrap_or(u64::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_is_stable_and_ok_counts_only_failures() {
        let report = Report::new(
            "peer.example.org",
            vec![
                Check::pass("dns.index", "published").with("ttl", 300),
                Check::warn("dns.dnssec", "not signed"),
                Check::skip("dns.tlsa", "needs DNSSEC"),
            ],
            vec![Check::fail(
                "next.key.sig2",
                "not visible yet: do not switch",
            )],
        );
        assert!(report.ok, "next keys and warnings do not fail the report");
        let value: Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(value["fqdn"], "peer.example.org");
        assert_eq!(value["ok"], true);
        assert_eq!(value["checks"][0]["name"], "dns.index");
        assert_eq!(value["checks"][0]["status"], "pass");
        assert_eq!(value["checks"][0]["detail"]["ttl"], 300);
        assert_eq!(value["checks"][2]["status"], "skip");
        assert_eq!(value["next"][0]["status"], "fail");

        let failed = Report::new(
            "p.example.org",
            vec![Check::fail("x", "y").label("no_record")],
            vec![],
        );
        assert!(!failed.ok);
        let value: Value = serde_json::from_str(&failed.to_json()).unwrap();
        assert_eq!(value["checks"][0]["detail"]["label"], "no_record");
        assert!(value.get("next").is_none());
    }

    #[test]
    fn human_output_has_one_aligned_line_per_check() {
        let report = Report::new(
            "p.example.org",
            vec![
                Check::pass("a", "fine"),
                Check::fail("longer.name", "broken"),
            ],
            vec![Check::warn("next.b", "later")],
        );
        let text = report.human("Next keys:");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "✔ a            fine");
        assert_eq!(lines[1], "✘ longer.name  broken");
        assert_eq!(lines[3], "Next keys:");
        assert_eq!(lines[4], "⚠ next.b       later");
        assert_eq!(report.tally(), "1 passed, 1 failed, 0 skipped, 0 warnings");
    }
}
