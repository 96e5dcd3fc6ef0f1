//! The accept loop: hyper's HTTP/1 connections with their timers enabled, a cap on connections
//! held, and a watchdog per connection for the deadlines hyper does not keep.
//!
//! - A client must send a request's headers within `header_timeout` of connecting, or of its
//!   first byte after a previous answer; a keep-alive connection idle for `idle_timeout` is
//!   closed. The watchdog keeps both exactly. hyper's own header-read timer is off: it restarts
//!   whenever hyper waits for a head, so it cannot tell a slow head from an idle keep-alive, and
//!   it would arm (allocate and register) one more timer for every request.
//! - At most `max_connections` are held: one more is accepted and closed at once, so the backlog
//!   never fills with clients that will wait for nothing.
//! - On shutdown the listener closes; connections that are idle or whose client is still sending
//!   (a head, or the body of the request in flight) close at once; those with a whole request in
//!   flight finish it (keep-alive off) and close, and the caller bounds that drain with its grace
//!   period.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use crate::app::App;
use crate::arrival::Arrival;

/// How connections are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a client may take to send a request's headers (`FLAG_HEADER_TIMEOUT_MS`).
    pub header_timeout: Duration,
    /// How long a keep-alive connection may stay idle (`FLAG_IDLE_TIMEOUT_MS`).
    pub idle_timeout: Duration,
    /// How many connections may be held at once (`FLAG_MAX_CONNECTIONS`).
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    /// The defaults of the design contract: 10 s, 60 s, 10,000.
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

/// How long after shutdown a connection with nothing in flight may take to flush what it wrote.
const FLUSH_AT_SHUTDOWN: Duration = Duration::from_millis(100);

/// How often a connection with a request in flight looks at its deadlines again.
const RECHECK: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `shutdown` resolves, then until every connection is closed.
pub async fn serve(
    listener: TcpListener,
    app: impl Into<App>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let app = app.into();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors or a connection reset before it was accepted: wait a little
                // instead of spinning, and go on.
                tracing::debug!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(
                max = limits.max_connections,
                "connection cap reached; closing a new connection"
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            app.clone(),
            limits,
            stopping.clone(),
            permit,
        ));
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a permit until it is closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}

/// One connection, from accept to close.
async fn connection(
    stream: TcpStream,
    app: App,
    limits: ConnectionLimits,
    mut stopping: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let (request, arrival) = Arrival::watch(request.map(Body::new));
            let in_flight = InFlight::begin(activity.clone(), arrival.clone());
            let app = app.clone();
            async move {
                let response = app.answer(request, arrival).await;
                Ok::<_, Infallible>(answered(response, in_flight))
            }
        })
    };
    let connection = http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    // Set at shutdown for a connection with nothing in flight: the instant it closes, after what
    // it wrote has had a moment to flush.
    let mut close_at: Option<Instant> = None;
    let mut stopped = false;
    loop {
        let deadline = [activity.deadline(&limits), close_at]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + RECHECK);
        // Biased: the connection first, as it is what woke the task nearly every time, and no
        // random draw per wake.
        tokio::select! {
            biased;
            served = connection.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                let now = Instant::now();
                if close_at.is_some_and(|at| at <= now) {
                    return;
                }
                if activity.deadline(&limits).is_some_and(|at| at <= now) {
                    tracing::debug!("closing a connection past its header or idle timeout");
                    return;
                }
            }
            changed = stopping.changed(), if !stopped => {
                if changed.is_err() || *stopping.borrow() {
                    stopped = true;
                    if activity.is_sending() {
                        return;
                    }
                    // A request in flight is finished (keep-alive off, so the connection ends
                    // with it); the caller's grace period bounds it.
                    connection.as_mut().graceful_shutdown();
                    if !activity.is_in_flight() {
                        close_at = Some(Instant::now() + FLUSH_AT_SHUTDOWN);
                    }
                }
            }
        }
    }
}

/// What a connection is doing, as its watchdog sees it. Times are milliseconds since the
/// connection was accepted.
struct Activity {
    accepted: Instant,
    in_flight: AtomicUsize,
    /// When the last answer was given (or the connection accepted).
    idle_since: AtomicU64,
    /// When the first byte of a head arrived with nothing in flight, [`NOT_STARTED`] else.
    head_started: AtomicU64,
    /// Whether a request has been answered (the connection is then a keep-alive one).
    answered: AtomicBool,
    /// The body of the request in flight.
    body: Mutex<Option<Arrival>>,
}

/// No head has started arriving.
const NOT_STARTED: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Self {
            accepted: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(NOT_STARTED),
            answered: AtomicBool::new(false),
            body: Mutex::new(None),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn at(&self, millis: u64) -> Instant {
        self.accepted + Duration::from_millis(millis)
    }

    fn bytes_arrived(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Relaxed) == NOT_STARTED
        {
            let now = self.now();
            let _ = self.head_started.compare_exchange(
                NOT_STARTED,
                now,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    fn is_in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Whether the client is still sending: part of a head with no request in flight, or the
    /// body of the request in flight.
    fn is_sending(&self) -> bool {
        if !self.is_in_flight() {
            return self.head_started.load(Ordering::Acquire) != NOT_STARTED;
        }
        self.body
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(Arrival::pending)
    }

    /// When the connection must close if nothing changes; `None` while a request is in flight.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if self.is_in_flight() {
            return None;
        }
        let head_started = self.head_started.load(Ordering::Acquire);
        if head_started != NOT_STARTED {
            return Some(self.at(head_started) + limits.header_timeout);
        }
        let idle_since = self.at(self.idle_since.load(Ordering::Acquire));
        Some(if self.answered.load(Ordering::Acquire) {
            idle_since + limits.idle_timeout
        } else {
            idle_since + limits.header_timeout
        })
    }
}

/// A request between its head's arrival and its answer.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>, body: Arrival) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.head_started.store(NOT_STARTED, Ordering::Release);
        *activity
            .body
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(body);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.idle_since.store(activity.now(), Ordering::Release);
        activity.answered.store(true, Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Ends `in_flight` with `response`'s head when its body's length is known (it is written at
/// once), else when the body ends: a stream (server-sent events) is a request in flight for as
/// long as it is open, so the idle and header timeouts leave it alone.
fn answered(response: hyper::Response<Body>, in_flight: InFlight) -> hyper::Response<Body> {
    use http_body::Body as _;
    if response.body().size_hint().exact().is_some() {
        drop(in_flight);
        return response;
    }
    response.map(|body| {
        Body::new(Streaming {
            body,
            _in_flight: in_flight,
        })
    })
}

/// A response body of unknown length, with its request kept in flight until it is dropped.
struct Streaming {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Streaming {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The socket, telling the watchdog when bytes arrive.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
