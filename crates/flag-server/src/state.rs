//! What every handler can reach: the service (which holds the ports) and the HTTP settings. No
//! adapter appears here: cache health and status are asked of the service.

use std::sync::Arc;
use std::time::Duration;

use flag_core::{Environment, FeatureFlagService};

use crate::auth::{AdminTokens, ClientTokens};
use crate::cors::CorsOrigins;
use crate::metrics::HttpMetrics;
use crate::streams::{StreamSettings, Streams};

/// The largest request body accepted by the management API: 1 MiB.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The largest document `import` and `copy` take: a whole environment (10,000 flags of a few KiB
/// each is about 30 MiB). Only an admin token gets this far: the token is checked before the
/// body is read.
pub const MAX_DOCUMENT_BYTES: usize = 32 << 20;

/// The largest OFREP request body accepted when the configuration does not say: 64 KiB.
pub const DEFAULT_MAX_CONTEXT_BYTES: usize = 65_536;

/// How many requests may be in flight at once when the configuration does not say.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;

/// How long a request may take when the configuration does not say.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Reads, evaluations and writes.
    pub service: FeatureFlagService,
    /// The environment of requests without `X-Environment`.
    pub default_environment: Environment,
    /// Tokens OFREP clients must present; `None` leaves OFREP open.
    pub client_tokens: Option<Arc<ClientTokens>>,
    /// The bearer tokens of the management API, by name.
    pub admin_tokens: Arc<AdminTokens>,
    /// Request counts and latencies.
    pub http_metrics: Arc<HttpMetrics>,
    /// How long a request may take before it is answered `503` (`408` while its body is still
    /// arriving).
    pub request_timeout: Duration,
    /// The largest OFREP request body (`FLAG_MAX_CONTEXT_BYTES`).
    pub max_context_bytes: usize,
    /// How many API requests may be in flight before more are shed (`FLAG_MAX_IN_FLIGHT`).
    pub max_in_flight: usize,
    /// Whether the cache is shared by instances (Redis), so it holds flags this instance never
    /// read: with the database down it can still serve.
    pub shared_cache: bool,
    /// The OFREP event streams.
    pub streams: Arc<Streams>,
    /// The origins whose browsers may call OFREP (`FLAG_CORS_ORIGINS`); `None`: no CORS.
    pub cors: Option<Arc<CorsOrigins>>,
    /// The flags file served (`DATABASE_URL=file://…`), for its reload counts.
    pub flags_file: Option<flag_file::FileRepository>,
    /// Per-flag evaluation counts, when `FLAG_EVALUATION_METRICS=on`.
    pub evaluation_counts: Option<Arc<flag_core::EvaluationCounts>>,
    /// The change webhooks' counts, when `FLAG_WEBHOOKS` names receivers.
    pub webhooks: Option<Arc<crate::webhooks::WebhookMetrics>>,
}

impl AppState {
    /// A state with the defaults of everything but the service, the default environment and the
    /// admin token (named `admin`).
    pub fn new(
        service: FeatureFlagService,
        default_environment: Environment,
        admin_token: &str,
    ) -> Self {
        Self {
            service,
            default_environment,
            client_tokens: None,
            // An empty token admits nobody (it is not a token anyone could be given).
            admin_tokens: Arc::new(AdminTokens::parse(Some(admin_token), &[]).unwrap_or_default()),
            http_metrics: Arc::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_context_bytes: DEFAULT_MAX_CONTEXT_BYTES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            shared_cache: false,
            streams: Arc::new(Streams::new(StreamSettings::default(), None)),
            cors: None,
            flags_file: None,
            evaluation_counts: None,
            webhooks: None,
        }
    }
}
