//! `mdgate check-peer FQDN`: every check a confused admin needs, each with
//! pass, fail, skip or warn and a reason to act on.
//!
//! The run follows what a peer of FQDN does, step by step, and reports
//! each step on its own, so that a failure is blamed on the step that
//! failed and on nothing after it (the Matrix federation tester's users
//! complained of SERVFAIL taken for absence and of timeouts blamed on the
//! wrong step):
//!
//! ```text
//! [dns] resolvers, uncached ─▶ dns.index ─▶ dns.key.<sel> … ─▶ dns.dnssec
//!                          └─▶ dns.addr (A/AAAA)
//! TCP to <addr>:<fp> ─▶ connect ─▶ TLS presenting our [federation.tls] certificate
//!   ─▶ tls.handshake ─▶ tls.name ─▶ tls.validity ─▶ tls.key (vs DNS) ─▶ tls.dane (vs TLSA)
//!   ─▶ GET /federation/v1/identity on that connection ─▶ federation.admits_us ─▶ clock (Date)
//! HTTPS to <addr>:<wp> (web roots) ─▶ GET /.well-known/mdgate/keys ─▶ keydoc.fetch
//!   ─▶ keydoc.signature (JWS with the DNS signing key) ─▶ keydoc.agreement (token::compare)
//! ```
//!
//! A check whose input is missing is skipped and says which check to fix
//! first. The judging functions (`index_check`, `tls_key_check`, ...) are
//! pure: they take what was observed and return a [`Check`]; the I/O is in
//! [`check_peer`] and the small helpers at the end.
//!
//! The TLS handshake accepts whatever certificate the peer presents: it is
//! judged afterwards, against the peer's DNS, by the checks above (the
//! handshake signature is still verified, so the peer proves it holds the
//! key). Nothing secret is sent over that connection: our certificate is
//! public and the one request reads the peer's view of us.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::checks::{answer_facts, dns_failure, resolvers, step_detail, Check, Report, Status};
use super::metrics::Metrics;
use crate::config::{self, Config, DnssecMode};
use crate::dns::addr::IpLookup;
use crate::dns::record::{self, IndexRecord, KeyMaterial, KeyRecord, KeyUse, Selector, Tlsa};
use crate::dns::{
    DnsError, KeyResolver, LookupReport, LookupStep, PeerKeys, Security, StepOutcome,
};
use crate::tls::{self, CertReloader};
use crate::token::{
    compare, DnsKey, DnsMaterial, DocError, KeyAlg, KeyDocument, KeyUsage, VerifyingKey,
};

/// Time allowed for each network step (connect, handshake, response).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The federation route that says who the peer sees.
pub const IDENTITY_PATH: &str = "/federation/v1/identity";
/// Where the key document is served.
pub const KEYS_PATH: &str = "/.well-known/mdgate/keys";
/// Largest response body read.
const MAX_BODY: usize = 64 * 1024;
/// HTTP dates have whole seconds: a skew this small is rounding.
const DATE_RESOLUTION: i64 = 1;

/// What `mdgate check-peer` was asked for.
#[derive(Debug, Clone)]
pub struct CheckPeerArgs {
    /// The peer to check (any case, trailing dot allowed).
    pub fqdn: String,
    /// Time allowed for each network step.
    pub timeout: Duration,
}

