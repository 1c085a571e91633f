//! `mdgate serve`: listeners, workers, signals, readiness and shutdown.
//!
//! Layout of a running process:
//!
//! ```text
//!  main runtime (current_thread)          worker threads (one current_thread runtime each)
//!  ├─ admin listener (/live /ready /metrics) ├─ public accept loop   (SO_REUSEPORT socket)
//!  ├─ readiness probes (store, upstream)     ├─ federation accept loop (SO_REUSEPORT socket)
//!  └─ signals: TERM/INT drain, HUP reload    └─ upstream connection pool (per worker)
//! ```
//!
//! Each worker owns its sockets, its connections and its upstream pool, so
//! the request path crosses no thread and takes no lock beyond the metrics'
//! families. The kernel spreads new connections over the workers.

pub mod conn;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::{self, AdminState, Metrics, Readiness};
use crate::config::{self, Config, Limits};
use crate::federation::egress::Egress;
use crate::federation::Federation;
use crate::proxy::{ConnInfo, Proxy};
use crate::tls::{self, CertReloader};
use conn::Handler;

/// Errors that stop mdgate from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} ({listener}): {source}")]
    Bind {
        listener: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{listener} TLS: {source}")]
    Tls {
        listener: &'static str,
        source: tls::TlsError,
    },
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("DNS: {0}")]
    Dns(crate::dns::DnsError),
    #[error("access flow: {0}")]
    Access(String),
    #[error("key document: {0}")]
    KeyDocument(String),
    #[error("cannot start worker thread: {0}")]
    Thread(std::io::Error),
}

/// A listener's TLS state: the acceptor and the reloadable certificate.
struct ListenerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    certs: Arc<CertReloader>,
}

/// What a worker needs to serve one listener.
#[derive(Clone)]
struct ListenerSpec {
    name: &'static str,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    /// On the federation listener: the gate that admits peers (the
    /// handshake verifier, then allow/deny and DNS-published keys).
    gate: Option<Arc<tls::PeerGate>>,
}

/// A started mdgate: addresses, reload and shutdown.
pub struct Running {
    pub public_addr: SocketAddr,
    pub federation_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// The client for requests to peers (with a federation listener).
    pub egress: Option<Arc<Egress>>,
    /// The peer key resolver (with a federation listener).
    pub resolver: Option<Arc<crate::dns::KeyResolver>>,
    /// The access flow (with a federation listener and `[keys]`).
    pub access: Option<crate::federation::access::Access>,
    /// The store: closed by [`Running::shutdown`], after the workers.
    pub store: Arc<dyn crate::store::Store>,
    shutdown_tx: watch::Sender<bool>,
    reloadable: Vec<(&'static str, Arc<CertReloader>)>,
    workers: Vec<std::thread::JoinHandle<()>>,
    drain_timeout: Duration,
    background: JoinSet<()>,
}

/// Binds `n` sockets to one address with `SO_REUSEPORT`. With port 0 the
/// first socket picks the port and the others join it.
fn bind_reuseport(
    name: &'static str,
    addr: SocketAddr,
    n: usize,
) -> Result<Vec<std::net::TcpListener>, ServeError> {
    let err = |source| ServeError::Bind {
        listener: name,
        addr,
        source,
    };
    let mut out = Vec::with_capacity(n);
    let mut bound = addr;
    for _ in 0..n {
        let domain = socket2::Domain::for_address(bound);
        let sock =
            socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))
                .map_err(err)?;
        sock.set_reuse_address(true).map_err(err)?;
        sock.set_reuse_port(true).map_err(err)?;
        sock.set_nonblocking(true).map_err(err)?;
        sock.bind(&bound.into()).map_err(err)?;
        sock.listen(1024).map_err(err)?;
        let std_listener: std::net::TcpListener = sock.into();
        bound = std_listener.local_addr().map_err(err)?;
        out.push(std_listener);
    }
    Ok(out)
}

