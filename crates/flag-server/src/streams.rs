//! OFREP event streams (ADR-0008): `GET /ofrep/v1/events/{env}`, a `text/event-stream` per
//! environment that tells clients when to fetch their flags again.
//!
//! - Every bulk `200` advertises the stream of its environment as a relative `requestUri`, so a
//!   client keeps its own base URL and any proxy in front of the server.
//! - With client tokens configured, a browser's `EventSource` cannot send a header, so the bulk
//!   answer issues a credential in the `requestUri`'s query: `<expiry ms>.<HMAC-SHA256 of the
//!   environment and the expiry>`, valid for `FLAG_STREAM_CREDENTIAL_TTL_MS` (rounded up to a
//!   24th of it, so that refetches advertise the same URL and the client keeps its stream). The key is derived
//!   from the admin and client tokens, so every instance of a deployment accepts every other's
//!   credentials and rotating a token revokes them. A client token in a header is accepted too
//!   (server SDKs). The query is never logged (the tracking layer logs paths only).
//! - Each change sends `event: message`, `id: <revision>` and `data: {"type":
//!   "refetchEvaluation", "etag": "<revision>", "lastModified": <unix seconds>}`. A follower
//!   sees the newest revision, not a queue, and sends at most one event per
//!   [`COALESCE`], so a burst of writes is one event with the last revision. A client that
//!   reconnects with a `Last-Event-ID` older than the current revision gets one event at once.
//! - A comment line every `FLAG_STREAM_HEARTBEAT_MS` keeps proxies from closing a quiet stream.
//! - At most `FLAG_MAX_STREAMS` are open (`503` beyond); SIGTERM ends them all at once
//!   ([`Streams::close_all`]), and clients reconnect to another instance after `retry`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use flag_core::{Environment, ErrorCode, Revision};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::signing::{hex, hmac_sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::client_token_allows;
use crate::errors::OfrepError;
use crate::openapi::OFREP;
use crate::state::AppState;

/// The shortest time between two events of one stream: a burst of writes is one event.
pub const COALESCE: Duration = Duration::from_millis(100);

/// How long a client waits before reconnecting a stream that ended, told in the stream.
const RETRY_MS: u64 = 1_000;

/// How long a client may leave its stream closed while inactive, as the bulk answer advises.
const INACTIVITY_DELAY_SEC: u64 = 120;

/// How event streams are served.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// How often a quiet stream carries a comment line (`FLAG_STREAM_HEARTBEAT_MS`).
    pub heartbeat: Duration,
    /// How long an issued credential is valid (`FLAG_STREAM_CREDENTIAL_TTL_MS`).
    pub credential_ttl: Duration,
    /// How many streams may be open at once (`FLAG_MAX_STREAMS`).
    pub max_streams: usize,
}

impl Default for StreamSettings {
    /// The defaults of the design contract: 15 s, 24 h, 10,000.
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            credential_ttl: Duration::from_secs(24 * 3600),
            max_streams: 10_000,
        }
    }
}

/// The open streams and what they need.
pub struct Streams {
    settings: StreamSettings,
    /// The key of stream credentials; `None` while OFREP is open (no credential is needed).
    key: Option<[u8; 32]>,
    slots: Arc<Semaphore>,
    closing: watch::Sender<bool>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("settings", &self.settings)
            .field("credentials", &self.key.is_some())
            .field("open", &self.open())
            .finish()
    }
}

impl Streams {
    /// Streams served as `settings` say; `credential_secrets` (the admin token and every client
    /// token) key the credentials, and `None` means OFREP is open and needs none.
    pub fn new(settings: StreamSettings, credential_secrets: Option<&[&str]>) -> Self {
        let key = credential_secrets.map(|secrets| {
            let mut digest = Sha256::new();
            digest.update(b"flag-server stream credentials\0");
            for secret in secrets {
                digest.update(Sha256::digest(secret.as_bytes()));
            }
            digest.finalize().into()
        });
        Self {
            slots: Arc::new(Semaphore::new(settings.max_streams)),
            settings,
            key,
            closing: watch::channel(false).0,
        }
    }

    /// How many streams are open now.
    pub fn open(&self) -> usize {
        self.settings
            .max_streams
            .saturating_sub(self.slots.available_permits())
    }

