//! Load driver of `benches/access.sh`: what an authorized federated read
//! costs, measured in one run against the same upstream request sent
//! straight to the access.md emulator, through mdgate's own pass-through
//! listener, and through nginx doing mutual TLS without any authorization
//! (docs/benchmarks.md, "Access: authorized federated reads").
//!
//! Every target ends at the same emulator route, `GET
//! /api/doctor/patient/{id}/vitals` with the federation account's session:
//!
//! * `direct`: the emulator itself, plain HTTP, the `JSESSIONID` cookie
//!   sent by the load generator;
//! * `passthrough`: the same request through site one's public listener,
//!   over TLS with site one's certificate (`--plain-public`: plain HTTP):
//!   mdgate's own pass-through;
//! * `authorized`: `GET /federation/v1/records/{fid}/vitals` with the
//!   grant token as Bearer, sent with site two's `Egress` (its mTLS client,
//!   as `tests/it/access.rs` `raw_read` does) to site one's federation
//!   listener, which checks token, grant, revocation and policy, calls the
//!   emulator as its federation account and appends an audit entry;
//! * `nginx`: the same federation request to Debian's nginx, which
//!   terminates mutual TLS (site one's certificate; site two's self-signed
//!   certificate as the only client CA) and proxies to the emulator with
//!   the cookie injected: transport only, no authorization.
//!
//! Threads and cores (`--load-cpu`, `--server-cpu`):
//!
//! ```text
//! load core    main thread: a tokio current_thread runtime running the
//!              load generator, and site two's Egress (hyper-util spawns its
//!              connection tasks on the runtime that calls it); the
//!              dispatcher thread of the fixed-rate mode
//! server core  bench-srv: the testbed (DNS server, both emulators, both
//!              mdgates' background tasks); mdgate-worker-0 of each site
//!              (public and federation listeners); sqlx-sqlite-worker-*
//!              (the stores); nginx's master and worker
//! ```
//!
//! Modes: `saturated` (closed loop over `--conns` keep-alive connections)
//! and `rate` (open loop: a dispatcher thread schedules request i at
//! start + i / rate and workers take them in order; latency is measured
//! from the scheduled time, so a slow answer cannot hold back the clock of
//! the requests behind it: no coordinated omission).
//!
//! Besides the load phases: a micro-benchmark of the data path's checks
//! alone (no I/O), and the audit append alone on a scratch store, with a
//! group-commit prototype (several entries per transaction).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use clap::Parser;
use http::header::{AUTHORIZATION, COOKIE, HOST};
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::Serialize;
use uuid::Uuid;

use mdgate::demo::testbed::{PublicListener, Testbed, Upstreams};
use mdgate::federation::access::{millis, GrantCache, LiveGrant};
use mdgate::federation::egress::Egress;
use mdgate::policy::{GrantFacts, Policy, RequestFacts, Role, RouteId};
use mdgate::store::{AuditRecord, Grant};
use mdgate::token::{bearer, issue_grant, unix_seconds, verify_grant, GrantClaims, GrantVerifier};
use mdgate::upstream::{Secret, Vitals};

#[derive(Parser, Debug, Clone, Serialize)]
#[command(about = "mdgate access benchmark (run it through benches/access.sh)")]
struct Args {
    /// Seconds recorded per load phase (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load on the same connections before recording.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Keep-alive connections of the saturated mode.
    #[arg(long, default_value_t = 32)]
    conns: usize,
    /// Requests per second of the fixed-rate mode.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Connections (workers) of the fixed-rate mode.
    #[arg(long, default_value_t = 8)]
    rate_conns: usize,
    /// Repetitions of the whole load matrix (tables show medians).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value = "direct,passthrough,authorized,nginx")]
    targets: String,
    #[arg(long, default_value = "saturated,rate")]
    modes: String,
    #[arg(long, default_value_t = 0)]
    load_cpu: usize,
    #[arg(long, default_value_t = 1)]
    server_cpu: usize,
    /// Where results.json and results.md go.
    #[arg(long)]
    out: PathBuf,
    /// Scratch directory: the testbed's sites (stores included), nginx.
    #[arg(long)]
    work: PathBuf,
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
    /// A phase whose window saw other processes use more than this % of
    /// either core is run again, up to --retries times.
    #[arg(long, default_value_t = 5.0)]
    foreign_max: f64,
    #[arg(long, default_value_t = 3)]
    retries: usize,
    /// Seconds to wait, before a phase, for foreign load to fall under
    /// --quiet-busy % on both cores (0: don't wait).
    #[arg(long, default_value_t = 120.0)]
    quiet_max: f64,
    #[arg(long, default_value_t = 10.0)]
    quiet_busy: f64,
    /// Iterations of each micro-benchmark of the checks.
    #[arg(long, default_value_t = 1_000_000)]
    check_iters: u64,
    /// Appends of each audit measurement.
    #[arg(long, default_value_t = 2000)]
    audit_appends: usize,
    /// Profile this core with `perf record` during one extra saturated
    /// phase of `passthrough` and of `authorized` after the rounds
    /// (perf-<target>.data in --out).
    #[arg(long)]
    perf_cpu: Option<usize>,
    /// Samples per second of `perf record` (with --perf-cpu).
    #[arg(long, default_value_t = 499)]
    perf_freq: u32,
    /// Record no call graphs (--perf-cpu): cheap enough that perf, on the
    /// load core, does not slow the load generator down.
    #[arg(long)]
    perf_flat: bool,
    /// Record call graphs by frame pointers instead of DWARF stacks
    /// (--perf-cpu): cheap, but only whole for a build with
    /// `RUSTFLAGS="-C force-frame-pointers=yes"` (glibc and SQLite keep
    /// theirs out, so their own callers may be skipped).
    #[arg(long, conflicts_with = "perf_flat")]
    perf_fp: bool,
    /// Events to record instead of perf's default (--perf-cpu), comma
    /// separated: for example `probe_libc:malloc,probe_libc:free` after
    /// `perf probe -x <libc> -a malloc -a free`, to count allocations by
    /// thread.
    #[arg(long)]
    perf_events: Option<String>,
    /// Serve site one's public listener over plain HTTP (as behind a
    /// TLS-terminating proxy) instead of TLS: `passthrough` then pays for
    /// no TLS at all, while `authorized` pays for the federation
    /// listener's.
    #[arg(long)]
    plain_public: bool,
    #[arg(long)]
    skip_checks: bool,
    #[arg(long)]
    skip_audit: bool,
    #[arg(long)]
    skip_load: bool,
}

// ------------------------------------------------------------------ report

#[derive(Serialize, Default)]
struct Report {
    args: Option<Args>,
    loadavg_start: String,
    loadavg_end: String,
    checks: Option<Checks>,
    audit: Option<AuditReport>,
    setup: Option<SetupReport>,
    phases: Vec<Phase>,
}

#[derive(Serialize, Clone)]
struct SetupReport {
    upstream_path: String,
    federation_path: String,
    body_bytes: usize,
    nginx_version: Option<String>,
    tls_to_nginx: Option<String>,
    /// The same for site one's public listener; `None`: plain HTTP.
    tls_to_passthrough: Option<String>,
    /// Every thread of this process: name and allowed CPUs.
    threads: Vec<(u32, String, String)>,
    /// The audit log of site one before and after the load phases, and the
    /// authorized reads answered 200 meanwhile (each must add one entry).
    audit_seq_before: i64,
    audit_seq_after: i64,
    authorized_ok_total: u64,
}

// -------------------------------------------------------- threads and CPUs

/// This thread's kernel id (from `/proc/thread-self`, no `unsafe`).
fn current_tid() -> Result<u32> {
    let link = std::fs::read_link("/proc/thread-self")?;
    let text = link.to_string_lossy();
    text.rsplit('/')
        .next()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| anyhow!("unexpected /proc/thread-self: {text}"))
}

/// Pins thread (or process) `id` to `cpu` with taskset; threads it creates
/// later inherit the mask.
fn pin(id: u32, cpu: usize) -> Result<()> {
    let status = Command::new("taskset")
        .args(["-p", "-c", &cpu.to_string(), &id.to_string()])
        .stdout(Stdio::null())
        .status()
        .context("taskset")?;
    if !status.success() {
        bail!("taskset -p -c {cpu} {id} failed");
    }
    Ok(())
}

fn pin_current(cpu: usize) -> Result<()> {
    pin(current_tid()?, cpu)
}

#[derive(Clone, Debug)]
struct ThreadSample {
    name: String,
    /// The one CPU the thread may run on, if pinned to one.
    cpu: Option<usize>,
    cpus: String,
    run_ns: u64,
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The first field of a schedstat file: nanoseconds spent on a CPU.
fn schedstat_ns(path: &str) -> u64 {
    read_trim(path)
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Summed run time of the kernel worker threads bound to `cpu`.
fn kworkers_ns(cpu: usize) -> u64 {
    let prefix = format!("kworker/{cpu}:");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| read_trim(&format!("/proc/{pid}/comm")).starts_with(&prefix))
        .map(|pid| schedstat_ns(&format!("/proc/{pid}/schedstat")))
        .sum()
}

fn allowed_cpus(status_path: &str) -> String {
    std::fs::read_to_string(status_path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn threads() -> BTreeMap<u32, ThreadSample> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let base = format!("/proc/self/task/{tid}");
        let cpus = allowed_cpus(&format!("{base}/status"));
        out.insert(
            tid,
            ThreadSample {
                name: read_trim(&format!("{base}/comm")),
                cpu: cpus.parse().ok(),
                cpus,
                run_ns: schedstat_ns(&format!("{base}/schedstat")),
            },
        );
    }
    out
}

/// Idle time (idle + iowait) of each CPU, in USER_HZ units (1/100 s).
///
/// Busy time is derived from it and the wall clock: with NO_HZ the idle
/// counters are measured, while user and system time are sampled at the
/// tick (250 Hz here) and miss short bursts at light load.
fn cpu_idle() -> Vec<u64> {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some(name) if name.starts_with("cpu") && name.len() > 3 => {}
            _ => continue,
        }
        let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
        if v.len() < 5 {
            continue;
        }
        out.push(v[3] + v[4]);
    }
    out
}

/// USER_HZ: the unit of `/proc/stat` (100 on every Linux architecture
/// this runs on).
const USER_HZ: f64 = 100.0;

/// What the CPU accounting needs to know about this run's processes.
#[derive(Clone)]
struct Probe {
    load_tid: u32,
    /// Site one's and site two's mdgate worker threads.
    worker_one: Option<u32>,
    nginx_worker: Option<u32>,
    metrics_one: Arc<mdgate::admin::Metrics>,
    /// The server core, whose kernel workers complete the audit
    /// journal's disk writes.
    server_cpu: usize,
}

