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
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{
    format_duration, ConfigFile, DurationValue, FederationSection, LimitsSection, LogFormatName,
    PublicSection, StoreSection, TlsSection, TrustSection, UpstreamSection,
};
use super::position::{parent, Position, Positions};
use super::secret::{self, SecretError};
use super::{
    AdminListener, Config, FederationListener, Limits, Log, LogFormat, PeerTrust, PublicListener,
    Runtime, Server, Store, TlsFiles, Upstream,
};

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
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// What is wrong, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// The configuration file itself could not be read.
    #[error("cannot read the configuration file: {0}")]
    Read(#[source] std::io::Error),
    /// Not valid TOML.
    #[error("TOML syntax error: {0}")]
    Syntax(String),
    /// A key no table of mdgate's knows (often a typo).
    #[error("unknown key `{key}` in {table} ({expected})")]
    UnknownKey {
        key: String,
        /// `[public.limits]`, or `the top-level table`.
        table: String,
        /// serde's list of the keys that table accepts.
        expected: String,
    },
    /// A required key or table is absent.
    #[error("{0}")]
    Missing(String),
    /// A value of the wrong type or out of range, or malformed.
    #[error("{0}")]
    Invalid(String),
    /// A file named by the configuration is missing, unreadable, or (for
    /// keys) too widely readable.
    #[error("{0}")]
    File(SecretError),
    /// Two listeners would bind the same address.
    #[error("{address} overlaps {other}; every listener needs its own address")]
    AddressConflict { address: SocketAddr, other: String },
    /// A setting reserved for a later version.
    #[error("{0}")]
    Unsupported(String),
}

/// A configuration error: the file, the dotted key, the position and what
/// to do. `Display` gives one line in the manner of `nginx -t`:
///
/// ```text
/// mdgate: /etc/mdgate/mdgate.toml:12:11: public.tls.key_file: /etc/mdgate/key.pem is readable by group or others (mode 0644); run chmod 600 on it
/// ```
///
/// Validation collects every problem; the earliest in the file is this
/// error and the others are in [`ConfigError::also`]. [`ConfigError::report`]
/// prints them all.
#[derive(Debug)]
pub struct ConfigError {
    /// The configuration file (absolute).
    pub file: PathBuf,
    /// The dotted key, as in `public.tls.key_file`, when one is concerned.
    pub key: Option<String>,
    /// Where the key's value is (else its table, else unknown).
    pub position: Option<Position>,
    /// What is wrong (boxed to keep `Result<_, ConfigError>` small).
    pub kind: Box<ErrorKind>,
    /// Further errors found in the same pass, in file order.
    pub also: Vec<ConfigError>,
}

impl ConfigError {
    fn new(file: &Path, key: Option<String>, position: Option<Position>, kind: ErrorKind) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            key,
            position,
            kind: Box::new(kind),
            also: Vec::new(),
        }
    }

    /// This error followed by the others found in the same pass.
    pub fn all(&self) -> impl Iterator<Item = &ConfigError> {
        std::iter::once(self).chain(self.also.iter())
    }

    /// Every error, one per line, then the `test failed` line, for
    /// `check-config` and for startup failures.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for error in self.all() {
            error.write_line(&mut out);
            out.push('\n');
        }
        out.push_str(&format!(
            "mdgate: configuration file {} test failed",
            self.file.display()
        ));
        out
    }

    fn write_line(&self, out: &mut String) {
        out.push_str(&format!("mdgate: {}:", self.file.display()));
        if let Some(position) = self.position {
            out.push_str(&format!("{position}:"));
        }
        if let Some(key) = &self.key {
            out.push_str(&format!(" {key}:"));
        }
        out.push_str(&format!(" {}", self.kind));
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = String::new();
        self.write_line(&mut line);
        f.write_str(&line)?;
        match self.also.len() {
            0 => Ok(()),
            1 => f.write_str(" (and 1 more error)"),
            n => write!(f, " (and {n} more errors)"),
        }
    }
}

