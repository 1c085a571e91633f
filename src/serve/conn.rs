//! One client connection: TLS handshake, HTTP/1.1 or HTTP/2 by ALPN, the
//! idle timer and graceful shutdown.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Limits;
use crate::federation::Federation;
use crate::proxy::body::ProxyBody;
use crate::proxy::framing::H1Scanner;
use crate::proxy::{ConnInfo, Proxy};

/// What answers the requests of a listener.
#[derive(Clone)]
pub enum Handler {
    Public(Arc<Proxy>),
    Federation(Arc<Federation>),
}

impl Handler {
    async fn handle(&self, conn: &ConnInfo, req: Request<Incoming>) -> Response<ProxyBody> {
        match self {
            Handler::Public(p) => p.handle(conn, req).await,
            Handler::Federation(f) => f.handle(conn, req).await,
        }
    }
}

/// The last time bytes moved on a connection, and since when a request
/// head has been arriving, in milliseconds since `base`.
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
    /// [`NO_HEAD`], or when the head now arriving began (the connection's
    /// start for its first request).
    head_since_ms: AtomicU64,
}

/// No request head is arriving: a request is being served, or the
/// connection waits, idle, for the next.
const NO_HEAD: u64 = u64::MAX;

impl Activity {
    /// A new connection: its first head is due from now.
    fn new() -> Self {
        Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            head_since_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn idle_deadline(&self, idle: Duration) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }

    /// After a read: whether a head is still incomplete.
    fn head(&self, arriving: bool) {
        let since = self.head_since_ms.load(Ordering::Relaxed);
        if !arriving && since != NO_HEAD {
            self.head_since_ms.store(NO_HEAD, Ordering::Relaxed);
        } else if arriving && since == NO_HEAD {
            self.head_since_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// When the head now arriving must be complete, if one is.
    fn head_deadline(&self, limit: Duration) -> Option<Instant> {
        match self.head_since_ms.load(Ordering::Relaxed) {
            NO_HEAD => None,
            ms => Some(self.base + Duration::from_millis(ms) + limit),
        }
    }
}

pin_project_lite::pin_project! {
    /// An I/O stream that records when bytes last moved and, on HTTP/1
    /// connections, scans the client's bytes for ambiguous framing.
    struct ActivityIo<T> {
        #[pin]
        inner: T,
        activity: Arc<Activity>,
        scanner: Option<H1Scanner>,
        info: Arc<ConnInfo>,
    }
}

impl<T: AsyncRead> AsyncRead for ActivityIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if buf.filled().len() != before {
            this.activity.touch();
            if let Some(scanner) = this.scanner {
                if let Err(reason) = scanner.feed(&buf.filled()[before..]) {
                    let _ = this.info.framing_violation.set(reason);
                }
                this.activity.head(scanner.in_head());
            }
        }
        r
    }
}

impl<T: AsyncWrite> AsyncWrite for ActivityIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Serves HTTP on an established (possibly TLS) stream until the client
/// goes away, the connection idles out, or shutdown drains it.
pub async fn serve_http<I>(
    io: I,
    info: Arc<ConnInfo>,
    handler: Handler,
    limits: &Limits,
    h2: bool,
    shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let scanner = (!h2).then(|| H1Scanner::new(limits.max_header_bytes, limits.max_headers));
    let io = TokioIo::new(ActivityIo {
        inner: io,
        activity: activity.clone(),
        scanner,
        info: info.clone(),
    });
    let svc_info = info.clone();
    let svc = service_fn(move |req| {
        let handler = handler.clone();
        let info = svc_info.clone();
        async move { Ok::<_, Infallible>(handler.handle(&info, req).await) }
    });
    if h2 {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .max_header_list_size(limits.max_header_bytes as u32)
            .max_concurrent_streams(100)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        let timers = Timers {
            idle: limits.idle_timeout,
            head: None,
        };
        drive(
            b.serve_connection(io, svc),
            &info,
            activity,
            timers,
            shutdown,
        )
        .await;
    } else {
        // The head's time limit is kept here, not by hyper: hyper's timer
        // also runs while a kept-alive connection waits for its next
        // request (so no idle_timeout above it could take effect), and it
        // arms a timer per request, each of which woke this thread's event
        // loop through its driver.
        let mut b = hyper::server::conn::http1::Builder::new();
        b.header_read_timeout(None)
            .max_buf_size(limits.max_header_bytes.max(8192))
            .max_headers(limits.max_headers)
            .keep_alive(true);
        let timers = Timers {
            idle: limits.idle_timeout,
            head: Some(limits.header_read_timeout),
        };
        drive(
            b.serve_connection(io, svc),
            &info,
            activity,
            timers,
            shutdown,
        )
        .await;
    }
}

/// A connection's time limits.
struct Timers {
    /// No bytes either way for this long: closed gracefully.
    idle: Duration,
    /// A request head (HTTP/1) not complete this long after it began, or
    /// the first one this long after the connection opened: closed at once.
    head: Option<Duration>,
}

async fn drive<C>(
    conn: C,
    info: &ConnInfo,
    activity: Arc<Activity>,
    timers: Timers,
    mut shutdown: watch::Receiver<bool>,
) where
    C: GracefulConnection<Error = hyper::Error>,
{
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let now = Instant::now();
        // A head that begins while this sleeps is looked at within the
        // head's limit, and then woken for at its own deadline.
        let head = timers
            .head
            .map(|limit| activity.head_deadline(limit).unwrap_or(now + limit));
        let idle = (!closing).then(|| activity.idle_deadline(timers.idle));
        let deadline = head.into_iter().chain(idle).min();
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(client.addr = %info.client, listener = info.listener, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = crate::serve::stopped(&mut shutdown), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(now)), if deadline.is_some() => {
                let now = Instant::now();
                let late_head = timers
                    .head
                    .and_then(|limit| activity.head_deadline(limit))
                    .is_some_and(|d| d <= now);
                if late_head {
                    tracing::debug!(client.addr = %info.client, listener = info.listener, "closing a connection whose request head did not arrive in time");
                    return;
                }
                if !closing && activity.idle_deadline(timers.idle) <= now {
                    tracing::debug!(client.addr = %info.client, listener = info.listener, "closing idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}