#[derive(Clone)]
struct Snap {
    at: Instant,
    threads: BTreeMap<u32, ThreadSample>,
    nginx_ns: u64,
    /// Run time of the kernel's worker threads bound to the server core
    /// (`kworker/N:*`): the block layer finishes each audit journal write
    /// there. Not ours by pid, but caused by the run.
    kworker_ns: u64,
    cpus: Vec<u64>,
    fed_conns: u64,
    /// Site one's audit group commits so far: (commits, entries, seconds).
    audit: (f64, f64, f64),
    /// Of those, how many took more than 1.6 ms and more than 12.8 ms
    /// (from the duration histogram's buckets).
    audit_slow: (f64, f64),
    /// Site one's `mdgate_audit_journal_pending`: entries durable in the
    /// journal, not yet copied into the chained log.
    journal_pending: f64,
}

impl Probe {
    fn snap(&self) -> Snap {
        Snap {
            at: Instant::now(),
            threads: threads(),
            nginx_ns: self
                .nginx_worker
                .map(|p| schedstat_ns(&format!("/proc/{p}/schedstat")))
                .unwrap_or(0),
            kworker_ns: kworkers_ns(self.server_cpu),
            cpus: cpu_idle(),
            fed_conns: federation_connections(&self.metrics_one),
            audit: audit_commits(&self.metrics_one),
            audit_slow: audit_slow_commits(&self.metrics_one),
            journal_pending: metric_value(&self.metrics_one, "mdgate_audit_journal_pending"),
        }
    }

    /// Which part of the benchmark a thread is.
    fn group(&self, tid: u32, name: &str) -> &'static str {
        if tid == self.load_tid || name == "bench-dispatch" {
            "load"
        } else if Some(tid) == self.worker_one {
            "mdgate"
        } else if name == "bench-srv" {
            "testbed"
        } else if name.starts_with("sqlx-sqlite") || name.starts_with("mdgate-audit-c") {
            "sqlite"
        } else if name.starts_with("mdgate-audit-j") {
            "journal"
        } else if name.starts_with("mdgate-worker") {
            "mdgate_two"
        } else {
            "other"
        }
    }
}

/// Group commits of site one slower than 1.6 ms and than 12.8 ms: the
/// count minus the cumulative buckets at those bounds.
fn audit_slow_commits(metrics: &mdgate::admin::Metrics) -> (f64, f64) {
    let text = metrics.encode();
    let mut count = 0.0;
    let under = |bound: f64| -> f64 {
        text.lines()
            .filter_map(|l| l.strip_prefix("mdgate_audit_commit_duration_seconds_bucket{le=\""))
            .filter_map(|rest| {
                let (le, value) = rest.split_once("\"} ")?;
                Some((le.parse::<f64>().ok()?, value.parse::<f64>().ok()?))
            })
            .find(|(le, _)| (le / bound - 1.0).abs() < 0.01)
            .map_or(f64::NAN, |(_, v)| v)
    };
    let (fast, medium) = (under(0.0016), under(0.0128));
    for l in text.lines() {
        if let Some(v) = l.strip_prefix("mdgate_audit_commit_duration_seconds_count ") {
            count = v.parse().unwrap_or(0.0);
        }
    }
    (count - fast, count - medium)
}

/// The value of an unlabelled sample of site one's metrics (0 if absent).
fn metric_value(metrics: &mdgate::admin::Metrics, name: &str) -> f64 {
    sample(&metrics.encode(), name)
}

