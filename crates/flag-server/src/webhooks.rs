//! Change webhooks: every committed write of a flag or segment is POSTed as JSON to each URL of
//! `FLAG_WEBHOOKS`, from the repository's outbox (its rule 15: the audit log, written in the
//! write's own transaction), so a crash between the commit and the delivery loses nothing.
//!
//! - **One worker per receiver**, on its own task: a slow or failing receiver never delays a
//!   write, nor another receiver. Writes made here wake it at once
//!   (`FeatureFlagService::watch_writes`); other instances' writes are found by reading the outbox
//!   every [`POLL`].
//! - **Order.** A receiver's changes are delivered one at a time, oldest first, so each
//!   environment's arrive in revision order. A change is marked delivered only after a `2xx`, so
//!   delivery is at least once: a crash after the receiver answered and before the mark sends it
//!   again (receivers deduplicate by `X-Flag-Delivery`).
//! - **Retries.** A failure (no connection, a timeout of `FLAG_WEBHOOK_TIMEOUT_MS`, an answer
//!   other than `2xx`) is retried after 0.5 s, then twice as long each time up to 5 minutes
//!   (±20 % jitter), until `FLAG_WEBHOOK_RETRY_MS` after the write's commit: then it is given up,
//!   counted and logged, and the next change goes. Redirects are not followed.
//! - **Several instances.** Of instances sharing a database, one delivers to each receiver at a
//!   time: it holds the right for [`HOLD`] and renews it while it works; when it dies another
//!   takes over once the hold expires.
//! - **Signatures.** With `FLAG_WEBHOOK_SECRET`, `X-Flag-Signature: sha256=<hex HMAC-SHA256 of
//!   the body with the secret>` (GitHub's scheme); without it, no signature (a warning at start).
//! - **Secrets.** A receiver's URL is never logged nor stored: logs and metrics show its scheme,
//!   host and port ([`shown`]), and the database names it by a hash of the URL.
//! - **Metrics.** `flag_webhook_attempts_total{receiver, outcome}` (`delivered`, `failed`: an
//!   answer other than 2xx, `unreachable`: no answer), `flag_webhook_abandoned_total{receiver}`,
//!   `flag_webhook_backlog{receiver}` (changes read and not yet delivered, at most [`BATCH`]).
//!
//! The body, one change per request:
//!
//! ```json
//! {"id": "production:42", "environment": "production", "kind": "flag", "key": "new-checkout",
//!  "action": "update", "oldVersion": 3, "newVersion": 4, "actor": "alice", "revision": 17,
//!  "at": "2026-12-04T10:00:00Z", "before": {...}, "after": {...},
//!  "text": "alice updated flag new-checkout in production (version 3 → 4, revision 17)"}
//! ```
//!
//! `text` makes the body a message that Slack's and Mattermost's incoming webhooks (and Discord's
//! Slack-compatible one) post as it is. Decisions and guarantees for users: `docs/webhooks.md`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use flag_core::{AuditAction, FeatureFlagService, OutboxEntry};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::config::Config;
use crate::signing::{hex, hmac_sha256};

/// How often the outbox is read when nothing here woke the worker (other instances' writes).
pub const POLL: Duration = Duration::from_secs(1);

/// How long the right to deliver to a receiver lasts unless renewed.
pub const HOLD: Duration = Duration::from_secs(10);

/// How many changes are read from the outbox at once.
pub const BATCH: usize = 100;

/// The first retry's delay; each next one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The longest URL taken.
const MAX_URL_BYTES: usize = 2048;

/// A receiver's URL as logs and metrics show it: scheme, host and port only (a chat webhook's
/// path is its secret).
pub fn shown(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "[invalid]".to_owned();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}")
}

/// Checks `FLAG_WEBHOOKS`: each URL `http://` or `https://` with a host, no blanks, no repeats.
pub fn parse_receivers(urls: &[String]) -> anyhow::Result<Vec<String>> {
    let mut receivers: Vec<String> = Vec::new();
    for url in urls
        .iter()
        .map(|url| url.trim())
        .filter(|url| !url.is_empty())
    {
        let host = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or_default());
        anyhow::ensure!(
            host.is_some_and(|host| !host.is_empty())
                && url.len() <= MAX_URL_BYTES
                && !url.chars().any(char::is_whitespace),
            "FLAG_WEBHOOKS: {} is not an http:// or https:// URL with a host (at most {MAX_URL_BYTES} bytes)",
            shown(url)
        );
        anyhow::ensure!(
            !receivers.iter().any(|known| known == url),
            "FLAG_WEBHOOKS names {} twice",
            shown(url)
        );
        receivers.push(url.to_owned());
    }
    Ok(receivers)
}

