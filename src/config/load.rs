//! Loading: read the file, parse it into the [`file`](super::file) structs, then validate
//! and convert it once into the runtime [`Config`].
//!
//! Parsing stops at the first TOML or type error (serde cannot go on), and
//! that error is placed with the span toml gives. Validation then checks
//! every value and collects *all* problems, each placed at the value of its
//! dotted key through the [`Positions`] index, so one `check-config` run
//! shows everything to fix. The process environment is read once, into
//! [`Env`], so tests can supply their own.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{ConfigError, ErrorKind};
use super::file::{
    format_duration, AccessSection, ConfigFile, DnsSection, DnssecName, DurationValue,
    FederationSection, KeysSection, LimitsSection, LogFormatName, NotifySection, PolicySection,
    PublicSection, StoreSection, TlsSection, TrustSection, UpstreamAccountSection, UpstreamSection,
};
use super::position::{parent, Position, Positions};
use super::secret;
use super::value::{overlaps, parse_fqdn, parse_pin, parse_upstream_url};
use super::{
    Access, AdminListener, Config, Dns, DnssecMode, FederationListener, Keys, Limits, Log,
    LogFormat, NextTlsKey, Notify, PeerTrust, PublicListener, Runtime, Server, SigningKeyFile,
    Store, TlsFiles, Upstream, UpstreamAccount,
};
use crate::policy::{Policy, PolicyError, Role, RouteId, RouteSet};
use crate::token::{valid_selector, KeyError, SigningKey};

/// Where the SQLite file goes when neither `store.path` nor
/// `$STATE_DIRECTORY` says otherwise.
pub const DEFAULT_STATE_DIRECTORY: &str = "/var/lib/mdgate";
/// The SQLite file name inside the state directory.
pub const DEFAULT_STORE_FILE: &str = "mdgate.db";

/// Most proxy worker threads accepted.
const MAX_WORKERS: usize = 1024;
/// The smallest request-head limit: hyper's HTTP/1 read buffer cannot be
/// smaller than 8 KiB, and real browsers send heads of several KiB.
const MIN_HEADER_BYTES: usize = 8 * 1024;
const MAX_HEADER_BYTES: usize = 1024 * 1024;
const MAX_HEADERS: usize = 10_000;
const MAX_POOL_IDLE: usize = 10_000;
/// access.md stores usernames in a Derby `VARCHAR(255)`.
const MAX_USERNAME_CHARS: usize = 255;
const MINUTE: Duration = Duration::from_secs(60);
/// Largest `keys.clock_skew`: beyond this a peer's clock is broken, and
/// a wide tolerance stretches every token's lifetime.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(10 * 60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
/// Most resolvers in `dns.nameservers`.
const MAX_NAMESERVERS: usize = 16;
/// Most peers in the DNS cache.
const MAX_DNS_CACHE_ENTRIES: u64 = 10_000_000;

/// The parts of the process environment that configuration depends on.
#[derive(Debug, Clone, Default)]
pub(super) struct Env {
    /// `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).
    pub credentials_directory: Option<PathBuf>,
    /// The first entry of `$STATE_DIRECTORY` (systemd `StateDirectory=`).
    pub state_directory: Option<PathBuf>,
}

impl Env {
    pub(super) fn from_process() -> Env {
        let state_directory = std::env::var_os("STATE_DIRECTORY")
            .and_then(|dirs| std::env::split_paths(&dirs).next())
            .filter(|dir| dir.is_absolute());
        Env {
            credentials_directory: secret::credentials_directory(),
            state_directory,
        }
    }
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_file_with_env(path, &Env::from_process())
}

/// Validates configuration text. `origin` names it in messages, and
/// relative paths in it are resolved against `origin`'s directory.
pub fn load_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    load_text_with_env(text, origin, &Env::from_process())
}

/// The body of `mdgate check-config -c FILE`: the whole configuration is
/// loaded and checked, including that the files it names can be used.
/// `Ok` is the one-line summary to print.
pub fn check(path: &Path) -> Result<String, ConfigError> {
    load(path).map(|config| summary(&config))
}

pub(super) fn load_file_with_env(path: &Path, env: &Env) -> Result<Config, ConfigError> {
    let origin = absolute(path);
    let text = std::fs::read_to_string(&origin)
        .map_err(|e| ConfigError::new(&origin, None, None, ErrorKind::Read(e)))?;
    load_text_with_env(&text, &origin, env)
}

pub(super) fn load_text_with_env(
    text: &str,
    origin: &Path,
    env: &Env,
) -> Result<Config, ConfigError> {
    let origin = absolute(origin);
    let (file, positions) = parse(text, &origin)?;
    let mut validator = Validator {
        text,
        base: origin.parent().unwrap_or(Path::new("/")).to_path_buf(),
        origin: &origin,
        env,
        positions: &positions,
        errors: Vec::new(),
    };
    let config = validator.config(&file);
    let mut errors = validator.errors;
    // Report in file order; errors with no position go last.
    errors.sort_by_key(|e| (e.position.is_none(), e.position));
    let mut errors = errors.into_iter();
    match (config, errors.next()) {
        (Some(config), None) => Ok(config),
        (_, Some(mut first)) => {
            first.also = errors.collect();
            Err(first)
        }
        // Every `None` from the validator comes with a recorded error.
        (None, None) => Err(ConfigError::new(
            &origin,
            None,
            None,
            ErrorKind::Invalid("invalid configuration".to_owned()),
        )),
    }
}