/// The value of the unlabelled sample `name` in exposition `text` (0 if
/// absent).
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// `mdgate_connections_total{listener="federation"}` of site one.
fn federation_connections(metrics: &mdgate::admin::Metrics) -> u64 {
    metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("mdgate_connections_total") && l.contains("federation"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Site one's `mdgate_audit_group_entries` count and sum and
/// `mdgate_audit_commit_duration_seconds` sum.
fn audit_commits(metrics: &mdgate::admin::Metrics) -> (f64, f64, f64) {
    let text = metrics.encode();
    (
        sample(&text, "mdgate_audit_group_entries_count"),
        sample(&text, "mdgate_audit_group_entries_sum"),
        sample(&text, "mdgate_audit_commit_duration_seconds_sum"),
    )
}

#[derive(Serialize, Clone, Default)]
struct CpuWindow {
    seconds: f64,
    /// CPU time per group over the window, in % of one core.
    group_busy: BTreeMap<String, f64>,
    /// Each core's busy %, and the part no thread of ours (nor nginx) used.
    core_busy: Vec<f64>,
    core_foreign: Vec<f64>,
}

fn cpu_window(probe: &Probe, a: &Snap, b: &Snap) -> CpuWindow {
    let secs = (b.at - a.at).as_secs_f64();
    let mut groups: BTreeMap<String, f64> = BTreeMap::new();
    let mut ours_per_core = vec![0u64; b.cpus.len()];
    for (tid, t) in &b.threads {
        let before = a.threads.get(tid).map(|s| s.run_ns).unwrap_or(0);
        let d = t.run_ns.saturating_sub(before);
        *groups
            .entry(probe.group(*tid, &t.name).to_owned())
            .or_default() += d as f64;
        if let Some(c) = t.cpu.filter(|c| *c < ours_per_core.len()) {
            ours_per_core[c] += d;
        }
    }
    let nginx = b.nginx_ns.saturating_sub(a.nginx_ns);
    if probe.nginx_worker.is_some() {
        groups.insert("nginx".to_owned(), nginx as f64);
    }
    let kworkers = b.kworker_ns.saturating_sub(a.kworker_ns);
    groups.insert("kernel_io".to_owned(), kworkers as f64);
    if let Some(core) = ours_per_core.get_mut(probe.server_cpu) {
        *core += kworkers;
    }
    let mut core_busy = Vec::new();
    let mut core_foreign = Vec::new();
    for (i, (i1, i0)) in b.cpus.iter().zip(&a.cpus).enumerate() {
        let idle = i1.saturating_sub(*i0) as f64 / USER_HZ / secs;
        let busy = (1.0 - idle).max(0.0);
        core_busy.push(100.0 * busy);
        let mut ours = ours_per_core[i] as f64 / 1e9 / secs;
        if nginx > 0 && i == nginx_cpu(probe) {
            ours += nginx as f64 / 1e9 / secs;
        }
        core_foreign.push(100.0 * (busy - ours));
    }
    CpuWindow {
        seconds: secs,
        group_busy: groups
            .into_iter()
            .map(|(k, ns)| (k, 100.0 * ns / 1e9 / secs))
            .collect(),
        core_busy,
        core_foreign,
    }
}

fn nginx_cpu(probe: &Probe) -> usize {
    probe
        .nginx_worker
        .and_then(|p| allowed_cpus(&format!("/proc/{p}/status")).parse().ok())
        .unwrap_or(usize::MAX)
}

/// Waits (up to `max` seconds) until foreign load is under `busy` % on
/// every core; returns the seconds waited.
async fn wait_quiet(probe: &Probe, max: f64, busy: f64) -> f64 {
    let start = Instant::now();
    loop {
        let a = probe.snap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let b = probe.snap();
        let w = cpu_window(probe, &a, &b);
        let worst = w.core_foreign.iter().cloned().fold(0.0, f64::max);
        if worst < busy || start.elapsed().as_secs_f64() >= max {
            return start.elapsed().as_secs_f64();
        }
    }
}

// ---------------------------------------------------------------- targets

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Target {
    Direct,
    Passthrough,
    Authorized,
    Nginx,
}

impl Target {
    fn parse(s: &str) -> Result<Target> {
        Ok(match s {
            "direct" => Target::Direct,
            "passthrough" => Target::Passthrough,
            "authorized" => Target::Authorized,
            "nginx" => Target::Nginx,
            _ => bail!("unknown target {s:?}"),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Passthrough => "passthrough",
            Target::Authorized => "authorized",
            Target::Nginx => "nginx",
        }
    }
}

#[derive(Clone)]
enum Via {
    Plain(SocketAddr),
    Tls {
        addr: SocketAddr,
        connector: tokio_rustls::TlsConnector,
        name: ServerName<'static>,
    },
    Egress {
        egress: Arc<Egress>,
        fqdn: String,
    },
}

/// One target: where requests go and what they carry.
#[derive(Clone)]
struct Endpoint {
    target: Target,
    via: Via,
    path: String,
    uri: Uri,
    headers: HeaderMap,
}

enum Conn {
    H1(http1::SendRequest<Empty<Bytes>>),
    Egress,
}

/// What one request did.
struct Sent {
    status: u16,
    body: Bytes,
}

impl Endpoint {
    async fn connect(&self) -> Result<Conn> {
        match &self.via {
            Via::Plain(addr) => {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                h1(TokioIo::new(tcp)).await
            }
            Via::Tls {
                addr,
                connector,
                name,
            } => {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(name.clone(), tcp).await?;
                h1(TokioIo::new(tls)).await
            }
            Via::Egress { .. } => Ok(Conn::Egress),
        }
    }

    async fn send(&self, conn: &mut Conn) -> Result<Sent> {
        match (conn, &self.via) {
            (Conn::H1(sender), _) => {
                sender.ready().await?;
                let mut req = Request::new(Empty::<Bytes>::new());
                *req.uri_mut() = self.uri.clone();
                *req.headers_mut() = self.headers.clone();
                let resp = sender.send_request(req).await?;
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await?.to_bytes();
                Ok(Sent { status, body })
            }
            (Conn::Egress, Via::Egress { egress, fqdn }) => {
                let resp = egress
                    .send_with(fqdn, Method::GET, &self.path, self.headers.clone(), None)
                    .await?;
                let status = resp.response.status().as_u16();
                let body = resp.response.into_body().collect().await?.to_bytes();
                Ok(Sent { status, body })
            }
            (Conn::Egress, _) => bail!("an egress connection for a direct target"),
        }
    }
}

async fn h1<I>(io: I) -> Result<Conn>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Conn::H1(sender))
}

/// Accepts exactly one server certificate (site one's self-signed one),
/// with real handshake signature checks.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the pinned certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// A TLS client presenting `client_cert`/`client_key` and trusting only
/// `server_cert`.
/// A TLS client that trusts exactly `server_cert`, with a client
/// certificate when `client` is given (mutual TLS).
fn tls_connector(
    server_cert: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<tokio_rustls::TlsConnector> {
    let provider = rustls::crypto::ring::default_provider();
    let algs = provider.signature_verification_algorithms;
    let pinned = Pinned {
        cert: CertificateDer::from_pem_file(server_cert)?,
        algs,
    };
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(pinned));
    let mut config = match client {
        Some((cert, key)) => builder.with_client_auth_cert(
            vec![CertificateDer::from_pem_file(cert)?],
            PrivateKeyDer::from_pem_file(key)?,
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

// ---------------------------------------------------------------- testbed

/// What the load side needs from the testbed.
#[derive(Clone)]
struct BedInfo {
    egress: Arc<Egress>,
    one_fqdn: String,
    one_public: SocketAddr,
    /// Site one's public listener speaks TLS (with its federation
    /// certificate).
    one_public_tls: bool,
    emulator: SocketAddr,
    one_dir: PathBuf,
    two_dir: PathBuf,
    /// Site one's own store: its reads include what its audit journal
    /// acknowledged.
    one_store: Arc<dyn mdgate::store::Store>,
    metrics_one: Arc<mdgate::admin::Metrics>,
    federation_path: String,
    upstream_path: String,
    token: String,
    session: String,
}

/// Starts the two-site testbed and runs the access flow up to a viewer
/// grant (as `tests/it/access.rs` does), on the calling runtime.
async fn setup_bed(dir: &Path, public: PublicListener) -> Result<(Testbed, BedInfo)> {
    let bed = Testbed::start_sites(dir, &["one", "two"], "", &Upstreams::InProcess, public)
        .await
        .map_err(|e| anyhow!("testbed: {e}"))?;
    let info = grant_flow(&bed).await;
    match info {
        Ok(info) => Ok((bed, info)),
        Err(e) => {
            bed.shutdown().await;
            Err(e)
        }
    }
}

async fn grant_flow(bed: &Testbed) -> Result<BedInfo> {
    let (one, two) = (&bed.sites[0], &bed.sites[1]);
    let a1 = one.running().access.clone().context("access on one")?;
    let a2 = two.running().access.clone().context("access on two")?;
    let config1 = mdgate::config::load(&one.config_path).map_err(|e| anyhow!(e.report()))?;
    let config2 = mdgate::config::load(&two.config_path).map_err(|e| anyhow!(e.report()))?;

    // The patient on one reports a few measurements.
    let patient = a1
        .sign_in(
            &one.patient.username,
            Secret::new(one.patient.password.clone()),
        )
        .await?;
    let upstream = mdgate::upstream::AccessMd::new(&config1.upstream);
    let session = patient
        .patient_session(&upstream)
        .context("patient session")?;
    for i in 0..3 {
        session
            .report_vitals(&Vitals {
                heart_beats_per_minute: 60.0 + f64::from(i),
                systolic_pressure: 120.0,
                diastolic_pressure: 80.0,
                blood_oxygenation: 98.0,
                breathing_rate: 14.0,
            })
            .await?;
    }

    // The doctor on two asks, the patient approves with the code.
    let invitation = a1.new_invitation(&patient).await?;
    let doctor = a2
        .sign_in(
            &two.doctor.username,
            Secret::new(two.doctor.password.clone()),
        )
        .await?;
    let req = a2
        .start_request(
            &doctor,
            &invitation.payload,
            Role::Viewer,
            Duration::from_secs(4 * 3600),
        )
        .await?;
    let code = req.code.clone().context("no request code")?;
    let pending = a1
        .patient_overview(&patient)
        .await?
        .pending
        .first()
        .context("no pending request on one")?
        .id;
    let grant = a1.approve(&patient, pending, &code, None, None).await?;
    let mut approved = false;
    for _ in 0..200 {
        if a2.doctor_request(&doctor, req.id).await?.state == "approved" {
            approved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !approved {
        bail!("the grant did not reach site two");
    }
    let store2 = mdgate::store::open(&config2.store).await?;
    let token = store2
        .outgoing_request(req.id)
        .await?
        .and_then(|r| r.grant)
        .context("no grant token on two")?
        .token;
    store2.close().await?;

    // A session of the federation account, for the direct and nginx targets.
    let fed = a1
        .sign_in(
            &one.federation_account.username,
            Secret::new(one.federation_account.password.clone()),
        )
        .await?;
    let emulator = one
        .emulator()
        .base_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .context("emulator address")?;
    Ok(BedInfo {
        egress: two.running().egress.clone().context("egress on two")?,
        one_fqdn: one.fqdn.clone(),
        one_public: one.running().public_addr,
        one_public_tls: one.public == PublicListener::Tls,
        emulator,
        one_dir: one.dir.clone(),
        two_dir: two.dir.clone(),
        one_store: one.running().store.clone(),
        metrics_one: one.running().metrics.clone(),
        federation_path: RouteId::Vitals.federation_path(&grant.patient),
        upstream_path: RouteId::Vitals.upstream_path(patient.upstream_id.0),
        token,
        session: fed.session.expose().to_owned(),
    })
}

/// The testbed on its own thread and runtime, pinned to `cpu` (mdgate's
/// worker threads and the stores' threads, created from it, inherit that).
struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(dir: PathBuf, cpu: usize, public: PublicListener) -> Result<(Server, BedInfo)> {
        let (info_tx, info_rx) = std::sync::mpsc::channel::<Result<BedInfo>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-srv".to_owned())
            .spawn(move || {
                let run = || -> Result<()> {
                    pin_current(cpu)?;
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(async {
                        match setup_bed(&dir, public).await {
                            Ok((bed, info)) => {
                                let _ = info_tx.send(Ok(info));
                                let _ = stop_rx.await;
                                bed.shutdown().await;
                            }
                            Err(e) => {
                                let _ = info_tx.send(Err(e));
                            }
                        }
                    });
                    Ok(())
                };
                if let Err(e) = run() {
                    eprintln!("[access_bench] server thread: {e:#}");
                }
            })?;
        let info = info_rx
            .recv()
            .map_err(|_| anyhow!("the server thread ended before the testbed was up"))??;
        Ok((
            Server {
                stop: Some(stop_tx),
                thread: Some(thread),
            },
            info,
        ))
    }

    fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

// ------------------------------------------------------------------ nginx

/// nginx started by us: master (and its one worker) pinned to a core.
struct Nginx {
    child: Child,
    worker: Option<u32>,
    port: u16,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Nginx {
    fn start(bin: &Path, dir: &Path, cpu: usize, info: &BedInfo) -> Result<Nginx> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let d = dir.display();
        let (one, two) = (info.one_dir.display(), info.two_dir.display());
        let conf = format!(
            r#"# Generated by examples/access_bench.rs: mutual TLS and proxying, no authorization.
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout 60s;
    keepalive_requests 100000000;
    server_tokens off;
    upstream accessmd {{
        server {emu};
        keepalive 32;
        keepalive_timeout 90s;
        keepalive_requests 100000000;
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {fqdn};
        ssl_certificate {one}/fed.crt;
        ssl_certificate_key {one}/fed.key;
        # Site two's self-signed certificate is the only client CA.
        ssl_client_certificate {two}/fed.crt;
        ssl_verify_client on;
        ssl_verify_depth 1;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        ssl_session_tickets on;
        location = {fed_path} {{
            proxy_pass http://accessmd{up_path};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "";
            proxy_set_header Cookie "JSESSIONID={session}";
            proxy_connect_timeout 2s;
            proxy_read_timeout 30s;
        }}
        location / {{ return 404; }}
    }}
}}
"#,
            emu = info.emulator,
            fqdn = info.one_fqdn,
            fed_path = info.federation_path,
            up_path = info.upstream_path,
            session = info.session,
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new("taskset")
            .arg("-c")
            .arg(cpu.to_string())
            .arg(bin)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut nginx = Nginx {
            child,
            worker: None,
            port,
        };
        for _ in 0..100 {
            let children = read_trim(&format!("/proc/{0}/task/{0}/children", nginx.child.id()));
            if let Some(w) = children.split_whitespace().next() {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    nginx.worker = w.parse().ok();
                    return Ok(nginx);
                }
            }
            if let Some(status) = nginx.child.try_wait()? {
                bail!("nginx exited at start ({status}); see {d}/error.log");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("nginx did not start listening on {port}")
    }

    fn version(bin: &Path) -> Option<String> {
        let out = Command::new(bin).arg("-v").output().ok()?;
        Some(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // A graceful stop: SIGKILL to the master would leave the worker.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args(["-QUIT", &pid])
            .stderr(Stdio::null())
            .status();
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(w) = self.worker {
            let _ = Command::new("kill")
                .args(["-KILL", &w.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

// ------------------------------------------------------------- load phases

#[derive(Default)]
struct WorkerOut {
    /// Latency of each recorded request, ns (from the scheduled time in
    /// the rate mode).
    lat: Vec<u64>,
    /// Rate mode: from the moment the request was actually sent.
    lat_sent: Vec<u64>,
    /// Rate mode: how late the request was sent after its scheduled time.
    late: Vec<u64>,
    ok: u64,
    /// All requests answered 200, inside or outside the window.
    ok_all: u64,
    non200: u64,
    wrong_body: u64,
    errors: u64,
}

impl WorkerOut {
    fn merge(&mut self, o: WorkerOut) {
        self.lat.extend(o.lat);
        self.lat_sent.extend(o.lat_sent);
        self.late.extend(o.late);
        self.ok += o.ok;
        self.ok_all += o.ok_all;
        self.non200 += o.non200;
        self.wrong_body += o.wrong_body;
        self.errors += o.errors;
    }

    /// Sends one request on `conn` (reconnecting after an error) and
    /// classifies the answer; true for a 200 with the expected body.
    async fn one(&mut self, ep: &Endpoint, conn: &mut Option<Conn>, expect: &Bytes) -> bool {
        if conn.is_none() {
            match ep.connect().await {
                Ok(c) => *conn = Some(c),
                Err(_) => {
                    self.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    return false;
                }
            }
        }
        let Some(c) = conn.as_mut() else {
            return false;
        };
        match ep.send(c).await {
            Ok(s) if s.status == 200 && s.body == *expect => {
                self.ok_all += 1;
                true
            }
            Ok(s) if s.status == 200 => {
                self.wrong_body += 1;
                false
            }
            Ok(_) => {
                self.non200 += 1;
                false
            }
            Err(_) => {
                self.errors += 1;
                *conn = None;
                false
            }
        }
    }
}

#[derive(Serialize, Clone, Copy, Default)]
struct Percentiles {
    n: usize,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
}

fn percentiles(v: &mut [u64]) -> Percentiles {
    if v.is_empty() {
        return Percentiles::default();
    }
    v.sort_unstable();
    let at = |q: f64| {
        let i = ((v.len() as f64) * q) as usize;
        v[i.min(v.len() - 1)] as f64 / 1000.0
    };
    Percentiles {
        n: v.len(),
        p50_us: at(0.50),
        p90_us: at(0.90),
        p99_us: at(0.99),
        p999_us: at(0.999),
        max_us: v[v.len() - 1] as f64 / 1000.0,
    }
}

#[derive(Serialize, Clone)]
struct Phase {
    round: usize,
    attempt: usize,
    target: Target,
    mode: &'static str,
    /// Kept for the tables (false: thrown away for foreign load).
    used: bool,
    noisy: bool,
    quiet_wait_s: f64,
    requests: u64,
    req_per_s: f64,
    latency: Percentiles,
    /// Rate mode: measured from the actual send, and the send's lateness.
    latency_from_send: Option<Percentiles>,
    dispatch_late: Option<Percentiles>,
    non200: u64,
    wrong_body: u64,
    errors: u64,
    ok_all: u64,
    cpu: CpuWindow,
    /// CPU per request of each group, µs.
    cpu_us_per_req: BTreeMap<String, f64>,
    /// Federation connections site one accepted during the window.
    federation_conns_opened: u64,
    /// Site one's audit group commits during the window: how many, their
    /// mean entries, and their mean time to durable (µs).
    audit_commits: f64,
    audit_entries_per_commit: f64,
    audit_commit_us: f64,
    /// Group commits over 1.6 ms and over 12.8 ms in the window: the
    /// disk's slow flushes, which every request queued behind waits for.
    audit_slow_commits: (f64, f64),
    /// Entries waiting in site one's journal for the copier at the
    /// window's end: whether the copier keeps up with the load.
    journal_backlog_at_end: f64,
}

struct PhaseSpec {
    warmup: Duration,
    duration: Duration,
}

async fn run_saturated(
    ep: Arc<Endpoint>,
    conns: usize,
    spec: &PhaseSpec,
    probe: &Probe,
    expect: Bytes,
) -> Result<(WorkerOut, Snap, Snap)> {
    let mut opened = Vec::with_capacity(conns);
    for _ in 0..conns {
        opened.push(ep.connect().await?);
    }
    let start = Instant::now();
    let ws = start + spec.warmup;
    let we = ws + spec.duration;
    let sampler = {
        let probe = probe.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(ws.into()).await;
            let a = probe.snap();
            tokio::time::sleep_until(we.into()).await;
            let b = probe.snap();
            (a, b)
        })
    };
    let mut handles = Vec::new();
    for conn in opened {
        let ep = ep.clone();
        let expect = expect.clone();
        handles.push(tokio::spawn(async move {
            let mut out = WorkerOut::default();
            let mut conn = Some(conn);
            loop {
                let t0 = Instant::now();
                if t0 >= we {
                    break;
                }
                let ok = out.one(&ep, &mut conn, &expect).await;
                let t1 = Instant::now();
                if ok && t1 >= ws && t1 < we {
                    out.ok += 1;
                    out.lat.push((t1 - t0).as_nanos() as u64);
                }
            }
            out
        }));
    }
    let mut total = WorkerOut::default();
    for h in handles {
        total.merge(h.await?);
    }
    let (a, b) = sampler.await?;
    Ok((total, a, b))
}

async fn run_rate(
    ep: Arc<Endpoint>,
    conns: usize,
    rate: u32,
    spec: &PhaseSpec,
    probe: &Probe,
    expect: Bytes,
) -> Result<(WorkerOut, Snap, Snap)> {
    let mut opened = Vec::with_capacity(conns);
    for _ in 0..conns {
        opened.push(ep.connect().await?);
    }
    let start = Instant::now() + Duration::from_millis(20);
    let ws = start + spec.warmup;
    let we = ws + spec.duration;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let n = ((spec.warmup + spec.duration).as_secs_f64() * f64::from(rate)) as u32;
    // The schedule, from a plain thread: tokio's timer has millisecond
    // granularity, too coarse for 1 ms spacing.
    let dispatcher = std::thread::Builder::new()
        .name("bench-dispatch".to_owned())
        .spawn(move || {
            for i in 0..n {
                let at = start + period * i;
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                if tx.send(at).is_err() {
                    break;
                }
            }
        })?;
    let sampler = {
        let probe = probe.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(ws.into()).await;
            let a = probe.snap();
            tokio::time::sleep_until(we.into()).await;
            let b = probe.snap();
            (a, b)
        })
    };
    let mut handles = Vec::new();
    for conn in opened {
        let ep = ep.clone();
        let rx = rx.clone();
        let expect = expect.clone();
        handles.push(tokio::spawn(async move {
            let mut out = WorkerOut::default();
            let mut conn = Some(conn);
            loop {
                let Some(at) = rx.lock().await.recv().await else {
                    break;
                };
                let sent = Instant::now();
                let ok = out.one(&ep, &mut conn, &expect).await;
                let done = Instant::now();
                if ok && at >= ws && at < we {
                    out.ok += 1;
                    out.lat.push((done - at).as_nanos() as u64);
                    out.lat_sent.push((done - sent).as_nanos() as u64);
                    out.late.push((sent - at).as_nanos() as u64);
                }
            }
            out
        }));
    }
    let mut total = WorkerOut::default();
    for h in handles {
        total.merge(h.await?);
    }
    let _ = dispatcher.join();
    let (a, b) = sampler.await?;
    Ok((total, a, b))
}

// ------------------------------------------------------------ the checks

#[derive(Serialize, Clone, Copy)]
struct Timing {
    /// Median over batches, and the fastest and slowest batch, ns per call.
    median_ns: f64,
    min_ns: f64,
    max_ns: f64,
}

/// ns per call of `f`: a warm-up, then `batches` batches; median batch.
fn time_it<R>(iters: u64, batches: u32, mut f: impl FnMut() -> R) -> Timing {
    let per = (iters / u64::from(batches)).max(1);
    for _ in 0..per / 4 + 1 {
        std::hint::black_box(f());
    }
    let mut v: Vec<f64> = (0..batches)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per {
                std::hint::black_box(f());
            }
            t.elapsed().as_nanos() as f64 / per as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    Timing {
        median_ns: v[v.len() / 2],
        min_ns: v[0],
        max_ns: v[v.len() - 1],
    }
}

#[derive(Serialize)]
struct Checks {
    token_bytes: usize,
    bearer: Timing,
    verifier_check_cached: Timing,
    grant_cache_and_state: Timing,
    policy_decide: Timing,
    /// Everything `peer::data` does before the upstream call, in order.
    all_checks: Timing,
    /// The audit record built from a `serde_json::Value`, then what the
    /// store does before SQL: canonical JSON and the chain hash.
    audit_record_prep: Timing,
    /// The worker's part of the audit entry, as `peer::data` made it until
    /// 2026-12-08: the detail as a `Value`, then its canonical text.
    audit_detail_value: Timing,
    /// The same as `peer::data` makes it now: the canonical text written
    /// directly (`peer::access_detail`).
    audit_detail_flat: Timing,
    /// A cache miss: `verify_grant` (JWS parse, Ed25519, claims).
    full_verify_grant: Timing,
    /// Ed25519 alone (ring).
    ed25519_verify: Timing,
    requests_checked: u64,
    verifications_after: u64,
    verifications_after_second_token: u64,
}

/// Why the checks refused (never expected here): the reason peer::data
/// would answer.
type Refused = &'static str;

struct CheckFixture {
    headers: HeaderMap,
    target: String,
    peer_fqdn: String,
    cert: [u8; 32],
    verifier: GrantVerifier,
    cache: GrantCache,
    policy: Policy,
}

impl CheckFixture {
    /// The checks of `federation::access::peer::data` up to the upstream
    /// call, in the same order, on a warm token cache and grant cache.
    fn all(&self) -> Result<mdgate::policy::Permit, Refused> {
        let now = SystemTime::now();
        let now_ms = millis(now);
        let token = bearer(&self.headers)
            .map_err(|e| e.reason())?
            .ok_or("token_missing")?;
        let claims = self
            .verifier
            .check(token, &self.cert, now)
            .map_err(|e| e.reason())?;
        if claims.client != self.peer_fqdn {
            return Err("token_not_for_peer");
        }
        let live = self.cache.get(&claims.id).ok_or("grant_unknown")?;
        if live.is_revoked() {
            return Err("grant_revoked");
        }
        if !live.is_live(now_ms) {
            return Err("grant_expired");
        }
        if live.grant.patient != claims.patient || live.grant.server_fqdn != self.peer_fqdn {
            return Err("token_grant_mismatch");
        }
        let stored: Role = live.grant.role.parse().map_err(|_| "internal")?;
        let role = stored.min(claims.role);
        let facts = RequestFacts {
            method: &Method::GET,
            target: self.target.as_bytes(),
            headers: &self.headers,
            has_body: false,
        };
        let grant = GrantFacts {
            patient_fid: claims.patient,
            upstream_patient_id: live.upstream_patient_id,
            role,
        };
        self.policy
            .decide(&facts, &grant)
            .map_err(|d| d.reason.label())
    }
}

fn checks(iters: u64) -> Result<Checks> {
    let issuer = "one.mdgate.test";
    let client = "two.mdgate.test";
    let key = mdgate::token::SigningKey::generate("sig1")?;
    let now = unix_seconds(SystemTime::now());
    let fid = Uuid::new_v4();
    let grant_id = Uuid::new_v4();
    let cert = [7u8; 32];
    let claims = GrantClaims {
        issuer: issuer.to_owned(),
        patient: fid,
        client: client.to_owned(),
        actor: format!("dr-two@{client}"),
        role: Role::Viewer,
        not_before: now - 60,
        expires_at: now + 7200,
        issued_at: now - 60,
        id: grant_id,
        cert_sha256: cert,
    };
    let token = issue_grant(&key, &claims)?;
    let skew = mdgate::token::DEFAULT_CLOCK_SKEW;
    // As `serve` builds it: the keys without selectors.
    let verifier = GrantVerifier::new(issuer, vec![key.verifying_key().clone()], skew, 100_000);
    let cache = GrantCache::new(100_000);
    cache.insert(LiveGrant::new(
        Grant {
            id: grant_id,
            request_id: Uuid::new_v4(),
            patient: fid,
            server_fqdn: client.to_owned(),
            server_key_sha256: cert,
            doctor: claims.actor.clone(),
            role: "viewer".to_owned(),
            not_before: (now - 60) * 1000,
            expires_at: (now + 7200) * 1000,
            revoked_at: None,
        },
        42,
    ));
    let mut headers = HeaderMap::new();
    headers.insert(HOST, HeaderValue::from_static("one.mdgate.test"));
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    let f = CheckFixture {
        headers,
        target: RouteId::Vitals.federation_path(&fid),
        peer_fqdn: client.to_owned(),
        cert,
        verifier,
        cache,
        policy: Policy::default(),
    };
    // The first request verifies the signature; the rest hit the cache.
    let permit = f.all().map_err(|r| anyhow!("checks refused: {r:?}"))?;
    if permit.upstream_path_and_query != RouteId::Vitals.upstream_path(42) {
        bail!("unexpected permit {permit:?}");
    }
    let batches = 9;
    let bearer_t = time_it(iters, batches, || {
        bearer(&f.headers).ok().flatten().map(str::len)
    });
    let check_t = time_it(iters, batches, || {
        f.verifier.check(&token, &cert, SystemTime::now()).is_ok()
    });
    let grant_t = time_it(iters, batches, || {
        f.cache
            .get(&grant_id)
            .is_some_and(|g| !g.is_revoked() && g.is_live(millis(SystemTime::now())))
    });
    let facts_headers = f.headers.clone();
    let grant_facts = GrantFacts {
        patient_fid: fid,
        upstream_patient_id: 42,
        role: Role::Viewer,
    };
    let policy_t = time_it(iters, batches, || {
        f.policy
            .decide(
                &RequestFacts {
                    method: &Method::GET,
                    target: f.target.as_bytes(),
                    headers: &facts_headers,
                    has_body: false,
                },
                &grant_facts,
            )
            .is_ok()
    });
    let all_t = time_it(iters, batches, || f.all().is_ok());
    let audit_t = time_it(iters / 4, batches, || {
        let record = AuditRecord {
            at: millis(SystemTime::now()),
            kind: "record.read".to_owned(),
            actor: claims.actor.clone(),
            patient: Some(fid),
            detail: serde_json::json!({"route": "vitals", "grant": grant_id,
                "server": client, "status": 200}),
        };
        let detail = mdgate::store::chain::canonical_json(&record.detail);
        let patient = record.patient.map(|p| p.hyphenated().to_string());
        mdgate::store::chain::entry_hash(
            &[1; 32],
            &mdgate::store::chain::EntryFields {
                seq: 1,
                at: record.at,
                kind: &record.kind,
                actor: &record.actor,
                patient: patient.as_deref(),
                detail: &detail,
            },
        )
    });
    let detail_value_t = time_it(iters / 4, batches, || {
        let detail = serde_json::json!({"route": "vitals", "grant": grant_id,
            "server": client, "status": 200});
        mdgate::store::CanonicalRecord::from(AuditRecord {
            at: millis(SystemTime::now()),
            kind: "record.read".to_owned(),
            actor: claims.actor.clone(),
            patient: Some(fid),
            detail,
        })
    });
    let detail_flat_t = time_it(iters / 4, batches, || mdgate::store::CanonicalRecord {
        at: millis(SystemTime::now()),
        kind: "record.read".to_owned(),
        actor: claims.actor.clone(),
        patient: Some(fid),
        detail: mdgate::federation::access::peer::access_detail(
            "vitals",
            grant_id,
            client,
            http::StatusCode::OK,
        ),
    });
    let verifications_after = f.verifier.verifications();
    let vk = key.verifying_key().clone();
    let full_t = time_it(3000, batches, || {
        verify_grant(&token, &vk, issuer, SystemTime::now(), skew).is_ok()
    });
    let ed_t = ed25519_timing(&key, &token, 3000, batches)?;
    // A second token (another grant) costs one more verification.
    let second = issue_grant(
        &key,
        &GrantClaims {
            id: Uuid::new_v4(),
            ..claims.clone()
        },
    )?;
    for _ in 0..1000 {
        f.verifier
            .check(&second, &cert, SystemTime::now())
            .map_err(|e| anyhow!("second token: {e}"))?;
    }
    // Calls of `check` with the first token: the one before timing, then
    // those of the warm-ups and batches of `check` and of the full path.
    let per = (iters / u64::from(batches)).max(1);
    let calls = 1 + 2 * (per / 4 + 1 + per * u64::from(batches));
    Ok(Checks {
        token_bytes: token.len(),
        bearer: bearer_t,
        verifier_check_cached: check_t,
        grant_cache_and_state: grant_t,
        policy_decide: policy_t,
        all_checks: all_t,
        audit_record_prep: audit_t,
        audit_detail_value: detail_value_t,
        audit_detail_flat: detail_flat_t,
        full_verify_grant: full_t,
        ed25519_verify: ed_t,
        requests_checked: calls,
        verifications_after,
        verifications_after_second_token: f.verifier.verifications(),
    })
}

/// Ed25519 alone on the token's signing input, with ring.
fn ed25519_timing(
    key: &mdgate::token::SigningKey,
    token: &str,
    iters: u64,
    batches: u32,
) -> Result<Timing> {
    use base64::Engine as _;
    let raw = key
        .spki_der()
        .strip_prefix(&mdgate::token::ED25519_SPKI_PREFIX)
        .context("not an Ed25519 SPKI")?
        .to_vec();
    let (input, sig) = token.rsplit_once('.').context("not a JWS")?;
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig)?;
    let public = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, raw);
    public
        .verify(input.as_bytes(), &sig)
        .map_err(|_| anyhow!("signature does not verify"))?;
    Ok(time_it(iters, batches, || {
        public.verify(input.as_bytes(), &sig).is_ok()
    }))
}

// ------------------------------------------------------------ the audit

#[derive(Serialize)]
struct AuditReport {
    path: String,
    filesystem: String,
    /// One `append_audit` at a time (the data path's call).
    sequential: Percentiles,
    sequential_per_s: f64,
    /// CPU of this process (caller and SQLite threads) per append.
    sequential_cpu_us: f64,
    /// `appenders` tasks appending at once through the same store.
    concurrent: Percentiles,
    concurrent_per_s: f64,
    concurrent_cpu_us: f64,
    appenders: usize,
    concurrent_busy_errors: u64,
    /// The same, with the appends taken in turn through an async mutex
    /// (what a store-level writer lock would do).
    serialized: Percentiles,
    serialized_per_s: f64,
    serialized_cpu_us: f64,
    /// `fdatasync` of a small write to a file in the same directory.
    fdatasync: Percentiles,
    /// Prototype of group commit: K chained entries per transaction
    /// (same SQL as the store, one commit), µs per entry.
    group_commit: Vec<GroupCommit>,
    chain_verified_entries: u64,
}

#[derive(Serialize)]
struct GroupCommit {
    entries_per_commit: usize,
    per_entry_us: f64,
    per_commit: Percentiles,
}

fn audit_record(fid: Uuid, grant: Uuid) -> AuditRecord {
    AuditRecord {
        at: millis(SystemTime::now()),
        kind: "record.read".to_owned(),
        actor: "dr-two@two.mdgate.test".to_owned(),
        patient: Some(fid),
        detail: serde_json::json!({"route": "vitals", "grant": grant,
            "server": "two.mdgate.test", "status": 200}),
    }
}

async fn audit_bench(dir: &Path, n: usize, appenders: usize) -> Result<AuditReport> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("audit-bench.db");
    let store = mdgate::store::open(&mdgate::config::Store::Sqlite { path: path.clone() }).await?;
    let (fid, grant) = (Uuid::new_v4(), Uuid::new_v4());
    for _ in 0..50 {
        store.append_audit(audit_record(fid, grant)).await?;
    }
    let mut lat = Vec::with_capacity(n);
    let cpu0 = process_cpu_ns();
    let t = Instant::now();
    for _ in 0..n {
        let t0 = Instant::now();
        store.append_audit(audit_record(fid, grant)).await?;
        lat.push(t0.elapsed().as_nanos() as u64);
    }
    let sequential_per_s = n as f64 / t.elapsed().as_secs_f64();
    let sequential_cpu_us = (process_cpu_ns() - cpu0) as f64 / 1e3 / n as f64;
    let sequential = percentiles(&mut lat);

    let (concurrent, concurrent_per_s, concurrent_cpu_us, busy) =
        appenders_at_once(&store, n, appenders, None, fid, grant).await?;
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    let (serialized, serialized_per_s, serialized_cpu_us, busy2) =
        appenders_at_once(&store, n, appenders, Some(lock), fid, grant).await?;

    let fdatasync = {
        use std::io::Write as _;
        let file_path = dir.join("fsync-probe");
        let mut file = std::fs::File::create(&file_path)?;
        let mut lat = Vec::new();
        for _ in 0..n.min(1000) {
            file.write_all(&[0u8; 128])?;
            let t0 = Instant::now();
            file.sync_data()?;
            lat.push(t0.elapsed().as_nanos() as u64);
        }
        drop(file);
        std::fs::remove_file(&file_path)?;
        percentiles(&mut lat)
    };

    let mut group_commit = Vec::new();
    for k in [1usize, 8, 32] {
        group_commit
            .push(group_commit_prototype(&path, k, (n / k).clamp(30, 500), fid, grant).await?);
    }
    let verified = match store.verify_audit(None).await? {
        Ok(v) => v.entries,
        Err(b) => bail!("the audit chain breaks at {}: {:?}", b.seq, b.reason),
    };
    store.close().await?;
    Ok(AuditReport {
        path: path.display().to_string(),
        filesystem: filesystem_of(dir),
        sequential,
        sequential_per_s,
        sequential_cpu_us,
        concurrent,
        concurrent_per_s,
        concurrent_cpu_us,
        appenders,
        concurrent_busy_errors: busy + busy2,
        serialized,
        serialized_per_s,
        serialized_cpu_us,
        fdatasync,
        group_commit,
        chain_verified_entries: verified,
    })
}

/// CPU time of every thread of this process so far, ns.
fn process_cpu_ns() -> u64 {
    threads().values().map(|t| t.run_ns).sum()
}

/// `appenders` tasks appending `n` entries in all through `store`, taking
/// `lock` around each append when given. Latency percentiles, appends/s,
/// CPU µs per append, failed appends.
async fn appenders_at_once(
    store: &Arc<dyn mdgate::store::Store>,
    n: usize,
    appenders: usize,
    lock: Option<Arc<tokio::sync::Mutex<()>>>,
    fid: Uuid,
    grant: Uuid,
) -> Result<(Percentiles, f64, f64, u64)> {
    let cpu0 = process_cpu_ns();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..appenders {
        let store = store.clone();
        let lock = lock.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut failed = 0u64;
            for _ in 0..n / appenders {
                let t0 = Instant::now();
                let _turn = match &lock {
                    Some(l) => Some(l.lock().await),
                    None => None,
                };
                match store.append_audit(audit_record(fid, grant)).await {
                    Ok(_) => lat.push(t0.elapsed().as_nanos() as u64),
                    Err(_) => failed += 1,
                }
            }
            (lat, failed)
        }));
    }
    let mut lat = Vec::new();
    let mut failed = 0;
    for task in tasks {
        let (l, f) = task.await?;
        lat.extend(l);
        failed += f;
    }
    let per_s = lat.len() as f64 / t.elapsed().as_secs_f64();
    let cpu_us = (process_cpu_ns() - cpu0) as f64 / 1e3 / lat.len().max(1) as f64;
    Ok((percentiles(&mut lat), per_s, cpu_us, failed))
}

/// `k` entries per transaction, each chained to the previous exactly as
/// `store::sqlite` chains them, one commit (one WAL fsync) per batch.
async fn group_commit_prototype(
    path: &Path,
    k: usize,
    batches: usize,
    fid: Uuid,
    grant: Uuid,
) -> Result<GroupCommit> {
    use mdgate::store::chain::{canonical_json, entry_hash, EntryFields, GENESIS};
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    use sqlx::{ConnectOptions as _, Connection as _, Row as _};
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let mut lat = Vec::with_capacity(batches);
    let t = Instant::now();
    for _ in 0..batches {
        let t0 = Instant::now();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await?;
        let head = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut conn)
            .await?;
        let (mut seq, mut prev) = match head {
            None => (0, GENESIS),
            Some(row) => {
                let seq: i64 = row.try_get("seq")?;
                let hash: Vec<u8> = row.try_get("hash")?;
                (seq, hash.try_into().map_err(|_| anyhow!("hash size"))?)
            }
        };
        for _ in 0..k {
            let record = audit_record(fid, grant);
            seq += 1;
            let detail = canonical_json(&record.detail);
            let patient = record.patient.map(|p| p.hyphenated().to_string());
            let hash = entry_hash(
                &prev,
                &EntryFields {
                    seq,
                    at: record.at,
                    kind: &record.kind,
                    actor: &record.actor,
                    patient: patient.as_deref(),
                    detail: &detail,
                },
            );
            sqlx::query(
                "INSERT INTO audit_log (seq, at, kind, actor, patient, detail, prev_hash, hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .bind(seq)
            .bind(record.at)
            .bind(&record.kind)
            .bind(&record.actor)
            .bind(&patient)
            .bind(&detail)
            .bind(prev.as_slice())
            .bind(hash.as_slice())
            .execute(&mut conn)
            .await?;
            prev = hash;
        }
        sqlx::query("COMMIT").execute(&mut conn).await?;
        lat.push(t0.elapsed().as_nanos() as u64);
    }
    let per_entry_us = t.elapsed().as_secs_f64() * 1e6 / (batches * k) as f64;
    conn.close().await?;
    Ok(GroupCommit {
        entries_per_commit: k,
        per_entry_us,
        per_commit: percentiles(&mut lat),
    })
}

fn filesystem_of(dir: &Path) -> String {
    Command::new("df")
        .args(["--output=fstype,source,target"])
        .arg(dir)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Runs `f` on a new thread pinned to `cpu`, with its own runtime.
fn on_pinned_thread<T: Send + 'static>(
    name: &str,
    cpu: usize,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>>>> + Send + 'static,
) -> Result<T> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            pin_current(cpu)?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(f())
        })?
        .join()
        .map_err(|_| anyhow!("thread panicked"))?
}

