//! What every handler can reach: the service (which holds the ports) and the HTTP settings. No
//! adapter appears here: cache health and status are asked of the service.

use std::sync::Arc;
use std::time::Duration;

use flag_core::{Environment, FeatureFlagService};

use crate::metrics::HttpMetrics;

/// The largest request body accepted: 1 MiB.
pub const MAX_BODY_BYTES: usize = 1 << 20;

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
    pub client_tokens: Option<Arc<[String]>>,
    /// The bearer token of the management API.
    pub admin_token: Arc<str>,
    /// Request counts and latencies.
    pub http_metrics: Arc<HttpMetrics>,
    /// How long a request may take before it is answered `503`.
    pub request_timeout: Duration,
}

impl AppState {
    /// A state with the defaults of everything but the service, the default environment and the
    /// admin token.
    pub fn new(
        service: FeatureFlagService,
        default_environment: Environment,
        admin_token: Arc<str>,
    ) -> Self {
        Self {
            service,
            default_environment,
            client_tokens: None,
            admin_token,
            http_metrics: Arc::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}