fn worker_count(cfg: &config::Runtime) -> usize {
    if cfg.workers > 0 {
        cfg.workers
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

/// Starts every listener and background task; returns once all are bound.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut background = JoinSet::new();

    // The store first: nothing is acknowledged before it is open.
    let store = crate::store::open(&config.store).await?;
    readiness.store_open.store(true, Ordering::Release);

    // TLS material, validated before any socket is bound.
    let mut reloadable = Vec::new();
    let mut federation_gate = None;
    let mut egress = None;
    let mut key_resolver = None;
    let public_tls = match &config.public.tls {
        Some(files) => {
            let tls_err = |source| ServeError::Tls {
                listener: "public",
                source,
            };
            let certs = Arc::new(CertReloader::new(files.clone()).map_err(tls_err)?);
            let server = tls::public_server_config(certs.clone()).map_err(tls_err)?;
            reloadable.push(("public", certs.clone()));
            Some(ListenerTls {
                acceptor: tokio_rustls::TlsAcceptor::from(server),
                certs,
            })
        }
        None => None,
    };
    let federation_tls = match &config.federation {
        Some(fed) => {
            let tls_err = |source| ServeError::Tls {
                listener: "federation",
                source,
            };
            let certs = Arc::new(CertReloader::new(fed.tls.clone()).map_err(tls_err)?);
            // Peers are located (and, with `trust.dns`, trusted) through DNS.
            let resolver = Arc::new(
                crate::dns::KeyResolver::new(&config.dns, metrics.clone())
                    .map_err(ServeError::Dns)?,
            );
            let authority: Option<Arc<dyn tls::KeyAuthority>> = if fed.trust.dns {
                Some(resolver.clone())
            } else {
                None
            };
            let gate = Arc::new(tls::PeerGate::new(&fed.trust, authority).map_err(tls_err)?);
            federation_gate = Some(gate.clone());
            egress = Some(Arc::new(
                Egress::new(
                    certs.clone(),
                    gate.clone(),
                    resolver.clone(),
                    config.upstream.connect_timeout,
                    config.upstream.response_timeout,
                )
                .map_err(tls_err)?,
            ));
            key_resolver = Some(resolver);
            let server =
                tls::federation_server_config(certs.clone(), gate.verifier()).map_err(tls_err)?;
            reloadable.push(("federation", certs.clone()));
            Some(ListenerTls {
                acceptor: tokio_rustls::TlsAcceptor::from(server),
                certs,
            })
        }
        None => None,
    };
    for (name, certs) in &reloadable {
        tracing::info!(listener = *name, cert.spki_sha256 = %hex::encode(certs.spki_sha256()), "certificate loaded");
    }

    // This server's signed key document, when it has keys.
    let key_document = match &config.keys {
        Some(_) => {
            let doc = crate::token::publish::key_document(&config, std::time::SystemTime::now())
                .map_err(|e| ServeError::KeyDocument(e.to_string()))?;
            let cell = Arc::new(std::sync::RwLock::new(Some(bytes::Bytes::from(doc))));
            background.spawn(resign_key_document(
                config.clone(),
                cell.clone(),
                shutdown_rx.clone(),
            ));
            Some(cell)
        }
        None => None,
    };

    // Sockets.
    let n = worker_count(&config.runtime);
    let public_socks = bind_reuseport("public", config.public.listen, n)?;
    let public_addr = public_socks[0]
        .local_addr()
        .map_err(|source| ServeError::Bind {
            listener: "public",
            addr: config.public.listen,
            source,
        })?;
    let (federation_socks, federation_addr) = match &config.federation {
        Some(fed) => {
            let socks = bind_reuseport("federation", fed.listen, n)?;
            let addr = socks[0].local_addr().map_err(|source| ServeError::Bind {
                listener: "federation",
                addr: fed.listen,
                source,
            })?;
            (socks, Some(addr))
        }
        None => (Vec::new(), None),
    };
    let admin_listener =
        admin::bind(config.admin.listen)
            .await
            .map_err(|source| ServeError::Bind {
                listener: "admin",
                addr: config.admin.listen,
                source,
            })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            listener: "admin",
            addr: config.admin.listen,
            source,
        })?;

    // Workers.
    let public_spec = ListenerSpec {
        name: "public",
        tls: public_tls.as_ref().map(|t| t.acceptor.clone()),
        limits: config.public.limits.clone(),
        gate: None,
    };
    let federation_spec = config.federation.as_ref().map(|fed| ListenerSpec {
        name: "federation",
        tls: federation_tls.as_ref().map(|t| t.acceptor.clone()),
        limits: fed.limits.clone(),
        gate: federation_gate.clone(),
    });
    // The access flow, when this server federates and has keys.
    let access = match (&config.keys, &egress, &key_resolver, &federation_tls) {
        (Some(keys), Some(egress), Some(resolver), Some(ftls)) => {
            let access = build_access(
                &config,
                keys,
                store.clone(),
                egress.clone(),
                resolver.clone(),
                ftls.certs.clone(),
                metrics.clone(),
            )?;
            background.spawn(crate::federation::outbox::run(
                access.clone(),
                shutdown_rx.clone(),
            ));
            background.spawn(crate::federation::transfer::run(
                access.clone(),
                shutdown_rx.clone(),
            ));
            let warm = access.clone();
            background.spawn(async move {
                warm.parts().accounts.start().await;
            });
            Some(access)
        }
        _ => None,
    };
    // One set of pages for every worker (the sessions live in it).
    let web = access.as_ref().map(|a| {
        Arc::new(crate::web::Web::new(
            Arc::new(a.clone()),
            &config.access,
            metrics.clone(),
        ))
    });
    let federation = Arc::new(Federation::new(
        &config.server.fqdn,
        metrics.clone(),
        access.clone(),
    ));
    let mut federation_socks = federation_socks.into_iter();
    let mut workers = Vec::with_capacity(n);
    for (i, public_sock) in public_socks.into_iter().enumerate() {
        let fed = federation_spec.clone().zip(federation_socks.next());
        let upstream = config.upstream.clone();
        let public_spec = public_spec.clone();
        let metrics = metrics.clone();
        let federation = federation.clone();
        let key_document = key_document.clone();
        let web = web.clone();
        let shutdown = shutdown_rx.clone();
        let drain = config.runtime.drain_timeout;
        let handle = std::thread::Builder::new()
            .name(format!("mdgate-worker-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "worker runtime failed to start");
                        return;
                    }
                };
                rt.block_on(async move {
                    let proxy = Arc::new(Proxy::new(
                        &upstream,
                        &public_spec.limits,
                        metrics.clone(),
                        key_document,
                        web,
                    ));
                    let mut loops = JoinSet::new();
                    match TcpListener::from_std(public_sock) {
                        Ok(l) => {
                            loops.spawn(accept_loop(l, public_spec, Handler::Public(proxy), metrics.clone(), shutdown.clone(), drain));
                        }
                        Err(e) => tracing::error!(error = %e, "public listener registration failed"),
                    }
                    if let Some((spec, sock)) = fed {
                        match TcpListener::from_std(sock) {
                            Ok(l) => {
                                loops.spawn(accept_loop(l, spec, Handler::Federation(federation), metrics.clone(), shutdown.clone(), drain));
                            }
                            Err(e) => tracing::error!(error = %e, "federation listener registration failed"),
                        }
                    }
                    while loops.join_next().await.is_some() {}
                });
            })
            .map_err(ServeError::Thread)?;
        workers.push(handle);
    }

    // Admin and readiness.
    let admin_state = Arc::new(AdminState {
        metrics: metrics.clone(),
        readiness: readiness.clone(),
    });
    background.spawn(admin::serve(
        admin_listener,
        admin_state,
        shutdown_rx.clone(),
    ));
    background.spawn(probe_upstream(
        config.upstream.clone(),
        readiness.clone(),
        shutdown_rx.clone(),
    ));
    background.spawn(probe_store(
        store.clone(),
        readiness.clone(),
        shutdown_rx.clone(),
    ));

    tracing::info!(
        public = %public_addr,
        federation = ?federation_addr,
        admin = %admin_addr,
        workers = n,
        fqdn = %config.server.fqdn,
        "mdgate started"
    );
    drop((public_tls.map(|t| t.certs), federation_tls.map(|t| t.certs)));
    Ok(Running {
        public_addr,
        federation_addr,
        admin_addr,
        metrics,
        readiness,
        egress,
        resolver: key_resolver,
        access,
        store,
        shutdown_tx,
        reloadable,
        workers,
        drain_timeout: config.runtime.drain_timeout,
        background,
    })
}