// -------------------------------------------------------------- the run

fn build_endpoints(info: &BedInfo, nginx_port: Option<u16>) -> Result<Vec<Endpoint>> {
    let cookie = HeaderValue::from_str(&format!("JSESSIONID={}", info.session))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", info.token))?;
    let host_one = HeaderValue::from_str(&info.one_fqdn)?;
    let mut eps = Vec::new();
    let plain = |target, addr: SocketAddr| -> Result<Endpoint> {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_str(&addr.to_string())?);
        headers.insert(COOKIE, cookie.clone());
        Ok(Endpoint {
            target,
            via: Via::Plain(addr),
            path: info.upstream_path.clone(),
            uri: info.upstream_path.parse()?,
            headers,
        })
    };
    eps.push(plain(Target::Direct, info.emulator)?);
    if info.one_public_tls {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, host_one.clone());
        headers.insert(COOKIE, cookie.clone());
        eps.push(Endpoint {
            target: Target::Passthrough,
            via: Via::Tls {
                addr: info.one_public,
                connector: tls_connector(&info.one_dir.join("fed.crt"), None)?,
                name: ServerName::try_from(info.one_fqdn.clone())?,
            },
            path: info.upstream_path.clone(),
            uri: info.upstream_path.parse()?,
            headers,
        });
    } else {
        eps.push(plain(Target::Passthrough, info.one_public)?);
    }
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, bearer.clone());
    eps.push(Endpoint {
        target: Target::Authorized,
        via: Via::Egress {
            egress: info.egress.clone(),
            fqdn: info.one_fqdn.clone(),
        },
        path: info.federation_path.clone(),
        uri: info.federation_path.parse()?,
        headers,
    });
    if let Some(port) = nginx_port {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, host_one);
        headers.insert(AUTHORIZATION, bearer);
        eps.push(Endpoint {
            target: Target::Nginx,
            via: Via::Tls {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                connector: tls_connector(
                    &info.one_dir.join("fed.crt"),
                    Some((&info.two_dir.join("fed.crt"), &info.two_dir.join("fed.key"))),
                )?,
                name: ServerName::try_from(info.one_fqdn.clone())?,
            },
            path: info.federation_path.clone(),
            uri: info.federation_path.parse()?,
            headers,
        });
    }
    Ok(eps)
}

