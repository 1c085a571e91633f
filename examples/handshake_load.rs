//! The load generator and driver of `benches/handshake.sh`: full and
//! resumed mutual-TLS handshakes per second, and requests per second on
//! kept-alive connections, against mdgate's federation listener and
//! against nginx and HAProxy doing the same job, in one run.
//!
//! Two subcommands:
//!
//! * `dns`: an authoritative DNS server on loopback (mdgate's
//!   `dns::testserver`) publishing `_mdgate` key records for the given
//!   client certificates, so an mdgate with `[federation.trust] dns = true`
//!   can admit them. Runs until killed.
//! * `run`: the measurement. For every phase (`full`, `resumed`,
//!   `keepalive`) and every target, `--conns` tasks on one current-thread
//!   tokio runtime keep connections busy for `--warmup` + `--duration`
//!   seconds; only what completes inside the recording window counts.
//!   The CPU of the target's processes, of this process and of both cores
//!   is read from `/proc` at the edges of the window, and mdgate's own
//!   counters (DNS cache outcomes and lookups) from its `/metrics`.
//!
//! One operation of the `full` and `resumed` phases is: TCP connect, TLS 1.3
//! handshake with the client certificate (X25519, TLS_AES_256_GCM_SHA384,
//! ALPN http/1.1), `GET <path>` with `Connection: close`, the whole
//! response, and the server's close. The client does not verify the
//! server's certificate chain or signature during the load (one checked
//! connection per target before the load does), so its own cost per
//! handshake stays well below the server's.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, HandshakeKind, RootCertStore, SignatureScheme};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Parser)]
#[command(about = "mTLS handshake and keep-alive load for benches/handshake.sh")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve `_mdgate` records for client certificates until killed.
    Dns(DnsArgs),
    /// Run every phase against every target and write the results.
    Run(Box<RunArgs>),
}

#[derive(clap::Args)]
struct DnsArgs {
    /// The zone served (the peers' names must be inside it).
    #[arg(long)]
    zone: String,
    /// FQDN=CERT.pem: publish the certificate's key as the peer's TLS key.
    #[arg(long)]
    publish: Vec<String>,
    /// TTL of the records, in seconds.
    #[arg(long, default_value_t = 20)]
    ttl: u32,
    /// Written with "ip:port" once the server answers.
    #[arg(long)]
    addr_file: PathBuf,
}

#[derive(clap::Args)]
struct RunArgs {
    /// name=N,addr=IP:PORT,pid=PID[,admin=IP:PORT]; repeatable. The pid's
    /// children count as the target's too (nginx workers).
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// CA bundle that issued the servers' certificates (for the check).
    #[arg(long)]
    ca: PathBuf,
    /// The client certificate chain and key every connection presents.
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    /// A certificate for the same name whose key DNS does not publish.
    #[arg(long)]
    unknown_cert: Option<PathBuf>,
    #[arg(long)]
    unknown_key: Option<PathBuf>,
    /// Target that gets the unknown-key phase (trusting DNS).
    #[arg(long, default_value = "mdgate-dns")]
    unknown_target: String,
    /// SNI and Host of every request.
    #[arg(long)]
    sni: String,
    #[arg(long, default_value = "/federation/v1/identity")]
    path: String,
    /// Phases, in order.
    #[arg(long, default_value = "full resumed keepalive")]
    phases: String,
    /// Concurrent connections of the full and resumed phases.
    #[arg(long, default_value_t = 32)]
    conns: usize,
    /// Kept-alive connections of the keepalive phase.
    #[arg(long, default_value_t = 32)]
    ka_conns: usize,
    /// Seconds recorded per phase.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the recording window opens.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds of the unknown-key phase (0: skip it).
    #[arg(long, default_value_t = 35.0)]
    unknown_duration: f64,
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// The target every figure is divided by.
    #[arg(long, default_value = "nginx")]
    baseline: String,
    /// "A/B": targets whose rates are compared (A's DNS counters are
    /// reported too); repeatable.
    #[arg(long = "pair", default_values_t = ["mdgate-dns/mdgate-ca".to_owned(), "mdgate-dns/mdgate-pin".to_owned()])]
    pairs: Vec<String>,
    #[arg(long, default_value_t = 1)]
    server_cpu: usize,
    #[arg(long, default_value_t = 0)]
    loadgen_cpu: usize,
    /// Seconds to wait for both cores to go quiet before an attempt.
    #[arg(long, default_value_t = 300.0)]
    quiet_max: f64,
    /// A core is quiet below this % busy.
    #[arg(long, default_value_t = 10.0)]
    quiet_busy: f64,
    /// An attempt is repeated when others used more than this % of a core.
    #[arg(long, default_value_t = 5.0)]
    foreign_max: f64,
    #[arg(long, default_value_t = 3)]
    retries: usize,
    /// Text about the machine and versions, copied into results.md.
    #[arg(long)]
    facts: Option<PathBuf>,
    /// Directory for results.json and results.md.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Dns(args) => rt.block_on(serve_dns(args)),
        Cmd::Run(args) => rt.block_on(run(*args)),
    }
}

// --- the DNS server ---------------------------------------------------------