/// What the deliveries count, per receiver, for `/metrics`.
#[derive(Debug, Default)]
pub struct WebhookMetrics {
    receivers: Vec<ReceiverMetrics>,
}

/// One receiver's counts.
#[derive(Debug, Default)]
struct ReceiverMetrics {
    label: String,
    delivered: AtomicU64,
    failed: AtomicU64,
    unreachable: AtomicU64,
    abandoned: AtomicU64,
    backlog: AtomicU64,
}

/// One receiver's counts as `/metrics` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverCounts {
    /// The receiver as [`shown`] (with `#n` when two share a host).
    pub receiver: String,
    /// Attempts answered `2xx`.
    pub delivered: u64,
    /// Attempts answered otherwise.
    pub failed: u64,
    /// Attempts with no answer (no connection, a timeout).
    pub unreachable: u64,
    /// Changes given up after `FLAG_WEBHOOK_RETRY_MS`.
    pub abandoned: u64,
    /// Changes read from the outbox and not yet delivered or given up.
    pub backlog: u64,
}

impl WebhookMetrics {
    /// Every receiver's counts.
    pub fn counts(&self) -> Vec<ReceiverCounts> {
        self.receivers
            .iter()
            .map(|receiver| ReceiverCounts {
                receiver: receiver.label.clone(),
                delivered: receiver.delivered.load(Ordering::Relaxed),
                failed: receiver.failed.load(Ordering::Relaxed),
                unreachable: receiver.unreachable.load(Ordering::Relaxed),
                abandoned: receiver.abandoned.load(Ordering::Relaxed),
                backlog: receiver.backlog.load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// The settings every receiver's worker shares.
struct Delivery {
    service: FeatureFlagService,
    client: reqwest::Client,
    secret: Option<Vec<u8>>,
    retry: Duration,
    /// This process, as the holder of receivers' outboxes.
    holder: String,
    metrics: Arc<WebhookMetrics>,
}

/// Starts a worker per receiver of `config.webhooks`, or nothing when there is none. Each
/// receiver is followed before this returns (when the database answers; otherwise as soon as it
/// does), so every write the server accepts after it starts is delivered.
pub async fn start(
    service: &FeatureFlagService,
    config: &Config,
) -> anyhow::Result<Option<Arc<WebhookMetrics>>> {
    let receivers = parse_receivers(config.webhooks.as_deref().unwrap_or_default())?;
    if receivers.is_empty() {
        return Ok(None);
    }
    // https:// receivers: rustls with the ring provider, as for rediss://.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(config.webhook_timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("flag-server/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the webhook HTTP client")?;
    let secret = config
        .webhook_secret
        .as_deref()
        .filter(|secret| !secret.is_empty())
        .map(|secret| secret.as_bytes().to_vec());
    if secret.is_none() {
        tracing::warn!("FLAG_WEBHOOK_SECRET is not set: webhook deliveries are not signed");
    }
    let mut labels: Vec<String> = Vec::new();
    let metrics = Arc::new(WebhookMetrics {
        receivers: receivers
            .iter()
            .enumerate()
            .map(|(index, url)| {
                let mut label = shown(url);
                if labels.contains(&label) {
                    label = format!("{label}#{}", index + 1);
                }
                labels.push(label.clone());
                ReceiverMetrics {
                    label,
                    ..ReceiverMetrics::default()
                }
            })
            .collect(),
    });
    let delivery = Arc::new(Delivery {
        service: service.clone(),
        client,
        secret,
        retry: Duration::from_millis(config.webhook_retry_ms),
        holder: holder_name(),
        metrics: Arc::clone(&metrics),
    });
    for (index, url) in receivers.into_iter().enumerate() {
        let id = receiver_id(&url);
        let followed = match service.outbox_follow(&id).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(receiver = %shown(&url), %error,
                    "cannot follow the webhook outbox yet; retrying");
                false
            }
        };
        let worker = Worker {
            delivery: Arc::clone(&delivery),
            id,
            url,
            index,
            followed,
            writes: service.watch_writes(),
        };
        tokio::spawn(worker.run());
    }
    Ok(Some(metrics))
}

/// The outbox's name of the receiver at `url`: a hash, so the database holds no secret.
fn receiver_id(url: &str) -> String {
    let digest = Sha256::digest(url.as_bytes());
    format!("sha256:{}", hex(&digest[..16]))
}

/// This process's name as a holder: unique per start.
fn holder_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    format!("{}-{nanos:x}", std::process::id())
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The `X-Flag-Signature` value of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex(&hmac_sha256(secret, body)))
}