/// One request to each target: all must answer 200 with the same body.
async fn reference(eps: &[Endpoint]) -> Result<Bytes> {
    let mut body: Option<Bytes> = None;
    for ep in eps {
        let mut conn = ep.connect().await?;
        let sent = ep
            .send(&mut conn)
            .await
            .with_context(|| format!("{}: first request", ep.target.name()))?;
        if sent.status != 200 {
            bail!(
                "{} answered {}: {}",
                ep.target.name(),
                sent.status,
                String::from_utf8_lossy(&sent.body)
            );
        }
        match &body {
            None => body = Some(sent.body),
            Some(b) if *b == sent.body => {}
            Some(b) => bail!(
                "{} answered another body ({} bytes, expected {})",
                ep.target.name(),
                sent.body.len(),
                b.len()
            ),
        }
    }
    body.context("no target")
}

/// The protocol version and cipher suite a TLS target negotiates (`None`
/// for a target without TLS).
async fn negotiated(eps: &[Endpoint], target: Target) -> Result<Option<String>> {
    let Some(Endpoint {
        via: Via::Tls {
            addr,
            connector,
            name,
        },
        ..
    }) = eps.iter().find(|e| e.target == target)
    else {
        return Ok(None);
    };
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = connector.connect(name.clone(), tcp).await?;
    let (_, c) = tls.get_ref();
    Ok(Some(format!(
        "{:?} {:?}",
        c.protocol_version(),
        c.negotiated_cipher_suite().map(|s| s.suite())
    )))
}