/// Builds the access flow from the configuration.
fn build_access(
    config: &Config,
    keys: &config::Keys,
    store: Arc<dyn crate::store::Store>,
    egress: Arc<Egress>,
    resolver: Arc<crate::dns::KeyResolver>,
    own_cert: Arc<CertReloader>,
    metrics: Arc<Metrics>,
) -> Result<crate::federation::access::Access, ServeError> {
    use crate::token::SigningKey;
    let err = |what: &str, e: &dyn std::fmt::Display| ServeError::Access(format!("{what}: {e}"));
    let signing = SigningKey::load(&keys.signing.key_file, &keys.signing.selector)
        .map_err(|e| err("signing key", &e))?;
    // Grant tokens are verified with our own signing keys, by `kid`.
    let mut verifying = vec![(
        keys.signing.selector.clone(),
        signing.verifying_key().clone(),
    )];
    for other in [&keys.next_signing, &keys.previous_signing]
        .into_iter()
        .flatten()
    {
        let key = SigningKey::load(&other.key_file, &other.selector)
            .map_err(|e| err("signing key", &e))?;
        verifying.push((other.selector.clone(), key.verifying_key().clone()));
    }
    let verifier = crate::token::GrantVerifier::with_selectors(
        &config.server.fqdn,
        verifying,
        keys.clock_skew,
        100_000,
    );
    let upstream = crate::upstream::AccessMd::new(&config.upstream);
    let accounts = crate::upstream::Accounts::from_config(&upstream, &config.upstream)
        .map_err(|e| err("upstream accounts", &e))?;
    let webhook =
        crate::notify::Webhook::from_config(&config.notify).map_err(|e| err("webhook", &e))?;
    Ok(crate::federation::access::Access::new(
        crate::federation::access::AccessParts {
            fqdn: config.server.fqdn.clone(),
            store,
            upstream,
            accounts: Arc::new(accounts),
            signing,
            verifier,
            egress,
            resolver,
            own_cert,
            limits: config.access.clone(),
            transfer_dir: crate::federation::transfer::spool_dir(&config.store),
            skew: keys.clock_skew,
            policy: config.policy.clone(),
            webhook,
            metrics,
        },
    ))
}

