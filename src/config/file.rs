//! The file structs: the TOML exactly as an operator writes it.
//!
//! Every table has `deny_unknown_fields`, so a misspelt key is an error
//! rather than a silently ignored setting. Defaults live here, one function
//! or `Default` impl per table, and `config.example.toml` repeats them.
//! Values that need context to check (paths, addresses, the FQDN) stay
//! plain strings here; `load` turns them into the runtime types in
//! [`super`]. Durations are parsed during deserialization, so a bad one is
//! reported at its position like any other type error.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::policy::{Role, RouteSet};

/// The whole file.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub upstream: UpstreamSection,
    #[serde(default)]
    pub public: PublicSection,
    /// Absent: no federation listener.
    pub federation: Option<FederationSection>,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub dns: DnsSection,
    #[serde(default)]
    pub runtime: RuntimeSection,
    /// Absent: this server has no signing key yet.
    pub keys: Option<KeysSection>,
    #[serde(default)]
    pub policy: PolicySection,
    #[serde(default)]
    pub access: AccessSection,
    #[serde(default)]
    pub notify: NotifySection,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// Required; optional here only so that its absence gets a clear message.
    pub fqdn: Option<String>,
}

/// `[upstream]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamSection {
    /// Default `http://127.0.0.1:7000`.
    pub url: String,
    /// Default 2s.
    pub connect_timeout: DurationValue,
    /// Default 30s.
    pub response_timeout: DurationValue,
    /// Default 90s.
    pub pool_idle_timeout: DurationValue,
    /// Default 32.
    pub pool_max_idle: usize,
    /// Default false.
    pub request_gzip: bool,
    /// Default none: mdgate links no patient to an account of its own.
    pub federation_account: Option<UpstreamAccountSection>,
    /// Default empty.
    pub enrolled: Vec<UpstreamAccountSection>,
}

/// `[upstream.federation_account]` and each `[[upstream.enrolled]]`: both
/// keys required.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamAccountSection {
    /// The access.md username (a doctor account).
    pub username: String,
    /// Its password, alone in a file of mode 0600 or stricter (one trailing
    /// newline is ignored). A path or `credential:NAME`.
    pub password_file: PathBuf,
}

impl Default for UpstreamSection {
    fn default() -> Self {
        UpstreamSection {
            url: "http://127.0.0.1:7000".to_owned(),
            connect_timeout: DurationValue::secs(2),
            response_timeout: DurationValue::secs(30),
            pool_idle_timeout: DurationValue::secs(90),
            pool_max_idle: 32,
            request_gzip: false,
            federation_account: None,
            enrolled: Vec::new(),
        }
    }
}

/// `[public]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublicSection {
    /// Default `0.0.0.0:443`.
    pub listen: String,
    /// Default false. True serves plain HTTP (behind a TLS-terminating proxy).
    pub plain_http: bool,
    /// Required unless `plain_http = true`.
    pub tls: Option<TlsSection>,
    pub limits: LimitsSection,
}

impl Default for PublicSection {
    fn default() -> Self {
        PublicSection {
            listen: "0.0.0.0:443".to_owned(),
            plain_http: false,
            tls: None,
            limits: LimitsSection::default(),
        }
    }
}

/// `[public.tls]` and `[federation.tls]`: both keys required.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain, leaf first. A path or `credential:NAME`.
    pub cert_file: PathBuf,
    /// PEM private key, mode 0600 or stricter. A path or `credential:NAME`.
    pub key_file: PathBuf,
}

/// `[public.limits]` and `[federation.limits]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Default 16384.
    pub max_header_bytes: usize,
    /// Default 100.
    pub max_headers: usize,
    /// Default 10485760 (10 MiB).
    pub max_body_bytes: u64,
    /// Default 10s.
    pub header_read_timeout: DurationValue,
    /// Default 60s.
    pub idle_timeout: DurationValue,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let limits = super::Limits::defaults();
        LimitsSection {
            max_header_bytes: limits.max_header_bytes,
            max_headers: limits.max_headers,
            max_body_bytes: limits.max_body_bytes,
            header_read_timeout: DurationValue(limits.header_read_timeout),
            idle_timeout: DurationValue(limits.idle_timeout),
        }
    }
}