/// Which `mdgate-worker-0` thread is site one's: the one that works when
/// site one's public listener is busy.
async fn find_worker_one(ep: &Endpoint) -> Result<Option<u32>> {
    let before = threads();
    let mut conn = ep.connect().await?;
    for _ in 0..300 {
        ep.send(&mut conn).await?;
    }
    let after = threads();
    Ok(after
        .iter()
        .filter(|(_, t)| t.name.starts_with("mdgate-worker"))
        .max_by_key(|(tid, t)| {
            t.run_ns
                .saturating_sub(before.get(tid).map(|b| b.run_ns).unwrap_or(0))
        })
        .map(|(tid, _)| *tid))
}

async fn audit_seq(store: &dyn mdgate::store::Store) -> Result<i64> {
    Ok(store.audit_head().await?.map(|h| h.seq).unwrap_or(0))
}

async fn load_phases(
    args: &Args,
    info: &BedInfo,
    load_tid: u32,
    report: &mut Report,
) -> Result<()> {
    let targets: Vec<Target> = args
        .targets
        .split(',')
        .map(|s| Target::parse(s.trim()))
        .collect::<Result<_>>()?;
    let modes: Vec<&'static str> = args
        .modes
        .split(',')
        .map(|m| match m.trim() {
            "saturated" => Ok("saturated"),
            "rate" => Ok("rate"),
            other => Err(anyhow!("unknown mode {other:?}")),
        })
        .collect::<Result<_>>()?;
    let mut nginx = if targets.contains(&Target::Nginx) {
        Some(Nginx::start(
            &args.nginx,
            &args.work.join("nginx"),
            args.server_cpu,
            info,
        )?)
    } else {
        None
    };
    let eps = build_endpoints(info, nginx.as_ref().map(|n| n.port))?;
    let expect = reference(&eps).await?;
    let tls_to_nginx = negotiated(&eps, Target::Nginx).await?;
    let tls_to_passthrough = negotiated(&eps, Target::Passthrough).await?;
    let pass = eps
        .iter()
        .find(|e| e.target == Target::Passthrough)
        .context("passthrough endpoint")?;
    let probe = Probe {
        load_tid,
        worker_one: find_worker_one(pass).await?,
        nginx_worker: nginx.as_ref().and_then(|n| n.worker),
        metrics_one: info.metrics_one.clone(),
        server_cpu: args.server_cpu,
    };
    let seq_before = audit_seq(&*info.one_store).await?;
    let spec = PhaseSpec {
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
    };
    let mut authorized_ok = 0u64;
    for round in 1..=args.rounds {
        for mode in &modes {
            for target in &targets {
                let ep = Arc::new(
                    eps.iter()
                        .find(|e| e.target == *target)
                        .context("endpoint")?
                        .clone(),
                );
                for attempt in 1..=args.retries + 1 {
                    let quiet = if args.quiet_max > 0.0 {
                        wait_quiet(&probe, args.quiet_max, args.quiet_busy).await
                    } else {
                        0.0
                    };
                    let (out, a, b) = match *mode {
                        "saturated" => {
                            run_saturated(ep.clone(), args.conns, &spec, &probe, expect.clone())
                                .await?
                        }
                        _ => {
                            run_rate(
                                ep.clone(),
                                args.rate_conns,
                                args.rate,
                                &spec,
                                &probe,
                                expect.clone(),
                            )
                            .await?
                        }
                    };
                    if *target == Target::Authorized {
                        authorized_ok += out.ok_all;
                    }
                    let phase = make_phase(
                        round, attempt, *target, mode, quiet, out, &probe, &a, &b, args,
                    );
                    eprintln!(
                        "[access_bench] round {round} {mode:9} {:11} attempt {attempt} (waited {quiet:.0} s): {:8.0} req/s  p50 {:7.1} µs  p99 {:7.1} µs  foreign {:?}{}",
                        target.name(),
                        phase.req_per_s,
                        phase.latency.p50_us,
                        phase.latency.p99_us,
                        phase.cpu.core_foreign.iter().map(|f| f.round()).collect::<Vec<_>>(),
                        if phase.noisy { "  (noisy)" } else { "" }
                    );
                    let again = phase.noisy && attempt <= args.retries;
                    let mut phase = phase;
                    phase.used = !again;
                    report.phases.push(phase);
                    if !again {
                        break;
                    }
                }
            }
        }
    }
    if let Some(cpu) = args.perf_cpu {
        // Pass-through too, so that the two profiles can be compared per
        // request.
        for target in [Target::Passthrough, Target::Authorized] {
            let Some(ep) = eps.iter().find(|e| e.target == target) else {
                continue;
            };
            let (out, _, _) = profile_phase(
                args,
                cpu,
                Arc::new(ep.clone()),
                &spec,
                &probe,
                expect.clone(),
            )
            .await?;
            if target == Target::Authorized {
                authorized_ok += out.ok_all;
            }
            eprintln!(
                "[access_bench] perf phase {}: {} requests recorded in perf-{}.data",
                target.name(),
                out.ok,
                target.name()
            );
        }
    }
    let seq_after = audit_seq(&*info.one_store).await?;
    report.setup = Some(SetupReport {
        upstream_path: info.upstream_path.clone(),
        federation_path: info.federation_path.clone(),
        body_bytes: expect.len(),
        nginx_version: nginx.as_ref().and_then(|_| Nginx::version(&args.nginx)),
        tls_to_nginx,
        tls_to_passthrough,
        threads: threads()
            .into_iter()
            .map(|(tid, t)| {
                (
                    tid,
                    format!("{} [{}]", t.name, probe.group(tid, &t.name)),
                    t.cpus,
                )
            })
            .collect(),
        audit_seq_before: seq_before,
        audit_seq_after: seq_after,
        authorized_ok_total: authorized_ok,
    });
    if let Some(n) = nginx.as_mut() {
        n.stop();
    }
    Ok(())
}

