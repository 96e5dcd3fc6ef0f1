//! `RedisClient`: what `RedisCache` and `RedisBus` share to talk to one Redis: the connector (one
//! shared, self-healing connection whatever the deployment), the key prefix, the timeout every
//! call is bounded by, and how a failed call is told.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use flag_core::{BusError, CacheError, Environment, redact_url};
use redis::RedisError;

use crate::connection::{Connector, Link};
use crate::target::{Target, UrlError};

/// A Redis client: cheap to clone, clones share the connection.
#[derive(Clone)]
pub(crate) struct RedisClient {
    shared: Arc<Shared>,
}

struct Shared {
    connector: Connector,
    shown_url: String,
    prefix: String,
    timeout: Duration,
}

impl fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisClient")
            .field("url", &self.shared.shown_url)
            .field("target", self.shared.connector.target())
            .field("prefix", &self.shared.prefix)
            .field("timeout", &self.shared.timeout)
            .finish()
    }
}

/// Why a call failed, before it is told as the caller's port's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// No answer within the timeout.
    Timeout { after: Duration },
    /// Refused, closed or reconnecting.
    Unavailable { message: String },
    /// Redis answered with an error.
    Backend { message: String },
}

impl From<CallError> for CacheError {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Timeout { after } => CacheError::Timeout { after },
            CallError::Unavailable { message } => CacheError::Unavailable { message },
            CallError::Backend { message } => CacheError::Backend { message },
        }
    }
}

impl From<CallError> for BusError {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Timeout { after } => BusError::Timeout { after },
            CallError::Unavailable { message } | CallError::Backend { message } => {
                BusError::Unavailable { message }
            }
        }
    }
}

fn call_error(error: &RedisError, timeout: Duration) -> CallError {
    if error.is_timeout() {
        CallError::Timeout { after: timeout }
    } else if error.is_connection_refusal() || error.is_io_error() || error.is_connection_dropped()
    {
        CallError::Unavailable {
            message: error.to_string(),
        }
    } else {
        CallError::Backend {
            message: error.to_string(),
        }
    }
}

impl RedisClient {
    /// A client for `url`; no connection is made until the first call.
    pub(crate) fn new(url: &str, prefix: String, timeout: Duration) -> Result<Self, UrlError> {
        let target = Target::parse(url)?;
        install_tls_provider();
        Ok(Self {
            shared: Arc::new(Shared {
                connector: Connector::new(target, timeout),
                shown_url: redact_url(url),
                prefix,
                timeout,
            }),
        })
    }

    /// The prefix of every key and channel.
    pub(crate) fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// The timeout of every call.
    pub(crate) fn timeout(&self) -> Duration {
        self.shared.timeout
    }

    /// The connector, for connections of their own (pub/sub).
    pub(crate) fn connector(&self) -> &Connector {
        &self.shared.connector
    }

    /// The hash key of an environment: `<prefix>:{<env>}`.
    pub(crate) fn key(&self, env: &Environment) -> String {
        // `<prefix>:{<env>}`, built by hand: on every read, `format!` cost ten times as much.
        let (prefix, env) = (self.shared.prefix.as_str(), env.as_str());
        let mut key = String::with_capacity(prefix.len() + env.len() + 3);
        key.push_str(prefix);
        key.push_str(":{");
        key.push_str(env);
        key.push('}');
        key
    }

    /// Runs one call on the shared link, bounded by the timeout (connecting included).
    pub(crate) async fn call<T, F, Fut>(&self, operation: F) -> Result<T, CallError>
    where
        F: FnOnce(Link) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let shared = &self.shared;
        let attempt = async {
            let link = shared.connector.link().await?;
            operation(link).await
        };
        match tokio::time::timeout(shared.timeout, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                shared.connector.failed(&error);
                Err(call_error(&error, shared.timeout))
            }
            Err(_) => Err(CallError::Timeout {
                after: shared.timeout,
            }),
        }
    }

    /// Succeeds when Redis answers `PING` within the timeout.
    pub(crate) async fn ping(&self) -> Result<(), CallError> {
        self.call(
            |mut link| async move { redis::cmd("PING").query_async::<String>(&mut link).await },
        )
        .await
        .map(drop)
    }
}

/// Makes ring the process's TLS provider for `rediss://`, unless the program chose one already.
fn install_tls_provider() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // Err means another provider is installed already; that one serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