/// Why the checks could not run at all (every other problem is a check).
#[derive(Debug, thiserror::Error)]
pub enum CheckPeerError {
    #[error("cannot set up the DNS resolver from [dns]: {0}")]
    Resolver(#[from] DnsError),
}

/// Runs every check against `args.fqdn` as this server (`config`) sees it.
/// `clock` gives the current time (the peer's `Date` is compared with it
/// when the response arrives).
pub async fn check_peer(
    config: &Config,
    args: &CheckPeerArgs,
    clock: fn() -> SystemTime,
) -> Result<Report, CheckPeerError> {
    let fqdn = match config::parse_fqdn(&args.fqdn) {
        Ok(fqdn) => fqdn,
        Err(reason) => {
            let check = Check::fail(
                "name",
                format!("{:?} is not a server name: {reason}", args.fqdn),
            )
            .label("invalid_name");
            return Ok(Report::new(args.fqdn.clone(), vec![check], Vec::new()));
        }
    };
    let resolver = KeyResolver::new(&config.dns, Arc::new(Metrics::new()))?;
    let timeout = args.timeout;
    let dns = &config.dns;
    let mut checks = Vec::new();

    // DNS: the keys, then the addresses (both at once).
    let (report, addrs) = tokio::join!(resolver.lookup_report(&fqdn), resolver.lookup_ip(&fqdn));
    let index = report.steps.first().and_then(live_index);
    checks.push(match report.steps.first() {
        Some(step) => index_check(&fqdn, step, index.as_ref(), dns),
        None => Check::fail(
            "dns.index",
            report
                .result
                .as_ref()
                .err()
                .map_or_else(|| "no lookup was made".to_owned(), ToString::to_string),
        ),
    });
    for step in report
        .steps
        .iter()
        .skip(1)
        .filter(|s| s.record_type == "TXT")
    {
        checks.push(selector_check(step, dns));
    }
    checks.push(dnssec_check(&report));
    let keys = report.result.as_ref().ok();
    let addrs = addrs.ok();
    checks.push(addr_check(&fqdn, addrs.as_ref(), dns));
    let targets: Vec<std::net::IpAddr> =
        addrs.as_ref().map(|a| a.addrs.clone()).unwrap_or_default();

    // The federation port: TCP, TLS, the certificate, the identity route.
    let ours = our_identity(config);
    let fed = match (&index, targets.is_empty()) {
        (None, _) => Err(
            "skipped: needs a usable index (dns.index) to know the federation port (fp=)"
                .to_owned(),
        ),
        (Some(_), true) => Err("skipped: needs an address for the peer (dns.addr)".to_owned()),
        (Some(index), false) => Ok(index.federation_port),
    };
    let mut conn = None;
    match fed {
        Err(why) => {
            for name in ["connect", "tls.handshake"] {
                checks.push(Check::skip(name, why.clone()));
            }
        }
        Ok(port) => match connect_any(&targets, port, timeout).await {
            Err(failures) => {
                checks.push(connect_failed(
                    "connect",
                    port,
                    "federation",
                    &failures,
                    timeout,
                ));
                checks.push(Check::skip(
                    "tls.handshake",
                    "skipped: no TCP connection (see connect)",
                ));
            }
            Ok((stream, addr)) => {
                checks.push(
                    Check::pass(
                        "connect",
                        format!("TCP connection to the federation port at {addr}"),
                    )
                    .with("addr", addr.to_string()),
                );
                let handshake = match federation_tls(&ours) {
                    Ok(tls) => handshake(tls, &fqdn, stream, timeout)
                        .await
                        .map_err(|e| handshake_failed(&e, port, timeout)),
                    Err(reason) => Err(Check::fail("tls.handshake", reason)),
                };
                match handshake {
                    Ok((stream, chain)) => {
                        checks.push(Check::pass(
                            "tls.handshake",
                            format!(
                                "TLS handshake on port {port}{}",
                                if ours.cert.is_some() {
                                    ", presenting our certificate"
                                } else {
                                    " (without a certificate of ours)"
                                }
                            ),
                        ));
                        conn = Some((stream, chain, port));
                    }
                    Err(check) => checks.push(check),
                }
            }
        },
    }

    // What the peer presented, and what it says of us.
    let presented = conn
        .as_ref()
        .and_then(|(_, chain, _)| chain.first().cloned());
    let mut date = None;
    let admits = match conn {
        Some((stream, _, port)) => match &ours.cert {
            Some(_) => {
                let reply = http_get(
                    stream,
                    &host_header(&fqdn, port, 0),
                    IDENTITY_PATH,
                    timeout,
                    clock,
                )
                .await;
                if let Ok(r) = &reply {
                    date = r.date.map(|d| (d, r.received_at));
                }
                Some(admits_check(&fqdn, &ours.fqdn, reply, timeout))
            }
            None => Some(Check::skip(
                "federation.admits_us",
                "skipped: this server has no [federation.tls] certificate to present",
            )),
        },
        None => None,
    };

    // The key document, on the web port.
    let mut document = None;
    let doc_checks = match (&index, targets.is_empty()) {
        (None, _) => skip_doc("skipped: needs a usable index (dns.index) for the web port (wp=)"),
        (Some(_), true) => skip_doc("skipped: needs an address for the peer (dns.addr)"),
        (Some(index), false) => {
            let port = index.web_port;
            let fetched = fetch_document(config, &fqdn, &targets, port, timeout, clock).await;
            match fetched {
                Err(check) => {
                    let mut out = vec![check];
                    out.extend(
                        skip_doc("skipped: no key document (see keydoc.fetch)")
                            .into_iter()
                            .skip(1),
                    );
                    out
                }
                Ok(reply) => {
                    if date.is_none() {
                        date = reply.date.map(|d| (d, reply.received_at));
                    }
                    let now = clock();
                    let (checks, doc) = judge_document(&fqdn, port, &reply, keys, config, now);
                    document = doc;
                    checks
                }
            }
        }
    };

    let now = clock();
    match &presented {
        Some(leaf) => {
            checks.push(tls_name_check(&fqdn, leaf));
            checks.push(tls_validity_check(leaf, now));
            checks.push(tls_key_check(&fqdn, leaf, keys, document.as_ref()));
            checks.push(dane_check(leaf, keys, &report));
        }
        None => {
            for name in ["tls.name", "tls.validity", "tls.key", "tls.dane"] {
                checks.push(Check::skip(
                    name,
                    "skipped: no certificate was presented (see connect and tls.handshake)",
                ));
            }
        }
    }
    checks.push(admits.unwrap_or_else(|| {
        Check::skip(
            "federation.admits_us",
            "skipped: no TLS connection to the federation port (see tls.handshake)",
        )
    }));
    let skew = config
        .keys
        .as_ref()
        .map_or(crate::token::DEFAULT_CLOCK_SKEW, |k| k.clock_skew);
    checks.push(clock_check(date, skew));
    checks.extend(doc_checks);
    Ok(Report::new(fqdn, checks, Vec::new()))
}

// ------------------------------------------------------------------ DNS

/// The index of the step's records, when there is one of ours.
fn live_index(step: &LookupStep) -> Option<IndexRecord> {
    if step.outcome != StepOutcome::Ok {
        return None;
    }
    let records: Vec<Vec<&[u8]>> = step.records.iter().map(|t| vec![t.as_bytes()]).collect();
    record::parse_index_rrset(&records).ok().flatten()
}

fn index_check(
    fqdn: &str,
    step: &LookupStep,
    index: Option<&IndexRecord>,
    dns: &config::Dns,
) -> Check {
    let name = "dns.index";
    let facts = answer_facts(step);
    let publish = format!(
        "{fqdn} publishes no mdgate keys; its admin must publish the lines `mdgate dns-records` \
         prints on that server"
    );
    let check = if let Some((reason, label)) = dns_failure(step, dns) {
        Check::fail(name, reason).label(label)
    } else {
        match (&step.outcome, index) {
            (StepOutcome::NxDomain, _) => Check::fail(
                name,
                format!("{} does not exist (NXDOMAIN){facts}: {publish}", step.name),
            )
            .label("no_record"),
            (StepOutcome::NoData, _) => Check::fail(
                name,
                format!("{} has no TXT record{facts}: {publish}", step.name),
            )
            .label("no_record"),
            (StepOutcome::Invalid(e), _) => Check::fail(
                name,
                format!(
                    "the index at {} is invalid: {e}{facts}; peers refuse {fqdn} until it is fixed",
                    step.name
                ),
            )
            .label("invalid_record"),
            (_, Some(index)) => Check::pass(
                name,
                format!(
                    "{} lists {}; fp={} wp={}{facts}",
                    step.name,
                    join(&index.selectors),
                    index.federation_port,
                    index.web_port
                ),
            )
            .with(
                "selectors",
                index
                    .selectors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            )
            .with("fp", index.federation_port)
            .with("wp", index.web_port),
            (_, None) => Check::fail(
                name,
                format!(
                    "{} has TXT records, but none starts with v=mdgate1{facts}: {publish}",
                    step.name
                ),
            )
            .label("no_record"),
        }
    };
    check.with("step", step_detail(step))
}

fn selector_check(step: &LookupStep, dns: &config::Dns) -> Check {
    let selector = step.name.split('.').next().unwrap_or_default();
    let name = format!("dns.key.{selector}");
    let facts = answer_facts(step);
    let check = if let Some((reason, label)) = dns_failure(step, dns) {
        Check::fail(name, reason).label(label)
    } else {
        let records: Vec<Vec<&[u8]>> = step.records.iter().map(|t| vec![t.as_bytes()]).collect();
        match (&step.outcome, &record::parse_key_rrset(&records)) {
            (StepOutcome::Ok, Ok(Some(r))) if r.is_revoked() => Check::pass(
                name,
                format!("{} key, revoked (empty key){facts}: peers refuse it", r.usage),
            ),
            (StepOutcome::Ok, Ok(Some(r))) => Check::pass(
                name,
                format!("{} key ({}, {}){facts}", r.usage, r.algorithm, material(r)),
            )
            .with("usage", r.usage.as_str())
            .with("algorithm", r.algorithm.as_str()),
            (StepOutcome::Invalid(e), _) | (_, Err(e)) => Check::warn(
                name,
                format!("listed in the index but its record is invalid: {e}{facts}; peers skip it"),
            )
            .label("invalid_record"),
            _ => Check::warn(
                name,
                format!(
                    "listed in the index but {} has no v=mdgate1 record ({}){facts}; peers skip it: \
                     publish it or drop it from s=",
                    step.name, step.outcome
                ),
            ),
        }
    };
    check.with("step", step_detail(step))
}

fn material(r: &KeyRecord) -> String {
    match (&r.material, r.spki_sha256()) {
        (KeyMaterial::Spki(_), Some(h)) => format!("k= with SHA-256 {}", short(&h)),
        (_, Some(h)) => format!("h={}", short(&h)),
        (_, None) => "revoked".to_owned(),
    }
}

fn dnssec_check(report: &LookupReport) -> Check {
    let name = "dns.dnssec";
    if let Some(step) = report
        .steps
        .iter()
        .find(|s| s.outcome == StepOutcome::Bogus)
    {
        return Check::fail(
            name,
            format!(
                "bogus answer at {}: the peer's DNSSEC chain is broken or the answer forged; \
                 every validating peer refuses it",
                step.name
            ),
        )
        .label("dnssec_bogus");
    }
    if report.dnssec == DnssecMode::Off {
        return Check::skip(
            name,
            "validation is off here ([dns] dnssec = \"off\"): the DNSSEC status is unknown and \
             TLSA is not used",
        );
    }
    let security = match &report.result {
        Ok(keys) => Some(keys.security),
        Err(_) => report
            .steps
            .iter()
            .filter_map(|s| s.security)
            .reduce(Security::and),
    };
    let check = match security {
        Some(Security::Secure) => Check::pass(name, "every answer is DNSSEC-secure"),
        Some(Security::Insecure) => Check::warn(
            name,
            "the zone is not DNSSEC-signed (insecure): its records can be forged on the path, \
             TLSA cannot be used, and only the HTTPS key document corroborates them",
        ),
        Some(Security::Indeterminate) => Check::warn(
            name,
            "the resolver could not establish the DNSSEC status (indeterminate): check that the \
             [dns] resolvers pass DNSSEC records",
        ),
        Some(Security::Unvalidated) | None => {
            Check::skip(name, "no answer to judge (see dns.index)")
        }
    };
    check.with("status", security.map(Security::as_str))
}

fn addr_check(fqdn: &str, lookup: Option<&IpLookup>, dns: &config::Dns) -> Check {
    let name = "dns.addr";
    let Some(lookup) = lookup else {
        return Check::fail(name, format!("{fqdn} is not a valid name"));
    };
    let detail: Vec<Value> = lookup.steps.iter().map(step_detail).collect();
    let check = if !lookup.addrs.is_empty() {
        let list: Vec<String> = lookup.addrs.iter().map(ToString::to_string).collect();
        let facts = lookup
            .steps
            .iter()
            .find(|s| s.outcome == StepOutcome::Ok && !s.records.is_empty())
            .map(answer_facts)
            .unwrap_or_default();
        Check::pass(
            name,
            format!("{fqdn} has address {}{facts}", list.join(", ")),
        )
        .with("addrs", list)
    } else {
        match lookup.failure() {
            Some(step) => match dns_failure(step, dns) {
                Some((reason, label)) => Check::fail(name, reason).label(label),
                None if step.outcome == StepOutcome::NxDomain => Check::fail(
                    name,
                    format!("{fqdn} does not exist (NXDOMAIN): it has no address to connect to"),
                ),
                None => Check::fail(
                    name,
                    format!("{fqdn} has no A or AAAA record: there is no address to connect to"),
                ),
            },
            None => Check::fail(name, format!("no address lookup for {fqdn}")),
        }
    };
    check.with("steps", detail)
}

// ------------------------------------------------------------------ TCP, TLS

/// Connects to the first address that answers; on failure, why each one
/// did not.
async fn connect_any(
    addrs: &[std::net::IpAddr],
    port: u16,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), Vec<(SocketAddr, String)>> {
    let mut failures = Vec::new();
    for ip in addrs {
        let addr = SocketAddr::new(*ip, port);
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok((stream, addr)),
            Ok(Err(e)) => failures.push((addr, connect_error(&e))),
            Err(_) => failures.push((
                addr,
                format!(
                    "no answer within {} (a firewall drops the packets, or the address is wrong)",
                    config::format_duration(timeout)
                ),
            )),
        }
    }
    Err(failures)
}