/// A saturated phase with `perf record` on core `cpu` over its window
/// (perf itself on the load core).
async fn profile_phase(
    args: &Args,
    cpu: usize,
    ep: Arc<Endpoint>,
    spec: &PhaseSpec,
    probe: &Probe,
    expect: Bytes,
) -> Result<(WorkerOut, Snap, Snap)> {
    let out = args.out.join(format!("perf-{}.data", ep.target.name()));
    let (warmup, duration, load_cpu) = (spec.warmup, spec.duration, args.load_cpu);
    let freq = args.perf_freq;
    let events: Vec<String> = args
        .perf_events
        .iter()
        .flat_map(|e| e.split(','))
        .flat_map(|e| ["-e".to_owned(), e.to_owned()])
        .collect();
    let graph: &[&str] = if args.perf_flat {
        &[]
    } else if args.perf_fp {
        &["--call-graph", "fp"]
    } else {
        &["--call-graph", "dwarf,8192"]
    };
    let perf = tokio::spawn(async move {
        tokio::time::sleep(warmup).await;
        let status = tokio::process::Command::new("taskset")
            .args(["-c", &load_cpu.to_string(), "perf", "record", "-q"])
            // Every event of those asked for; CPU time sampled at `freq`.
            .args(if events.is_empty() {
                ["-F".to_owned(), freq.to_string()]
            } else {
                ["-c".to_owned(), "1".to_owned()]
            })
            .args(graph)
            .args(&events)
            .args(["-C", &cpu.to_string(), "-o"])
            .arg(&out)
            .args(["--", "sleep", &format!("{:.1}", duration.as_secs_f64())])
            .stdout(Stdio::null())
            .status()
            .await;
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("[access_bench] perf record failed: {status:?}");
        }
    });
    let result = run_saturated(ep, args.conns, spec, probe, expect).await;
    let _ = perf.await;
    result
}

#[allow(clippy::too_many_arguments)]
fn make_phase(
    round: usize,
    attempt: usize,
    target: Target,
    mode: &'static str,
    quiet: f64,
    mut out: WorkerOut,
    probe: &Probe,
    a: &Snap,
    b: &Snap,
    args: &Args,
) -> Phase {
    let cpu = cpu_window(probe, a, b);
    let requests = out.ok;
    let secs = cpu.seconds.max(1e-9);
    let per_req = |busy_pct: f64| {
        if requests == 0 {
            0.0
        } else {
            busy_pct / 100.0 * secs * 1e6 / requests as f64
        }
    };
    let cpu_us_per_req = cpu
        .group_busy
        .iter()
        .map(|(k, v)| (k.clone(), per_req(*v)))
        .collect();
    let noisy = cpu.core_foreign.iter().any(|f| *f > args.foreign_max);
    let rate_mode = mode == "rate";
    Phase {
        round,
        attempt,
        target,
        mode,
        used: true,
        noisy,
        quiet_wait_s: quiet,
        requests,
        req_per_s: requests as f64 / args.duration,
        latency: percentiles(&mut out.lat),
        latency_from_send: rate_mode.then(|| percentiles(&mut out.lat_sent)),
        dispatch_late: rate_mode.then(|| percentiles(&mut out.late)),
        non200: out.non200,
        wrong_body: out.wrong_body,
        errors: out.errors,
        ok_all: out.ok_all,
        federation_conns_opened: b.fed_conns.saturating_sub(a.fed_conns),
        audit_commits: b.audit.0 - a.audit.0,
        audit_entries_per_commit: (b.audit.1 - a.audit.1) / (b.audit.0 - a.audit.0).max(1.0),
        audit_commit_us: (b.audit.2 - a.audit.2) * 1e6 / (b.audit.0 - a.audit.0).max(1.0),
        audit_slow_commits: (
            b.audit_slow.0 - a.audit_slow.0,
            b.audit_slow.1 - a.audit_slow.1,
        ),
        journal_backlog_at_end: b.journal_pending,
        cpu,
        cpu_us_per_req,
    }
}

/// Waits (up to `max` seconds) until every core is less than `busy` %
/// busy, before anything of this run is started; returns the seconds
/// waited.
fn quiet_before(max: f64, busy: f64) -> f64 {
    let start = Instant::now();
    loop {
        let (a, t0) = (cpu_idle(), Instant::now());
        std::thread::sleep(Duration::from_secs(1));
        let (b, secs) = (cpu_idle(), t0.elapsed().as_secs_f64());
        let worst = b
            .iter()
            .zip(&a)
            .map(|(i1, i0)| 100.0 * (1.0 - i1.saturating_sub(*i0) as f64 / USER_HZ / secs))
            .fold(0.0, f64::max);
        if worst < busy || start.elapsed().as_secs_f64() >= max {
            return start.elapsed().as_secs_f64();
        }
    }
}

async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    std::fs::create_dir_all(&args.work)?;
    let mut report = Report {
        args: Some(args.clone()),
        loadavg_start: read_trim("/proc/loadavg"),
        ..Report::default()
    };
    // The main thread is the load generator's; threads it starts inherit.
    let load_tid = current_tid()?;
    // The micro-benchmarks are as sensitive to other processes as the
    // load phases: wait for quiet cores first (no foreign-load check after).
    let quiet_probe = |what: &str| {
        if args.quiet_max > 0.0 {
            let waited = quiet_before(args.quiet_max, args.quiet_busy);
            eprintln!("[access_bench] {what} (waited {waited:.0} s for quiet cores)");
        } else {
            eprintln!("[access_bench] {what}");
        }
    };
    if !args.skip_checks {
        quiet_probe("checks micro-benchmark");
        let c = on_pinned_thread("bench-checks", args.load_cpu, {
            let iters = args.check_iters;
            move || Box::pin(async move { checks(iters) })
        })?;
        report.checks = Some(c);
    }
    if !args.skip_audit {
        quiet_probe("audit append alone");
        let dir = args.work.join("audit");
        let n = args.audit_appends;
        let a = on_pinned_thread("bench-audit", args.server_cpu, move || {
            Box::pin(async move { audit_bench(&dir, n, 8).await })
        })?;
        report.audit = Some(a);
    }
    if !args.skip_load {
        eprintln!("[access_bench] starting the testbed");
        let public = if args.plain_public {
            PublicListener::PlainHttp
        } else {
            PublicListener::Tls
        };
        let (mut server, info) = Server::start(args.work.join("bed"), args.server_cpu, public)?;
        pin_current(args.load_cpu)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // On SIGINT or SIGTERM the phases are dropped, which stops nginx,
        // and the testbed is shut down below.
        let result = rt.block_on(async {
            tokio::select! {
                r = load_phases(&args, &info, load_tid, &mut report) => r,
                s = interrupted() => Err(anyhow!("interrupted ({s})")),
            }
        });
        drop(rt);
        server.stop();
        result?;
    }
    report.loadavg_end = read_trim("/proc/loadavg");
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(args.out.join("results.json"), json)?;
    let md = markdown(&report);
    std::fs::write(args.out.join("results.md"), &md)?;
    println!("{md}");
    Ok(())
}