async fn serve_dns(args: DnsArgs) -> anyhow::Result<()> {
    use mdgate::dns::record::{IndexRecord, KeyAlgorithm, KeyRecord, Selector};
    use mdgate::dns::testserver::TestDnsServer;

    let dns = TestDnsServer::builder().zone(&args.zone).start().await?;
    dns.set_ttl(args.ttl);
    for spec in &args.publish {
        let (fqdn, cert) = spec
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--publish wants FQDN=CERT, got {spec:?}"))?;
        let der = CertificateDer::from_pem_file(cert)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)?;
        let record = KeyRecord::tls_hash(KeyAlgorithm::P256, parsed.public_key().raw);
        let index = IndexRecord::new(vec![Selector::parse("tls1")?]);
        dns.set_txt(&format!("_mdgate.{fqdn}."), &[&index.to_string()])
            .await?;
        dns.set_txt(&format!("tls1._mdgate.{fqdn}."), &[&record.to_string()])
            .await?;
    }
    std::fs::write(&args.addr_file, dns.nameserver())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let counts: BTreeMap<String, u64> = dns
        .counts()
        .into_iter()
        .map(|((name, ty), n)| (format!("{name} {ty}"), n))
        .collect();
    eprintln!("[dns] queries answered: {counts:?}");
    Ok(())
}

// --- targets, TLS configs ---------------------------------------------------

#[derive(Clone, Debug)]
struct Target {
    name: String,
    addr: SocketAddr,
    pid: u32,
    admin: Option<SocketAddr>,
}

fn parse_target(spec: &str) -> anyhow::Result<Target> {
    let mut fields = BTreeMap::new();
    for part in spec.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("target field {part:?} is not k=v"))?;
        fields.insert(k, v);
    }
    let get = |k: &str| {
        fields
            .get(k)
            .copied()
            .ok_or_else(|| anyhow::anyhow!("target {spec:?} lacks {k}="))
    };
    Ok(Target {
        name: get("name")?.to_owned(),
        addr: get("addr")?.parse()?,
        pid: get("pid")?.parse()?,
        admin: fields.get("admin").map(|a| a.parse()).transpose()?,
    })
}

/// Accepts the server's certificate and signature unchecked: the load
/// must cost the client as little as possible. `check_target` verifies
/// each server once, fully, before any load.
#[derive(Debug)]
struct Unchecked;

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ECDSA_NISTP256_SHA256]
    }
}

/// A client ticket store for one server name that keeps every ticket it is
/// given (up to a bound), and counts them. rustls's own memory store keeps
/// at most 8 tickets per server, which is fewer than the connections in
/// flight, so bursts of new connections would find it empty and fall back
/// to full handshakes.
#[derive(Debug, Default)]
struct TicketPool {
    tickets: std::sync::Mutex<std::collections::VecDeque<rustls::client::Tls13ClientSessionValue>>,
    given: AtomicU64,
    taken: AtomicU64,
    missed: AtomicU64,
}

const TICKET_POOL_MAX: usize = 4096;

impl rustls::client::ClientSessionStore for TicketPool {
    fn set_kx_hint(&self, _: ServerName<'static>, _: rustls::NamedGroup) {}

    fn kx_hint(&self, _: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        None
    }

    fn set_tls12_session(
        &self,
        _: ServerName<'static>,
        _: rustls::client::Tls12ClientSessionValue,
    ) {
    }

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<rustls::client::Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {}

    fn insert_tls13_ticket(
        &self,
        _: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.given.fetch_add(1, Ordering::Relaxed);
        let mut t = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() == TICKET_POOL_MAX {
            t.pop_front();
        }
        t.push_back(value);
    }

    fn take_tls13_ticket(
        &self,
        _: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        let got = self
            .tickets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_back();
        match got {
            Some(_) => self.taken.fetch_add(1, Ordering::Relaxed),
            None => self.missed.fetch_add(1, Ordering::Relaxed),
        };
        got
    }
}

/// The client's TLS settings, the same against every target.
struct Tls {
    provider: Arc<rustls::crypto::CryptoProvider>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    unknown: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    roots: Arc<RootCertStore>,
}

impl Tls {
    fn load(args: &RunArgs) -> anyhow::Result<Tls> {
        use rustls::crypto::ring;
        let provider = Arc::new(rustls::crypto::CryptoProvider {
            cipher_suites: vec![ring::cipher_suite::TLS13_AES_256_GCM_SHA384],
            kx_groups: vec![ring::kx_group::X25519],
            ..ring::default_provider()
        });
        let chain = CertificateDer::pem_file_iter(&args.cert)?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&args.key)?;
        let unknown = match (&args.unknown_cert, &args.unknown_key) {
            (Some(c), Some(k)) => Some((
                CertificateDer::pem_file_iter(c)?.collect::<Result<Vec<_>, _>>()?,
                PrivateKeyDer::from_pem_file(k)?,
            )),
            _ => None,
        };
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&args.ca)? {
            roots.add(c?)?;
        }
        Ok(Tls {
            provider,
            chain,
            key,
            unknown,
            roots: Arc::new(roots),
        })
    }

    /// `resume`: keep session tickets (a fresh cache, so nothing carries
    /// over from another target); `checked`: verify the server fully.
    fn config(
        &self,
        resume: Option<Arc<TicketPool>>,
        checked: bool,
        unknown: bool,
    ) -> anyhow::Result<Arc<ClientConfig>> {
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?;
        let builder = if checked {
            let verifier = WebPkiServerVerifier::builder_with_provider(
                self.roots.clone(),
                self.provider.clone(),
            )
            .build()?;
            builder.with_webpki_verifier(verifier)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unchecked))
        };
        let (chain, key) = match (unknown, &self.unknown) {
            (true, Some((c, k))) => (c.clone(), k.clone_key()),
            (true, None) => anyhow::bail!("no --unknown-cert"),
            (false, _) => (self.chain.clone(), self.key.clone_key()),
        };
        let mut config = builder.with_client_auth_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = match resume {
            Some(pool) => Resumption::store(pool),
            None => Resumption::disabled(),
        };
        Ok(Arc::new(config))
    }
}