    /// Ends every open stream at once and refuses new ones (at shutdown).
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }

    /// The credential for `env`'s stream, valid from `now` for at least the configured time.
    ///
    /// The expiry is rounded up to a 24th of that time, so the bulk answers of one window
    /// advertise the same URL: the web provider reconnects its stream whenever the advertised
    /// URL changes, and would otherwise do so after every refetch.
    fn issue(&self, key: &[u8; 32], env: &Environment, now: SystemTime) -> String {
        let ttl = millis_of(self.settings.credential_ttl);
        let step = (ttl / 24).max(1);
        let expiry = millis(now)
            .saturating_add(ttl)
            .div_ceil(step)
            .saturating_mul(step);
        format!("{expiry}.{}", hex(&signature(key, env, expiry)))
    }

    /// Whether `credential` was issued for `env` and is still valid at `now`.
    fn verify(&self, key: &[u8; 32], env: &Environment, credential: &str, now: SystemTime) -> bool {
        let Some((expiry, presented)) = credential.split_once('.') else {
            return false;
        };
        let Ok(expiry) = expiry.parse::<u64>() else {
            return false;
        };
        let expected = hex(&signature(key, env, expiry));
        let matches: bool = expected.as_bytes().ct_eq(presented.as_bytes()).into();
        matches && expiry > millis(now)
    }

    /// The stream entries of a bulk answer for `env`.
    pub(crate) fn advertised(&self, env: &Environment) -> Vec<EventStream> {
        let mut request_uri = format!("/ofrep/v1/events/{env}");
        if let Some(key) = &self.key {
            request_uri.push_str("?credential=");
            request_uri.push_str(&self.issue(key, env, SystemTime::now()));
        }
        vec![EventStream {
            kind: "sse",
            endpoint: Endpoint { request_uri },
            inactivity_delay_sec: INACTIVITY_DELAY_SEC,
        }]
    }
}

/// An entry of a bulk answer's `eventStreams`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventStream {
    /// Always `sse`.
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "sse")]
    kind: &'static str,
    /// Where the stream is, relative to the server's origin.
    endpoint: Endpoint,
    /// Seconds of client inactivity after which the client may close the stream.
    inactivity_delay_sec: u64,
}

/// The stream's place: a path and query on the server's own origin.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = EventStreamEndpoint)]
pub(crate) struct Endpoint {
    /// Path and query of the stream; its query may carry a credential (never log it).
    #[schema(pattern = "^/")]
    request_uri: String,
}

/// HMAC-SHA256 (RFC 2104) of `env` and `expiry` under `key`.
fn signature(key: &[u8; 32], env: &Environment, expiry: u64) -> [u8; 32] {
    hmac_sha256(key, format!("{env}\n{expiry}").as_bytes())
}

fn millis(at: SystemTime) -> u64 {
    millis_of(at.duration_since(UNIX_EPOCH).unwrap_or_default())
}

fn millis_of(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `GET /ofrep/v1/events/{env}`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

#[utoipa::path(
    get,
    path = "/ofrep/v1/events/{env}",
    tag = OFREP,
    operation_id = "eventStream",
    summary = "Server-sent events telling clients when to fetch an environment's flags again.",
    description = "Advertised in every bulk answer's `eventStreams`. Each change sends `event: \
                   message`, `id: <revision>`, `data: {\"type\": \"refetchEvaluation\", \"etag\": \
                   \"<revision>\", \"lastModified\": <unix seconds>}`; a comment line is a \
                   heartbeat. With client tokens configured, the `credential` issued in the bulk \
                   answer (or a client token in a header) is required.",
    params(
        ("env" = String, Path, description = "The environment.", pattern = "^[a-z0-9][a-z0-9_-]{0,63}$"),
        ("credential" = Option<String>, Query, description = "The credential issued in a bulk answer's `requestUri`."),
        ("Last-Event-ID" = Option<String>, Header, description = "The last revision the client saw: an older one gets an event at once."),
    ),
    responses(
        (status = 200, description = "The stream.", content_type = "text/event-stream", body = String),
        (status = 400, description = "An invalid environment name (`GENERAL`).", body = crate::errors::Failure),
        (status = 401, description = "A missing, forged, expired or another environment's credential (`GENERAL`).", body = crate::errors::Failure),
        (status = 503, description = "Too many streams open, or the server is stopping (`GENERAL`).", body = crate::errors::Failure),
    )
)]
async fn events(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    env: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, OfrepError> {
    let env = env
        .ok()
        .and_then(|Path(name)| Environment::parse(&name).ok())
        .ok_or_else(|| {
            OfrepError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::General,
                "the environment must match ^[a-z0-9][a-z0-9_-]{0,63}$",
            )
        })?;
    let streams = &state.streams;
    if let (Some(key), Some(tokens)) = (&streams.key, &state.client_tokens) {
        let credential = query.as_deref().and_then(|query| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix("credential="))
        });
        let allowed = credential
            .is_some_and(|credential| streams.verify(key, &env, credential, SystemTime::now()))
            || client_token_allows(tokens, &headers, &env);
        if !allowed {
            return Err(OfrepError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::General,
                "a valid stream credential (from a bulk answer's eventStreams) or client token \
                 is required",
            )
            .about(&uri));
        }
    }
    if *streams.closing.borrow() {
        return Err(unavailable(
            "the server is stopping; reconnect to another instance",
        ));
    }
    let Ok(slot) = Arc::clone(&streams.slots).try_acquire_owned() else {
        return Err(unavailable("too many event streams are open"));
    };
    let changes = state.service.watch_changes(&env).await?;
    let current = *changes.borrow();
    let last_seen = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    let mut opening = format!("retry: {RETRY_MS}\n\n");
    if last_seen.is_some_and(|seen| seen < current.get()) {
        opening.push_str(&event(current));
    }
    let follower = Follower {
        changes,
        closing: streams.closing.subscribe(),
        heartbeat: streams.settings.heartbeat,
        last_event: None,
        opening: Some(opening),
        _slot: slot,
    };
    let body = Body::from_stream(futures_util::stream::unfold(
        follower,
        |mut follower| async {
            let chunk = follower.next().await?;
            Some((
                Ok::<_, std::convert::Infallible>(Bytes::from(chunk)),
                follower,
            ))
        },
    ));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        body,
    )
        .into_response())
}

