//! An in-memory emulator of an access.md server, for tests and demos.
//!
//! It reproduces the HTTP behaviour described in
//! `upstream/accessmd-api.md` (and checked by `tests/it/emulator.rs`): the
//! route table with its role sets and first-match order, Jetty session
//! cookies minted as a side effect of protected requests, the HTML login page
//! on 401/403, Javalin's error bodies, strict Jackson binding of request
//! bodies and Jackson-shaped output, the single global id sequence, the
//! security-code link flow, notifications, and the documented bugs (each of
//! the less certain ones behind a [`Fidelity`] switch, on by default).
//!
//! Data flow: [`Emulator::serve`] spawns an accept loop (`server`) that
//! frames each request for `api`, which resolves the route (`routes`),
//! consults `session`, binds the body (`bind`, `bodies`), runs the operation
//! on the in-memory database (`model`) and renders JSON (`views`, `jackson`)
//! or HTML (`pages`). A background task times out security codes. The
//! [`EmulatorHandle`] exposes test knobs: restart (drop sessions), the clock,
//! the expiry sweep and a log of received requests.
//!
//! The server's time zone is UTC. It is not part of a production deployment.

mod api;
mod bind;
mod bodies;
mod clock;
mod control;
mod jackson;
mod model;
mod pages;
mod routes;
mod server;
mod session;
mod views;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use routes::Role;

/// Switches for the behaviours the upstream document marks as inferred.
/// All are on by default; turn one off to emulate a server without that bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fidelity {
    /// R30/R31 find a question with `==` on boxed `Long`s, so ids outside
    /// -128..=127 are never found (R31 → 500N, R30 → 500T).
    pub boxed_long_identity: bool,
    /// R30 replaces the question wholesale: its answers are unlinked and its
    /// `patient` becomes null, after which new answers break R14 (500E).
    pub question_update_detaches: bool,
    /// R6 with the `id` of an existing profile overwrites that profile and
    /// points the patient at it, whoever it belonged to.
    pub profile_idor: bool,
    /// Code expiry compares only the time of day (SQL `TIME`), so a code
    /// minted in the last 5 minutes before midnight (UTC) expires at once.
    pub time_of_day_code_expiry: bool,
    /// Envers takes a sequence value for each revision of a MedicalProfile
    /// (signup, profile update), leaving gaps in the ids.
    pub envers_revision_ids: bool,
}

impl Default for Fidelity {
    fn default() -> Self {
        Fidelity {
            boxed_long_identity: true,
            question_update_detaches: true,
            profile_idor: true,
            time_of_day_code_expiry: true,
            envers_revision_ids: true,
        }
    }
}

impl Fidelity {
    /// Every switch off: a server without the inferred bugs.
    pub fn none() -> Self {
        Fidelity {
            boxed_long_identity: false,
            question_update_detaches: false,
            profile_idor: false,
            time_of_day_code_expiry: false,
            envers_revision_ids: false,
        }
    }
}

/// How to run an emulator.
#[derive(Clone, Debug)]
pub struct EmulatorOptions {
    /// The `admin` password. `None` draws 16 random `[A-Za-z0-9]`
    /// characters and logs them to stderr once, as the real server does.
    pub admin_password: Option<String>,
    /// The first value of the global id sequence (the admin gets it).
    /// Default 1; start above 127 to exercise the boxed-`Long` bug at once.
    pub first_id: i64,
    /// How long a security code stays valid. Default 300 s.
    pub code_ttl: Duration,
    /// How often the expiry task runs. Default 5 s.
    pub sweep_interval: Duration,
    /// Keep a log of received requests for [`EmulatorHandle::received`].
    pub record_requests: bool,
    /// Which inferred behaviours to reproduce.
    pub fidelity: Fidelity,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            admin_password: None,
            first_id: 1,
            code_ttl: Duration::from_secs(300),
            sweep_interval: Duration::from_secs(5),
            record_requests: false,
            fidelity: Fidelity::default(),
        }
    }
}

/// A request as the emulator received it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RecordedRequest {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The request target's path and query, e.g. `/api/symptom/codes?language=ar`.
    pub path_and_query: String,
    /// Header (lower-cased name, value) pairs in received order per name;
    /// values that are not UTF-8 are decoded lossily.
    pub headers: Vec<(String, String)>,
    /// The body length in bytes.
    pub body_len: usize,
}