// --- one connection ---------------------------------------------------------

/// Why an operation did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fail {
    Connect,
    Handshake,
    /// The connection closed before a whole response (a peer refused
    /// after the handshake, as mdgate does).
    Closed,
    Status,
    Timeout,
}

impl Fail {
    fn as_str(self) -> &'static str {
        match self {
            Fail::Connect => "connect",
            Fail::Handshake => "handshake",
            Fail::Closed => "closed",
            Fail::Status => "status",
            Fail::Timeout => "timeout",
        }
    }
    const ALL: [Fail; 5] = [
        Fail::Connect,
        Fail::Handshake,
        Fail::Closed,
        Fail::Status,
        Fail::Timeout,
    ];
}

/// Reads one HTTP/1.1 response with a Content-Length body into `buf`;
/// returns the status and the body.
async fn read_response<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> Result<(u16, std::ops::Range<usize>), Fail> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.map_err(|_| Fail::Closed)?;
        if n == 0 {
            return Err(Fail::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(buf) {
            Ok(httparse::Status::Complete(head)) => {
                let status = resp.code.unwrap_or(0);
                let len = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| {
                        std::str::from_utf8(h.value)
                            .ok()?
                            .trim()
                            .parse::<usize>()
                            .ok()
                    })
                    .ok_or(Fail::Status)?;
                while buf.len() < head + len {
                    let n = s.read(&mut chunk).await.map_err(|_| Fail::Closed)?;
                    if n == 0 {
                        return Err(Fail::Closed);
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                return Ok((status, head..head + len));
            }
            Ok(httparse::Status::Partial) => continue,
            Err(_) => return Err(Fail::Status),
        }
    }
}

/// What one checked connection saw (for the report).
#[derive(Debug)]
struct Seen {
    version: String,
    suite: String,
    group: String,
    alpn: String,
    kind: String,
    status: u16,
    body: String,
}

/// A completed operation; `seen` only when asked for (it allocates).
struct Done {
    resumed: bool,
    seen: Option<Seen>,
}

/// Connect, handshake, one request (which asks the server to close), the
/// response, then the server's close.
async fn one_request(
    connector: &TlsConnector,
    addr: SocketAddr,
    name: &ServerName<'static>,
    request: &[u8],
    buf: &mut Vec<u8>,
    detail: bool,
) -> Result<Done, Fail> {
    let tcp = TcpStream::connect(addr).await.map_err(|_| Fail::Connect)?;
    let _ = tcp.set_nodelay(true);
    let mut tls = connector
        .connect(name.clone(), tcp)
        .await
        .map_err(|_| Fail::Handshake)?;
    tls.write_all(request).await.map_err(|_| Fail::Closed)?;
    let (status, body) = read_response(&mut tls, buf).await?;
    let (_, conn) = tls.get_ref();
    let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
    let seen = detail.then(|| Seen {
        version: format!("{:?}", conn.protocol_version()),
        suite: conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default(),
        group: conn
            .negotiated_key_exchange_group()
            .map(|g| format!("{:?}", g.name()))
            .unwrap_or_default(),
        alpn: conn
            .alpn_protocol()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_default(),
        kind: format!("{:?}", conn.handshake_kind()),
        status,
        body: String::from_utf8_lossy(&buf[body]).into_owned(),
    });
    if status != 200 {
        return Err(Fail::Status);
    }
    // `Connection: close`: the server closes; wait for it, so every target
    // ends the connection the same way (server first).
    let mut sink = [0u8; 512];
    while let Ok(n) = tls.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
    Ok(Done { resumed, seen })
}

// --- load -------------------------------------------------------------------

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    resumed: AtomicU64,
    fails: [AtomicU64; 5],
}

impl Counters {
    fn fail(&self, f: Fail) {
        self.fails[f as usize].fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Full,
    Resumed,
    KeepAlive,
    UnknownKey,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Full => "full",
            Phase::Resumed => "resumed",
            Phase::KeepAlive => "keepalive",
            Phase::UnknownKey => "unknown-key",
        }
    }
    fn parse(s: &str) -> anyhow::Result<Phase> {
        Ok(match s {
            "full" => Phase::Full,
            "resumed" => Phase::Resumed,
            "keepalive" => Phase::KeepAlive,
            other => anyhow::bail!("unknown phase {other:?}"),
        })
    }
}

