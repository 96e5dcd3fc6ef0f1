//! A Redis for one test (its own key prefix), or one shared by a whole test process.

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::{ContainerAsync, GenericImage};

use super::cluster::{RedisCluster, start_cluster};
use super::process::RedisProcess;
use super::{SERVICE, start_on_free_port};
use crate::container::{self, Published};
use crate::process::OwnedProcess;
use crate::{FixtureError, Source, docker_answers, unique_name};

/// A Redis to run one test against, with a key prefix no other test uses.
#[derive(Debug)]
pub struct RedisServer {
    url: String,
    key_prefix: String,
    source: Source,
    process: Option<RedisProcess>,
    _container: Option<ContainerAsync<GenericImage>>,
}

impl RedisServer {
    /// The first Redis available, in the contract's order (given URL, container, binary).
    pub async fn start() -> Result<Self, FixtureError> {
        if let Some(url) = std::env::var("REDIS_URL")
            .ok()
            .filter(|url| !url.is_empty())
        {
            return Ok(Self::from_url(url));
        }
        if docker_answers() {
            match Self::from_container().await {
                Ok(server) => return Ok(server),
                Err(error) => eprintln!(
                    "Docker answered but Redis did not start in it ({error}); trying redis-server"
                ),
            }
        }
        Self::from_binary().await
    }

    /// A Redis at `url`, shared with other tests (isolated by the key prefix).
    pub fn from_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: unique_name("test-"),
            source: Source::GivenUrl,
            process: None,
            _container: None,
        }
    }

    /// A Redis in a container started through testcontainers.
    pub async fn from_container() -> Result<Self, FixtureError> {
        let image = GenericImage::new("redis", "7.2-alpine")
            .with_exposed_port(6379.tcp())
            .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"));
        let Published {
            container,
            host,
            port,
        } = container::start(SERVICE, image, 6379).await?;
        Ok(Self {
            url: format!("redis://{host}:{port}"),
            key_prefix: unique_name("test-"),
            source: Source::Container,
            process: None,
            _container: Some(container),
        })
    }

    /// A `redis-server` of our own on a free port.
    pub async fn from_binary() -> Result<Self, FixtureError> {
        let process = RedisProcess::spawn(&[]).await?;
        Ok(Self {
            url: process.url(),
            key_prefix: unique_name("test-"),
            source: Source::Binary,
            process: Some(process),
            _container: None,
        })
    }

    /// The URL to connect to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A key prefix for this test alone.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// Where the server came from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// The server process, when the fixture started it (for fault injection).
    pub fn process(&self) -> Option<&RedisProcess> {
        self.process.as_ref()
    }
}

/// A Redis endpoint shared by every test of one test process, with a key prefix of the caller's
/// own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisEndpoint {
    /// The URL (`redis://…` or `redis+cluster://…`).
    pub url: String,
    /// A key prefix no other test uses.
    pub key_prefix: String,
}

/// What a shared server is: its URL, and the processes that die with the test process.
struct SharedServer {
    url: String,
    _processes: Vec<OwnedProcess>,
    _container: Option<ContainerAsync<GenericImage>>,
    _cluster: Option<RedisCluster>,
}

static SHARED_NODE: tokio::sync::OnceCell<Result<SharedServer, String>> =
    tokio::sync::OnceCell::const_new();
static SHARED_CLUSTER: tokio::sync::OnceCell<Result<SharedServer, String>> =
    tokio::sync::OnceCell::const_new();

fn endpoint(
    shared: &Result<SharedServer, String>,
    service: &'static str,
) -> Result<RedisEndpoint, FixtureError> {
    match shared {
        Ok(server) => Ok(RedisEndpoint {
            url: server.url.clone(),
            key_prefix: unique_name("test-"),
        }),
        Err(message) => Err(FixtureError::Failed {
            service,
            source_kind: Source::Binary,
            message: message.clone(),
        }),
    }
}

impl RedisServer {
    /// One Redis for the whole test process (given URL, container or binary, in that order),
    /// so that many short tests do not each start a server; isolation is by key prefix.
    pub async fn shared() -> Result<RedisEndpoint, FixtureError> {
        let shared = SHARED_NODE
            .get_or_init(|| async {
                if let Some(url) = std::env::var("REDIS_URL")
                    .ok()
                    .filter(|url| !url.is_empty())
                {
                    return Ok(SharedServer {
                        url,
                        _processes: Vec::new(),
                        _container: None,
                        _cluster: None,
                    });
                }
                if docker_answers()
                    && let Ok(mut server) = Self::from_container().await
                {
                    return Ok(SharedServer {
                        url: server.url.clone(),
                        _processes: Vec::new(),
                        _container: server._container.take(),
                        _cluster: None,
                    });
                }
                let (process, port) = start_on_free_port(true, |_| Vec::new())
                    .await
                    .map_err(|error| error.to_string())?;
                Ok(SharedServer {
                    url: format!("redis://127.0.0.1:{port}"),
                    _processes: vec![process],
                    _container: None,
                    _cluster: None,
                })
            })
            .await;
        endpoint(shared, SERVICE)
    }

    /// One three-master Redis Cluster on loopback for the whole test process, started from
    /// `redis-server` (`cluster-enabled yes`) and joined with `redis-cli --cluster create`.
    pub async fn shared_cluster() -> Result<RedisEndpoint, FixtureError> {
        let shared = SHARED_CLUSTER
            .get_or_init(|| async {
                let cluster = start_cluster().await?;
                Ok(SharedServer {
                    url: cluster.url().to_owned(),
                    _processes: vec![],
                    _container: None,
                    _cluster: Some(cluster),
                })
            })
            .await;
        endpoint(shared, "redis cluster")
    }
}