fn connect_error(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => {
            "connection refused (nothing listens on that port, or a firewall rejects it)".to_owned()
        }
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
            format!("unreachable from here ({e})")
        }
        _ => e.to_string(),
    }
}

fn connect_failed(
    name: &str,
    port: u16,
    what: &str,
    failures: &[(SocketAddr, String)],
    timeout: Duration,
) -> Check {
    let list: Vec<String> = failures
        .iter()
        .map(|(a, why)| format!("{a}: {why}"))
        .collect();
    Check::fail(
        name,
        format!(
            "could not connect to the {what} port {port} at any address ({}; {} each)",
            list.join("; "),
            config::format_duration(timeout)
        ),
    )
    .label("connect")
    .with("failures", list)
}

/// Who we are to the peer: our FQDN and, when configured, the certificate
/// we present on egress (the federation listener's).
struct Ours {
    fqdn: String,
    cert: Option<Result<Arc<CertReloader>, String>>,
}

fn our_identity(config: &Config) -> Ours {
    Ours {
        fqdn: config.server.fqdn.clone(),
        cert: config.federation.as_ref().map(|fed| {
            CertReloader::new(fed.tls.clone())
                .map(Arc::new)
                .map_err(|e| e.to_string())
        }),
    }
}

/// The client config for the federation port: our certificate (if any),
/// the peer's taken as presented (judged later), HTTP/1.1.
fn federation_tls(ours: &Ours) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Observe::new()));
    let mut config = match &ours.cert {
        Some(Ok(certs)) => builder.with_client_cert_resolver(certs.clone()),
        Some(Err(e)) => {
            return Err(format!(
                "cannot load this server's [federation.tls] certificate to present: {e} (run \
                 check-peer as the user mdgate runs as)"
            ))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

async fn handshake(
    config: Arc<ClientConfig>,
    fqdn: &str,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<(TlsStream, Vec<CertificateDer<'static>>), HandshakeError> {
    let name =
        ServerName::try_from(fqdn.to_owned()).map_err(|e| HandshakeError::Other(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Err(_) => return Err(HandshakeError::Timeout),
        Ok(Err(e)) => return Err(HandshakeError::Io(e)),
        Ok(Ok(stream)) => stream,
    };
    let chain = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    Ok((stream, chain))
}

#[derive(Debug)]
enum HandshakeError {
    Timeout,
    Io(std::io::Error),
    Other(String),
}

fn handshake_failed(e: &HandshakeError, port: u16, timeout: Duration) -> Check {
    let name = "tls.handshake";
    match e {
        HandshakeError::Timeout => Check::fail(
            name,
            format!(
                "TCP connected, but the TLS handshake on port {port} did not finish within {}: \
                 something listens there that does not speak TLS (a plain-HTTP service, another \
                 program on that port?)",
                config::format_duration(timeout)
            ),
        )
        .label("tls_timeout"),
        HandshakeError::Io(io) => match tls_alert(io) {
            Some(alert) if refuses_certificate(alert) => Check::fail(
                name,
                format!(
                    "the peer refused our certificate during the handshake (alert {alert:?}): \
                     check that our records are visible from its resolvers (`mdgate dns-records \
                     --check`) and that it does not deny us"
                ),
            )
            .label("peer_refused"),
            Some(alert) => Check::fail(
                name,
                format!("the peer aborted the TLS handshake on port {port} (alert {alert:?})"),
            )
            .label("tls_alert"),
            None if io.kind() == std::io::ErrorKind::UnexpectedEof => Check::fail(
                name,
                format!(
                    "the peer closed the connection during the TLS handshake on port {port}: \
                     it may refuse us, or not speak TLS there"
                ),
            )
            .label("tls_eof"),
            None => Check::fail(name, format!("TLS handshake on port {port} failed: {io}"))
                .label("tls_error"),
        },
        HandshakeError::Other(e) => Check::fail(name, format!("TLS handshake not attempted: {e}")),
    }
}

/// Alerts by which a TLS server says no to a client certificate.
fn refuses_certificate(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::BadCertificate
            | AlertDescription::CertificateRequired
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::AccessDenied
            | AlertDescription::UnsupportedCertificate
            // Our certificate's signature (or its issuer's) did not
            // verify on the peer's side.
            | AlertDescription::DecryptError
    )
}

/// The TLS alert the peer sent, anywhere in an error's chain.
fn tls_alert(error: &(dyn StdError + 'static)) -> Option<AlertDescription> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(rustls::Error::AlertReceived(alert)) = e.downcast_ref::<rustls::Error>() {
            return Some(*alert);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(found) = tls_alert(inner) {
                    return Some(found);
                }
            }
        }
        current = e.source();
    }
    None
}

/// Accepts the peer's certificate as presented (it is judged after the
/// handshake) but verifies the handshake signature, so the peer proves it
/// holds the certificate's key.
#[derive(Debug)]
struct Observe {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl Observe {
    fn new() -> Observe {
        Observe {
            algorithms: tls::provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for Observe {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

// ------------------------------------------------------------------ the certificate

fn tls_name_check(fqdn: &str, leaf: &CertificateDer<'_>) -> Check {
    let name = "tls.name";
    match tls::peer_identity(leaf) {
        Ok(id) if id.fqdn() == fqdn => Check::pass(
            name,
            format!("the certificate names {fqdn}, its only DNS name"),
        ),
        Ok(id) => Check::fail(
            name,
            format!(
                "the certificate names {}, not {fqdn}: another server's certificate is served on \
                 this port (the wrong [federation.tls] cert_file, or a proxy in front?)",
                id.fqdn()
            ),
        )
        .label("identity")
        .with("presented", id.fqdn()),
        Err(e) => Check::fail(
            name,
            format!(
                "the certificate has no usable identity: {e}; a peer certificate must name \
                 exactly one DNS name, {fqdn}"
            ),
        )
        .label("identity"),
    }
}

fn tls_validity_check(leaf: &CertificateDer<'_>, now: SystemTime) -> Check {
    let name = "tls.validity";
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else {
        return Check::fail(name, "the certificate cannot be parsed").label("identity");
    };
    let at = |secs: i64| {
        u64::try_from(secs)
            .map(|s| httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(s)))
            .unwrap_or_else(|_| format!("{secs} (Unix time)"))
    };
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let now = crate::token::unix_seconds(now);
    if now < not_before {
        Check::fail(
            name,
            format!(
                "not valid before {} ({} s from now by our clock): one of the two clocks is wrong, \
                 or the certificate was made with a future start",
                at(not_before),
                not_before - now
            ),
        )
        .label("not_yet_valid")
    } else if now > not_after {
        Check::fail(
            name,
            format!(
                "expired at {}: peers refuse it; the peer must renew it (and, if the key changes, \
                 publish the new key first)",
                at(not_after)
            ),
        )
        .label("expired")
    } else {
        Check::pass(name, format!("valid until {}", at(not_after)))
    }
}

fn spki_sha256(leaf: &CertificateDer<'_>) -> Option<[u8; 32]> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    Some(Sha256::digest(cert.public_key().raw).into())
}

/// The presented key against the live `tls` records. `doc` (the verified
/// key document, if any) tells which selector a key that DNS revokes was.
fn tls_key_check(
    fqdn: &str,
    leaf: &CertificateDer<'_>,
    keys: Option<&PeerKeys>,
    doc: Option<&KeyDocument>,
) -> Check {
    let name = "tls.key";
    let Some(hash) = spki_sha256(leaf) else {
        return Check::fail(name, "the certificate cannot be parsed").label("identity");
    };
    let Some(keys) = keys else {
        return Check::skip(
            name,
            "skipped: the peer's key records could not be read (see dns.index and dns.key.*)",
        );
    };
    let live: Vec<(&Selector, &KeyRecord)> = keys
        .records
        .iter()
        .filter_map(|e| e.record.as_ref().ok().map(|r| (&e.selector, r)))
        .filter(|(_, r)| r.usage == KeyUse::Tls && !r.is_revoked())
        .collect();
    if let Some((selector, _)) = live.iter().find(|(_, r)| r.matches_spki(&hash)) {
        return Check::pass(
            name,
            format!("the presented key is the live tls record {selector}"),
        )
        .with("selector", selector.as_str())
        .with("sha256", hex::encode(hash));
    }
    let revoked: Vec<&Selector> = keys
        .records
        .iter()
        .filter(|e| matches!(&e.record, Ok(r) if r.usage == KeyUse::Tls && r.is_revoked()))
        .map(|e| &e.selector)
        .collect();
    // The document names the key; DNS revokes that selector.
    let named = doc.and_then(|doc| {
        doc.keys
            .iter()
            .find(|k| k.usage == KeyUsage::Tls && doc_material_is(&k.material, &hash))
            .map(|k| k.selector.clone())
    });
    if let Some(selector) = named.filter(|s| revoked.iter().any(|r| r.as_str() == s)) {
        return Check::fail(
            name,
            format!(
                "the presented key is {selector}'s, which {fqdn}'s DNS revokes: peers refuse it; \
                 the peer must present its live key (or, if the revocation is a mistake, publish \
                 the record again)"
            ),
        )
        .label("revoked")
        .with("selector", selector)
        .with("sha256", hex::encode(hash));
    }
    let live_names: Vec<&str> = live.iter().map(|(s, _)| s.as_str()).collect();
    let mut reason = format!(
        "the presented key (SHA-256 {}) matches none of the {} live tls record{} ({}): peers \
         refuse it; the peer must publish this key (`mdgate dns-records` on that server) or \
         present the published one",
        short(&hash),
        live.len(),
        if live.len() == 1 { "" } else { "s" },
        if live_names.is_empty() {
            "none".to_owned()
        } else {
            live_names.join(", ")
        }
    );
    if !revoked.is_empty() {
        reason.push_str(&format!(
            "; {} {} revoked: if the presented key is one of those, it is refused as revoked",
            join_refs(&revoked),
            if revoked.len() == 1 { "is" } else { "are" }
        ));
    }
    Check::fail(name, reason)
        .label("key_mismatch")
        .with("sha256", hex::encode(hash))
}

fn doc_material_is(material: &crate::token::KeyMaterial, hash: &[u8; 32]) -> bool {
    match material {
        crate::token::KeyMaterial::Spki(der) => <[u8; 32]>::from(Sha256::digest(der)) == *hash,
        crate::token::KeyMaterial::SpkiSha256(h) => h == hash,
    }
}

fn dane_check(leaf: &CertificateDer<'_>, keys: Option<&PeerKeys>, report: &LookupReport) -> Check {
    let name = "tls.dane";
    if report.dnssec == DnssecMode::Off {
        return Check::skip(
            name,
            "DNSSEC validation is off here ([dns] dnssec = \"off\"): TLSA is not used",
        );
    }
    let Some(keys) = keys else {
        return Check::skip(name, "skipped: the peer's records could not be read");
    };
    if keys.security != Security::Secure {
        return Check::skip(
            name,
            format!(
                "the answers are not DNSSEC-secure ({}): TLSA is used only from secure answers",
                keys.security
            ),
        );
    }
    let tlsa_name = record::tlsa_name(keys.index.federation_port, &keys.fqdn);
    let pins: Vec<[u8; 32]> = keys
        .tlsa
        .iter()
        .filter_map(Tlsa::dane_ee_spki_sha256)
        .collect();
    let step = report.steps.iter().find(|s| s.record_type == "TLSA");
    if pins.is_empty() {
        return Check::skip(
            name,
            format!("no TLSA 3 1 1 record at {tlsa_name}: DANE is not in use (it is optional)"),
        )
        .with("step", step.map(step_detail));
    }
    match spki_sha256(leaf) {
        Some(hash) if pins.contains(&hash) => Check::pass(
            name,
            format!("the presented key matches a DNSSEC-secure TLSA 3 1 1 record at {tlsa_name}"),
        ),
        _ => Check::fail(
            name,
            format!(
                "the presented key matches none of the TLSA 3 1 1 records at {tlsa_name}: \
                 validating peers refuse it; the peer must publish the TLSA line `mdgate \
                 dns-records` prints"
            ),
        )
        .label("tlsa_mismatch"),
    }
    .with("step", step.map(step_detail))
}

// ------------------------------------------------------------------ HTTP

/// An HTTP response, read whole.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    date: Option<SystemTime>,
    content_type: Option<String>,
    body: Bytes,
    received_at: SystemTime,
}

#[derive(Debug)]
enum HttpError {
    Timeout,
    /// The connection ended without a response; the TLS alert if one came.
    Closed {
        alert: Option<AlertDescription>,
        detail: String,
    },
    Body(String),
}

fn host_header(fqdn: &str, port: u16, default: u16) -> String {
    if port == default {
        fqdn.to_owned()
    } else {
        format!("{fqdn}:{port}")
    }
}

/// `GET path` on a connection (HTTP/1.1), response and body read whole.
async fn http_get<S>(
    stream: S,
    host: &str,
    path: &str,
    timeout: Duration,
    clock: fn() -> SystemTime,
) -> Result<Reply, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| closed(&e, None))?;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = done_tx.send(conn.await);
        });
        let request = Request::get(path)
            .header(header::HOST, host)
            .header(
                header::USER_AGENT,
                concat!("mdgate-check-peer/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| HttpError::Body(e.to_string()))?;
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(e) => {
                // The connection task knows why the connection ended (a
                // TLS alert arrives there).
                let conn_error = tokio::time::timeout(Duration::from_secs(1), done_rx)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .and_then(Result::err);
                return Err(closed(&e, conn_error.as_ref()));
            }
        };
        let received_at = clock();
        let status = response.status();
        let headers = response.headers().clone();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| HttpError::Body(e.to_string()))?
            .to_bytes();
        Ok(Reply {
            status,
            date: headers
                .get(header::DATE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok()),
            content_type: headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body,
            received_at,
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::Timeout),
    }
}