/// One task of the full, resumed or unknown-key phases: new connections
/// until stopped.
async fn connect_loop(
    connector: TlsConnector,
    addr: SocketAddr,
    name: ServerName<'static>,
    request: Arc<[u8]>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    let mut buf = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let op = one_request(&connector, addr, &name, &request, &mut buf, false);
        match tokio::time::timeout(Duration::from_secs(5), op).await {
            Ok(Ok(done)) => {
                counters.ok.fetch_add(1, Ordering::Relaxed);
                if done.resumed {
                    counters.resumed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Err(f)) => {
                counters.fail(f);
                if f == Fail::Connect {
                    // Don't spin on a refused port.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            Err(_) => counters.fail(Fail::Timeout),
        }
    }
}

/// One task of the keepalive phase: one connection, requests one after
/// another, reconnecting only if the server closes.
async fn keepalive_loop(
    connector: TlsConnector,
    addr: SocketAddr,
    name: ServerName<'static>,
    request: Arc<[u8]>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    let mut buf = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let Ok(tcp) = TcpStream::connect(addr).await else {
            counters.fail(Fail::Connect);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let Ok(mut tls) = connector.connect(name.clone(), tcp).await else {
            counters.fail(Fail::Handshake);
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            if tls.write_all(&request).await.is_err() {
                counters.fail(Fail::Closed);
                break;
            }
            match read_response(&mut tls, &mut buf).await {
                Ok((200, _)) => {
                    counters.ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => counters.fail(Fail::Status),
                Err(f) => {
                    counters.fail(f);
                    break;
                }
            }
        }
    }
}

// --- /proc and /metrics -------------------------------------------------------

/// USER_HZ: the unit of /proc CPU times on Linux.
const TICK: f64 = 0.01;

/// Busy and total ticks of one core from /proc/stat.
#[derive(Clone, Copy)]
struct CoreTicks {
    /// Everything but idle and iowait.
    busy: u64,
    total: u64,
}

fn core_ticks(cpu: usize) -> io::Result<CoreTicks> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let label = format!("cpu{cpu} ");
    let line = stat
        .lines()
        .find(|l| l.starts_with(&label))
        .ok_or_else(|| io::Error::other(format!("no {label} in /proc/stat")))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    let f = |i: usize| v.get(i).copied().unwrap_or(0);
    let total: u64 = v.iter().sum();
    Ok(CoreTicks {
        busy: total - f(3) - f(4),
        total,
    })
}

/// utime + stime of a process (all its threads, living and dead).
fn proc_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the ")" of the command name: state is field 3, utime 14.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| {
        f.get(i - 3)
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

/// A process and its descendants (nginx: master and worker).
fn proc_tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                if let Ok(children) = std::fs::read_to_string(t.path().join("children")) {
                    out.extend(
                        children
                            .split_whitespace()
                            .filter_map(|c| c.parse::<u32>().ok()),
                    );
                }
            }
        }
        i += 1;
    }
    out
}

/// mdgate's counters that tell whether the DNS check stayed cached.
async fn mdgate_counters(admin: SocketAddr) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(admin)).await
    else {
        return out;
    };
    let req = format!("GET /metrics HTTP/1.0\r\nHost: {admin}\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return out;
    }
    let mut text = String::new();
    if tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut text))
        .await
        .is_err()
    {
        return out;
    }
    for line in text.lines() {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let wanted = [
            "mdgate_dns_cache_total",
            "mdgate_dns_lookups_total",
            "mdgate_peer_key_refusals_total",
            "mdgate_tls_handshake_failures_total",
        ];
        if wanted.iter().any(|w| key.starts_with(w)) {
            *out.entry(key.to_owned()).or_insert(0.0) += value;
        }
    }
    out
}

/// Everything read at one edge of the recording window.
struct Snapshot {
    at: Instant,
    ok: u64,
    resumed: u64,
    fails: [u64; 5],
    server: CoreTicks,
    loadgen: CoreTicks,
    server_procs: u64,
    self_ticks: u64,
    metrics: BTreeMap<String, f64>,
}

async fn snapshot(
    c: &Counters,
    args: &RunArgs,
    target: &Target,
    pids: &[u32],
) -> anyhow::Result<Snapshot> {
    let metrics = match target.admin {
        Some(a) => mdgate_counters(a).await,
        None => BTreeMap::new(),
    };
    Ok(Snapshot {
        at: Instant::now(),
        ok: c.ok.load(Ordering::Relaxed),
        resumed: c.resumed.load(Ordering::Relaxed),
        fails: std::array::from_fn(|i| c.fails[i].load(Ordering::Relaxed)),
        server: core_ticks(args.server_cpu)?,
        loadgen: core_ticks(args.loadgen_cpu)?,
        server_procs: pids.iter().map(|p| proc_ticks(*p)).sum(),
        self_ticks: proc_ticks(std::process::id()),
        metrics,
    })
}