impl Running {
    /// Re-reads every listener's certificate; a bad one is refused and the
    /// last good one stays in service. Returns the number of failures.
    pub fn reload(&self) -> usize {
        let mut failures = 0;
        for (name, certs) in &self.reloadable {
            match certs.reload() {
                Ok(()) => {
                    self.metrics.cert_reload(name, true);
                    tracing::info!(listener = *name, cert.spki_sha256 = %hex::encode(certs.spki_sha256()), "certificate reloaded");
                }
                Err(e) => {
                    failures += 1;
                    self.metrics.cert_reload(name, false);
                    tracing::error!(listener = *name, error = %e, "certificate reload failed; keeping the current certificate");
                }
            }
        }
        failures
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain
    /// timeout), closes the store, then returns.
    pub async fn shutdown(mut self) {
        self.readiness.draining.store(true, Ordering::Release);
        if let Some(access) = &self.access {
            access.halt();
        }
        let _ = self.shutdown_tx.send(true);
        let workers = std::mem::take(&mut self.workers);
        let joined = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        });
        // Workers enforce the drain deadline themselves; this bound only
        // guards against a stuck thread.
        let _ = tokio::time::timeout(self.drain_timeout + Duration::from_secs(5), joined).await;
        self.background.abort_all();
        while self.background.join_next().await.is_some() {}
        // Last: the audit entries still in the journal are copied into the
        // log, so a clean stop leaves nothing to recover.
        if let Err(e) = self.store.close().await {
            tracing::error!(error = %e, "closing the store failed");
        }
    }
}