fn closed(e: &hyper::Error, conn: Option<&hyper::Error>) -> HttpError {
    let alert = tls_alert(e).or_else(|| conn.and_then(|c| tls_alert(c)));
    let detail = match conn {
        Some(c) => format!("{e} ({c})"),
        None => e.to_string(),
    };
    HttpError::Closed { alert, detail }
}

fn admits_check(
    fqdn: &str,
    ours: &str,
    reply: Result<Reply, HttpError>,
    timeout: Duration,
) -> Check {
    let name = "federation.admits_us";
    let refused = "the peer refused our certificate: check that our records are visible from \
                   its resolvers (`mdgate dns-records --check`) and that it does not deny us";
    match reply {
        Err(HttpError::Closed { alert, detail }) => {
            let how = match alert {
                Some(alert) => format!("it sent TLS alert {alert:?}"),
                None => "it closed the connection without answering".to_owned(),
            };
            Check::fail(name, format!("{refused} ({how})"))
                .label("peer_refused")
                .with("error", detail)
        }
        Err(HttpError::Timeout) => Check::fail(
            name,
            format!(
                "no answer to GET {IDENTITY_PATH} within {} after the handshake: the peer is \
                 overloaded, or something other than mdgate holds that port",
                config::format_duration(timeout)
            ),
        )
        .label("http_timeout"),
        Err(HttpError::Body(e)) => Check::fail(
            name,
            format!("the answer to GET {IDENTITY_PATH} was cut off: {e}"),
        ),
        Ok(reply) if reply.status != StatusCode::OK => {
            let error = serde_json::from_slice::<Value>(&reply.body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned));
            Check::fail(
                name,
                format!(
                    "GET {IDENTITY_PATH} answered {}{}: {}",
                    reply.status,
                    error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default(),
                    if reply.status == StatusCode::NOT_FOUND {
                        "this port does not serve the mdgate federation API (an older mdgate, or \
                         another program?)"
                    } else {
                        "the peer does not serve us"
                    }
                ),
            )
            .with("status", reply.status.as_u16())
        }
        Ok(reply) => {
            let body: Option<Value> = serde_json::from_slice(&reply.body).ok();
            let field = |k: &str| {
                body.as_ref()
                    .and_then(|b| b.get(k))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            match (field("server"), field("peer")) {
                (Some(server), Some(peer)) if server == fqdn && peer == ours => {
                    Check::pass(name, format!("the peer admits us and sees us as {ours}"))
                }
                (Some(server), _) if server != fqdn => Check::fail(
                    name,
                    format!(
                        "the federation listener answers as {server}, not {fqdn}: requests for \
                         {fqdn} reach another server"
                    ),
                )
                .label("identity"),
                (_, Some(peer)) => Check::fail(
                    name,
                    format!(
                        "the peer admits us but sees us as {peer}, not {ours}: the certificate \
                         we present names {peer}"
                    ),
                )
                .label("identity"),
                _ => Check::fail(
                    name,
                    format!("GET {IDENTITY_PATH} did not answer {{\"server\", \"peer\"}}"),
                ),
            }
        }
    }
}

