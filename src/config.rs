//! Configuration: the TOML file and the validated runtime types.
//!
//! The file is parsed into the `file` structs (every table has
//! `deny_unknown_fields`), then converted once into the runtime types below.
//! Everything downstream takes the runtime types only, so no other module
//! ever sees an unvalidated value. Errors carry the dotted key, the line and
//! the column, like `nginx -t`.
//!
//! The parts:
//!
//! * `file`: the TOML structs and their defaults (also in
//!   `config.example.toml`), and the duration syntax;
//! * `load`: [`load`], [`load_str`] and [`check`]; validation and
//!   conversion, collecting every problem;
//! * `error`: [`ConfigError`] and [`ErrorKind`];
//! * `position`: dotted key ↔ line and column in the text;
//! * `value`: parsers for server names, the upstream URL and SPKI pins;
//! * `secret`: private-key files (owner-only) and systemd credentials.
//!
//! Environment: `$STATE_DIRECTORY` (systemd `StateDirectory=`) is the
//! default directory of the SQLite file when `[store] path` is not set;
//! `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`) is where
//! `credential:NAME` values point. Relative paths in the file are resolved
//! against the file's own directory. No secret comes from the command line
//! or the file itself: only paths to secrets do.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod error;
mod file;
mod load;
mod position;
mod secret;
mod value;

#[cfg(test)]
mod tests;

pub use error::{ConfigError, ErrorKind};
pub use file::{format_duration, parse_duration};
pub use load::{check, load, load_str, summary, DEFAULT_STATE_DIRECTORY, DEFAULT_STORE_FILE};
pub use position::Position;
pub use secret::{
    check_readable_file, check_secret_file, credentials_directory, read_secret_file,
    resolve_credential, SecretError, CREDENTIAL_PREFIX,
};
pub use value::{parse_fqdn, parse_pin, parse_upstream_url};

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from (for messages only).
    pub source: PathBuf,
    pub server: Server,
    pub upstream: Upstream,
    pub public: PublicListener,
    /// The federation listener; absent when the file has no `[federation]`.
    pub federation: Option<FederationListener>,
    pub admin: AdminListener,
    pub store: Store,
    pub log: Log,
    pub runtime: Runtime,
    pub dns: Dns,
    /// This server's keys; absent when the file has no `[keys]`.
    pub keys: Option<Keys>,
    /// `[policy]`: which federation routes each grant role reaches (the
    /// route table, possibly narrowed; never wider).
    pub policy: crate::policy::Policy,
    /// `[access]`: the access flow's limits.
    pub access: Access,
    /// `[notify]`: the webhook, if any.
    pub notify: Notify,
}

/// `[access]`: limits of the access flow (docs/protocol.md § Access).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Lifetime of a request code and of the pending request.
    pub code_ttl: Duration,
    /// Wrong codes after which a request is void (1..=10).
    pub code_attempts: u32,
    /// Lifetime of an invitation carried by the patient's QR code.
    pub invitation_ttl: Duration,
    /// The longest grant that can be asked for or approved.
    pub max_grant: Duration,
    /// A page sign-in session ends after this long unused...
    pub session_idle: Duration,
    /// ...and after this long in any case.
    pub session_max: Duration,
    /// Most page sessions held at once.
    pub sessions: u64,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            code_ttl: Duration::from_secs(600),
            code_attempts: 3,
            invitation_ttl: Duration::from_secs(3600),
            max_grant: Duration::from_secs(30 * 86_400),
            session_idle: Duration::from_secs(1800),
            session_max: Duration::from_secs(12 * 3600),
            sessions: 10_000,
        }
    }
}

/// `[notify]`: the webhook told of each new request, grant and revocation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Notify {
    /// `http://` or `https://` URL; `None`: no webhook.
    pub webhook_url: Option<http::Uri>,
    pub webhook_timeout: Duration,
}