/// The `check-config` summary line.
pub fn summary(config: &Config) -> String {
    let public = match &config.public.tls {
        Some(_) => format!("public {} (tls)", config.public.listen),
        None => format!(
            "public {} (plain http; a TLS-terminating proxy must be in front)",
            config.public.listen
        ),
    };
    let federation = match &config.federation {
        Some(f) => {
            let mut trust = Vec::new();
            if f.trust.ca_file.is_some() {
                trust.push("ca".to_owned());
            }
            match f.trust.pinned_spki_sha256.len() {
                0 => {}
                1 => trust.push("1 pin".to_owned()),
                n => trust.push(format!("{n} pins")),
            }
            format!("federation {} (mtls, {})", f.listen, trust.join(", "))
        }
        None => "federation off".to_owned(),
    };
    let store = match &config.store {
        Store::Sqlite { path } => format!("store sqlite {}", path.display()),
    };
    let keys = match &config.keys {
        Some(k) => {
            let mut keys = format!(", keys {} {}", k.signing.selector, k.tls_selector);
            let next: Vec<&str> = [
                k.next_signing.as_ref().map(|n| n.selector.as_str()),
                k.next_tls.as_ref().map(|n| n.selector.as_str()),
            ]
            .into_iter()
            .flatten()
            .collect();
            if !next.is_empty() {
                keys.push_str(&format!(" (next {})", next.join(" ")));
            }
            let previous: Vec<&str> = [
                k.previous_signing.as_ref().map(|n| n.selector.as_str()),
                k.previous_tls.as_ref().map(|n| n.selector.as_str()),
            ]
            .into_iter()
            .flatten()
            .collect();
            if !previous.is_empty() {
                keys.push_str(&format!(" (previous {})", previous.join(" ")));
            }
            keys
        }
        None => String::new(),
    };
    format!(
        "configuration file {} test is successful: fqdn {}, {public}, {federation}, admin {}, {store}{keys}",
        config.source.display(),
        config.server.fqdn,
        config.admin.listen,
    )
}

/// Parses the text into the file structs and the key index.
fn parse(text: &str, origin: &Path) -> Result<(ConfigFile, Positions), ConfigError> {
    let positions = Positions::parse(text).map_err(|e| {
        let position = e.span().map(|span| Position::at(text, span.start));
        ConfigError::new(
            origin,
            None,
            position,
            ErrorKind::Syntax(one_line(e.message())),
        )
    })?;
    let file = toml::from_str(text).map_err(|e| data_error(&e, text, origin, &positions))?;
    Ok((file, positions))
}

/// Turns a serde error (unknown key, missing key, wrong type, bad value)
/// into a [`ConfigError`] naming the dotted key.
fn data_error(
    error: &toml::de::Error,
    text: &str,
    origin: &Path,
    positions: &Positions,
) -> ConfigError {
    let span = error.span();
    let position = span.as_ref().map(|s| Position::at(text, s.start));
    let at = span.as_ref().and_then(|s| positions.key_at(s));
    let message = one_line(error.message());

    // serde's wording is stable: "unknown field `x`, expected ..." and
    // "missing field `x`".
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let key = at.map_or_else(|| name.to_owned(), str::to_owned);
        let table =
            parent(&key).map_or_else(|| "the top-level table".to_owned(), |t| format!("[{t}]"));
        let kind = ErrorKind::UnknownKey {
            key: name.to_owned(),
            table,
            expected: expected.trim_start_matches(", ").to_owned(),
        };
        return ConfigError::new(origin, Some(key), position, kind);
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.trim_end_matches('`');
        let key = match at {
            Some(table) => format!("{table}.{name}"),
            None => name.to_owned(),
        };
        let kind = ErrorKind::Missing("required key is missing".to_owned());
        return ConfigError::new(origin, Some(key), position, kind);
    }
    ConfigError::new(
        origin,
        at.map(str::to_owned),
        position,
        ErrorKind::Invalid(message),
    )
}