fn clock_check(date: Option<(SystemTime, SystemTime)>, tolerance: Duration) -> Check {
    let name = "clock";
    let Some((theirs, ours)) = date else {
        return Check::skip(
            name,
            "skipped: no Date header from the peer to compare with",
        );
    };
    let skew = crate::token::unix_seconds(theirs) - crate::token::unix_seconds(ours);
    let limit = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    let direction = if skew >= 0 { "ahead of" } else { "behind" };
    let check = if skew.abs() <= DATE_RESOLUTION {
        Check::pass(name, "the peer's clock agrees with ours (within a second)")
    } else if skew.abs() <= limit {
        Check::pass(
            name,
            format!(
                "the peer's clock is {} s {direction} ours, within the tolerance of {limit} s \
                 ([keys] clock_skew)",
                skew.abs()
            ),
        )
    } else {
        Check::warn(
            name,
            format!(
                "the peer's clock is {} s {direction} ours, beyond the tolerance of {limit} s \
                 ([keys] clock_skew): tokens between the two servers will be refused as expired \
                 or not yet valid; check NTP on both machines",
                skew.abs()
            ),
        )
    };
    check
        .with("skew_seconds", skew)
        .with("tolerance_seconds", limit)
}

// ------------------------------------------------------------------ the key document

fn skip_doc(reason: &str) -> Vec<Check> {
    ["keydoc.fetch", "keydoc.signature", "keydoc.agreement"]
        .into_iter()
        .map(|name| Check::skip(name, reason))
        .collect()
}

