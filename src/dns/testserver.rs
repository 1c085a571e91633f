//! An in-process authoritative DNS server on loopback, for tests and for
//! `mdgate demo`. **Not for production**: it answers from memory, signs
//! with keys it generates at start, and has switches to misbehave.
//!
//! It serves one or more zones over UDP and TCP on `127.0.0.1:<port>`
//! (port 0 at start, kept across [`TestDnsServer::stop`] and
//! [`TestDnsServer::restart`]). hickory-server provides the sockets and
//! the message codec; the answers come from a small responder here:
//! exact matches only (no wildcards, no CNAME), NODATA and NXDOMAIN with
//! the zone's SOA, and for signed zones RRSIGs on every RRset and NSEC
//! denial of existence (RFC 4035 §3.1.3: the NSEC covering the name and
//! the one covering the wildcard at the closest encloser).
//!
//! Why not hickory-server's own zone store: its 0.26 in-memory DNSSEC
//! answers fail validation by hickory's own resolver (NSEC: the wildcard
//! proof is taken at the parent of the query name rather than the closest
//! encloser; NSEC3: a denial record is attached to positive answers, and
//! re-signing trips a debug assertion). The responder is a couple of
//! hundred lines and does what RFC 4035 says.
//!
//! Zones of one server may nest: the parent then holds the delegation (NS
//! and, for a signed child, a DS) and answers DS queries at the cut, so a
//! resolver anchored on the parent alone can prove a signed child secure
//! and an unsigned one insecure, as it would from the root.
//!
//! The handler also
//!
//! * counts the queries it receives per name and type (to prove that the
//!   resolver sends one query however many callers wait),
//! * can answer SERVFAIL to everything, or drop every query (a timeout),
//!   per [`Mode`].
//!
//! Records change at runtime ([`TestDnsServer::set_txt`],
//! [`TestDnsServer::remove`], [`TestDnsServer::set_tlsa`],
//! [`TestDnsServer::set_a`]); a signed zone
//! (from [`TestDnsServerBuilder::signed_zone`], with a fresh Ed25519 key)
//! is re-signed after every change. [`TestDnsServer::trust_anchor`] gives
//! the DNSKEY line a validating resolver needs in its
//! `trust_anchor_file`. [`TestDnsServer::tamper_txt`] changes a record
//! without re-signing, so its old signature no longer matches: a
//! validating resolver must call that answer bogus.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::dnssec::crypto::Ed25519SigningKey;
use hickory_proto::dnssec::rdata::{DNSSECRData, DNSKEY, DS, NSEC, RRSIG};
use hickory_proto::dnssec::{DigestType, DnssecSigner, SigningKey as _, Verifier as _};
use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::tlsa::{CertUsage, Matching, Selector as TlsaSelector};
use hickory_proto::rr::rdata::{NS, SOA, TLSA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordSet, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

use super::record::Tlsa;

/// How long signatures made by the test server are valid.
const SIGNATURE_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Signatures start this long ago, for clock skew.
const SIGNATURE_BACKDATE: u64 = 3600;
/// The TTL of records written when none was set with [`TestDnsServer::set_ttl`].
pub const DEFAULT_TTL: u32 = 300;
/// The SOA minimum: the TTL of negative answers and NSEC records.
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
        let zones = self
            .zones
            .iter()
            .map(|(origin, signed)| Zone::new(origin, *signed))
            .collect::<Result<Vec<_>, _>>()?;
        delegate(&zones)?;
        let shared = Arc::new(Shared {
            zones,
            mode: AtomicU8::new(Mode::Answer as u8),
            counts: Mutex::new(HashMap::new()),
            ttl: AtomicU32::new(DEFAULT_TTL),
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
    mode: AtomicU8,
    /// Queries received, by (lower-case absolute name, type).
    counts: Mutex<HashMap<(String, RecordType), u64>>,
    /// TTL of records written from now on.
    ttl: AtomicU32,
}

struct Zone {
    origin: Name,
    /// The zone's key and its signer (`None`: unsigned).
    key: Option<(DNSKEY, DnssecSigner)>,
    data: Mutex<ZoneData>,
}

/// The zone's RRsets by owner name (canonical order) and type, and for a
/// signed zone the NSEC chain; every RRset carries its RRSIGs.
#[derive(Default)]
struct ZoneData {
    rrsets: BTreeMap<Name, BTreeMap<RecordType, RecordSet>>,
    nsec: BTreeMap<Name, RecordSet>,
}

/// The request handler: counts, applies the [`Mode`], then answers.
struct Handler(Arc<Shared>);

/// An answer before encoding.
struct Answer {
    code: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
}

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
        let rdatas = records.iter().map(|strings| txt(strings)).collect();
        self.replace(name, RecordType::TXT, rdatas)
    }

    /// Replaces the TLSA RRset at `name`.
    pub async fn set_tlsa(&self, name: &str, records: &[Tlsa]) -> Result<(), TestServerError> {
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
        self.replace(name, RecordType::TLSA, rdatas)
    }

    /// Replaces the A and AAAA RRsets at `name` with these addresses (an
    /// empty list removes both).
    pub async fn set_addrs(
        &self,
        name: &str,
        addrs: &[std::net::IpAddr],
    ) -> Result<(), TestServerError> {
        use hickory_proto::rr::rdata::{A, AAAA};
        use std::net::IpAddr;
        let v4 = addrs
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(v4) => Some(RData::A(A(*v4))),
                IpAddr::V6(_) => None,
            })
            .collect();
        let v6 = addrs
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V6(v6) => Some(RData::AAAA(AAAA(*v6))),
                IpAddr::V4(_) => None,
            })
            .collect();
        self.replace(name, RecordType::A, v4)?;
        self.replace(name, RecordType::AAAA, v6)
    }

    /// Replaces the A RRset at `name` with one address.
    pub async fn set_a(&self, name: &str, ip: Ipv4Addr) -> Result<(), TestServerError> {
        self.set_addrs(name, &[ip.into()]).await
    }

    /// Removes every record at `name`.
    pub async fn remove(&self, name: &str) -> Result<(), TestServerError> {
        let name = parse_name(name)?;
        let zone = self.zone_of(&name)?;
        let mut data = zone.lock();
        data.rrsets.remove(&name);
        zone.sign(&mut data)
    }

    /// Replaces the TXT data at `name` but keeps the old signatures, as an
    /// on-path attacker would: a validating resolver sees a bogus answer.
    /// The next ordinary change re-signs the zone.
    pub async fn tamper_txt(&self, name: &str, strings: &[&str]) -> Result<(), TestServerError> {
        let name = parse_name(name)?;
        let zone = self.zone_of(&name)?;
        if zone.key.is_none() {
            return Err(TestServerError::NotSigned(zone.origin.to_string()));
        }
        let ttl = self.shared.ttl.load(Ordering::Relaxed);
        let mut data = zone.lock();
        let types = data.rrsets.entry(name.clone()).or_default();
        let rrsigs = types
            .get(&RecordType::TXT)
            .map(|set| set.rrsigs().to_vec())
            .unwrap_or_default();
        let mut set = RecordSet::with_ttl(name.clone(), RecordType::TXT, ttl);
        set.set_records(vec![Record::from_rdata(name, ttl, txt(strings))]);
        set.set_rrsigs(rrsigs);
        types.insert(RecordType::TXT, set);
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
        let (dnskey, _) = zone
            .key
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
        lock(&self.shared.counts).clone()
    }

    pub fn reset_counts(&self) {
        lock(&self.shared.counts).clear();
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
        self.shared
            .zone_of(name)
            .ok_or_else(|| TestServerError::NoZone(name.to_string()))
    }

    fn replace(
        &self,
        name: &str,
        record_type: RecordType,
        rdatas: Vec<RData>,
    ) -> Result<(), TestServerError> {
        let name = parse_name(name)?;
        let zone = self.zone_of(&name)?;
        let ttl = self.shared.ttl.load(Ordering::Relaxed);
        let mut data = zone.lock();
        set_rrset(&mut data, &name, record_type, ttl, rdatas);
        zone.sign(&mut data)
    }
}