/// Accepts connections of one listener on one worker until shutdown, then
/// drains them within the deadline.
async fn accept_loop(
    listener: TcpListener,
    spec: ListenerSpec,
    handler: Handler,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
    drain_timeout: Duration,
) {
    let mut conns = JoinSet::new();
    loop {
        let (stream, client) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(listener = spec.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::serve::stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        metrics.connection_opened(spec.name);
        let spec = spec.clone();
        let handler = handler.clone();
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            let span = tracing::info_span!("conn", listener = spec.name, client.addr = %client, peer.fqdn = tracing::field::Empty);
            let _open = ConnGuard { metrics: &metrics, listener: spec.name };
            tracing::Instrument::instrument(serve_one(stream, client, &spec, handler, &metrics, shutdown), span).await;
        });
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    let drained = tokio::time::timeout(drain_timeout, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            listener = spec.name,
            left = conns.len(),
            "drain deadline passed; closing remaining connections"
        );
        conns.abort_all();
    }
}

/// Decrements the open-connection gauge when a connection task ends.
struct ConnGuard<'a> {
    metrics: &'a Metrics,
    listener: &'static str,
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        self.metrics.connection_closed(self.listener);
    }
}

async fn serve_one(
    stream: tokio::net::TcpStream,
    client: SocketAddr,
    spec: &ListenerSpec,
    handler: Handler,
    metrics: &Metrics,
    shutdown: watch::Receiver<bool>,
) {
    let Some(acceptor) = &spec.tls else {
        let info = Arc::new(ConnInfo {
            listener: spec.name,
            client,
            tls: false,
            sni: None,
            peer: None,
            framing_violation: Default::default(),
        });
        conn::serve_http(stream, info, handler, &spec.limits, false, shutdown).await;
        return;
    };
    let tls = match tokio::time::timeout(spec.limits.header_read_timeout, acceptor.accept(stream))
        .await
    {
        Err(_) => {
            metrics.handshake_failure(spec.name, "timeout");
            tracing::debug!("TLS handshake timed out");
            return;
        }
        Ok(Err(e)) => {
            let reason = tls::handshake_failure_reason(&e);
            metrics.handshake_failure(spec.name, reason);
            tracing::info!(reason, error = %e, "TLS handshake failed");
            return;
        }
        Ok(Ok(tls)) => tls,
    };
    let (_, session) = tls.get_ref();
    let sni: Option<Arc<str>> = session
        .server_name()
        .map(|s| Arc::from(s.to_ascii_lowercase()));
    let h2 = session.alpn_protocol() == Some(b"h2");
    let peer = match &spec.gate {
        Some(gate) => {
            let admitted = match gate.identify(
                session.peer_certificates().unwrap_or(&[]),
                session.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
                None,
            ) {
                Ok(p) => {
                    let chain = session.peer_certificates().unwrap_or(&[]);
                    match gate.admit(&p, chain, None).await {
                        Ok(()) => Ok(p),
                        Err(reason) => Err((reason, format!("peer {} not admitted", p.fqdn()))),
                    }
                }
                Err(e) => Err(e),
            };
            match admitted {
                Ok(p) => {
                    tracing::Span::current().record("peer.fqdn", p.fqdn());
                    Some(p)
                }
                Err((reason, detail)) => {
                    metrics.handshake_failure(spec.name, reason);
                    tracing::info!(reason, error = %detail, "peer refused after the handshake");
                    return;
                }
            }
        }
        None => None,
    };
    let info = Arc::new(ConnInfo {
        listener: spec.name,
        client,
        tls: true,
        sni,
        peer,
        framing_violation: Default::default(),
    });
    conn::serve_http(tls, info, handler, &spec.limits, h2, shutdown).await;
}

