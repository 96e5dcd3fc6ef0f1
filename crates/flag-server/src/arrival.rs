//! Whether a request's body has fully arrived: the tracking layer answers `408` rather than
//! `503` when it has not, and shutdown closes such a connection at once instead of waiting for a
//! client that is still sending.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use http_body::{Frame, SizeHint};

/// The arrival of one request's body, shared by whoever watches it.
#[derive(Debug, Clone)]
pub(crate) struct Arrival(Arc<AtomicU8>);

/// The body is still arriving.
const PENDING: u8 = 0;
/// The body has been read to its end (or there was none).
const COMPLETE: u8 = 1;
/// Reading the body failed: the client went away while sending it.
const BROKEN: u8 = 2;

impl Arrival {
    /// The request with its body watched (once: a request already watched keeps its watcher),
    /// and that watcher, which the request carries as an extension (where the tracking layer
    /// finds it).
    pub(crate) fn of(request: Request) -> (Request, Arrival) {
        if let Some(arrival) = request.extensions().get::<Arrival>().cloned() {
            return (request, arrival);
        }
        let (mut request, arrival) = Self::watch(request);
        request.extensions_mut().insert(arrival.clone());
        (request, arrival)
    }

    /// The request with its body watched, and the watcher (not added to the request: the fast
    /// path has no use for the extension, and adding one allocates).
    pub(crate) fn watch(request: Request) -> (Request, Arrival) {
        let (parts, body) = request.into_parts();
        let initial = if http_body::Body::is_end_stream(&body) {
            COMPLETE
        } else {
            PENDING
        };
        let arrival = Arrival(Arc::new(AtomicU8::new(initial)));
        let body = Body::new(Watched {
            inner: body,
            arrival: arrival.clone(),
        });
        (Request::from_parts(parts, body), arrival)
    }

    /// Adds the watcher to `request`, where the tracking layer finds it.
    pub(crate) fn attach(&self, request: &mut Request) {
        request.extensions_mut().insert(self.clone());
    }

    /// Whether the body is still arriving.
    pub(crate) fn pending(&self) -> bool {
        self.0.load(Ordering::Acquire) == PENDING
    }

    /// Whether the client went away while sending the body.
    pub(crate) fn broken(&self) -> bool {
        self.0.load(Ordering::Acquire) == BROKEN
    }
}

/// A request body that says when it has been read to its end.
struct Watched {
    inner: Body,
    arrival: Arrival,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let state = match &polled {
            Poll::Ready(None) => COMPLETE,
            Poll::Ready(Some(Err(_))) => BROKEN,
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => COMPLETE,
            Poll::Ready(Some(Ok(_))) | Poll::Pending => PENDING,
        };
        if state != PENDING {
            self.arrival.0.store(state, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