/// `[server]`: who this server is.
#[derive(Debug, Clone)]
pub struct Server {
    /// The server's fully qualified domain name, lower case, no trailing dot.
    pub fqdn: String,
}

/// `[upstream]`: the unmodified access.md server.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `host:port` of the upstream (plain HTTP).
    pub authority: http::uri::Authority,
    pub connect_timeout: Duration,
    /// Time allowed from sending the request to receiving response headers.
    pub response_timeout: Duration,
    /// How long an idle pooled upstream connection is kept.
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per worker.
    pub pool_max_idle: usize,
    /// Whether mdgate's own requests ask access.md to gzip its answers
    /// (`Accept-Encoding: gzip`). Off by default: beside access.md on one
    /// host, compressing and inflating every answer only costs CPU on
    /// both sides.
    pub request_gzip: bool,
    /// `[upstream.federation_account]`: the dedicated doctor account that
    /// patients with no local doctor are linked to. `None`: mdgate does not
    /// link patients.
    pub federation_account: Option<UpstreamAccount>,
    /// `[[upstream.enrolled]]`: local doctors' accounts mdgate may use for
    /// their own patients, within a grant. In file order.
    pub enrolled: Vec<UpstreamAccount>,
}

/// An access.md account mdgate logs in as. Only the *path* of the password
/// is configuration; the `upstream` module reads the file when it starts
/// (and again when asked to reload), so the password is never part of a
/// [`Config`] and never printed with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAccount {
    /// The access.md username, exactly (the upstream compares it
    /// case-sensitively).
    pub username: String,
    /// The password file, owner-only, already resolved (a `credential:NAME`
    /// value becomes `$CREDENTIALS_DIRECTORY/NAME`).
    pub password_file: PathBuf,
}

/// TLS material for a listener, read from files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Limits and timeouts that apply to one listener's clients.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head (request line and headers) accepted, in bytes.
    pub max_header_bytes: usize,
    /// Most header fields accepted in one request.
    pub max_headers: usize,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: u64,
    /// Time allowed for a client to send a complete request head.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
}

/// `[public]`: the listener for the server's own users.
#[derive(Debug, Clone)]
pub struct PublicListener {
    pub listen: SocketAddr,
    /// `None` only when the file says `plain_http = true`.
    pub tls: Option<TlsFiles>,
    pub limits: Limits,
}

/// How federation peers are trusted: DNS-published keys, a CA bundle the
/// admin opts into, or pinned keys; then the allow- and deny-lists.
#[derive(Debug, Clone, Default)]
pub struct PeerTrust {
    /// PEM bundle of CAs whose certificates are accepted.
    pub ca_file: Option<PathBuf>,
    /// SHA-256 hashes of accepted SubjectPublicKeyInfo (raw 32 bytes).
    pub pinned_spki_sha256: Vec<[u8; 32]>,
    /// Accept peers whose TLS key their own DNS publishes.
    pub dns: bool,
    /// When not empty, the only peer FQDNs accepted (normalised).
    pub allow: Vec<String>,
    /// Peer FQDNs always refused (normalised).
    pub deny: Vec<String>,
    /// CAs for peers' public HTTPS certificates (their key documents);
    /// `None`: the system's roots. Not a source of trust in peers' keys.
    pub web_ca_file: Option<PathBuf>,
}

impl PeerTrust {
    /// Whether the allow- and deny-lists admit `fqdn`; `Err` carries the
    /// refusal label.
    pub fn admits(&self, fqdn: &str) -> Result<(), &'static str> {
        if self.deny.iter().any(|d| d == fqdn) {
            return Err("denied");
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|a| a == fqdn) {
            return Err("not_allowed");
        }
        Ok(())
    }
}

/// `[federation]`: the mutual-TLS listener for peer servers.
#[derive(Debug, Clone)]
pub struct FederationListener {
    pub listen: SocketAddr,
    pub tls: TlsFiles,
    pub trust: PeerTrust,
    pub limits: Limits,
}