/// The JSON body of one change.
pub fn body_of(change: &OutboxEntry) -> Vec<u8> {
    let entry = &change.entry;
    let verb = match entry.action {
        AuditAction::Create => "created",
        AuditAction::Update => "updated",
        AuditAction::Delete => "deleted",
    };
    let versions = match (entry.old_version, entry.new_version) {
        (Some(old), Some(new)) => format!("version {old} → {new}, "),
        (None, Some(new)) => format!("version {new}, "),
        (Some(old), None) => format!("was version {old}, "),
        (None, None) => String::new(),
    };
    let text = format!(
        "{} {verb} {} {} in {} ({versions}revision {})",
        entry.actor,
        entry.kind.as_str(),
        entry.key,
        change.environment,
        entry.revision.get()
    );
    let body = json!({
        "id": delivery_id(change),
        "environment": change.environment.as_str(),
        "kind": entry.kind.as_str(),
        "key": entry.key,
        "action": entry.action.as_str(),
        "oldVersion": entry.old_version,
        "newVersion": entry.new_version,
        "actor": entry.actor,
        "revision": entry.revision.get(),
        "at": entry.at,
        "before": entry.before,
        "after": entry.after,
        "text": text,
    });
    body.to_string().into_bytes()
}

/// The change's id, the same on every attempt and from every instance.
fn delivery_id(change: &OutboxEntry) -> String {
    format!("{}:{}", change.environment, change.entry.position.0)
}

/// How one attempt went.
enum Attempt {
    Delivered,
    Failed(String),
}

/// What became of one change.
enum Outcome {
    Delivered,
    Abandoned,
    /// Another instance took the receiver over: stop and read the outbox again.
    LostHold,
}

/// The worker of one receiver.
struct Worker {
    delivery: Arc<Delivery>,
    url: String,
    /// The outbox's name of the receiver.
    id: String,
    /// The receiver's place in the metrics.
    index: usize,
    /// Whether the outbox follows the receiver yet.
    followed: bool,
    writes: watch::Receiver<u64>,
}

impl Worker {
    fn metrics(&self) -> &ReceiverMetrics {
        &self.delivery.metrics.receivers[self.index]
    }