/// Waits until both cores are below `quiet_busy` % for a second.
async fn wait_quiet(args: &RunArgs) -> anyhow::Result<f64> {
    let start = Instant::now();
    loop {
        let (s0, l0) = (core_ticks(args.server_cpu)?, core_ticks(args.loadgen_cpu)?);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (s1, l1) = (core_ticks(args.server_cpu)?, core_ticks(args.loadgen_cpu)?);
        let busy = |a: CoreTicks, b: CoreTicks| {
            100.0 * (b.busy - a.busy) as f64 / ((b.total - a.total).max(1)) as f64
        };
        let worst = busy(s0, s1).max(busy(l0, l1));
        if worst < args.quiet_busy || start.elapsed().as_secs_f64() > args.quiet_max {
            return Ok(worst);
        }
    }
}

/// One attempt of one phase against one target.
async fn attempt(
    args: &RunArgs,
    tls: &Tls,
    target: &Target,
    phase: Phase,
) -> anyhow::Result<Value> {
    let duration = match phase {
        Phase::UnknownKey => args.unknown_duration,
        _ => args.duration,
    };
    let pool = Arc::new(TicketPool::default());
    let config = match phase {
        Phase::Full | Phase::KeepAlive => tls.config(None, false, false)?,
        Phase::Resumed => tls.config(Some(pool.clone()), false, false)?,
        Phase::UnknownKey => tls.config(None, false, true)?,
    };
    let connector = TlsConnector::from(config);
    let name = ServerName::try_from(args.sni.clone())?;
    let close = if phase == Phase::KeepAlive {
        ""
    } else {
        "Connection: close\r\n"
    };
    let request: Arc<[u8]> = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\n{close}\r\n",
        args.path, args.sni
    )
    .into_bytes()
    .into();
    let conns = if phase == Phase::KeepAlive {
        args.ka_conns
    } else {
        args.conns
    };
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let pids = proc_tree(target.pid);
    let quiet = wait_quiet(args).await?;

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (connector, name, request, counters, stop) = (
            connector.clone(),
            name.clone(),
            request.clone(),
            counters.clone(),
            stop.clone(),
        );
        if phase == Phase::KeepAlive {
            tasks.spawn(keepalive_loop(
                connector,
                target.addr,
                name,
                request,
                counters,
                stop,
            ));
        } else {
            tasks.spawn(connect_loop(
                connector,
                target.addr,
                name,
                request,
                counters,
                stop,
            ));
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let a = snapshot(&counters, args, target, &pids).await?;
    tokio::time::sleep(Duration::from_secs_f64(duration)).await;
    let b = snapshot(&counters, args, target, &pids).await?;
    stop.store(true, Ordering::Relaxed);
    if tokio::time::timeout(Duration::from_secs(6), async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tasks.abort_all();
    }
    // Let the last connections close before the next attempt.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let secs = (b.at - a.at).as_secs_f64();
    let ok = b.ok - a.ok;
    let fails: BTreeMap<&str, u64> = Fail::ALL
        .iter()
        .map(|f| (f.as_str(), b.fails[*f as usize] - a.fails[*f as usize]))
        .filter(|(_, n)| *n > 0)
        .collect();
    let failed: u64 = fails.values().sum();
    // The unknown-key phase counts refusals: that is its operation.
    let ops = if phase == Phase::UnknownKey {
        failed
    } else {
        ok
    };
    let pct = |d: CoreTicks, e: CoreTicks| {
        100.0 * (e.busy - d.busy) as f64 / ((e.total - d.total).max(1)) as f64
    };
    let server_busy = pct(a.server, b.server);
    let loadgen_busy = pct(a.loadgen, b.loadgen);
    let server_cpu = (b.server_procs - a.server_procs) as f64 * TICK;
    let loadgen_cpu = (b.self_ticks - a.self_ticks) as f64 * TICK;
    // Others' share of each core: busy time beyond our processes' CPU.
    // Loopback packet processing that no process is charged for counts
    // too (a few % on the load generator's core at high packet rates).
    let server_foreign = server_busy - 100.0 * server_cpu / secs;
    let loadgen_foreign = loadgen_busy - 100.0 * loadgen_cpu / secs;
    let per_op = |cpu: f64| if ops > 0 { cpu * 1e6 / ops as f64 } else { 0.0 };
    let metrics: BTreeMap<String, f64> = b
        .metrics
        .iter()
        .map(|(k, v)| (k.clone(), v - a.metrics.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v != 0.0)
        .collect();
    Ok(json!({
        "target": target.name,
        "phase": phase.as_str(),
        "conns": conns,
        "seconds": secs,
        "ops": ops,
        "rate": ops as f64 / secs,
        "ok": ok,
        "resumed": b.resumed - a.resumed,
        "fails": fails,
        "server_cpu_us_per_op": per_op(server_cpu),
        "loadgen_cpu_us_per_op": per_op(loadgen_cpu),
        "server_core_busy": server_busy,
        "loadgen_core_busy": loadgen_busy,
        "server_foreign": server_foreign,
        "loadgen_foreign": loadgen_foreign,
        "quiet_before": quiet,
        "tickets": {
            "given": pool.given.load(Ordering::Relaxed),
            "taken": pool.taken.load(Ordering::Relaxed),
            "missed": pool.missed.load(Ordering::Relaxed),
        },
        "mdgate_metrics": metrics,
        "mdgate_metrics_total": b.metrics,
    }))
}

/// Runs a phase up to `retries` more times while others used the cores.
async fn measured(
    args: &RunArgs,
    tls: &Tls,
    target: &Target,
    phase: Phase,
    log: &mut Vec<Value>,
) -> anyhow::Result<Value> {
    // The attempt kept: the first quiet one, else the one whose server
    // core was least disturbed.
    let mut best = Value::Null;
    let disturbed = |r: &Value| r["server_foreign"].as_f64().unwrap_or(f64::MAX);
    for i in 0..=args.retries {
        let mut r = attempt(args, tls, target, phase).await?;
        // Others on the server's core distort the figures; on the load
        // generator's core only when they kept the server from saturating.
        let noisy = r["server_foreign"].as_f64().unwrap_or(0.0) > args.foreign_max
            || (r["loadgen_foreign"].as_f64().unwrap_or(0.0) > args.foreign_max
                && r["server_core_busy"].as_f64().unwrap_or(0.0) < 95.0);
        r["attempt"] = json!(i + 1);
        r["noisy"] = json!(noisy);
        eprintln!(
            "[handshake] {:<11} {:<12} {:>9.0}/s  server {:>6.1} µs/op, core {:>3.0}% (foreign {:>4.1}%)  loadgen {:>6.1} µs/op, core {:>3.0}% (foreign {:>4.1}%){}",
            phase.as_str(),
            target.name,
            r["rate"].as_f64().unwrap_or(0.0),
            r["server_cpu_us_per_op"].as_f64().unwrap_or(0.0),
            r["server_core_busy"].as_f64().unwrap_or(0.0),
            r["server_foreign"].as_f64().unwrap_or(0.0),
            r["loadgen_cpu_us_per_op"].as_f64().unwrap_or(0.0),
            r["loadgen_core_busy"].as_f64().unwrap_or(0.0),
            r["loadgen_foreign"].as_f64().unwrap_or(0.0),
            if noisy { "  noisy" } else { "" }
        );
        log.push(r.clone());
        if best.is_null() || disturbed(&r) < disturbed(&best) {
            best = r;
        }
        if !noisy {
            break;
        }
    }
    Ok(best)
}

/// One fully verified connection per target: status, body and what was
/// negotiated; with the unknown key against the DNS target, a refusal.
async fn check_target(args: &RunArgs, tls: &Tls, target: &Target) -> anyhow::Result<Value> {
    let name = ServerName::try_from(args.sni.clone())?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        args.path, args.sni
    );
    let mut buf = Vec::new();
    let connector = TlsConnector::from(tls.config(Some(Arc::default()), true, false)?);
    let detail = |d: Done| d.seen.expect("asked for detail");
    let first = one_request(
        &connector,
        target.addr,
        &name,
        request.as_bytes(),
        &mut buf,
        true,
    )
    .await
    .map(detail)
    .map_err(|f| anyhow::anyhow!("{}: checked request failed: {}", target.name, f.as_str()))?;
    // The same config again: the ticket from the first connection resumes.
    let second = one_request(
        &connector,
        target.addr,
        &name,
        request.as_bytes(),
        &mut buf,
        true,
    )
    .await
    .map(detail)
    .map_err(|f| anyhow::anyhow!("{}: resumed request failed: {}", target.name, f.as_str()))?;
    let mut out = json!({
        "target": target.name,
        "version": first.version,
        "suite": first.suite,
        "group": first.group,
        "alpn": first.alpn,
        "first": first.kind,
        "second": second.kind,
        "status": first.status,
        "body": first.body,
    });
    if target.name == args.unknown_target && tls.unknown.is_some() {
        let connector = TlsConnector::from(tls.config(None, true, true)?);
        let r = one_request(
            &connector,
            target.addr,
            &name,
            request.as_bytes(),
            &mut buf,
            false,
        )
        .await;
        out["unknown_key"] = json!(match r {
            Ok(_) => "accepted".to_owned(),
            Err(f) => format!("refused ({})", f.as_str()),
        });
    }
    eprintln!("[handshake] check {out}");
    Ok(out)
}

