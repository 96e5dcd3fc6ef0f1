//! A fresh database for one test, dropped with the fixture.

use sqlx::{AssertSqlSafe, Connection, PgConnection};
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use flag_core::redact_url;

use super::server::PostgresServer;
use super::{SERVICE, wait_until_ready, with_database};
use crate::container::{self, Published};
use crate::{FixtureError, Source, docker_answers, unique_name};

/// A database of its own for one test; dropped (best effort) with the fixture.
#[derive(Debug)]
pub struct PostgresDatabase {
    url: String,
    admin_url: String,
    name: String,
    source: Source,
    server: Option<PostgresServer>,
    _container: Option<ContainerAsync<GenericImage>>,
}

impl PostgresDatabase {
    /// A fresh database on the first Postgres available, in the contract's order.
    pub async fn create() -> Result<Self, FixtureError> {
        if let Some(url) = std::env::var("DATABASE_URL")
            .ok()
            .filter(|url| url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Self::on_server(url, Source::GivenUrl, None, None).await;
        }
        if docker_answers() {
            match Self::in_container().await {
                Ok(database) => return Ok(database),
                Err(error) => eprintln!(
                    "Docker answered but Postgres did not start in it ({error}); trying the binaries"
                ),
            }
        }
        Self::on_own_server().await
    }

    /// A fresh database on a Postgres in a container.
    pub async fn in_container() -> Result<Self, FixtureError> {
        let failed = |message: String| FixtureError::Failed {
            service: SERVICE,
            source_kind: Source::Container,
            message,
        };
        let image = GenericImage::new("postgres", "16-alpine")
            .with_exposed_port(5432.tcp())
            .with_wait_for(WaitFor::message_on_stderr(
                "database system is ready to accept connections",
            ))
            .with_env_var("POSTGRES_HOST_AUTH_METHOD", "trust");
        let Published {
            container,
            host,
            port,
        } = container::start(SERVICE, image, 5432).await?;
        let admin = format!("postgres://postgres@{host}:{port}/postgres");
        wait_until_ready(&admin).await.map_err(failed)?;
        Self::on_server(admin, Source::Container, None, Some(container)).await
    }

    /// A fresh database on a Postgres server the fixture starts from the binaries.
    pub async fn on_own_server() -> Result<Self, FixtureError> {
        let server = PostgresServer::start().await?;
        let admin = server.admin_url();
        Self::on_server(admin, Source::Binary, Some(server), None).await
    }

    async fn on_server(
        admin_url: String,
        source: Source,
        server: Option<PostgresServer>,
        container: Option<ContainerAsync<GenericImage>>,
    ) -> Result<Self, FixtureError> {
        let failed = |message: String| FixtureError::Failed {
            service: SERVICE,
            source_kind: source,
            message,
        };
        let name = unique_name("flagtest_");
        let mut connection = PgConnection::connect(&admin_url).await.map_err(|error| {
            failed(format!("connecting to {}: {error}", redact_url(&admin_url)))
        })?;
        // `name` is ours ([a-z0-9_x]), never user input.
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut connection)
            .await
            .map_err(|error| failed(format!("creating database {name}: {error}")))?;
        let _ = connection.close().await;
        Ok(Self {
            url: with_database(&admin_url, &name),
            admin_url,
            name,
            source,
            server,
            _container: container,
        })
    }

    /// The URL of this test's database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where the server came from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// The server process, when the fixture started it (for restart tests).
    pub fn server(&self) -> Option<&PostgresServer> {
        self.server.as_ref()
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        if self.server.is_some() || self._container.is_some() {
            return; // the whole server goes away with the fixture
        }
        // A database on a shared server: drop it, from a thread of its own because `drop`
        // cannot await (and may run inside a runtime).
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(mut connection) = PgConnection::connect(&admin_url).await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::raw_sql(AssertSqlSafe(sql))
                        .execute(&mut connection)
                        .await;
                    let _ = connection.close().await;
                }
            });
        });
        let _ = dropper.join();
    }
}
