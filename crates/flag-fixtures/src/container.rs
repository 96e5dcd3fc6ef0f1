//! A service in a container, started through testcontainers when a Docker engine answers.

use testcontainers::core::ContainerRequest;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage};

use crate::{FixtureError, Source};

/// A started container, and the host and port its service is published on.
pub(crate) struct Published {
    pub(crate) container: ContainerAsync<GenericImage>,
    pub(crate) host: String,
    pub(crate) port: u16,
}

/// Starts `request` (an image with its exposed port and readiness wait) and finds where its
/// `port` is published; `service` names it in the error.
pub(crate) async fn start(
    service: &'static str,
    request: impl Into<ContainerRequest<GenericImage>> + Send,
    port: u16,
) -> Result<Published, FixtureError> {
    let failed = |error: testcontainers::TestcontainersError| FixtureError::Failed {
        service,
        source_kind: Source::Container,
        message: error.to_string(),
    };
    let container = request.start().await.map_err(failed)?;
    let host = container.get_host().await.map_err(failed)?.to_string();
    let port = container.get_host_port_ipv4(port).await.map_err(failed)?;
    Ok(Published {
        container,
        host,
        port,
    })
}