/// The TLS config for the peer's public HTTPS: the web's roots (or
/// `[federation.trust] web_ca_file`).
fn web_tls(config: &Config) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let ca_file = config
        .federation
        .as_ref()
        .and_then(|f| f.trust.web_ca_file.as_ref());
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read web_ca_file {}: {e}", path.display()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("web_ca_file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("web_ca_file {}: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system root that rustls cannot use is skipped, as
                // browsers do; the others still verify.
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(
            "no root certificates to verify the peer's HTTPS certificate: install the system's \
             CA bundle (ca-certificates) or set [federation.trust] web_ca_file"
                .to_owned(),
        );
    }
    let mut tls = ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

async fn fetch_document(
    config: &Config,
    fqdn: &str,
    addrs: &[std::net::IpAddr],
    port: u16,
    timeout: Duration,
    clock: fn() -> SystemTime,
) -> Result<Reply, Check> {
    let name = "keydoc.fetch";
    let url = format!("https://{}{KEYS_PATH}", host_header(fqdn, port, 443));
    let tls = web_tls(config).map_err(|e| Check::fail(name, e))?;
    let (tcp, addr) = connect_any(addrs, port, timeout)
        .await
        .map_err(|failures| connect_failed(name, port, "web (wp=)", &failures, timeout))?;
    let server =
        ServerName::try_from(fqdn.to_owned()).map_err(|e| Check::fail(name, e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(tls);
    let stream = match tokio::time::timeout(timeout, connector.connect(server, tcp)).await {
        Err(_) => {
            return Err(Check::fail(
                name,
                format!(
                    "the TLS handshake with {addr} for {url} did not finish within {}",
                    config::format_duration(timeout)
                ),
            )
            .label("tls_timeout"))
        }
        Ok(Err(e)) => {
            let why = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(rustls::Error::InvalidCertificate(c)) => format!(
                    "its HTTPS certificate is not trusted ({c:?}); the key document must be \
                     served with a certificate that chains to the web's roots (or set [federation.trust] \
                     web_ca_file here)"
                ),
                _ => format!("the TLS handshake failed: {e}"),
            };
            return Err(Check::fail(name, format!("{url} at {addr}: {why}")).label("tls_error"));
        }
        Ok(Ok(stream)) => stream,
    };
    let reply = http_get(
        stream,
        &host_header(fqdn, port, 443),
        KEYS_PATH,
        timeout,
        clock,
    )
    .await
    .map_err(|e| {
        let why = match e {
            HttpError::Timeout => format!("no answer within {}", config::format_duration(timeout)),
            HttpError::Closed { detail, .. } => {
                format!("the server closed the connection without answering ({detail})")
            }
            HttpError::Body(e) => format!("the answer was cut off or too large: {e}"),
        };
        Check::fail(name, format!("GET {url}: {why}"))
    })?;
    if reply.status != StatusCode::OK {
        let hint = if reply.status == StatusCode::NOT_FOUND {
            ": the peer does not serve its key document there (is port wp= mdgate's public \
             listener, and does a proxy in front pass /.well-known/mdgate/ through?)"
        } else {
            ""
        };
        return Err(
            Check::fail(name, format!("GET {url} answered {}{hint}", reply.status))
                .label("no_document")
                .with("status", reply.status.as_u16()),
        );
    }
    Ok(reply)
}

/// Verifies the fetched document with the DNS signing key and compares it
/// with DNS: `keydoc.fetch`, `keydoc.signature`, `keydoc.agreement`.
fn judge_document(
    fqdn: &str,
    port: u16,
    reply: &Reply,
    keys: Option<&PeerKeys>,
    config: &Config,
    now: SystemTime,
) -> (Vec<Check>, Option<KeyDocument>) {
    let url = format!("https://{}{KEYS_PATH}", host_header(fqdn, port, 443));
    let content_type = reply.content_type.clone().unwrap_or_default();
    let mut fetch = Check::pass(
        "keydoc.fetch",
        format!("{url} served {} bytes", reply.body.len()),
    )
    .with("url", url.clone())
    .with("content_type", content_type.clone());
    if !content_type.starts_with("application/jose") {
        fetch.status = Status::Warn;
        fetch.reason = format!(
            "{url} served {} bytes as {:?}, not application/jose",
            reply.body.len(),
            content_type
        );
    }
    let mut checks = vec![fetch];
    let Some(keys) = keys else {
        checks.push(Check::skip(
            "keydoc.signature",
            "skipped: the peer's signing key could not be read from DNS (see dns.*)",
        ));
        checks.push(Check::skip(
            "keydoc.agreement",
            "skipped: no DNS keys to compare with",
        ));
        return (checks, None);
    };
    let jws = String::from_utf8_lossy(&reply.body);
    let skew = config
        .keys
        .as_ref()
        .map_or(crate::token::DEFAULT_CLOCK_SKEW, |k| k.clock_skew);
    let lookup = |kid: &str| {
        keys.records
            .iter()
            .find(|e| e.selector.as_str() == kid)
            .and_then(|e| e.record.as_ref().ok())
            .filter(|r| r.usage == KeyUse::Sig && !r.is_revoked())
            .and_then(KeyRecord::spki)
            .and_then(|der| VerifyingKey::from_spki_der(der).ok())
    };
    let doc = match KeyDocument::verify(jws.trim(), fqdn, skew, lookup, now) {
        Ok(doc) => doc,
        Err(e) => {
            let label = match &e {
                DocError::Jwt(j) => j.reason(),
                DocError::UnknownKid { .. } => "unknown_selector",
                DocError::ServerMismatch { .. } => "server_mismatch",
                _ => "invalid_document",
            };
            checks.push(
                Check::fail(
                    "keydoc.signature",
                    format!(
                        "{e}; the peer must serve a document signed with a signing key its DNS \
                         publishes"
                    ),
                )
                .label(label),
            );
            checks.push(Check::skip(
                "keydoc.agreement",
                "skipped: the document did not verify (see keydoc.signature)",
            ));
            return (checks, None);
        }
    };
    checks.push(Check::pass(
        "keydoc.signature",
        format!(
            "signed with a signing key live in DNS; issued {}, valid until {}",
            fmt_unix(doc.iat),
            fmt_unix(doc.exp)
        ),
    ));
    let dns_keys = dns_keys(keys);
    checks.push(match compare(&doc, &dns_keys, now) {
        Ok(()) => Check::pass(
            "keydoc.agreement",
            format!(
                "the key document and DNS agree ({} key{} in DNS, {} in the document)",
                dns_keys.len(),
                if dns_keys.len() == 1 { "" } else { "s" },
                doc.keys.len()
            ),
        ),
        Err(mismatch) => {
            let list: Vec<String> = mismatch
                .differences
                .iter()
                .map(ToString::to_string)
                .collect();
            Check::fail(
                "keydoc.agreement",
                format!(
                    "the key document and DNS disagree: {}; peers refuse {fqdn} until both \
                     channels list the same keys (publish the DNS lines, or let mdgate re-sign \
                     the document)",
                    list.join("; ")
                ),
            )
            .label(mismatch.reason())
            .with("differences", list)
        }
    });
    (checks, Some(doc))
}

/// The DNS records of the index's selectors, for [`compare`].
fn dns_keys(keys: &PeerKeys) -> Vec<DnsKey> {
    keys.records
        .iter()
        .filter_map(|entry| {
            let record = entry.record.as_ref().ok()?;
            Some(DnsKey {
                selector: entry.selector.to_string(),
                usage: match record.usage {
                    KeyUse::Tls => KeyUsage::Tls,
                    KeyUse::Sig => KeyUsage::Sig,
                },
                alg: match record.algorithm {
                    record::KeyAlgorithm::P256 => KeyAlg::P256,
                    record::KeyAlgorithm::Ed25519 => KeyAlg::Ed25519,
                },
                material: match &record.material {
                    KeyMaterial::Spki(der) => DnsMaterial::Spki(der.clone()),
                    KeyMaterial::SpkiSha256(h) => DnsMaterial::SpkiSha256(*h),
                    KeyMaterial::Revoked => DnsMaterial::Revoked,
                },
            })
        })
        .collect()
}

// ------------------------------------------------------------------ small helpers

fn fmt_unix(secs: i64) -> String {
    u64::try_from(secs)
        .map(|s| httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(s)))
        .unwrap_or_else(|_| secs.to_string())
}

fn short(hash: &[u8; 32]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(hash);
    format!("{}…", &b64[..12])
}

fn join(selectors: &[Selector]) -> String {
    selectors
        .iter()
        .map(Selector::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn join_refs(selectors: &[&Selector]) -> String {
    selectors
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first line of the human output.
pub fn header(config: &Config, report: &Report) -> String {
    format!(
        "mdgate check-peer {} as {} (resolvers: {}; DNSSEC {})",
        report.fqdn,
        config.server.fqdn,
        resolvers(&config.dns),
        match config.dns.dnssec {
            DnssecMode::Off => "off",
            DnssecMode::Validate => "validate",
        }
    )
}

#[cfg(test)]
mod tests;