fn unavailable(message: &str) -> OfrepError {
    OfrepError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::General, message)
}

/// One open stream: what it follows, and when it last said something.
struct Follower {
    changes: watch::Receiver<Revision>,
    closing: watch::Receiver<bool>,
    heartbeat: Duration,
    last_event: Option<Instant>,
    /// What the stream says first.
    opening: Option<String>,
    /// Its place under `FLAG_MAX_STREAMS`, given back when the stream ends.
    _slot: OwnedSemaphorePermit,
}

impl Follower {
    /// The next chunk to send, or `None` when the stream ends.
    async fn next(&mut self) -> Option<String> {
        if let Some(opening) = self.opening.take() {
            return Some(opening);
        }
        if *self.closing.borrow() {
            return None;
        }
        let quiet_until = Instant::now() + self.heartbeat;
        tokio::select! {
            changed = self.changes.changed() => {
                changed.ok()?;
                // At most one event per COALESCE: what arrives meanwhile is folded into it.
                if let Some(last) = self.last_event {
                    tokio::select! {
                        () = tokio::time::sleep_until(last + COALESCE) => {}
                        _ = self.closing.changed() => return None,
                    }
                }
                let revision = *self.changes.borrow_and_update();
                self.last_event = Some(Instant::now());
                Some(event(revision))
            }
            () = tokio::time::sleep_until(quiet_until) => Some(":\n\n".to_owned()),
            _ = self.closing.changed() => None,
        }
    }
}

/// The event that tells a client `revision` is current.
fn event(revision: Revision) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!(
        "event: message\nid: {revision}\ndata: {{\"type\":\"refetchEvaluation\",\"etag\":\"{revision}\",\"lastModified\":{now}}}\n\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_hold_for_their_environment_until_they_expire() {
        let streams = Streams::new(StreamSettings::default(), Some(&["admin", "client"]));
        let key = streams.key.unwrap();
        let production = Environment::parse("production").unwrap();
        let staging = Environment::parse("staging").unwrap();
        let now = SystemTime::now();
        let credential = streams.issue(&key, &production, now);
        assert!(streams.verify(&key, &production, &credential, now));
        assert!(!streams.verify(&key, &staging, &credential, now));
        let later = now + Duration::from_secs(25 * 3600 + 1);
        assert!(!streams.verify(&key, &production, &credential, later));
        // Issued again within the same window: the same credential, so the same stream URL.
        assert_eq!(
            credential,
            streams.issue(&key, &production, now + Duration::from_millis(1))
        );
        // A changed expiry or signature, or another deployment's key, is refused.
        let (expiry, signature) = credential.split_once('.').unwrap();
        let extended = format!("{}.{signature}", expiry.parse::<u64>().unwrap() + 1);
        assert!(!streams.verify(&key, &production, &extended, now));
        let other = Streams::new(StreamSettings::default(), Some(&["admin", "other"]));
        assert!(!other.verify(&other.key.unwrap(), &production, &credential, now));
        assert!(!streams.verify(&key, &production, "garbage", now));
    }
}
