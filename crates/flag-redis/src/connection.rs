//! One shared, self-healing connection per client, whatever the deployment, and the connections
//! of their own that pub/sub needs.
//!
//! - Single node: redis' `ConnectionManager`, a multiplexed connection that reconnects by itself.
//! - Cluster: redis' cluster connection, which follows slot moves and reconnects per node.
//! - Sentinel: a multiplexed connection to the current master, dropped on a connection error so
//!   that the next call asks the sentinels again (a failover is followed within one call).
//!
//! The connection is made lazily: a cache built while Redis is down works as soon as Redis is up,
//! and until then every call fails fast with a typed error.

use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisConnectionInfo, RedisFuture, Value};

use crate::target::Target;

/// A handle on the shared connection; cloning it is cheap.
#[derive(Clone)]
pub(crate) enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(MultiplexedConnection),
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(connection) => connection.req_packed_command(cmd),
            Link::Cluster(connection) => connection.req_packed_command(cmd),
            Link::Sentinel(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Link::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
            Link::Sentinel(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(connection) => connection.get_db(),
            Link::Cluster(connection) => connection.get_db(),
            Link::Sentinel(connection) => connection.get_db(),
        }
    }
}

/// Makes the link once and hands out clones of it; forgets a sentinel link that broke.
pub(crate) struct Connector {
    target: Target,
    timeout: Duration,
    link: RwLock<Option<Link>>,
    connecting: tokio::sync::Mutex<()>,
}

impl Connector {
    pub(crate) fn new(target: Target, timeout: Duration) -> Self {
        Self {
            target,
            timeout,
            link: RwLock::new(None),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    /// The shared link, connecting first if there is none yet.
    pub(crate) async fn link(&self) -> redis::RedisResult<Link> {
        if let Some(link) = self.current() {
            return Ok(link);
        }
        // One caller connects; the others wait for it instead of opening connections of their own.
        let _guard = self.connecting.lock().await;
        if let Some(link) = self.current() {
            return Ok(link);
        }
        let link = self.connect().await?;
        *self.link.write().unwrap_or_else(PoisonError::into_inner) = Some(link.clone());
        Ok(link)
    }

    fn current(&self) -> Option<Link> {
        self.link
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Called after a failed call: a sentinel link is dropped so the master is looked up again
    /// (single-node and cluster connections heal themselves).
    pub(crate) fn failed(&self, error: &redis::RedisError) {
        let broken =
            error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal();
        if broken && matches!(self.target, Target::Sentinel { .. }) {
            *self.link.write().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    /// A connection of its own for classic pub/sub (a subscribed connection can do nothing else):
    /// to the single node, or to the master that Sentinel names. A Cluster has none: it uses
    /// sharded pub/sub ([`Connector::sharded_subscriber`]).
    pub(crate) async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        match &self.target {
            Target::Single { url } => redis::Client::open(url.as_str())?.get_async_pubsub().await,
            Target::Cluster { .. } => Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "a Cluster carries invalidations on sharded pub/sub",
            ))),
            Target::Sentinel { .. } => {
                self.sentinel_client()?
                    .async_get_client()
                    .await?
                    .get_async_pubsub()
                    .await
            }
        }
    }

    /// A cluster connection of its own for sharded pub/sub (`SSUBSCRIBE`), on RESP3 so that one
    /// connection per node carries both the subscriptions and their messages, which arrive on
    /// `pushes` together with a `Disconnection` push whenever a node's connection drops. The
    /// `redis` crate routes each `SSUBSCRIBE` to the node owning the channel's slot (following a
    /// `MOVED` answer). `None` when the deployment is not a Cluster.
    pub(crate) async fn sharded_subscriber(
        &self,
        pushes: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    ) -> Option<redis::RedisResult<ClusterConnection>> {
        let Target::Cluster { nodes } = &self.target else {
            return None;
        };
        let connection = async {
            self.cluster_builder(nodes)
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(pushes)
                .build()?
                .get_async_connection()
                .await
        };
        Some(connection.await)
    }

    /// Whether this is a Cluster, where invalidations travel on sharded pub/sub.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster { .. })
    }

    /// The shared settings of every cluster connection: the seeds and the timeouts.
    fn cluster_builder(&self, nodes: &[String]) -> ClusterClientBuilder {
        ClusterClientBuilder::new(nodes.iter().map(String::as_str))
            .connection_timeout(self.timeout)
            .response_timeout(self.timeout)
    }

    fn sentinel_client(&self) -> redis::RedisResult<SentinelClient> {
        let Target::Sentinel {
            sentinels,
            master,
            tls,
            username,
            password,
            db,
        } = &self.target
        else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "not a Sentinel deployment",
            )));
        };
        let mut info = RedisConnectionInfo::default().set_db(*db);
        if let Some(username) = username {
            info = info.set_username(username);
        }
        if let Some(password) = password {
            info = info.set_password(password);
        }
        let mut node = SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
        if *tls {
            node = node.set_tls_mode(redis::TlsMode::Secure);
        }
        SentinelClient::build(
            sentinels.iter().map(String::as_str).collect(),
            master.clone(),
            Some(node),
            SentinelServerType::Master,
        )
    }

    async fn connect(&self) -> redis::RedisResult<Link> {
        let timeout = Some(self.timeout);
        // No response timeout of redis' own on the multiplexed connections: every call is already
        // bounded by `RedisClient::call`'s timeout, and a second timer registered and cancelled
        // on every read was pure cost (`docs/performance.md`). The Cluster connection keeps its
        // own: it also bounds the retries it makes inside one call.
        match &self.target {
            Target::Single { url } => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(None)
                    .set_max_delay(Duration::from_millis(500));
                let manager = redis::Client::open(url.as_str())?
                    .get_connection_manager_with_config(config)
                    .await?;
                Ok(Link::Single(manager))
            }
            Target::Cluster { nodes } => Ok(Link::Cluster(
                self.cluster_builder(nodes)
                    .build()?
                    .get_async_connection()
                    .await?,
            )),
            Target::Sentinel { .. } => {
                let mut client = self.sentinel_client()?;
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(None);
                Ok(Link::Sentinel(
                    client.get_async_connection_with_config(&config).await?,
                ))
            }
        }
    }
}