impl RecordedRequest {
    fn new(parts: &http::request::Parts, body_len: usize) -> Self {
        RecordedRequest {
            method: parts.method.to_string(),
            path_and_query: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string),
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body_len,
        }
    }

    /// The first value of a header (name matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why an emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The listener could not be used (address unreadable, not convertible).
    #[error("cannot use the listener: {0}")]
    Listener(#[source] std::io::Error),
    /// The control listener must be on a loopback address.
    #[error("the control listener must be on a loopback address, not {0}")]
    ControlNotLoopback(SocketAddr),
    /// An option is out of range.
    #[error("invalid emulator option {name}: {reason}")]
    InvalidOption {
        /// The option's field name.
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// State shared by the connection tasks, the sweeper and the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: RwLock<model::Store>,
    pub(crate) sessions: session::Sessions,
    pub(crate) clock: clock::Clock,
    pub(crate) recorder: Option<Mutex<Vec<RecordedRequest>>>,
    admin_password: String,
}

/// Entry point: starts emulators.
#[derive(Debug)]
pub struct Emulator;

impl Emulator {
    /// Binds `addr` (port 0 picks a free port) and starts serving.
    pub async fn bind(
        addr: SocketAddr,
        options: EmulatorOptions,
    ) -> Result<EmulatorHandle, EmulatorError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| EmulatorError::Bind { addr, source })?;
        Self::serve(listener, options)
    }

    /// Starts serving on a bound `std` listener (made non-blocking here).
    /// Must be called from within a Tokio runtime.
    pub fn serve_std(
        listener: std::net::TcpListener,
        options: EmulatorOptions,
    ) -> Result<EmulatorHandle, EmulatorError> {
        listener
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(listener))
            .map_err(EmulatorError::Listener)
            .and_then(|listener| Self::serve(listener, options))
    }

    /// Starts serving on an already bound listener. Must be called from
    /// within a Tokio runtime; the emulator's tasks run on it.
    pub fn serve(
        listener: TcpListener,
        options: EmulatorOptions,
    ) -> Result<EmulatorHandle, EmulatorError> {
        if options.sweep_interval.is_zero() {
            return Err(EmulatorError::InvalidOption {
                name: "sweep_interval",
                reason: "must be positive",
            });
        }
        let code_ttl_ms = i64::try_from(options.code_ttl.as_millis()).map_err(|_| {
            EmulatorError::InvalidOption {
                name: "code_ttl",
                reason: "too long",
            }
        })?;
        let addr = listener.local_addr().map_err(EmulatorError::Listener)?;
        let clock = clock::Clock::default();
        let admin_password = match options.admin_password {
            Some(password) => password,
            None => {
                let password = model::new_admin_password(&mut rand::thread_rng());
                log_admin_password(&password, clock.now_ms());
                password
            }
        };
        let store = model::Store::new(
            options.fidelity,
            options.first_id,
            code_ttl_ms,
            &admin_password,
            clock.now_ms(),
        );
        let shared = Arc::new(Shared {
            store: RwLock::new(store),
            sessions: session::Sessions::default(),
            clock,
            recorder: options.record_requests.then(|| Mutex::new(Vec::new())),
            admin_password,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(server::accept_loop(
                listener,
                Arc::clone(&shared),
                stop_rx.clone(),
            )),
            tokio::spawn(sweep_codes(
                Arc::clone(&shared),
                options.sweep_interval,
                stop_rx,
            )),
        ];
        tracing::debug!(listen.addr = %addr, "access.md emulator started");
        Ok(EmulatorHandle {
            shared,
            addr,
            stop: stop_tx,
            tasks,
        })
    }
}

/// What `createAdminIfNotFound` logs through `java.util.logging`.
fn log_admin_password(password: &str, now: i64) {
    let stamp = clock::jul_timestamp(now);
    let source = "org.openmymed.accessmd.app.App createAdminIfNotFound";
    eprintln!("{stamp} {source}\nINFO: No Admins Found; Creating one now");
    eprintln!("{stamp} {source}\nINFO: Admin Username is 'admin' and Admin Password is {password}");
}

/// The code-expiry task (`SecurityCodesExpiryService`): runs at start, then
/// every `interval`.
async fn sweep_codes(shared: Arc<Shared>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticks.tick() => run_sweep(&shared),
            _ = stop.changed() => break,
        }
    }
}

fn run_sweep(shared: &Shared) {
    let now = shared.clock.now_ms();
    shared
        .store
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .expire_codes(now);
}

/// A running emulator. Dropping it stops the server; [`EmulatorHandle::shutdown`]
/// also waits for open connections to finish.
#[derive(Debug)]
pub struct EmulatorHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl EmulatorHandle {
    /// The address the emulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `admin` account's password.
    pub fn admin_password(&self) -> &str {
        &self.shared.admin_password
    }

    /// Simulates a server restart: every session is dropped (they live in
    /// memory upstream) while all data, ids and queued notifications stay.
    pub fn restart(&self) {
        self.shared.sessions.clear();
    }

    /// The number of live sessions, authenticated or not.
    pub fn session_count(&self) -> usize {
        self.shared.sessions.len()
    }

    /// The requests received so far (empty unless `record_requests` is set).
    pub fn received(&self) -> Vec<RecordedRequest> {
        self.shared.recorder.as_ref().map_or_else(Vec::new, |r| {
            r.lock().unwrap_or_else(PoisonError::into_inner).clone()
        })
    }

    /// Forgets the recorded requests.
    pub fn clear_received(&self) {
        if let Some(recorder) = &self.shared.recorder {
            recorder
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
    }

    /// Moves the emulator's clock forward (timestamps, code validity).
    /// The expiry task notices at its next run; see [`Self::run_expiry_sweep`].
    pub fn advance_clock(&self, by: Duration) {
        self.shared.clock.advance(by);
    }

    /// Sets the emulator's clock to `at`; it keeps running from there.
    pub fn set_clock(&self, at: SystemTime) {
        self.shared.clock.set(at);
    }

    /// The emulator's current time.
    pub fn now(&self) -> SystemTime {
        clock::from_epoch_ms(self.shared.clock.now_ms())
    }

    /// Runs the security-code expiry task now instead of waiting for its tick.
    pub fn run_expiry_sweep(&self) {
        run_sweep(&self.shared);
    }

    /// Serves the control API on `listener` (loopback only) until shutdown:
    /// `POST /restart`, `GET`/`DELETE /received`, `POST /clock/advance?seconds=N`
    /// and `POST /codes/expire`. Returns the bound address.
    pub fn serve_control(&mut self, listener: TcpListener) -> Result<SocketAddr, EmulatorError> {
        let addr = listener.local_addr().map_err(EmulatorError::Listener)?;
        if !addr.ip().is_loopback() {
            return Err(EmulatorError::ControlNotLoopback(addr));
        }
        self.tasks.push(tokio::spawn(control::serve(
            listener,
            Arc::clone(&self.shared),
            self.stop.subscribe(),
        )));
        Ok(addr)
    }

    /// Stops accepting, lets open connections finish (up to 5 s) and waits
    /// for the emulator's tasks to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