/// `[federation]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FederationSection {
    /// Default `0.0.0.0:8443`.
    pub listen: String,
    /// Required.
    pub tls: Option<TlsSection>,
    /// Required, with at least one trust source.
    pub trust: Option<TrustSection>,
    pub limits: LimitsSection,
}

impl Default for FederationSection {
    fn default() -> Self {
        FederationSection {
            listen: "0.0.0.0:8443".to_owned(),
            tls: None,
            trust: None,
            limits: LimitsSection::default(),
        }
    }
}

/// `[federation.trust]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrustSection {
    /// PEM bundle of CAs for peer certificates. Default none.
    pub ca_file: Option<PathBuf>,
    /// SHA-256 of accepted peer SubjectPublicKeyInfo, hex or base64.
    /// Default empty.
    pub pinned_spki_sha256: Vec<String>,
    /// Trust a peer whose TLS key is published in its own DNS (the
    /// `_mdgate` records, see docs/protocol.md). Default false.
    pub dns: bool,
    /// When not empty, only these peer FQDNs are accepted. Default empty.
    pub allow: Vec<String>,
    /// Peer FQDNs always refused. Default empty.
    pub deny: Vec<String>,
    /// PEM bundle of CAs for peers' public HTTPS (the key document at
    /// `/.well-known/mdgate/keys`). Default none: the system's roots.
    pub web_ca_file: Option<PathBuf>,
}

/// `[admin]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSection {
    /// Default `127.0.0.1:9090`.
    pub listen: String,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: "127.0.0.1:9090".to_owned(),
        }
    }
}

/// `[store]`. Either `path` (SQLite) or `url`; `url` is reserved for
/// PostgreSQL, whose password will come from `password_file`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// SQLite database file. Default `$STATE_DIRECTORY/mdgate.db`, or
    /// `/var/lib/mdgate/mdgate.db` when systemd sets no state directory.
    pub path: Option<PathBuf>,
    /// `postgres://user@host/db`; refused by this version.
    pub url: Option<String>,
    /// The PostgreSQL password, in a file (or `credential:NAME`).
    pub password_file: Option<PathBuf>,
}

/// `[log]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// Default `text`.
    pub format: LogFormatName,
    /// Default `info`.
    pub filter: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: LogFormatName::Text,
            filter: "info".to_owned(),
        }
    }
}

/// `log.format` as written.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormatName {
    Text,
    Json,
}

/// `[runtime]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSection {
    /// Default 0 (one per core).
    pub workers: usize,
    /// Default 30s.
    pub drain_timeout: DurationValue,
}

impl Default for RuntimeSection {
    fn default() -> Self {
        RuntimeSection {
            workers: 0,
            drain_timeout: DurationValue::secs(30),
        }
    }
}

/// `[access]`: the access flow's limits (docs/protocol.md § Access).
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessSection {
    /// How long a request code (and the pending request) lives. Default 10m.
    pub code_ttl: DurationValue,
    /// Wrong codes before a request is void. Default 3.
    pub code_attempts: u32,
    /// How long an invitation from the patient's QR code lives. Default 1h.
    pub invitation_ttl: DurationValue,
    /// The longest grant a doctor may ask for. Default 30d.
    pub max_grant: DurationValue,
    /// Sign-in sessions on the pages end after this long unused. Default 30m.
    pub session_idle: DurationValue,
    /// ...and after this long in any case. Default 12h.
    pub session_max: DurationValue,
    /// Most sign-in sessions held at once (oldest dropped). Default 10000.
    pub sessions: u64,
}