// --- the run and the report ---------------------------------------------------

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let targets = args
        .targets
        .iter()
        .map(|t| parse_target(t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let phases = args
        .phases
        .split_whitespace()
        .map(Phase::parse)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let tls = Tls::load(&args)?;
    std::fs::create_dir_all(&args.out)?;

    let mut checks = Vec::new();
    for t in &targets {
        checks.push(check_target(&args, &tls, t).await?);
    }
    let mut attempts = Vec::new();
    let mut results: Vec<Value> = Vec::new();
    let started = chrono_now();
    for round in 1..=args.rounds {
        for phase in &phases {
            for t in &targets {
                let mut r = measured(&args, &tls, t, *phase, &mut attempts).await?;
                r["round"] = json!(round);
                results.push(r);
            }
        }
    }
    let mut unknown = None;
    if args.unknown_duration > 0.0 && tls.unknown.is_some() {
        if let Some(t) = targets.iter().find(|t| t.name == args.unknown_target) {
            unknown = Some(measured(&args, &tls, t, Phase::UnknownKey, &mut attempts).await?);
        }
    }
    let facts = match &args.facts {
        Some(p) => std::fs::read_to_string(p).unwrap_or_default(),
        None => String::new(),
    };
    let all = json!({
        "started": started,
        "finished": chrono_now(),
        "settings": {
            "conns": args.conns, "ka_conns": args.ka_conns, "duration": args.duration,
            "warmup": args.warmup, "rounds": args.rounds, "path": args.path, "sni": args.sni,
            "server_cpu": args.server_cpu, "loadgen_cpu": args.loadgen_cpu,
            "foreign_max": args.foreign_max, "retries": args.retries,
            "unknown_duration": args.unknown_duration,
        },
        "facts": facts,
        "checks": checks,
        "results": results,
        "unknown_key": unknown,
        "attempts": attempts,
    });
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&all)?,
    )?;
    let md = report(&args, &targets, &phases, &all);
    std::fs::write(args.out.join("results.md"), &md)?;
    println!("{md}");
    Ok(())
}