impl Shared {
    /// The zone with the longest origin that contains `name`.
    fn zone_of(&self, name: &Name) -> Option<&Zone> {
        self.zones
            .iter()
            .filter(|z| z.origin.zone_of(name))
            .max_by_key(|z| z.origin.num_labels())
    }

    /// The zone that answers a query: as [`Self::zone_of`], except that a
    /// DS query at a zone cut goes to the parent side (RFC 4035 §3.1.4.1).
    fn zone_for(&self, name: &Name, qtype: RecordType) -> Option<&Zone> {
        if qtype == RecordType::DS {
            let parent = self
                .zones
                .iter()
                .filter(|z| z.origin.zone_of(name) && z.origin != *name)
                .max_by_key(|z| z.origin.num_labels());
            if self.zones.iter().any(|z| z.origin == *name) {
                return parent;
            }
        }
        self.zone_of(name)
    }
}

/// Where one zone of the server is the parent of another, puts the
/// delegation in the parent: NS at the cut and, for a signed child, its DS
/// (so the child can be validated from the parent's anchor), and re-signs.
/// An unsigned child under a signed parent gets no DS, which the parent's
/// NSEC proves: a validator can then tell the child *insecure*.
fn delegate(zones: &[Zone]) -> Result<(), TestServerError> {
    for child in zones {
        let parent = zones
            .iter()
            .filter(|z| z.origin.zone_of(&child.origin) && z.origin != child.origin)
            .max_by_key(|z| z.origin.num_labels());
        let Some(parent) = parent else { continue };
        let ns = Name::from_ascii("ns")
            .and_then(|n| n.append_domain(&child.origin))
            .map_err(|_| TestServerError::Name(child.origin.to_string()))?;
        let mut data = parent.lock();
        set_rrset(
            &mut data,
            &child.origin,
            RecordType::NS,
            3600,
            vec![RData::NS(NS(ns))],
        );
        if let Some((dnskey, _)) = &child.key {
            let digest = dnskey
                .to_digest(&child.origin, DigestType::SHA256)
                .map_err(dnssec_error)?;
            let tag = dnskey.calculate_key_tag().map_err(dnssec_error)?;
            let ds = DS::new(
                tag,
                dnskey.algorithm(),
                DigestType::SHA256,
                digest.as_ref().to_vec(),
            );
            set_rrset(
                &mut data,
                &child.origin,
                RecordType::DS,
                3600,
                vec![RData::DNSSEC(DNSSECRData::DS(ds))],
            );
        }
        parent.sign(&mut data)?;
    }
    Ok(())
}