/// The `User-Agent` of the readiness probe, so upstream logs can tell it apart.
pub const PROBE_USER_AGENT: &str =
    concat!("mdgate/", env!("CARGO_PKG_VERSION"), " readiness-probe");

/// Marks the upstream ready when it answers `HEAD /` (which access.md
/// answers without running a handler), every few seconds.
async fn probe_upstream(
    cfg: config::Upstream,
    readiness: Arc<Readiness>,
    mut shutdown: watch::Receiver<bool>,
) {
    let client = crate::proxy::upstream_client::<http_body_util::Empty<bytes::Bytes>>(&cfg);
    let uri: http::Uri = match format!("http://{}/", cfg.authority).parse() {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "upstream probe address is invalid");
            return;
        }
    };
    let mut last = None;
    loop {
        let req = http::Request::head(uri.clone())
            .header(http::header::USER_AGENT, PROBE_USER_AGENT)
            .body(http_body_util::Empty::new());
        let ok = match req {
            Ok(req) => matches!(
                tokio::time::timeout(cfg.response_timeout, client.request(req)).await,
                Ok(Ok(resp)) if resp.status().as_u16() < 500
            ),
            Err(_) => false,
        };
        readiness.upstream_ok.store(ok, Ordering::Release);
        if last != Some(ok) {
            if ok {
                tracing::info!(upstream = %cfg.authority, "upstream answers");
            } else {
                tracing::warn!(upstream = %cfg.authority, "upstream does not answer");
            }
            last = Some(ok);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(if ok { 5 } else { 1 })) => {}
            _ = crate::serve::stopped(&mut shutdown) => return,
        }
    }
}

/// Keeps `store_open` true while the store answers.
async fn probe_store(
    store: Arc<dyn crate::store::Store>,
    readiness: Arc<Readiness>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = crate::serve::stopped(&mut shutdown) => return,
        }
        let ok = store.ping().await.is_ok();
        if ok != readiness.store_open.swap(ok, Ordering::AcqRel) {
            if ok {
                tracing::info!("store answers again");
            } else {
                tracing::error!("store does not answer");
            }
        }
    }
}

/// Runs until SIGTERM/SIGINT; SIGHUP reloads certificates. Tells systemd
/// READY, RELOADING and STOPPING when run as a notify service.
pub async fn run(config: Config) -> Result<(), ServeError> {
    use tokio::signal::unix::{signal, SignalKind};
    let running = start(config).await?;
    notify(&[sd_notify::NotifyState::Ready]);
    let (mut term, mut int, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        _ => {
            tracing::error!("cannot install signal handlers; shutting down");
            running.shutdown().await;
            return Ok(());
        }
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                notify(&[sd_notify::NotifyState::Reloading]);
                let failures = running.reload();
                notify(&[sd_notify::NotifyState::Ready]);
                if failures > 0 {
                    tracing::warn!(failures, "reload finished with failures");
                }
            }
        }
    }
    tracing::info!("shutting down: draining connections");
    notify(&[sd_notify::NotifyState::Stopping]);
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Re-signs the key document twice a day (it is valid for days), keeping
/// the last good one when signing fails.
async fn resign_key_document(
    config: Config,
    cell: Arc<crate::proxy::KeyDocumentCell>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(12 * 3600)) => {}
            _ = stopped(&mut shutdown) => return,
        }
        match crate::token::publish::key_document(&config, std::time::SystemTime::now()) {
            Ok(doc) => {
                if let Ok(mut slot) = cell.write() {
                    *slot = Some(bytes::Bytes::from(doc));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "re-signing the key document failed; serving the last one")
            }
        }
    }
}

/// Resolves once the shutdown flag is set (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}
