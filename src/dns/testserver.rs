//! An in-process authoritative DNS server on loopback, for tests and for
//! `mdgate demo`. **Not for production**: it answers from memory, signs
//! with keys it generates at start, and has switches to misbehave.
//!
//! It serves one or more zones over UDP and TCP on `127.0.0.1:<port>`
//! (port 0 at start, kept across [`TestDnsServer::stop`] and
//! [`TestDnsServer::restart`]), built on hickory-server's in-memory zone
//! handler and catalog. Around the catalog sits a small request handler
//! that
//!
//! * counts the queries it receives per name and type (to prove that the
//!   resolver sends one query however many callers wait),
//! * can answer SERVFAIL to everything, or drop every query (a timeout),
//!   per [`Mode`].
//!
//! Records change at runtime ([`TestDnsServer::set_txt`],
//! [`TestDnsServer::remove`], [`TestDnsServer::set_tlsa`]). A zone added
//! with [`TestDnsServerBuilder::signed_zone`] is DNSSEC-signed with a fresh
//! Ed25519 key (NSEC for denial of existence) and re-signed after every
//! change; [`TestDnsServer::trust_anchor`] gives the DNSKEY line a
//! validating resolver needs in its `trust_anchor_file`.
//! [`TestDnsServer::tamper_txt`] changes a record without re-signing, so
//! its old signature no longer matches: a validating resolver must call
//! that answer bogus.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::dnssec::crypto::Ed25519SigningKey;
use hickory_proto::dnssec::rdata::DNSKEY;
use hickory_proto::dnssec::{DnssecSigner, SigningKey as _};
use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, ResponseCode};
use hickory_proto::rr::rdata::tlsa::{CertUsage, Matching, Selector as TlsaSelector};
use hickory_proto::rr::rdata::{NS, SOA, TLSA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_server::dnssec::NxProofKind;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{
    AxfrPolicy, Catalog, DnssecZoneHandler as _, MessageResponseBuilder, ZoneHandler, ZoneType,
};
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

use super::record::Tlsa;

/// How long signatures made by the test server are valid.
const SIGNATURE_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// The TTL of records written when none was set with [`TestDnsServer::set_ttl`].
pub const DEFAULT_TTL: u32 = 300;
/// The SOA minimum, which is also the negative-answer TTL.
const NEGATIVE_TTL: u32 = 60;

/// Errors of the test server (set-up, bad names, signing).
#[derive(Debug, thiserror::Error)]
pub enum TestServerError {
    #[error("cannot bind the test DNS server on loopback: {0}")]
    Bind(#[source] std::io::Error),
    #[error("invalid DNS name {0:?}")]
    Name(String),
    #[error("{0:?} is in no zone of this server")]
    NoZone(String),
    #[error("DNSSEC signing failed: {0}")]
    Dnssec(String),
    #[error("zone {0:?} is not signed")]
    NotSigned(String),
    #[error("cannot write the trust anchor: {0}")]
    Write(#[source] std::io::Error),
}

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers from its zones (the default).
    Answer,
    /// Answers SERVFAIL to every query.
    ServFail,
    /// Drops every query unanswered, so the client times out.
    Drop,
}

/// Collects the zones of a [`TestDnsServer`].
#[derive(Debug, Default)]
pub struct TestDnsServerBuilder {
    zones: Vec<(String, bool)>,
}

impl TestDnsServerBuilder {
    /// An unsigned zone.
    pub fn zone(mut self, origin: &str) -> Self {
        self.zones.push((origin.to_owned(), false));
        self
    }

    /// A zone signed with a fresh Ed25519 key (NSEC denial).
    pub fn signed_zone(mut self, origin: &str) -> Self {
        self.zones.push((origin.to_owned(), true));
        self
    }

    /// Builds the zones and starts answering on `127.0.0.1:<random port>`.
    pub async fn start(self) -> Result<TestDnsServer, TestServerError> {
        let mut zones = Vec::new();
        let mut catalog = Catalog::new();
        for (origin, signed) in self.zones {
            let zone = Zone::new(&origin, signed).await?;
            let handler: Arc<dyn ZoneHandler> = zone.handler.clone();
            catalog.upsert(LowerName::new(&zone.origin), vec![handler]);
            zones.push(zone);
        }
        let shared = Arc::new(Shared {
            zones,
            catalog,
            mode: AtomicU8::new(Mode::Answer as u8),
            counts: Mutex::new(HashMap::new()),
            ttl: std::sync::atomic::AtomicU32::new(DEFAULT_TTL),
        });
        let (server, addr) = bind_any(&shared).await?;
        Ok(TestDnsServer {
            shared,
            addr,
            server: tokio::sync::Mutex::new(Some(server)),
        })
    }
}

/// The running (or stopped) test server. Dropping it stops it.
pub struct TestDnsServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: tokio::sync::Mutex<Option<Server<Handler>>>,
}

struct Shared {
    zones: Vec<Zone>,
    catalog: Catalog,
    mode: AtomicU8,
    /// Queries received, by (lower-case absolute name, type).
    counts: Mutex<HashMap<(String, RecordType), u64>>,
    /// TTL of records written from now on.
    ttl: std::sync::atomic::AtomicU32,
}

struct Zone {
    origin: Name,
    handler: Arc<InMemoryZoneHandler>,
    /// The zone's key (`None`: unsigned).
    dnskey: Option<DNSKEY>,
}

/// The request handler: counts, applies the [`Mode`], then lets the
/// catalog answer.
struct Handler(Arc<Shared>);

impl TestDnsServer {
    pub fn builder() -> TestDnsServerBuilder {
        TestDnsServerBuilder::default()
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `"127.0.0.1:<port>"`, as `[dns] nameservers` takes it.
    pub fn nameserver(&self) -> String {
        self.addr.to_string()
    }

    /// TTL of the records written after this call.
    pub fn set_ttl(&self, ttl: u32) {
        self.shared.ttl.store(ttl, Ordering::Relaxed);
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// Replaces the TXT RRset at `name` with one record made of `strings`.
    pub async fn set_txt(&self, name: &str, strings: &[&str]) -> Result<(), TestServerError> {
        self.set_txt_records(name, &[strings]).await
    }

    /// Replaces the TXT RRset at `name` with several records.
    pub async fn set_txt_records(
        &self,
        name: &str,
        records: &[&[&str]],
    ) -> Result<(), TestServerError> {
        let name = parse_name(name)?;
        let rdatas = records
            .iter()
            .map(|strings| RData::TXT(TXT::new(strings.iter().map(|s| (*s).to_owned()).collect())))
            .collect();
        self.replace(&name, RecordType::TXT, rdatas).await
    }

    /// Replaces the TLSA RRset at `name`.
    pub async fn set_tlsa(&self, name: &str, records: &[Tlsa]) -> Result<(), TestServerError> {
        let name = parse_name(name)?;
        let rdatas = records
            .iter()
            .map(|t| {
                RData::TLSA(TLSA::new(
                    CertUsage::from(t.usage),
                    TlsaSelector::from(t.selector),
                    Matching::from(t.matching),
                    t.data.clone(),
                ))
            })
            .collect();
        self.replace(&name, RecordType::TLSA, rdatas).await
    }

    /// Removes every record at `name`.
    pub async fn remove(&self, name: &str) -> Result<(), TestServerError> {
        let name = parse_name(name)?;
        let zone = self.zone_of(&name)?;
        {
            let lower = LowerName::new(&name);
            let mut records = zone.handler.records_mut().await;
            records.retain(|key, _| key.name != lower);
        }
        zone.resign().await
    }

    /// Replaces the TXT data at `name` but keeps the old signatures, as an
    /// on-path attacker would: a validating resolver sees a bogus answer.
    /// Re-signing happens at the next ordinary change of the zone.
    pub async fn tamper_txt(&self, name: &str, strings: &[&str]) -> Result<(), TestServerError> {
        let name = parse_name(name)?;
        let zone = self.zone_of(&name)?;
        if zone.dnskey.is_none() {
            return Err(TestServerError::NotSigned(zone.origin.to_string()));
        }
        let ttl = self.shared.ttl.load(Ordering::Relaxed);
        let key = RrKey::new(LowerName::new(&name), RecordType::TXT);
        let mut records = zone.handler.records_mut().await;
        let rrsigs = records
            .get(&key)
            .map(|set| set.rrsigs().to_vec())
            .unwrap_or_default();
        let mut set = RecordSet::with_ttl(name.clone(), RecordType::TXT, ttl);
        set.set_records(vec![Record::from_rdata(
            name,
            ttl,
            RData::TXT(TXT::new(strings.iter().map(|s| (*s).to_owned()).collect())),
        )]);
        set.set_rrsigs(rrsigs);
        records.insert(key, Arc::new(set));
        Ok(())
    }

    /// The trust anchor of a signed zone: its DNSKEY as a zone-file line,
    /// the format of `[dns] trust_anchor_file`.
    pub fn trust_anchor(&self, origin: &str) -> Result<String, TestServerError> {
        let name = parse_name(origin)?;
        let zone = self
            .shared
            .zones
            .iter()
            .find(|z| z.origin == name)
            .ok_or_else(|| TestServerError::NoZone(origin.to_owned()))?;
        let dnskey = zone
            .dnskey
            .as_ref()
            .ok_or_else(|| TestServerError::NotSigned(origin.to_owned()))?;
        Ok(format!("{} 3600 IN DNSKEY {dnskey}\n", zone.origin))
    }

    /// Writes [`Self::trust_anchor`] to a file.
    pub fn write_trust_anchor(&self, origin: &str, path: &Path) -> Result<(), TestServerError> {
        std::fs::write(path, self.trust_anchor(origin)?).map_err(TestServerError::Write)
    }

    /// Queries received for `name`, all types together.
    pub fn query_count(&self, name: &str) -> u64 {
        let name = normalise(name);
        self.counts()
            .iter()
            .filter(|((n, _), _)| *n == name)
            .map(|(_, c)| *c)
            .sum()
    }

    /// Queries received for `name` of one type (`"TXT"`, `"TLSA"`, ...).
    pub fn query_count_of(&self, name: &str, record_type: &str) -> u64 {
        let name = normalise(name);
        self.counts()
            .iter()
            .filter(|((n, t), _)| *n == name && t.to_string().eq_ignore_ascii_case(record_type))
            .map(|(_, c)| *c)
            .sum()
    }

    /// Every query received so far, by name and type.
    pub fn counts(&self) -> HashMap<(String, RecordType), u64> {
        match self.shared.counts.lock() {
            Ok(counts) => counts.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn reset_counts(&self) {
        match self.shared.counts.lock() {
            Ok(mut counts) => counts.clear(),
            Err(poisoned) => poisoned.into_inner().clear(),
        }
    }

    /// Stops answering: both sockets are closed (queries get ICMP port
    /// unreachable or a TCP reset). The zones are kept.
    pub async fn stop(&self) {
        let mut server = self.server.lock().await;
        if let Some(mut running) = server.take() {
            // An error here is a listener task that had already failed;
            // the sockets are closed either way.
            let _ = running.shutdown_gracefully().await;
        }
    }

    /// Starts answering again on the same port.
    pub async fn restart(&self) -> Result<(), TestServerError> {
        let mut server = self.server.lock().await;
        if server.is_none() {
            *server = Some(bind(&self.shared, self.addr).await?);
        }
        Ok(())
    }

    fn zone_of(&self, name: &Name) -> Result<&Zone, TestServerError> {
        // The longest origin that contains the name.
        self.shared
            .zones
            .iter()
            .filter(|z| z.origin.zone_of(name))
            .max_by_key(|z| z.origin.num_labels())
            .ok_or_else(|| TestServerError::NoZone(name.to_string()))
    }

    async fn replace(
        &self,
        name: &Name,
        record_type: RecordType,
        rdatas: Vec<RData>,
    ) -> Result<(), TestServerError> {
        let zone = self.zone_of(name)?;
        let ttl = self.shared.ttl.load(Ordering::Relaxed);
        {
            let mut records = zone.handler.records_mut().await;
            let key = RrKey::new(LowerName::new(name), record_type);
            if rdatas.is_empty() {
                records.remove(&key);
            } else {
                let mut set = RecordSet::with_ttl(name.clone(), record_type, ttl);
                for rdata in rdatas {
                    set.add_rdata(rdata);
                }
                records.insert(key, Arc::new(set));
            }
        }
        zone.resign().await
    }
}

impl Zone {
    async fn new(origin: &str, signed: bool) -> Result<Zone, TestServerError> {
        let origin = parse_name(origin)?;
        let nx_proof = signed.then_some(NxProofKind::Nsec);
        let handler = InMemoryZoneHandler::empty(
            origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
            nx_proof,
        );
        let ns = Name::from_ascii("ns")
            .and_then(|ns| ns.append_domain(&origin))
            .map_err(|_| TestServerError::Name(origin.to_string()))?;
        let hostmaster = Name::from_ascii("hostmaster")
            .and_then(|h| h.append_domain(&origin))
            .map_err(|_| TestServerError::Name(origin.to_string()))?;
        let soa = SOA::new(ns.clone(), hostmaster, 1, 3600, 600, 86400, NEGATIVE_TTL);
        handler
            .upsert(
                Record::from_rdata(origin.clone(), 3600, RData::SOA(soa)),
                1,
            )
            .await;
        handler
            .upsert(Record::from_rdata(origin.clone(), 3600, RData::NS(NS(ns))), 1)
            .await;
        let handler = Arc::new(handler);
        let dnskey = if signed {
            let pkcs8 = Ed25519SigningKey::generate_pkcs8().map_err(dnssec_error)?;
            let key = Ed25519SigningKey::from_pkcs8(&pkcs8).map_err(dnssec_error)?;
            let public = key.to_public_key().map_err(dnssec_error)?;
            // Flags 257: a zone key that is also the secure entry point,
            // the key a trust anchor names.
            let dnskey = DNSKEY::from_key(&public);
            let signer = DnssecSigner::new(
                dnskey.clone(),
                Box::new(key),
                origin.clone(),
                SIGNATURE_VALIDITY,
            );
            handler
                .add_zone_signing_key(signer)
                .await
                .map_err(dnssec_error)?;
            Some(dnskey)
        } else {
            None
        };
        let zone = Zone {
            origin,
            handler,
            dnskey,
        };
        zone.resign().await?;
        Ok(zone)
    }

    /// Regenerates NSEC records and signatures (signed zones only).
    async fn resign(&self) -> Result<(), TestServerError> {
        if self.dnskey.is_some() {
            self.handler.secure_zone().await.map_err(dnssec_error)?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        if let Ok(info) = request.request_info() {
            let key = (normalise(&info.query.name().to_string()), info.query.query_type());
            match self.0.counts.lock() {
                Ok(mut counts) => *counts.entry(key).or_default() += 1,
                Err(poisoned) => *poisoned.into_inner().entry(key).or_default() += 1,
            }
        }
        match self.0.mode.load(Ordering::Relaxed) {
            m if m == Mode::ServFail as u8 => {
                let response = MessageResponseBuilder::new(&request.queries, None)
                    .error_msg(&request.metadata, ResponseCode::ServFail);
                match response_handle.send_response(response).await {
                    Ok(info) => info,
                    Err(_) => failed(request),
                }
            }
            m if m == Mode::Drop as u8 => failed(request),
            _ => {
                self.0
                    .catalog
                    .handle_request::<R, T>(request, response_handle)
                    .await
            }
        }
    }
}

/// The summary hickory-server wants back when nothing was sent.
fn failed(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

/// Binds UDP on a free loopback port and TCP on the same port (retrying
/// when the TCP port happens to be taken).
async fn bind_any(shared: &Arc<Shared>) -> Result<(Server<Handler>, SocketAddr), TestServerError> {
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(TestServerError::Bind)?;
        let addr = udp.local_addr().map_err(TestServerError::Bind)?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((serve(shared, udp, tcp), addr)),
            Err(e) => last = Some(e),
        }
    }
    Err(TestServerError::Bind(last.unwrap_or_else(|| {
        std::io::Error::other("no free port pair on loopback")
    })))
}

async fn bind(shared: &Arc<Shared>, addr: SocketAddr) -> Result<Server<Handler>, TestServerError> {
    let udp = UdpSocket::bind(addr).await.map_err(TestServerError::Bind)?;
    // tokio sets SO_REUSEADDR on listeners, so a port left in TIME_WAIT by
    // the previous run can be bound again at once.
    let tcp = TcpListener::bind(addr).await.map_err(TestServerError::Bind)?;
    Ok(serve(shared, udp, tcp))
}

fn serve(shared: &Arc<Shared>, udp: UdpSocket, tcp: TcpListener) -> Server<Handler> {
    let mut server = Server::new(Handler(shared.clone()));
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 64);
    server
}

fn parse_name(text: &str) -> Result<Name, TestServerError> {
    let mut name = Name::from_ascii(text).map_err(|_| TestServerError::Name(text.to_owned()))?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// Lower case with a trailing dot, the key of the query counts.
fn normalise(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with('.') {
        lower
    } else {
        format!("{lower}.")
    }
}

fn dnssec_error(e: impl std::fmt::Display) -> TestServerError {
    TestServerError::Dnssec(e.to_string())
}