impl Zone {
    fn new(origin: &str, signed: bool) -> Result<Zone, TestServerError> {
        let origin = parse_name(origin)?;
        let child = |label: &str| {
            Name::from_ascii(label)
                .and_then(|n| n.append_domain(&origin))
                .map_err(|_| TestServerError::Name(origin.to_string()))
        };
        let ns = child("ns")?;
        let soa = SOA::new(
            ns.clone(),
            child("hostmaster")?,
            1,
            3600,
            600,
            86400,
            NEGATIVE_TTL,
        );
        let mut data = ZoneData::default();
        set_rrset(
            &mut data,
            &origin,
            RecordType::SOA,
            3600,
            vec![RData::SOA(soa)],
        );
        set_rrset(
            &mut data,
            &origin,
            RecordType::NS,
            3600,
            vec![RData::NS(NS(ns))],
        );
        let key = if signed {
            let pkcs8 = Ed25519SigningKey::generate_pkcs8().map_err(dnssec_error)?;
            let signing = Ed25519SigningKey::from_pkcs8(&pkcs8).map_err(dnssec_error)?;
            let public = signing.to_public_key().map_err(dnssec_error)?;
            // Flags 257: a zone key that is also the secure entry point,
            // the key a trust anchor names. One key signs everything.
            let dnskey = DNSKEY::from_key(&public);
            set_rrset(
                &mut data,
                &origin,
                RecordType::DNSKEY,
                3600,
                vec![RData::DNSSEC(DNSSECRData::DNSKEY(dnskey.clone()))],
            );
            let signer = DnssecSigner::new(
                dnskey.clone(),
                Box::new(signing),
                origin.clone(),
                SIGNATURE_VALIDITY,
            );
            Some((dnskey, signer))
        } else {
            None
        };
        let zone = Zone {
            origin,
            key,
            data: Mutex::new(data),
        };
        {
            let mut data = zone.lock();
            zone.sign(&mut data)?;
        }
        Ok(zone)
    }