/// Converts the file structs into runtime types, recording every problem.
///
/// Each method returns `None` exactly when it has recorded an error, so the
/// final assembly can use `?` and still report everything.
struct Validator<'a> {
    text: &'a str,
    origin: &'a Path,
    /// The configuration file's directory, for relative paths.
    base: PathBuf,
    env: &'a Env,
    positions: &'a Positions,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn config(&mut self, file: &ConfigFile) -> Option<Config> {
        // Listen addresses first, so that conflicts are reported even when
        // something else in a listener's table is wrong.
        let public_listen = self.listen("public.listen", &file.public.listen);
        let federation_listen = file
            .federation
            .as_ref()
            .and_then(|f| self.listen("federation.listen", &f.listen));
        let dns = self.dns(&file.dns);
        let admin_listen = self.listen("admin.listen", &file.admin.listen);
        self.distinct_listeners(&[
            ("public.listen", public_listen),
            ("federation.listen", federation_listen),
            ("admin.listen", admin_listen),
        ]);

        let server = self.server(file.server.fqdn.as_deref());
        let upstream = self.upstream(&file.upstream);
        let public = self.public(&file.public, public_listen);
        let federation = file
            .federation
            .as_ref()
            .map(|f| self.federation(f, federation_listen));
        let store = self.store(&file.store);
        let log = self.log(file.log.format, &file.log.filter);
        let runtime = self.runtime(file.runtime.workers, file.runtime.drain_timeout);
        let keys = file.keys.as_ref().map(|k| self.keys(k));
        let policy = self.policy(&file.policy);
        let access = self.access(&file.access);
        let notify = self.notify(&file.notify);

        let federation = match federation {
            Some(f) => Some(f?),
            None => None,
        };
        let keys = match keys {
            Some(k) => Some(k?),
            None => None,
        };
        Some(Config {
            source: self.origin.to_path_buf(),
            server: server?,
            upstream: upstream?,
            public: public?,
            federation,
            admin: AdminListener {
                listen: admin_listen?,
            },
            store: store?,
            log: log?,
            runtime: runtime?,
            keys,
            policy: policy?,
            dns: dns?,
            access: access?,
            notify: notify?,
        })
    }

    fn server(&mut self, fqdn: Option<&str>) -> Option<Server> {
        let Some(fqdn) = fqdn else {
            self.error(
                "server.fqdn",
                ErrorKind::Missing(
                    "required: set it to this server's DNS name, as in fqdn = \"records.example.org\""
                        .to_owned(),
                ),
            );
            return None;
        };
        let fqdn = self.ok("server.fqdn", parse_fqdn(fqdn).map_err(ErrorKind::Invalid))?;
        Some(Server { fqdn })
    }

    fn upstream(&mut self, u: &UpstreamSection) -> Option<Upstream> {
        let authority = self.ok(
            "upstream.url",
            parse_upstream_url(&u.url).map_err(ErrorKind::Invalid),
        );
        let connect_timeout = self.timeout("upstream.connect_timeout", u.connect_timeout, MINUTE);
        let response_timeout = self.timeout("upstream.response_timeout", u.response_timeout, HOUR);
        let pool_idle_timeout =
            self.timeout("upstream.pool_idle_timeout", u.pool_idle_timeout, HOUR);
        // 0 is allowed: no pooling.
        let pool_max_idle = self.range("upstream.pool_max_idle", u.pool_max_idle, 0, MAX_POOL_IDLE);
        let federation_account = u
            .federation_account
            .as_ref()
            .map(|a| self.upstream_account("upstream.federation_account", a));
        let enrolled: Vec<Option<UpstreamAccount>> = u
            .enrolled
            .iter()
            .enumerate()
            .map(|(i, a)| self.upstream_account(&format!("upstream.enrolled[{i}]"), a))
            .collect();
        self.distinct_accounts(u);
        let federation_account = match federation_account {
            Some(account) => Some(account?),
            None => None,
        };
        Some(Upstream {
            authority: authority?,
            connect_timeout: connect_timeout?,
            response_timeout: response_timeout?,
            pool_idle_timeout: pool_idle_timeout?,
            pool_max_idle: pool_max_idle?,
            request_gzip: u.request_gzip,
            federation_account,
            enrolled: enrolled.into_iter().collect::<Option<_>>()?,
        })
    }

    /// One account table: a plausible username and an owner-only password
    /// file. The password itself is not read here (see `upstream`).
    fn upstream_account(
        &mut self,
        table: &str,
        account: &UpstreamAccountSection,
    ) -> Option<UpstreamAccount> {
        let name = &account.username;
        // The username is echoed in messages: it names an account, it is
        // not a secret.
        let checked = if name.is_empty() {
            Err(ErrorKind::Invalid(
                "empty; set the access.md username of this doctor account".to_owned(),
            ))
        } else if name.encode_utf16().count() > MAX_USERNAME_CHARS {
            Err(ErrorKind::Invalid(format!(
                "longer than {MAX_USERNAME_CHARS} characters, which access.md cannot store"
            )))
        } else if name.chars().any(char::is_control) {
            Err(ErrorKind::Invalid(
                "contains a control character".to_owned(),
            ))
        } else if name.trim() != name {
            Err(ErrorKind::Invalid(format!(
                "{name:?} starts or ends with white space; access.md compares usernames \
                 exactly, so remove it"
            )))
        } else {
            Ok(name.clone())
        };
        let username = self.ok(&format!("{table}.username"), checked);
        let password_file =
            self.secret_file(&format!("{table}.password_file"), &account.password_file);
        Some(UpstreamAccount {
            username: username?,
            password_file: password_file?,
        })
    }

    /// Each account may appear once: two entries for one username would
    /// hold two sessions of one upstream identity and disagree about which
    /// of them reaches a patient.
    fn distinct_accounts(&mut self, u: &UpstreamSection) {
        let mut seen: Vec<(String, &str)> = Vec::new();
        let accounts = u
            .federation_account
            .iter()
            .map(|a| ("upstream.federation_account".to_owned(), a))
            .chain(
                u.enrolled
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (format!("upstream.enrolled[{i}]"), a)),
            );
        for (table, account) in accounts {
            if account.username.is_empty() {
                continue;
            }
            if let Some((other, _)) = seen.iter().find(|(_, name)| *name == account.username) {
                self.error(
                    &format!("{table}.username"),
                    ErrorKind::Invalid(format!(
                        "{:?} is already configured in {other}; list each account once",
                        account.username
                    )),
                );
            } else {
                seen.push((table, &account.username));
            }
        }
    }

    /// `listen` is parsed by the caller (`None`: already reported).
    fn public(&mut self, p: &PublicSection, listen: Option<SocketAddr>) -> Option<PublicListener> {
        let tls = match (&p.tls, p.plain_http) {
            (Some(tls), false) => self.tls("public.tls", tls).map(Some),
            (None, true) => Some(None),
            (Some(_), true) => {
                self.error(
                    "public.plain_http",
                    ErrorKind::Invalid(
                        "plain_http = true and [public.tls] exclude each other; remove one"
                            .to_owned(),
                    ),
                );
                None
            }
            (None, false) => {
                self.error(
                    "public.tls",
                    ErrorKind::Missing(
                        "required: add [public.tls] with cert_file and key_file, or set \
                         plain_http = true if a TLS-terminating proxy is in front"
                            .to_owned(),
                    ),
                );
                None
            }
        };
        let limits = self.limits("public.limits", &p.limits);
        Some(PublicListener {
            listen: listen?,
            tls: tls?,
            limits: limits?,
        })
    }

    /// `listen` is parsed by the caller (`None`: already reported).
    fn federation(
        &mut self,
        f: &FederationSection,
        listen: Option<SocketAddr>,
    ) -> Option<FederationListener> {
        let tls = match &f.tls {
            Some(tls) => self.tls("federation.tls", tls),
            None => {
                self.error(
                    "federation.tls",
                    ErrorKind::Missing(
                        "required: add [federation.tls] with the cert_file and key_file \
                         this server presents to peers"
                            .to_owned(),
                    ),
                );
                None
            }
        };
        let trust = self.trust(f.trust.as_ref());
        let limits = self.limits("federation.limits", &f.limits);
        Some(FederationListener {
            listen: listen?,
            tls: tls?,
            trust: trust?,
            limits: limits?,
        })
    }

    fn trust(&mut self, trust: Option<&TrustSection>) -> Option<PeerTrust> {
        let Some(trust) =
            trust.filter(|t| t.ca_file.is_some() || !t.pinned_spki_sha256.is_empty() || t.dns)
        else {
            self.error(
                "federation.trust",
                ErrorKind::Missing(
                    "required: set dns = true, ca_file or pinned_spki_sha256 in \
                     [federation.trust]; without one no peer can be trusted"
                        .to_owned(),
                ),
            );
            return None;
        };
        let mut names = |list: &str, entries: &[String]| -> Option<Vec<String>> {
            entries
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let key = format!("federation.trust.{list}[{i}]");
                    self.ok(&key, parse_fqdn(name).map_err(ErrorKind::Invalid))
                })
                .collect::<Vec<_>>()
                .into_iter()
                .collect()
        };
        let allow = names("allow", &trust.allow);
        let deny = names("deny", &trust.deny);
        if let (Some(allow), Some(deny)) = (&allow, &deny) {
            if let Some(both) = allow.iter().find(|a| deny.contains(a)) {
                self.error(
                    "federation.trust.deny",
                    ErrorKind::Invalid(format!("{both} is in both allow and deny")),
                );
            }
        }
        let ca_file = trust
            .ca_file
            .as_ref()
            .map(|path| self.readable_file("federation.trust.ca_file", path));
        let pins: Vec<Option<[u8; 32]>> = trust
            .pinned_spki_sha256
            .iter()
            .enumerate()
            .map(|(i, pin)| {
                let key = format!("federation.trust.pinned_spki_sha256[{i}]");
                self.ok(&key, parse_pin(pin).map_err(ErrorKind::Invalid))
            })
            .collect();
        let web_ca_file = trust
            .web_ca_file
            .as_ref()
            .map(|path| self.readable_file("federation.trust.web_ca_file", path));
        let ca_file = match ca_file {
            Some(path) => Some(path?),
            None => None,
        };
        let web_ca_file = match web_ca_file {
            Some(path) => Some(path?),
            None => None,
        };
        Some(PeerTrust {
            ca_file,
            pinned_spki_sha256: pins.into_iter().collect::<Option<_>>()?,
            dns: trust.dns,
            allow: allow?,
            deny: deny?,
            web_ca_file,
        })
    }

    fn tls(&mut self, table: &str, tls: &TlsSection) -> Option<TlsFiles> {
        let cert_file = self.readable_file(&format!("{table}.cert_file"), &tls.cert_file);
        let key_file = self.secret_file(&format!("{table}.key_file"), &tls.key_file);
        Some(TlsFiles {
            cert_file: cert_file?,
            key_file: key_file?,
        })
    }

    fn limits(&mut self, table: &str, l: &LimitsSection) -> Option<Limits> {
        let key = |name: &str| format!("{table}.{name}");
        let max_header_bytes = self.range(
            &key("max_header_bytes"),
            l.max_header_bytes,
            MIN_HEADER_BYTES,
            MAX_HEADER_BYTES,
        );
        let max_headers = self.range(&key("max_headers"), l.max_headers, 1, MAX_HEADERS);
        let max_body_bytes = self.range(&key("max_body_bytes"), l.max_body_bytes, 1, u64::MAX);
        let header_read_timeout = self.timeout(
            &key("header_read_timeout"),
            l.header_read_timeout,
            5 * MINUTE,
        );
        let idle_timeout = self.timeout(&key("idle_timeout"), l.idle_timeout, HOUR);
        Some(Limits {
            max_header_bytes: max_header_bytes?,
            max_headers: max_headers?,
            max_body_bytes: max_body_bytes?,
            header_read_timeout: header_read_timeout?,
            idle_timeout: idle_timeout?,
        })
    }

    fn store(&mut self, s: &StoreSection) -> Option<Store> {
        if let Some(url) = &s.url {
            // The URL is never echoed: it may hold a password.
            let scheme = url
                .split_once("://")
                .map(|(scheme, _)| scheme.to_ascii_lowercase());
            let kind = match scheme.as_deref() {
                Some("postgres" | "postgresql") => ErrorKind::Unsupported(
                    "PostgreSQL is not supported by this version; remove url and use \
                     path for an SQLite file"
                        .to_owned(),
                ),
                _ => ErrorKind::Invalid(
                    "not a supported store URL; use path = \"/var/lib/mdgate/mdgate.db\" for SQLite"
                        .to_owned(),
                ),
            };
            self.error("store.url", kind);
            return None;
        }
        if s.password_file.is_some() {
            self.error(
                "store.password_file",
                ErrorKind::Invalid(
                    "only used with a PostgreSQL url, which this version does not support; \
                     remove it"
                        .to_owned(),
                ),
            );
            return None;
        }
        let path = match &s.path {
            Some(path) if path.as_os_str().is_empty() => {
                self.error("store.path", ErrorKind::Invalid("empty path".to_owned()));
                return None;
            }
            Some(path) => self.base.join(path),
            None => self
                .env
                .state_directory
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_STATE_DIRECTORY))
                .join(DEFAULT_STORE_FILE),
        };
        if path.is_dir() {
            self.error(
                "store.path",
                ErrorKind::Invalid(format!(
                    "{} is a directory; name the database file, as in {}",
                    path.display(),
                    path.join(DEFAULT_STORE_FILE).display()
                )),
            );
            return None;
        }
        Some(Store::Sqlite { path })
    }

    fn log(&mut self, format: LogFormatName, filter: &str) -> Option<Log> {
        let format = match format {
            LogFormatName::Text => LogFormat::Text,
            LogFormatName::Json => LogFormat::Json,
        };
        let valid = if filter.trim().is_empty() {
            Err("empty filter; use \"info\" or, for example, \"info,mdgate=debug\"".to_owned())
        } else {
            tracing_subscriber::EnvFilter::try_new(filter)
                .map(drop)
                .map_err(|e| {
                    format!("not a valid log filter ({e}); use for example \"info,mdgate=debug\"")
                })
        };
        self.ok("log.filter", valid.map_err(ErrorKind::Invalid))?;
        Some(Log {
            format,
            filter: filter.to_owned(),
        })
    }

    fn runtime(&mut self, workers: usize, drain_timeout: DurationValue) -> Option<Runtime> {
        let workers = self.range("runtime.workers", workers, 0, MAX_WORKERS);
        let drain_timeout = self.timeout("runtime.drain_timeout", drain_timeout, HOUR);
        Some(Runtime {
            workers: workers?,
            drain_timeout: drain_timeout?,
        })
    }

    fn access(&mut self, a: &AccessSection) -> Option<Access> {
        let code_ttl = self.timeout("access.code_ttl", a.code_ttl, HOUR);
        let code_attempts = self.range("access.code_attempts", a.code_attempts, 1, 10);
        let invitation_ttl = self.timeout("access.invitation_ttl", a.invitation_ttl, 30 * DAY);
        let max_grant = self.timeout("access.max_grant", a.max_grant, 366 * DAY);
        let session_idle = self.timeout("access.session_idle", a.session_idle, DAY);
        let session_max = self.timeout("access.session_max", a.session_max, 7 * DAY);
        let sessions = self.range("access.sessions", a.sessions, 1, 10_000_000);
        if let (Some(idle), Some(max)) = (session_idle, session_max) {
            if idle > max {
                self.error(
                    "access.session_idle",
                    ErrorKind::Invalid(format!(
                        "{} is longer than access.session_max ({})",
                        format_duration(idle),
                        format_duration(max)
                    )),
                );
                return None;
            }
        }
        Some(Access {
            code_ttl: code_ttl?,
            code_attempts: code_attempts?,
            invitation_ttl: invitation_ttl?,
            max_grant: max_grant?,
            session_idle: session_idle?,
            session_max: session_max?,
            sessions: sessions?,
        })
    }

    fn notify(&mut self, n: &NotifySection) -> Option<Notify> {
        let timeout = self.timeout("notify.webhook_timeout", n.webhook_timeout, MINUTE);
        let url = match &n.webhook_url {
            None => None,
            Some(text) => {
                let parsed = match text.parse::<http::Uri>() {
                    Ok(uri)
                        if matches!(uri.scheme_str(), Some("http" | "https"))
                            && uri.host().is_some() =>
                    {
                        Ok(uri)
                    }
                    _ => Err(ErrorKind::Invalid(
                        "expected an http:// or https:// URL, as in \"https://hooks.example.org/mdgate\""
                            .to_owned(),
                    )),
                };
                Some(self.ok("notify.webhook_url", parsed)?)
            }
        };
        Some(Notify {
            webhook_url: url,
            webhook_timeout: timeout?,
        })
    }

    fn keys(&mut self, k: &KeysSection) -> Option<Keys> {
        let signing_selector = self.required_selector(
            "keys.signing_selector",
            k.signing_selector.as_deref(),
            "the signing key's selector, as `mdgate keygen` prints it (e.g. \"sig2026a\")",
        );
        let tls_selector = self.required_selector(
            "keys.tls_selector",
            k.tls_selector.as_deref(),
            "the selector of the [federation.tls] key, as `mdgate keygen` prints it (e.g. \"tls2026a\")",
        );
        let signing_key_file = match &k.signing_key_file {
            Some(path) => {
                self.signing_key_file("keys.signing_key_file", path, signing_selector.as_deref())
            }
            None => {
                self.error(
                    "keys.signing_key_file",
                    ErrorKind::Missing(
                        "required: the Ed25519 signing key (PKCS#8 PEM, mode 0600) that \
                         `mdgate keygen` writes"
                            .to_owned(),
                    ),
                );
                None
            }
        };
        let next_signing = self.next_signing(k);
        let next_tls = self.next_tls(k);
        let previous_signing = self.optional_signing(
            "previous",
            k.previous_signing_key_file.as_ref(),
            k.previous_signing_selector.as_deref(),
        );
        let previous_tls = self.optional_tls(
            "previous",
            k.previous_tls_selector.as_deref(),
            k.previous_tls_cert_file.as_ref(),
        );
        let clock_skew = self.clock_skew(k.clock_skew);

        let signing = SigningKeyFile {
            key_file: signing_key_file?,
            selector: signing_selector?,
        };
        let tls_selector = tls_selector?;
        let next_signing = next_signing?;
        let next_tls = next_tls?;
        let previous_signing = previous_signing?;
        let previous_tls = previous_tls?;
        // All selectors share one name space (`<selector>._mdgate.<fqdn>`).
        let mut seen: Vec<(&str, &str)> = Vec::new();
        let mut duplicate = None;
        for (key, selector) in [
            ("keys.signing_selector", Some(signing.selector.as_str())),
            ("keys.tls_selector", Some(tls_selector.as_str())),
            (
                "keys.next_signing_selector",
                next_signing.as_ref().map(|n| n.selector.as_str()),
            ),
            (
                "keys.next_tls_selector",
                next_tls.as_ref().map(|n| n.selector.as_str()),
            ),
            (
                "keys.previous_signing_selector",
                previous_signing.as_ref().map(|n| n.selector.as_str()),
            ),
            (
                "keys.previous_tls_selector",
                previous_tls.as_ref().map(|n| n.selector.as_str()),
            ),
        ] {
            let Some(selector) = selector else { continue };
            if let Some((other, _)) = seen.iter().find(|(_, s)| *s == selector) {
                duplicate.get_or_insert((key, selector.to_owned(), *other));
            }
            seen.push((key, selector));
        }
        if let Some((key, selector, other)) = duplicate {
            self.error(
                key,
                ErrorKind::Invalid(format!(
                    "selector {selector:?} is also {other}; every key needs its own selector"
                )),
            );
            return None;
        }
        Some(Keys {
            signing,
            tls_selector,
            next_signing,
            next_tls,
            previous_signing,
            previous_tls,
            clock_skew: clock_skew?,
        })
    }

    /// `Some(None)`: no next signing key; `None`: an error was recorded.
    fn next_signing(&mut self, k: &KeysSection) -> Option<Option<SigningKeyFile>> {
        self.optional_signing(
            "next",
            k.next_signing_key_file.as_ref(),
            k.next_signing_selector.as_deref(),
        )
    }

    /// `Some(None)`: no next TLS key; `None`: an error was recorded.
    fn next_tls(&mut self, k: &KeysSection) -> Option<Option<NextTlsKey>> {
        self.optional_tls(
            "next",
            k.next_tls_selector.as_deref(),
            k.next_tls_cert_file.as_ref(),
        )
    }

    /// The `<prefix>_signing_key_file` / `<prefix>_signing_selector` pair:
    /// both or neither.
    fn optional_signing(
        &mut self,
        prefix: &str,
        file: Option<&PathBuf>,
        selector: Option<&str>,
    ) -> Option<Option<SigningKeyFile>> {
        let file_key = format!("{prefix}_signing_key_file");
        let selector_key = format!("{prefix}_signing_selector");
        match (file, selector) {
            (None, None) => Some(None),
            (Some(path), Some(selector)) => {
                let selector = self.selector(&format!("keys.{selector_key}"), selector);
                let key_file =
                    self.signing_key_file(&format!("keys.{file_key}"), path, selector.as_deref());
                Some(Some(SigningKeyFile {
                    key_file: key_file?,
                    selector: selector?,
                }))
            }
            (Some(_), None) => {
                self.error(
                    &format!("keys.{file_key}"),
                    ErrorKind::Missing(format!("{selector_key} is required with {file_key}")),
                );
                None
            }
            (None, Some(_)) => {
                self.error(
                    &format!("keys.{selector_key}"),
                    ErrorKind::Missing(format!("{file_key} is required with {selector_key}")),
                );
                None
            }
        }
    }

    /// The `<prefix>_tls_selector` / `<prefix>_tls_cert_file` pair: both
    /// or neither.
    fn optional_tls(
        &mut self,
        prefix: &str,
        selector: Option<&str>,
        file: Option<&PathBuf>,
    ) -> Option<Option<NextTlsKey>> {
        let selector_key = format!("{prefix}_tls_selector");
        let file_key = format!("{prefix}_tls_cert_file");
        match (selector, file) {
            (None, None) => Some(None),
            (Some(selector), Some(path)) => {
                let selector = self.selector(&format!("keys.{selector_key}"), selector);
                let cert_file = self.readable_file(&format!("keys.{file_key}"), path);
                Some(Some(NextTlsKey {
                    selector: selector?,
                    cert_file: cert_file?,
                }))
            }
            (Some(_), None) => {
                self.error(
                    &format!("keys.{selector_key}"),
                    ErrorKind::Missing(format!(
                        "{file_key} is required with {selector_key}: DNS pins the key of that \
                         certificate"
                    )),
                );
                None
            }
            (None, Some(_)) => {
                self.error(
                    &format!("keys.{file_key}"),
                    ErrorKind::Missing(format!("{selector_key} is required with {file_key}")),
                );
                None
            }
        }
    }

    fn required_selector(
        &mut self,
        key: &str,
        selector: Option<&str>,
        what: &str,
    ) -> Option<String> {
        match selector {
            Some(selector) => self.selector(key, selector),
            None => {
                self.error(key, ErrorKind::Missing(format!("required: {what}")));
                None
            }
        }
    }

    fn selector(&mut self, key: &str, selector: &str) -> Option<String> {
        let checked = if valid_selector(selector) {
            Ok(selector.to_owned())
        } else {
            Err(ErrorKind::Invalid(format!(
                "{selector:?} is not a selector: use 1-63 characters from a-z, 0-9 and '-', \
                 not starting with '-' (e.g. \"sig2026a\" or \"tls2026a\")"
            )))
        };
        self.ok(key, checked)
    }

    /// An owner-only file holding an Ed25519 PKCS#8 key. The key is parsed
    /// (and dropped) so that `check-config` catches a TLS key given here.
    fn signing_key_file(
        &mut self,
        key: &str,
        path: &Path,
        selector: Option<&str>,
    ) -> Option<PathBuf> {
        let path = self.secret_file(key, path)?;
        // The selector only labels the key in memory; a bad one is
        // reported on its own key, so any valid stand-in does here.
        let checked = match SigningKey::load(&path, selector.unwrap_or("check")) {
            Ok(_) => Ok(path),
            Err(KeyError::File(e)) => Err(ErrorKind::File(e)),
            Err(e) => Err(ErrorKind::Invalid(e.to_string())),
        };
        self.ok(key, checked)
    }

    fn clock_skew(&mut self, value: DurationValue) -> Option<Duration> {
        let d = value.0;
        let checked = if d > MAX_CLOCK_SKEW {
            Err(ErrorKind::Invalid(format!(
                "{} is longer than the maximum of {}",
                format_duration(d),
                format_duration(MAX_CLOCK_SKEW)
            )))
        } else {
            Ok(d)
        };
        self.ok("keys.clock_skew", checked)
    }

    /// `[policy]`: each list names routes of the table, within its role;
    /// `contributor` keeps every `viewer` route.
    fn policy(&mut self, p: &PolicySection) -> Option<Policy> {
        let viewer = self.role_routes(Role::Viewer, &p.viewer);
        let contributor = self.role_routes(Role::Contributor, &p.contributor);
        let (viewer, contributor) = (viewer?, contributor?);
        match Policy::new(viewer, contributor) {
            Ok(policy) => Some(policy),
            Err(e) => {
                let key = match &e {
                    PolicyError::AboveRole { role, .. } => format!("policy.{role}"),
                    PolicyError::ContributorBelowViewer { .. } => "policy.contributor".to_owned(),
                };
                self.error(&key, ErrorKind::Invalid(e.to_string()));
                None
            }
        }
    }

    /// One role's list, every bad entry reported at its position.
    fn role_routes(&mut self, role: Role, names: &[String]) -> Option<RouteSet> {
        let mut routes = RouteSet::empty();
        let mut valid = true;
        for (i, name) in names.iter().enumerate() {
            let key = format!("policy.{role}[{i}]");
            let problem = match name.parse::<RouteId>() {
                Err(e) => e.to_string(),
                Ok(route) if route.rule().min_role > role => format!(
                    "route `{route}` needs the {} role; {role} cannot be given it",
                    route.rule().min_role
                ),
                Ok(route) if routes.contains(route) => format!("route `{route}` is listed twice"),
                Ok(route) => {
                    routes.insert(route);
                    continue;
                }
            };
            self.error(&key, ErrorKind::Invalid(problem));
            valid = false;
        }
        valid.then_some(routes)
    }

    fn dns(&mut self, d: &DnsSection) -> Option<Dns> {
        let nameservers: Vec<Option<SocketAddr>> = d
            .nameservers
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let key = format!("dns.nameservers[{i}]");
                self.ok(&key, parse_nameserver(text).map_err(ErrorKind::Invalid))
            })
            .collect();
        if d.nameservers.len() > MAX_NAMESERVERS {
            self.error(
                "dns.nameservers",
                ErrorKind::Invalid(format!("at most {MAX_NAMESERVERS} resolvers")),
            );
        }
        let timeout = self.timeout("dns.timeout", d.timeout, MINUTE);
        let dnssec = match d.dnssec {
            DnssecName::Off => DnssecMode::Off,
            DnssecName::Validate => DnssecMode::Validate,
        };
        let trust_anchor_file = match (&d.trust_anchor_file, dnssec) {
            (None, _) => Some(None),
            (Some(_), DnssecMode::Off) => {
                self.error(
                    "dns.trust_anchor_file",
                    ErrorKind::Invalid(
                        "only used with dnssec = \"validate\"; set that or remove this key"
                            .to_owned(),
                    ),
                );
                None
            }
            (Some(path), DnssecMode::Validate) => self
                .readable_file("dns.trust_anchor_file", path)
                .and_then(|path| {
                    let parsed = crate::dns::load_trust_anchors(&path)
                        .map(|_| Some(path))
                        .map_err(ErrorKind::Invalid);
                    self.ok("dns.trust_anchor_file", parsed)
                }),
        };
        let min_ttl = self.timeout("dns.min_ttl", d.min_ttl, HOUR);
        let max_ttl = self.timeout("dns.max_ttl", d.max_ttl, DAY);
        if let (Some(min), Some(max)) = (min_ttl, max_ttl) {
            if min > max {
                self.error(
                    "dns.max_ttl",
                    ErrorKind::Invalid(format!(
                        "{} is shorter than min_ttl ({})",
                        format_duration(max),
                        format_duration(min)
                    )),
                );
            }
        }
        let negative_ttl = self.timeout("dns.negative_ttl", d.negative_ttl, HOUR);
        // Zero is allowed: no stale answers at all.
        let stale_if_error = if d.stale_if_error.0 > DAY {
            self.error(
                "dns.stale_if_error",
                ErrorKind::Invalid(format!(
                    "{} is longer than the maximum of {}",
                    format_duration(d.stale_if_error.0),
                    format_duration(DAY)
                )),
            );
            None
        } else {
            Some(d.stale_if_error.0)
        };
        let cache_entries = self.range(
            "dns.cache_entries",
            d.cache_entries,
            1,
            MAX_DNS_CACHE_ENTRIES,
        );
        if min_ttl? > max_ttl? || d.nameservers.len() > MAX_NAMESERVERS {
            return None;
        }
        Some(Dns {
            nameservers: nameservers.into_iter().collect::<Option<_>>()?,
            timeout: timeout?,
            dnssec,
            trust_anchor_file: trust_anchor_file?,
            min_ttl: min_ttl?,
            max_ttl: max_ttl?,
            negative_ttl: negative_ttl?,
            stale_if_error: stale_if_error?,
            cache_entries: cache_entries?,
        })
    }

    /// Reports listeners that could not all bind at once. Port 0 (an
    /// ephemeral port, used by tests) never conflicts.
    fn distinct_listeners(&mut self, listeners: &[(&str, Option<SocketAddr>)]) {
        for (i, (key, addr)) in listeners.iter().enumerate() {
            let Some(addr) = addr else { continue };
            let earlier = listeners[..i]
                .iter()
                .find_map(|(k, a)| a.filter(|a| overlaps(*a, *addr)).map(|a| (k, a)));
            if let Some((other_key, other)) = earlier {
                self.error(
                    key,
                    ErrorKind::AddressConflict {
                        address: *addr,
                        other: format!("{other_key} ({other})"),
                    },
                );
            }
        }
    }

    fn listen(&mut self, key: &str, text: &str) -> Option<SocketAddr> {
        let parsed = text.parse::<SocketAddr>().map_err(|_| {
            ErrorKind::Invalid(format!(
                "{text:?} is not an IP address and port, as in \"0.0.0.0:443\" or \"[::]:443\""
            ))
        });
        self.ok(key, parsed)
    }

    fn timeout(&mut self, key: &str, value: DurationValue, max: Duration) -> Option<Duration> {
        let d = value.0;
        let checked = if d.is_zero() {
            Err(ErrorKind::Invalid("must be greater than zero".to_owned()))
        } else if d > max {
            Err(ErrorKind::Invalid(format!(
                "{} is longer than the maximum of {}",
                format_duration(d),
                format_duration(max)
            )))
        } else {
            Ok(d)
        };
        self.ok(key, checked)
    }

    fn range<T: PartialOrd + fmt::Display>(
        &mut self,
        key: &str,
        value: T,
        min: T,
        max: T,
    ) -> Option<T> {
        let checked = if value < min {
            Err(ErrorKind::Invalid(format!("must be at least {min}")))
        } else if value > max {
            Err(ErrorKind::Invalid(format!("must be at most {max}")))
        } else {
            Ok(value)
        };
        self.ok(key, checked)
    }

    /// A certificate or CA bundle: must exist and be readable.
    fn readable_file(&mut self, key: &str, path: &Path) -> Option<PathBuf> {
        let checked = self.resolve(path).and_then(|path| {
            secret::check_readable_file(&path)
                .map(|()| path)
                .map_err(ErrorKind::File)
        });
        self.ok(key, checked)
    }

    /// A private key: as [`Self::readable_file`], and owner-only.
    fn secret_file(&mut self, key: &str, path: &Path) -> Option<PathBuf> {
        let checked = self.resolve(path).and_then(|path| {
            secret::check_secret_file(&path)
                .map(|()| path)
                .map_err(ErrorKind::File)
        });
        self.ok(key, checked)
    }

    /// `credential:NAME` → the systemd credential; relative → against the
    /// configuration file's directory.
    fn resolve(&self, path: &Path) -> Result<PathBuf, ErrorKind> {
        if path.as_os_str().is_empty() {
            return Err(ErrorKind::Invalid("empty path".to_owned()));
        }
        let path = secret::resolve_credential(path, self.env.credentials_directory.as_deref())
            .map_err(ErrorKind::File)?;
        Ok(self.base.join(path))
    }

    fn ok<T>(&mut self, key: &str, result: Result<T, ErrorKind>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(kind) => {
                self.error(key, kind);
                None
            }
        }
    }

    fn error(&mut self, key: &str, kind: ErrorKind) {
        let position = self
            .positions
            .span_of(key)
            .map(|span| Position::at(self.text, span.start));
        self.errors.push(ConfigError::new(
            self.origin,
            Some(key.to_owned()),
            position,
            kind,
        ));
    }
}

/// An absolute form of `path` without touching the file system; unchanged
/// if the current directory is unknown.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// A resolver address: `ip:port`, or a bare IP for port 53.
fn parse_nameserver(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    Err(format!(
        "{text:?} is not an IP address with an optional port, as in \"192.0.2.53:53\", \
         \"192.0.2.53\" or \"[2001:db8::53]:53\""
    ))
}

fn one_line(message: &str) -> String {
    message.trim().replace('\n', ": ")
}