    async fn run(mut self) {
        let shown = shown(&self.url);
        let mut failures = Backoff::default();
        loop {
            match self.round().await {
                Ok(true) => failures = Backoff::default(),
                Ok(false) => {
                    failures = Backoff::default();
                    // Nothing pending (or another instance delivers): wait for a write here, or
                    // the poll for other instances' writes.
                    let _ = tokio::time::timeout(POLL, self.writes.changed()).await;
                }
                Err(error) => {
                    let wait = failures.next();
                    tracing::warn!(receiver = %shown, %error, retry_in_ms = wait.as_millis(),
                        "webhook outbox unreadable; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// One round: takes the right to deliver, reads the outbox and delivers what it holds, in
    /// order. Answers whether there was anything to deliver.
    async fn round(&mut self) -> Result<bool, flag_core::ServiceError> {
        let service = &self.delivery.service;
        if !self.followed {
            service.outbox_follow(&self.id).await?;
            self.followed = true;
        }
        if !self.hold().await? {
            return Ok(false);
        }
        let pending = service.outbox_pending(&self.id, BATCH).await?;
        if pending.is_empty() {
            return Ok(false);
        }
        self.metrics()
            .backlog
            .store(pending.len() as u64, Ordering::Relaxed);
        for change in &pending {
            match self.deliver(change).await? {
                Outcome::Delivered | Outcome::Abandoned => {
                    self.metrics().backlog.fetch_sub(1, Ordering::Relaxed);
                    service
                        .outbox_delivered(&self.id, &change.environment, change.entry.position)
                        .await?;
                }
                Outcome::LostHold => break,
            }
        }
        self.metrics().backlog.store(0, Ordering::Relaxed);
        Ok(true)
    }

    /// Takes or renews the right to deliver for [`HOLD`].
    async fn hold(&self) -> Result<bool, flag_core::ServiceError> {
        let hold_ms = u64::try_from(HOLD.as_millis()).unwrap_or(u64::MAX);
        self.delivery
            .service
            .outbox_hold(&self.id, &self.delivery.holder, now_ms(), hold_ms)
            .await
    }

    /// Delivers `change`, retrying with backoff until it is delivered or its time is up.
    async fn deliver(&self, change: &OutboxEntry) -> Result<Outcome, flag_core::ServiceError> {
        let body = body_of(change);
        let signature = self
            .delivery
            .secret
            .as_deref()
            .map(|secret| signature(secret, &body));
        let id = delivery_id(change);
        // Retried until the window after the commit ends (a restart does not reopen it).
        let committed_ms = committed_at_ms(&change.entry.at).unwrap_or_else(now_ms);
        let window_ms = u64::try_from(self.delivery.retry.as_millis()).unwrap_or(u64::MAX);
        let give_up_at = committed_ms.saturating_add(window_ms);
        let mut backoff = Backoff::default();
        loop {
            match self.attempt(&body, &id, signature.as_deref()).await {
                Attempt::Delivered => {
                    self.metrics().delivered.fetch_add(1, Ordering::Relaxed);
                    return Ok(Outcome::Delivered);
                }
                Attempt::Failed(why) => {
                    let now = now_ms();
                    if now >= give_up_at {
                        self.metrics().abandoned.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(receiver = %shown(&self.url), delivery = %id, %why,
                            "webhook given up after FLAG_WEBHOOK_RETRY_MS");
                        return Ok(Outcome::Abandoned);
                    }
                    let wait = backoff.next().min(Duration::from_millis(give_up_at - now));
                    tracing::warn!(receiver = %shown(&self.url), delivery = %id, %why,
                        retry_in_ms = wait.as_millis(), "webhook delivery failed");
                    if !self.wait_holding(wait).await? {
                        return Ok(Outcome::LostHold);
                    }
                }
            }
        }
    }

    /// Waits `wait`, renewing the right to deliver as it goes; answers whether it still holds it.
    async fn wait_holding(&self, wait: Duration) -> Result<bool, flag_core::ServiceError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if !self.hold().await? {
                return Ok(false);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(true);
            }
            tokio::time::sleep((deadline - now).min(HOLD / 3)).await;
        }
    }

    /// One POST of `body`.
    async fn attempt(&self, body: &[u8], id: &str, signature: Option<&str>) -> Attempt {
        let mut request = self
            .delivery
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Flag-Delivery", id)
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("X-Flag-Signature", signature);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => Attempt::Delivered,
            Ok(response) => {
                self.metrics().failed.fetch_add(1, Ordering::Relaxed);
                Attempt::Failed(format!("answered {}", response.status().as_u16()))
            }
            Err(error) => {
                self.metrics().unreachable.fetch_add(1, Ordering::Relaxed);
                // Without the URL: reqwest's message would carry it.
                let why = if error.is_timeout() {
                    "timed out"
                } else if error.is_connect() {
                    "could not connect"
                } else {
                    "no answer"
                };
                Attempt::Failed(why.to_owned())
            }
        }
    }
}

/// When a change committed, from its RFC 3339 `at`, in Unix milliseconds.
fn committed_at_ms(at: &str) -> Option<u64> {
    let at =
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Exponential backoff with jitter: 0.5 s, 1 s, 2 s, ... up to [`MAX_BACKOFF`], each ±20 %.
#[derive(Default)]
struct Backoff {
    attempts: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let base = FIRST_BACKOFF
            .saturating_mul(1u32 << self.attempts.min(16))
            .min(MAX_BACKOFF);
        self.attempts = self.attempts.saturating_add(1);
        // Jitter from the clock's low bits: receivers coming back are not hit in step.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.subsec_nanos());
        let jitter = 0.8 + 0.4 * (f64::from(nanos % 1000) / 1000.0);
        base.mul_f64(jitter)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn receivers_show_no_path_and_bad_ones_are_refused() {
        assert_eq!(
            shown("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com"
        );
        assert_eq!(
            shown("http://user:pw@127.0.0.1:9/x?y"),
            "http://127.0.0.1:9"
        );
        let urls = |list: &[&str]| list.iter().map(|url| (*url).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            parse_receivers(&urls(&["http://a/x", " ", "https://b"])).unwrap(),
            ["http://a/x", "https://b"]
        );
        for bad in ["ftp://a", "http://", "a.example/x", "http://a/ b"] {
            let error = parse_receivers(&urls(&[bad])).unwrap_err().to_string();
            assert!(error.contains("FLAG_WEBHOOKS"), "{bad}: {error}");
        }
        assert!(parse_receivers(&urls(&["http://a", "http://a"])).is_err());
    }

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let mut backoff = Backoff::default();
        let waits: Vec<Duration> = (0..14).map(|_| backoff.next()).collect();
        assert!(waits[0] >= Duration::from_millis(400) && waits[0] <= Duration::from_millis(600));
        assert!(waits[3] >= Duration::from_millis(3200) && waits[3] <= Duration::from_millis(4800));
        assert!(waits[13] <= MAX_BACKOFF.mul_f64(1.2) && waits[13] >= MAX_BACKOFF.mul_f64(0.8));
    }

    #[test]
    fn a_commit_time_reads_as_unix_milliseconds() {
        assert_eq!(committed_at_ms("1970-01-01T00:00:01.5Z"), Some(1_500));
        assert_eq!(committed_at_ms("not a time"), None);
    }
}