    fn lock(&self) -> MutexGuard<'_, ZoneData> {
        lock(&self.data)
    }

    /// Rebuilds the NSEC chain and signs every RRset (signed zones only).
    fn sign(&self, data: &mut ZoneData) -> Result<(), TestServerError> {
        let Some((_, signer)) = &self.key else {
            return Ok(());
        };
        let inception = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs().saturating_sub(SIGNATURE_BACKDATE))
            .unwrap_or(0);
        let inception = i64::try_from(inception)
            .ok()
            .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
            .ok_or_else(|| TestServerError::Dnssec("clock out of range".to_owned()))?;

        // The NSEC chain: every owner name, in canonical order, to the
        // next, the last back to the apex (RFC 4034 §4.1.1).
        let owners: Vec<(Name, Vec<RecordType>)> = data
            .rrsets
            .iter()
            .filter(|(_, types)| !types.is_empty())
            .map(|(name, types)| (name.clone(), types.keys().copied().collect()))
            .collect();
        data.nsec.clear();
        for (i, (owner, types)) in owners.iter().enumerate() {
            let next = owners
                .get(i + 1)
                .map_or_else(|| self.origin.clone(), |(n, _)| n.clone());
            let bitmap = types
                .iter()
                .copied()
                .chain([RecordType::RRSIG, RecordType::NSEC]);
            let mut set = RecordSet::with_ttl(owner.clone(), RecordType::NSEC, NEGATIVE_TTL);
            set.add_rdata(RData::DNSSEC(DNSSECRData::NSEC(NSEC::new(next, bitmap))));
            data.nsec.insert(owner.clone(), set);
        }

        let sets = data
            .rrsets
            .values_mut()
            .flat_map(|types| types.values_mut())
            .chain(data.nsec.values_mut());
        let origin = self.origin.clone();
        for set in sets {
            set.clear_rrsigs();
            // NS at a zone cut belongs to the child; the parent does not
            // sign it (RFC 4035 §2.2).
            if set.record_type() == RecordType::NS && *set.name() != origin {
                continue;
            }
            let rrsig =
                RRSIG::from_rrset(set, DNSClass::IN, inception, signer).map_err(dnssec_error)?;
            let record = Record::from_rdata(
                set.name().clone(),
                set.ttl(),
                RData::DNSSEC(DNSSECRData::RRSIG(rrsig)),
            );
            set.insert_rrsig(record);
        }
        Ok(())
    }

    /// The answer to `qname`/`qtype` (`dnssec`: the query's DO bit).
    fn answer(&self, qname: &Name, qtype: RecordType, dnssec: bool) -> Answer {
        let data = self.lock();
        let signed = dnssec && self.key.is_some();
        let records = |set: &RecordSet| -> Vec<Record> {
            let mut out: Vec<Record> = set.records_without_rrsigs().cloned().collect();
            if signed {
                out.extend(set.rrsigs().iter().cloned());
            }
            out
        };
        let soa = data
            .rrsets
            .get(&self.origin)
            .and_then(|types| types.get(&RecordType::SOA))
            .map(&records)
            .unwrap_or_default();
        let nsec_of = |owner: &Name| data.nsec.get(owner).map(&records);
        // The NSEC whose span (owner, next) contains `name`: the last
        // owner before it in canonical order.
        let covering = |name: &Name| {
            data.nsec
                .range(..name.clone())
                .next_back()
                .map(|(_, set)| records(set))
        };

        if let Some(types) = data.rrsets.get(qname) {
            if let Some(set) = types.get(&qtype) {
                return Answer::ok(records(set));
            }
            // NODATA: the NSEC at the name lists what is there.
            let mut authorities = soa;
            if signed {
                authorities.extend(nsec_of(qname).unwrap_or_default());
            }
            return Answer::negative(ResponseCode::NoError, authorities);
        }

        let exists = |name: &Name| {
            data.rrsets.contains_key(name)
                // An empty non-terminal: a name below it exists (names
                // below sort right after it).
                || data
                    .rrsets
                    .range(name.clone()..)
                    .find(|(n, _)| *n != name)
                    .is_some_and(|(n, _)| name.zone_of(n))
        };
        let mut authorities = soa;
        if exists(qname) {
            // NODATA at an empty non-terminal: the covering NSEC, whose
            // next name lies below the query name, proves it.
            if signed {
                authorities.extend(covering(qname).unwrap_or_default());
            }
            return Answer::negative(ResponseCode::NoError, authorities);
        }
        if signed {
            // NXDOMAIN: no such name, and no wildcard at the closest
            // encloser (RFC 4035 §3.1.3.2).
            let mut encloser = qname.base_name();
            while encloser.num_labels() > self.origin.num_labels() && !exists(&encloser) {
                encloser = encloser.base_name();
            }
            let proof = covering(qname).unwrap_or_default();
            let wildcard_proof = encloser
                .prepend_label("*")
                .ok()
                .and_then(|wildcard| covering(&wildcard))
                .unwrap_or_default();
            authorities.extend(proof.iter().cloned());
            for record in wildcard_proof {
                if !proof.contains(&record) {
                    authorities.push(record);
                }
            }
        }
        Answer::negative(ResponseCode::NXDomain, authorities)
    }
}