impl Default for AccessSection {
    fn default() -> Self {
        AccessSection {
            code_ttl: DurationValue::secs(600),
            code_attempts: 3,
            invitation_ttl: DurationValue::secs(3600),
            max_grant: DurationValue::secs(30 * 86_400),
            session_idle: DurationValue::secs(1800),
            session_max: DurationValue::secs(12 * 3600),
            sessions: 10_000,
        }
    }
}

/// `[notify]`: where to tell the admin's messaging of new requests,
/// grants and revocations.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifySection {
    /// Default none: no webhook. An `http://` or `https://` URL.
    pub webhook_url: Option<String>,
    /// Default 5s.
    pub webhook_timeout: DurationValue,
}

impl Default for NotifySection {
    fn default() -> Self {
        NotifySection {
            webhook_url: None,
            webhook_timeout: DurationValue::secs(5),
        }
    }
}

/// `[keys]`: this server's keys as published in DNS (`docs/protocol.md`
/// § Keys). Selectors are `[a-z0-9][a-z0-9-]{0,62}`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeysSection {
    /// Required: the Ed25519 signing key (PKCS#8 PEM, mode 0600). A path or
    /// `credential:NAME`.
    pub signing_key_file: Option<PathBuf>,
    /// Required: the signing key's selector (its JWS `kid`).
    pub signing_selector: Option<String>,
    /// Required: the selector of the key in `[federation.tls]`.
    pub tls_selector: Option<String>,
    /// During rotation: the next signing key, not used to sign until it is
    /// switched in. Requires `next_signing_selector`.
    pub next_signing_key_file: Option<PathBuf>,
    pub next_signing_selector: Option<String>,
    /// During rotation: the next TLS key's selector and its certificate
    /// (whose key is what DNS pins). Both or neither.
    pub next_tls_selector: Option<String>,
    pub next_tls_cert_file: Option<PathBuf>,
    /// After a switch: the keys that were current until then, still
    /// published in DNS (and listed as retired in the key document) until
    /// they are revoked. Pairs as for the next keys.
    pub previous_signing_key_file: Option<PathBuf>,
    pub previous_signing_selector: Option<String>,
    pub previous_tls_selector: Option<String>,
    pub previous_tls_cert_file: Option<PathBuf>,
    /// Tolerance for peers' clocks on token times. Default 60s.
    pub clock_skew: DurationValue,
}

impl Default for KeysSection {
    fn default() -> Self {
        KeysSection {
            signing_key_file: None,
            signing_selector: None,
            tls_selector: None,
            next_signing_key_file: None,
            next_signing_selector: None,
            next_tls_selector: None,
            next_tls_cert_file: None,
            previous_signing_key_file: None,
            previous_signing_selector: None,
            previous_tls_selector: None,
            previous_tls_cert_file: None,
            clock_skew: DurationValue(crate::token::DEFAULT_CLOCK_SKEW),
        }
    }
}

/// `[policy]`: the federation routes each grant role reaches, by the route
/// names of `crate::policy` (`record`, `profile`, `vitals`, `symptoms`,
/// `answers`, `questions`, `ask_question`). A list can only narrow the
/// built-in table; `load` refuses a name that is not a route, a route above
/// the role, and a `contributor` list missing a `viewer` route.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySection {
    /// Default: every read route (all but `ask_question`).
    pub viewer: Vec<String>,
    /// Default: every route.
    pub contributor: Vec<String>,
}

impl Default for PolicySection {
    fn default() -> Self {
        let names = |role| {
            RouteSet::up_to(role)
                .iter()
                .map(|route| route.as_str().to_owned())
                .collect()
        };
        PolicySection {
            viewer: names(Role::Viewer),
            contributor: names(Role::Contributor),
        }
    }
}