impl std::error::Error for ConfigError {}

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
    format!(
        "configuration file {} test is successful: fqdn {}, {public}, {federation}, admin {}, {store}",
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

        let federation = match federation {
            Some(f) => Some(f?),
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
        Some(Upstream {
            authority: authority?,
            connect_timeout: connect_timeout?,
            response_timeout: response_timeout?,
            pool_idle_timeout: pool_idle_timeout?,
            pool_max_idle: pool_max_idle?,
        })
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
        let Some(trust) = trust.filter(|t| t.ca_file.is_some() || !t.pinned_spki_sha256.is_empty())
        else {
            self.error(
                "federation.trust",
                ErrorKind::Missing(
                    "required: set ca_file or pinned_spki_sha256 in [federation.trust]; \
                     without either no peer can be trusted"
                        .to_owned(),
                ),
            );
            return None;
        };
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
        let ca_file = match ca_file {
            Some(path) => Some(path?),
            None => None,
        };
        Some(PeerTrust {
            ca_file,
            pinned_spki_sha256: pins.into_iter().collect::<Option<_>>()?,
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

/// Checks and normalises a server name: lower case, no trailing dot, at
/// least two LDH labels, not an IP address, no wildcard.
pub fn parse_fqdn(text: &str) -> Result<String, String> {
    let lower = text.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() {
        return Err("empty; set this server's DNS name, as in \"records.example.org\"".to_owned());
    }
    if name.parse::<IpAddr>().is_ok() || name.starts_with('[') {
        return Err(format!(
            "{text:?} is an IP address; use the DNS name peers will look up"
        ));
    }
    if name.contains('*') {
        return Err(format!(
            "{text:?} is a wildcard; use this server's own name"
        ));
    }
    if name.len() > 253 {
        return Err(format!("longer than 253 characters ({})", name.len()));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Err(format!(
            "{text:?} needs at least two labels, as in \"records.example.org\""
        ));
    }
    for label in &labels {
        if label.is_empty() {
            return Err(format!("{text:?} has an empty label"));
        }
        if label.len() > 63 {
            return Err(format!("label {label:?} is longer than 63 characters"));
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!(
                "label {label:?} may only hold letters, digits and '-' \
                 (write internationalised names in their xn-- form)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!(
            "{text:?} ends in a numeric label; use a DNS name, not an address"
        ));
    }
    Ok(name.to_owned())
}

/// `http://host:port` → the authority; port 80 when absent.
pub fn parse_upstream_url(text: &str) -> Result<http::uri::Authority, String> {
    const FORM: &str = "expected http://host:port, as in \"http://127.0.0.1:7000\"";
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("not a valid URL; {FORM}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(
                "https is not supported: mdgate speaks plain HTTP to an upstream on loopback \
                 or a private network; use http://"
                    .to_owned(),
            )
        }
        Some(other) => return Err(format!("scheme {other:?} is not supported; {FORM}")),
        None => return Err(format!("missing http://; {FORM}")),
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("missing host; {FORM}"));
    };
    // Deliberately not echoed: user info would be a password.
    if authority.as_str().contains('@') {
        return Err("must not contain a user name or password".to_owned());
    }
    if authority.host().is_empty() {
        return Err(format!("missing host; {FORM}"));
    }
    let path = uri.path();
    if uri.query().is_some() || !(path.is_empty() || path == "/") {
        return Err(
            "must not have a path or query: request paths are forwarded unchanged".to_owned(),
        );
    }
    if authority.port_u16().is_some() {
        return Ok(authority.clone());
    }
    format!("{}:80", authority.as_str())
        .parse()
        .map_err(|_| format!("not a valid host; {FORM}"))
}

/// A SHA-256 SPKI pin: 64 hex digits (colons allowed, as openssl prints
/// them) or base64 (with or without padding).
pub fn parse_pin(text: &str) -> Result<[u8; 32], String> {
    use base64::Engine as _;
    const FORM: &str =
        "expected a SHA-256 of a SubjectPublicKeyInfo as 64 hex digits or 44 base64 characters";
    let text = text.trim();
    let compact: String = text.chars().filter(|c| *c != ':').collect();
    let bytes = if compact.len() == 64 && compact.chars().all(|c| c.is_ascii_hexdigit()) {
        hex::decode(&compact).map_err(|_| FORM.to_owned())?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .map_err(|_| FORM.to_owned())?
    };
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("decodes to {} bytes, not 32; {FORM}", bytes.len()))
}

/// Whether two listen addresses could not both be bound. `[::]` is taken
/// to be dual-stack (the Linux default), so it covers IPv4 too.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let covers =
        |wild: IpAddr, other: IpAddr| wild.is_unspecified() && (wild.is_ipv6() || other.is_ipv4());
    a.ip() == b.ip() || covers(a.ip(), b.ip()) || covers(b.ip(), a.ip())
}

/// An absolute form of `path` without touching the file system; unchanged
/// if the current directory is unknown.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn one_line(message: &str) -> String {
    message.trim().replace('\n', ": ")
}