impl Answer {
    fn ok(answers: Vec<Record>) -> Answer {
        Answer {
            code: ResponseCode::NoError,
            authoritative: true,
            answers,
            authorities: Vec::new(),
        }
    }

    fn negative(code: ResponseCode, authorities: Vec<Record>) -> Answer {
        Answer {
            code,
            authoritative: true,
            answers: Vec::new(),
            authorities,
        }
    }

    fn error(code: ResponseCode) -> Answer {
        Answer {
            code,
            authoritative: false,
            answers: Vec::new(),
            authorities: Vec::new(),
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let query = request.request_info().ok().map(|info| {
            let name: Name = info.query.name().into();
            (name, info.query.query_type())
        });
        if let Some((name, qtype)) = &query {
            let key = (normalise(&name.to_string()), *qtype);
            *lock(&self.0.counts).entry(key).or_default() += 1;
        }
        let mode = self.0.mode.load(Ordering::Relaxed);
        if mode == Mode::Drop as u8 {
            return unanswered(request);
        }
        let dnssec = request
            .edns
            .as_ref()
            .is_some_and(|edns| edns.flags().dnssec_ok);
        let answer = match (&query, request.metadata.op_code) {
            _ if mode == Mode::ServFail as u8 => Answer::error(ResponseCode::ServFail),
            (Some((name, qtype)), OpCode::Query) => match self.0.zone_for(name, *qtype) {
                Some(zone) => zone.answer(name, *qtype, dnssec),
                None => Answer::error(ResponseCode::Refused),
            },
            (None, _) => Answer::error(ResponseCode::FormErr),
            (Some(_), _) => Answer::error(ResponseCode::NotImp),
        };

        let mut metadata = Metadata::new(
            request.metadata.id,
            MessageType::Response,
            request.metadata.op_code,
        );
        metadata.response_code = answer.code;
        metadata.authoritative = answer.authoritative;
        metadata.recursion_desired = request.metadata.recursion_desired;
        let edns = request.edns.as_ref().map(|_| {
            let mut edns = Edns::new();
            edns.set_dnssec_ok(dnssec);
            edns.set_max_payload(1232);
            edns
        });
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            answer.answers.iter(),
            answer.authorities.iter(),
            std::iter::empty(),
            std::iter::empty(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(_) => unanswered(request),
        }
    }
}

/// The summary hickory-server wants back when nothing was sent.
fn unanswered(request: &Request) -> ResponseInfo {
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

fn set_rrset(
    data: &mut ZoneData,
    name: &Name,
    record_type: RecordType,
    ttl: u32,
    rdatas: Vec<RData>,
) {
    let types = data.rrsets.entry(name.clone()).or_default();
    if rdatas.is_empty() {
        types.remove(&record_type);
    } else {
        let mut set = RecordSet::with_ttl(name.clone(), record_type, ttl);
        for rdata in rdatas {
            set.add_rdata(rdata);
        }
        types.insert(record_type, set);
    }
    if types.is_empty() {
        data.rrsets.remove(name);
    }
}

fn txt(strings: &[&str]) -> RData {
    RData::TXT(TXT::new(strings.iter().map(|s| (*s).to_owned()).collect()))
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
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(TestServerError::Bind)?;
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

/// A poisoned lock still holds consistent data here (every update is a
/// single insert or removal), so it is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