/// UTC time of day for the report, from the system clock.
fn chrono_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02} UTC")
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn fmt_int(x: f64) -> String {
    if !x.is_finite() {
        return "–".to_owned();
    }
    let s = format!("{:.0}", x);
    let (sign, digits) = s.strip_prefix('-').map(|d| ("-", d)).unwrap_or(("", &s));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

fn report(args: &RunArgs, targets: &[Target], phases: &[Phase], all: &Value) -> String {
    use std::fmt::Write as _;
    let results = all["results"].as_array().cloned().unwrap_or_default();
    let of = |phase: &str, target: &str| -> Vec<&Value> {
        results
            .iter()
            .filter(|r| r["phase"] == phase && r["target"] == target)
            .collect()
    };
    let med = |rs: &[&Value], k: &str| median(rs.iter().filter_map(|r| r[k].as_f64()).collect());
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# mTLS handshake benchmark ({} – {})\n",
        all["started"].as_str().unwrap_or(""),
        all["finished"].as_str().unwrap_or("")
    );
    if let Some(f) = all["facts"].as_str().filter(|f| !f.is_empty()) {
        let _ = writeln!(md, "```text\n{}\n```\n", f.trim_end());
    }
    let _ = writeln!(md, "What each target negotiated (one fully verified connection, then a second one with its ticket):\n");
    let _ = writeln!(
        md,
        "| target | version | suite | group | ALPN | 1st / 2nd handshake | status | body |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for c in all["checks"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} / {} | {} | `{}` |",
            c["target"].as_str().unwrap_or(""),
            c["version"].as_str().unwrap_or(""),
            c["suite"].as_str().unwrap_or(""),
            c["group"].as_str().unwrap_or(""),
            c["alpn"].as_str().unwrap_or(""),
            c["first"].as_str().unwrap_or(""),
            c["second"].as_str().unwrap_or(""),
            c["status"],
            c["body"].as_str().unwrap_or("")
        );
        if let Some(u) = c["unknown_key"].as_str() {
            let _ = writeln!(
                md,
                "\n(unknown key against {}: {u})\n",
                c["target"].as_str().unwrap_or("")
            );
        }
    }
    let rounds = args.rounds;
    for phase in phases {
        let (title, unit) = match phase {
            Phase::Full => (
                format!(
                    "Full handshakes: new connection, no resumption, one GET each ({} concurrent)",
                    args.conns
                ),
                "handshakes/s",
            ),
            Phase::Resumed => (
                format!(
                    "Resumed handshakes: TLS 1.3 tickets, one GET each ({} concurrent)",
                    args.conns
                ),
                "handshakes/s",
            ),
            Phase::KeepAlive => (
                format!(
                    "Requests on kept-alive connections ({} connections)",
                    args.ka_conns
                ),
                "req/s",
            ),
            Phase::UnknownKey => continue,
        };
        let _ = writeln!(
            md,
            "\n## {title}\n\nMedian of {rounds} round(s); range over the rounds in brackets. \
             †: in every attempt of a round, others used more than {}% of the server's core \
             (or of the load generator's while the server's core was below 95%). \
             ‡: the load generator's core was at 95% or more while the server's was not \
             (the figure is the client's limit, not the server's).\n",
            args.foreign_max
        );
        let extra = if *phase == Phase::Resumed {
            " resumed |"
        } else {
            ""
        };
        let _ = writeln!(md, "| target | {unit} (min–max) | × {} | server CPU µs/op | loadgen CPU µs/op | server core busy | loadgen core busy |{extra} errors |", args.baseline);
        let _ = writeln!(
            md,
            "|---|---|---|---|---|---|---|{}---|",
            if extra.is_empty() { "" } else { "---|" }
        );
        let base = med(&of(phase.as_str(), &args.baseline), "rate");
        for t in targets {
            let rs = of(phase.as_str(), &t.name);
            if rs.is_empty() {
                continue;
            }
            let rate = med(&rs, "rate");
            let lo = rs
                .iter()
                .filter_map(|r| r["rate"].as_f64())
                .fold(f64::INFINITY, f64::min);
            let hi = rs
                .iter()
                .filter_map(|r| r["rate"].as_f64())
                .fold(0.0, f64::max);
            let noisy = rs.iter().any(|r| r["noisy"] == true);
            let client_bound = rs.iter().any(|r| {
                r["loadgen_core_busy"].as_f64().unwrap_or(0.0) >= 95.0
                    && r["server_core_busy"].as_f64().unwrap_or(0.0) < 95.0
            });
            let errors: u64 = rs
                .iter()
                .filter_map(|r| r["fails"].as_object())
                .flat_map(|m| m.values().filter_map(|v| v.as_u64()))
                .sum();
            let resumed = if *phase == Phase::Resumed {
                let ok: f64 = rs.iter().filter_map(|r| r["ok"].as_f64()).sum();
                let res: f64 = rs.iter().filter_map(|r| r["resumed"].as_f64()).sum();
                format!(" {:.1}% |", 100.0 * res / ok.max(1.0))
            } else {
                String::new()
            };
            let _ = writeln!(
                md,
                "| {}{}{} | {} ({}–{}) | {:.2}× | {:.1} | {:.1} | {:.0}% | {:.0}% |{} {} |",
                t.name,
                if noisy { " †" } else { "" },
                if client_bound { " ‡" } else { "" },
                fmt_int(rate),
                fmt_int(lo),
                fmt_int(hi),
                rate / base,
                med(&rs, "server_cpu_us_per_op"),
                med(&rs, "loadgen_cpu_us_per_op"),
                med(&rs, "server_core_busy"),
                med(&rs, "loadgen_core_busy"),
                resumed,
                errors
            );
        }
        let mut first = true;
        for (a, b) in args.pairs.iter().filter_map(|p| p.split_once('/')) {
            let (ra, rb) = (
                med(&of(phase.as_str(), a), "rate"),
                med(&of(phase.as_str(), b), "rate"),
            );
            let (ca, cb) = (
                med(&of(phase.as_str(), a), "server_cpu_us_per_op"),
                med(&of(phase.as_str(), b), "server_cpu_us_per_op"),
            );
            if ra.is_finite() && rb.is_finite() {
                let _ = writeln!(
                    md,
                    "{}{a} / {b}: rate **{:.2}×**, server CPU per operation {:.2}×.",
                    if first { "\n" } else { "" },
                    ra / rb,
                    ca / cb
                );
                first = false;
            }
        }
    }
    // DNS evidence: what mdgate's own counters saw in the windows.
    if let Some((a, _)) = args.pairs.first().and_then(|p| p.split_once('/')) {
        let rs: Vec<&Value> = results.iter().filter(|r| r["target"] == a).collect();
        if !rs.is_empty() {
            let mut sums: BTreeMap<String, f64> = BTreeMap::new();
            let mut ops = 0u64;
            for r in &rs {
                ops += r["ops"].as_u64().unwrap_or(0);
                for (k, v) in r["mdgate_metrics"].as_object().into_iter().flatten() {
                    *sums.entry(k.clone()).or_insert(0.0) += v.as_f64().unwrap_or(0.0);
                }
            }
            let _ = writeln!(md, "\n## The DNS check on {a}\n\nmdgate's counters summed over its recording windows ({} completed operations):\n", fmt_int(ops as f64));
            for (k, v) in &sums {
                let _ = writeln!(md, "* `{k}`: {}", fmt_int(*v));
            }
            if let Some(last) = rs.last() {
                let _ = writeln!(md, "\nTotals since start, at the end of the last window:\n");
                for (k, v) in last["mdgate_metrics_total"]
                    .as_object()
                    .into_iter()
                    .flatten()
                {
                    let _ = writeln!(md, "* `{k}`: {}", fmt_int(v.as_f64().unwrap_or(0.0)));
                }
            }
        }
    }
    if let Some(u) = all["unknown_key"].as_object() {
        let _ = writeln!(
            md,
            "\n## Unknown key ({}, {:.0} s, {} concurrent)\n\nA certificate for the same peer name whose key the peer's DNS does not publish: {} refusals ({}/s, server {:.1} µs CPU each), {} completed requests.\n",
            u["target"].as_str().unwrap_or(""),
            u["seconds"].as_f64().unwrap_or(0.0),
            u["conns"],
            fmt_int(u["ops"].as_f64().unwrap_or(0.0)),
            fmt_int(u["rate"].as_f64().unwrap_or(0.0)),
            u["server_cpu_us_per_op"].as_f64().unwrap_or(0.0),
            u["ok"],
        );
        for (k, v) in u["mdgate_metrics"].as_object().into_iter().flatten() {
            let _ = writeln!(md, "* `{k}`: {}", fmt_int(v.as_f64().unwrap_or(0.0)));
        }
    }
    let _ = writeln!(
        md,
        "\nRaw: `{}`",
        Path::new(&args.out).join("results.json").display()
    );
    md
}