// ------------------------------------------------------------- the tables

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn fmt_n(x: f64) -> String {
    if x.is_nan() {
        return "–".to_owned();
    }
    let s = format!("{:.0}", x);
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

fn markdown(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# access bench\n\nload average: start `{}`, end `{}`\n",
        r.loadavg_start, r.loadavg_end
    );
    if let Some(c) = &r.checks {
        let _ = writeln!(
            s,
            "## Checks alone (ns per request, median of 9 batches, min–max)\n"
        );
        let _ = writeln!(s, "| step | ns | range |\n|---|---|---|");
        for (name, t) in [
            ("bearer extraction", c.bearer),
            (
                "GrantVerifier::check, cached token",
                c.verifier_check_cached,
            ),
            (
                "GrantCache lookup + revocation/liveness",
                c.grant_cache_and_state,
            ),
            ("Policy::decide", c.policy_decide),
            ("all checks of peer::data, in order", c.all_checks),
            (
                "audit record + canonical JSON + chain hash",
                c.audit_record_prep,
            ),
            (
                "the worker's audit entry, detail built as a Value (before)",
                c.audit_detail_value,
            ),
            (
                "the worker's audit entry, canonical detail written directly",
                c.audit_detail_flat,
            ),
            ("full verify_grant (cache miss)", c.full_verify_grant),
            ("Ed25519 verify alone (ring)", c.ed25519_verify),
        ] {
            let _ = writeln!(
                s,
                "| {name} | {:.0} | {:.0}–{:.0} |",
                t.median_ns, t.min_ns, t.max_ns
            );
        }
        let _ = writeln!(
            s,
            "\ntoken {} bytes; `verifications()` after {} checks of one token: **{}**; after 1,000 more of a second token: {}\n",
            c.token_bytes, fmt_n(c.requests_checked as f64), c.verifications_after, c.verifications_after_second_token
        );
    }
    if let Some(a) = &r.audit {
        let _ = writeln!(s, "## Audit append alone ({})\n", a.filesystem);
        let _ = writeln!(s, "| measurement | per s | CPU µs each | p50 µs | p99 µs | p99.9 µs |\n|---|---|---|---|---|---|");
        let _ = writeln!(
            s,
            "| append_audit, one at a time | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            fmt_n(a.sequential_per_s),
            a.sequential_cpu_us,
            a.sequential.p50_us,
            a.sequential.p99_us,
            a.sequential.p999_us
        );
        let _ = writeln!(
            s,
            "| append_audit, {} at once | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            a.appenders,
            fmt_n(a.concurrent_per_s),
            a.concurrent_cpu_us,
            a.concurrent.p50_us,
            a.concurrent.p99_us,
            a.concurrent.p999_us
        );
        let _ = writeln!(s, "| append_audit, {} at once, taken in turn (async mutex) | {} | {:.0} | {:.0} | {:.0} | {:.0} |", a.appenders, fmt_n(a.serialized_per_s), a.serialized_cpu_us, a.serialized.p50_us, a.serialized.p99_us, a.serialized.p999_us);
        let _ = writeln!(
            s,
            "| fdatasync of 128 bytes | – | – | {:.0} | {:.0} | {:.0} |",
            a.fdatasync.p50_us, a.fdatasync.p99_us, a.fdatasync.p999_us
        );
        for g in &a.group_commit {
            let _ = writeln!(s, "| prototype: {} entries per commit | {} entries | – | {:.0} per commit | {:.0} | {:.0} |", g.entries_per_commit, fmt_n(1e6 / g.per_entry_us), g.per_commit.p50_us, g.per_commit.p99_us, g.per_commit.p999_us);
        }
        let _ = writeln!(
            s,
            "\nerrors among the concurrent appends: {}; chain verified over {} entries\n",
            a.concurrent_busy_errors, a.chain_verified_entries
        );
    }
    if let Some(setup) = &r.setup {
        let _ = writeln!(s, "## Load\n\nupstream `{}`; federation `{}`; body {} bytes; nginx: {:?}, TLS to nginx {:?}; passthrough: {}\n",
            setup.upstream_path, setup.federation_path, setup.body_bytes, setup.nginx_version, setup.tls_to_nginx,
            setup.tls_to_passthrough.as_deref().map_or("plain HTTP".to_owned(), |t| format!("TLS {t}")));
        let _ = writeln!(
            s,
            "audit log of site one: seq {} → {} (+{}); authorized reads answered 200: {}\n",
            setup.audit_seq_before,
            setup.audit_seq_after,
            setup.audit_seq_after - setup.audit_seq_before,
            setup.authorized_ok_total
        );
    }
    for mode in ["saturated", "rate"] {
        let used: Vec<&Phase> = r
            .phases
            .iter()
            .filter(|p| p.used && p.mode == mode)
            .collect();
        if used.is_empty() {
            continue;
        }
        let by =
            |t: Target| -> Vec<&Phase> { used.iter().copied().filter(|p| p.target == t).collect() };
        let base = median(
            by(Target::Passthrough)
                .iter()
                .map(|p| p.req_per_s)
                .collect(),
        );
        let _ = writeln!(s, "### {mode}\n");
        if mode == "saturated" {
            let _ = writeln!(s, "| target | req/s (min–max) | / passthrough | server core µs/req | mdgate µs/req | journal µs/req | sqlite µs/req | kernel I/O µs/req | testbed µs/req | nginx µs/req | load µs/req | load core | server core (foreign) | p50 µs | p99 µs | new fed. conns | non-200 / errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        } else {
            let _ = writeln!(s, "| target | achieved req/s | p50 µs | p90 µs | p99 µs | p99.9 µs | p99 from send µs | send late p99 µs | server core µs/req | mdgate µs/req | journal µs/req | sqlite µs/req | kernel I/O µs/req | testbed µs/req | nginx µs/req | new fed. conns | non-200 / errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        }
        for t in [
            Target::Direct,
            Target::Passthrough,
            Target::Authorized,
            Target::Nginx,
        ] {
            let ps = by(t);
            if ps.is_empty() {
                continue;
            }
            let med = |f: &dyn Fn(&Phase) -> f64| median(ps.iter().map(|p| f(p)).collect());
            let cpu = |g: &str| med(&|p| p.cpu_us_per_req.get(g).copied().unwrap_or(f64::NAN));
            // Everything that ran on the server core for a request.
            let server = med(&|p| {
                [
                    "mdgate",
                    "journal",
                    "sqlite",
                    "kernel_io",
                    "testbed",
                    "nginx",
                ]
                .iter()
                .filter_map(|g| p.cpu_us_per_req.get(*g))
                .sum()
            });
            let rps = med(&|p| p.req_per_s);
            let lo = ps.iter().map(|p| p.req_per_s).fold(f64::INFINITY, f64::min);
            let hi = ps.iter().map(|p| p.req_per_s).fold(0.0, f64::max);
            let errs: u64 = ps.iter().map(|p| p.errors).sum();
            let bad: u64 = ps.iter().map(|p| p.non200 + p.wrong_body).sum();
            let noisy = if ps.iter().any(|p| p.noisy) {
                " †"
            } else {
                ""
            };
            if mode == "saturated" {
                let conns: u64 = ps.iter().map(|p| p.federation_conns_opened).sum();
                let _ = writeln!(s, "| {}{} | {} ({}–{}) | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0}% | {:.0}% ({:.0}%) | {:.0} | {:.0} | {} | {} / {} |",
                    t.name(), noisy, fmt_n(rps), fmt_n(lo), fmt_n(hi), rps / base, server,
                    cpu("mdgate"), cpu("journal"), cpu("sqlite"), cpu("kernel_io"), cpu("testbed"), cpu("nginx"), cpu("load"),
                    med(&|p| p.cpu.core_busy.first().copied().unwrap_or(f64::NAN)),
                    med(&|p| p.cpu.core_busy.get(1).copied().unwrap_or(f64::NAN)),
                    med(&|p| p.cpu.core_foreign.get(1).copied().unwrap_or(f64::NAN)),
                    med(&|p| p.latency.p50_us), med(&|p| p.latency.p99_us), conns, bad, errs);
            } else {
                let conns: u64 = ps.iter().map(|p| p.federation_conns_opened).sum();
                let _ = writeln!(s, "| {}{} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} / {} |",
                    t.name(), noisy, fmt_n(rps),
                    med(&|p| p.latency.p50_us), med(&|p| p.latency.p90_us), med(&|p| p.latency.p99_us), med(&|p| p.latency.p999_us),
                    med(&|p| p.latency_from_send.map_or(f64::NAN, |l| l.p99_us)),
                    med(&|p| p.dispatch_late.map_or(f64::NAN, |l| l.p99_us)), server,
                    cpu("mdgate"), cpu("journal"), cpu("sqlite"), cpu("kernel_io"), cpu("testbed"), cpu("nginx"), conns, bad, errs);
            }
        }
        let auth = by(Target::Authorized);
        if !auth.is_empty() {
            let med = |f: &dyn Fn(&Phase) -> f64| median(auth.iter().map(|p| f(p)).collect());
            let _ = writeln!(
                s,
                "\nauthorized: site one's audit group commits (mdgate's metrics): {:.0} per s, {:.2} entries each, {:.0} µs each to durable; over 1.6 ms: {:.0}, over 12.8 ms: {:.0} per phase (by round: {}); entries waiting in the journal for the copier at the phase's end (by round): {}",
                med(&|p| p.audit_commits / window_seconds(p)),
                med(&|p| p.audit_entries_per_commit),
                med(&|p| p.audit_commit_us),
                med(&|p| p.audit_slow_commits.0),
                med(&|p| p.audit_slow_commits.1),
                auth.iter()
                    .map(|p| format!("{:.0}/{:.0}", p.audit_slow_commits.0, p.audit_slow_commits.1))
                    .collect::<Vec<_>>()
                    .join(", "),
                auth.iter()
                    .map(|p| format!("{:.0}", p.journal_backlog_at_end))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if mode == "saturated" {
            if let Some(line) = authorized_against_passthrough(&by(Target::Passthrough), &auth) {
                let _ = writeln!(s, "\n{line}");
            }
        }
        let _ = writeln!(s);
    }
    s
}

/// What an authorized read costs the server core beyond a pass-through
/// request, by part (medians over rounds, same run), the ratio by round,
/// and the ratio the durable audit entry alone would allow: pass-through's
/// cost over that cost plus the audit's threads and the emulator's
/// difference, as if the worker spent nothing beyond pass-through and the
/// core never idled. `None` unless both targets ran.
fn authorized_against_passthrough(pass: &[&Phase], auth: &[&Phase]) -> Option<String> {
    if pass.is_empty() || auth.is_empty() {
        return None;
    }
    let med = |ps: &[&Phase], g: &str| {
        median(
            ps.iter()
                .map(|p| p.cpu_us_per_req.get(g).copied().unwrap_or(0.0))
                .collect(),
        )
    };
    let worker = med(auth, "mdgate") - med(pass, "mdgate");
    let emulator = med(auth, "testbed") - med(pass, "testbed");
    let audit = med(auth, "journal") + med(auth, "sqlite") + med(auth, "kernel_io");
    let base = med(pass, "mdgate") + med(pass, "testbed");
    let mut rounds: Vec<(usize, f64)> = auth
        .iter()
        .filter_map(|a| {
            let p = pass.iter().find(|p| p.round == a.round)?;
            Some((a.round, a.req_per_s / p.req_per_s))
        })
        .collect();
    rounds.sort_by_key(|(round, _)| *round);
    let by_round = rounds
        .iter()
        .map(|(_, r)| format!("{r:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "authorized against pass-through, by round: {by_round}. Server core µs per read beyond pass-through's {base:.1}: worker {worker:+.1}, journal {:.1}, copier and SQLite {:.1}, kernel I/O {:.1}, emulator {emulator:+.1}. The durable audit entry alone ({audit:.1} µs) bounds the ratio at {:.2}, with a worker that spends nothing beyond pass-through and a core that never idles.",
        med(auth, "journal"),
        med(auth, "sqlite"),
        med(auth, "kernel_io"),
        base / (base + audit + emulator),
    ))
}

/// The recorded window of a phase, in seconds.
fn window_seconds(p: &Phase) -> f64 {
    p.req_per_s.max(1e-9).recip() * p.requests as f64
}