/// `[admin]`: health and metrics.
#[derive(Debug, Clone)]
pub struct AdminListener {
    pub listen: SocketAddr,
}

/// `[store]`: where durable state lives.
#[derive(Debug, Clone)]
pub enum Store {
    /// An SQLite database file (created when missing).
    Sqlite { path: PathBuf },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct Log {
    pub format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive, e.g. `info,mdgate=debug`.
    pub filter: String,
}

/// `[runtime]`: process-level settings.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// Proxy worker threads (each a single-threaded runtime); 0 means one
    /// per available core.
    pub workers: usize,
    /// How long in-flight requests get to finish after SIGTERM.
    pub drain_timeout: Duration,
}

/// `[keys]`: this server's keys as published in DNS (`docs/protocol.md`
/// § Keys). Every selector here is distinct and has selector syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// The key that signs tokens and the key document (checked to be an
    /// Ed25519 PKCS#8 key, owner-only).
    pub signing: SigningKeyFile,
    /// The selector of the TLS key in `[federation.tls]`.
    pub tls_selector: String,
    /// The next signing key during a rotation (published, not yet used).
    pub next_signing: Option<SigningKeyFile>,
    /// The next TLS key during a rotation.
    pub next_tls: Option<NextTlsKey>,
    /// After a switch, the signing key that was current: still published
    /// (tokens it signed are still in use) until it is revoked.
    pub previous_signing: Option<SigningKeyFile>,
    /// After a switch, the TLS key that was current.
    pub previous_tls: Option<NextTlsKey>,
    /// How far token times may be off this server's clock.
    pub clock_skew: Duration,
}

/// A signing key file and its selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyFile {
    pub key_file: PathBuf,
    pub selector: String,
}

/// A TLS key that is not the one presented (the next one of a rotation, or
/// the previous one after a switch): its selector and the certificate that
/// carries it (DNS pins that certificate's key; its private key is not
/// needed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextTlsKey {
    pub selector: String,
    pub cert_file: PathBuf,
}

/// `[dns]`: how peers' key records are looked up and cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    /// Resolvers to ask; empty means the system's (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// Time allowed for one query attempt (a query is tried twice).
    pub timeout: Duration,
    pub dnssec: DnssecMode,
    /// DNSKEY records in zone-file format, added to the built-in root
    /// anchors (only with [`DnssecMode::Validate`]).
    pub trust_anchor_file: Option<PathBuf>,
    /// Answers are cached at least this long, whatever their TTL.
    pub min_ttl: Duration,
    /// And at most this long.
    pub max_ttl: Duration,
    /// How long "no such record" answers are cached.
    pub negative_ttl: Duration,
    /// How long after its expiry the last good answer may still be used
    /// while refreshes fail (zero: never).
    pub stale_if_error: Duration,
    /// Most peers whose keys are cached.
    pub cache_entries: u64,
}

/// `dns.dnssec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnssecMode {
    /// Answers are used without DNSSEC validation; TLSA is never used.
    Off,
    /// Answers are validated; bogus ones are refused; secure TLSA records
    /// are enforced.
    Validate,
}

impl Dns {
    /// The defaults documented in `config.example.toml`.
    pub fn defaults() -> Self {
        Dns {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(2),
            dnssec: DnssecMode::Off,
            trust_anchor_file: None,
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(60),
            stale_if_error: Duration::from_secs(600),
            cache_entries: 10_000,
        }
    }
}

impl Config {
    /// Settings that are allowed but deserve a line in the log at startup
    /// (the configuration is loaded before logging is set up, so the
    /// caller logs these).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.public.tls.is_none() {
            warnings.push(format!(
                "public listener {} serves plain HTTP (plain_http = true); \
                 it must sit behind a TLS-terminating proxy",
                self.public.listen
            ));
        }
        warnings
    }
}

impl Limits {
    /// The defaults documented in `config.example.toml`.
    pub fn defaults() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_body_bytes: 10 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}