/// `[dns]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsSection {
    /// `ip:port` (or `ip`, port 53) of resolvers. Default empty: the
    /// system's resolvers from `/etc/resolv.conf`.
    pub nameservers: Vec<String>,
    /// Default 2s.
    pub timeout: DurationValue,
    /// Default `off`.
    pub dnssec: DnssecName,
    /// Extra trust anchors (DNSKEY records). Default none.
    pub trust_anchor_file: Option<PathBuf>,
    /// Default 60s.
    pub min_ttl: DurationValue,
    /// Default 1h.
    pub max_ttl: DurationValue,
    /// Default 60s.
    pub negative_ttl: DurationValue,
    /// Default 10m.
    pub stale_if_error: DurationValue,
    /// Default 10000.
    pub cache_entries: u64,
}

impl Default for DnsSection {
    fn default() -> Self {
        let d = super::Dns::defaults();
        DnsSection {
            nameservers: Vec::new(),
            timeout: DurationValue(d.timeout),
            dnssec: DnssecName::Off,
            trust_anchor_file: None,
            min_ttl: DurationValue(d.min_ttl),
            max_ttl: DurationValue(d.max_ttl),
            negative_ttl: DurationValue(d.negative_ttl),
            stale_if_error: DurationValue(d.stale_if_error),
            cache_entries: d.cache_entries,
        }
    }
}

/// `dns.dnssec` as written.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DnssecName {
    Off,
    Validate,
}

/// A duration written as a string with units: `"500ms"`, `"10s"`, `"2m"`,
/// `"1h"`, or a sum such as `"1m30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationValue(pub Duration);

impl DurationValue {
    const fn secs(secs: u64) -> Self {
        DurationValue(Duration::from_secs(secs))
    }
}

/// Parses `"1m30s"`-style durations: one or more `<digits><unit>` groups,
/// units `ms`, `s`, `m`, `h`. The error says what is accepted.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const HINT: &str =
        "write a number with a unit: ms, s, m or h, as in \"500ms\", \"30s\" or \"1m30s\"";
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(format!("empty duration; {HINT}"));
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail.len()
            - tail
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let (unit, tail) = tail.split_at(unit_len);
        let Ok(number) = number.parse::<u64>() else {
            return Err(format!("invalid duration {text:?}; {HINT}"));
        };
        let part = match unit {
            "ms" => Some(Duration::from_millis(number)),
            "s" => Some(Duration::from_secs(number)),
            "m" => number.checked_mul(60).map(Duration::from_secs),
            "h" => number.checked_mul(3600).map(Duration::from_secs),
            "" if tail.is_empty() => return Err(format!("duration {text:?} has no unit; {HINT}")),
            "" => return Err(format!("invalid duration {text:?}; {HINT}")),
            _ => return Err(format!("unknown unit {unit:?} in {text:?}; {HINT}")),
        };
        total = part
            .and_then(|p| total.checked_add(p))
            .ok_or_else(|| format!("duration {text:?} is too large"))?;
        rest = tail;
    }
    Ok(total)
}

/// Formats a duration the way [`parse_duration`] reads it (`"90s"`, `"2m"`).
pub fn format_duration(d: Duration) -> String {
    let millis = d.as_millis();
    if !millis.is_multiple_of(1000) {
        format!("{millis}ms")
    } else if d.as_secs().is_multiple_of(3600) && d.as_secs() > 0 {
        format!("{}h", d.as_secs() / 3600)
    } else if d.as_secs().is_multiple_of(60) && d.as_secs() > 0 {
        format!("{}m", d.as_secs() / 60)
    } else {
        format!("{}s", d.as_secs())
    }
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }
}

struct DurationVisitor;

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = DurationValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration string such as \"30s\" or \"500ms\"")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse_duration(v).map(DurationValue).map_err(E::custom)
    }

    // A bare number is the commonest mistake: say which unit to add.
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Err(E::custom(format!(
            "a duration needs a unit and quotes: write \"{v}s\" for {v} seconds"
        )))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Err(E::custom(format!(
            "a duration needs a unit and quotes: write \"{v}s\" for {v} seconds"
        )))
    }
}

impl Serialize for DurationValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(self.0))
    }
}
