//! `flag-server`: the feature-flag HTTP service.
//!
//! `flag-server` (or `flag-server serve`) serves the API; `flag-server migrate` applies the
//! database migrations and exits; `flag-server export --env E [--out FILE]` writes an
//! environment as one document and `flag-server import --env E FILE [--mode replace]
//! [--dry-run]` imports one, through the service over the configured database and cache (so
//! caches and other instances hear of it as of an HTTP import). SIGTERM or Ctrl-C stops accepting connections, closes idle
//! and half-sent ones at once and lets in-flight requests finish for up to
//! `FLAG_SHUTDOWN_GRACE_MS`, then tries pending cache invalidations once more within what is left
//! of it, and exits 0.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use flag_core::{Actor, Environment, FeatureFlagRepository, ImportMode, ImportProblem};
use flag_server::config::{Cli, Command, Config, ImportModeArg, LogFormat};
use flag_server::telemetry::Telemetry;
use flag_server::{app, serve, transfer, wiring};
use flag_sql::SqlRepository;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// mimalloc rather than glibc's allocator: under callgrind, malloc and free were a fifth of the
/// instructions of a single-flag request (see `flag_server`'s crate docs, "Where the time goes").
/// Its v2 (the workspace's `mimalloc` features): the crate allocates through `mi_malloc_aligned`,
/// which in v3 over-allocates whenever a page's free list needs refilling.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    let serving = matches!(cli.command, None | Some(Command::Serve));
    // OpenTelemetry only for the server, and only when a collector is configured.
    let telemetry = if serving {
        Telemetry::from_env().context("OpenTelemetry settings")?
    } else {
        None
    };
    cli.config.traced = telemetry.as_ref().is_some_and(Telemetry::traces);
    // The log layer takes events only (spans would cost every request a few allocations even
    // with nobody exporting them); the OpenTelemetry layer, when there is one, takes the spans.
    // Without one the filters are global, so every span's call site is marked never enabled once
    // and making a span costs a load and a branch (per-layer filters are asked per span).
    let env_filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let format = cli.config.log_format;
    match telemetry.as_ref().and_then(Telemetry::layer) {
        Some(spans) => tracing_subscriber::registry()
            .with(
                log_layer(format)
                    .with_filter(env_filter().and(filter_fn(|metadata| metadata.is_event()))),
            )
            .with(spans)
            .init(),
        None => tracing_subscriber::registry()
            .with(env_filter())
            .with(filter_fn(|metadata| metadata.is_event()))
            .with(log_layer(format))
            .init(),
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            let repository = SqlRepository::connect(&cli.config.database_url)
                .await
                .context("applying migrations")?;
            println!("migrations applied to {:?}", repository.database());
            Ok(())
        }
        Command::Serve => {
            let served = serve(cli.config, telemetry.as_ref()).await;
            if let Some(telemetry) = telemetry {
                telemetry.shutdown();
            }
            served
        }
        Command::Export { env, out, yaml } => export(&cli.config, &env, out, yaml).await,
        Command::Import {
            env,
            file,
            mode,
            dry_run,
            actor,
        } => import(&cli.config, &env, &file, mode, dry_run, &actor).await,
    }
}

/// The log output on standard error, as text or one JSON object per line.
fn log_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
    }
}

/// `flag-server export`: reads the database directly.
async fn export(
    config: &Config,
    env: &str,
    out: Option<std::path::PathBuf>,
    yaml: bool,
) -> anyhow::Result<()> {
    let env = Environment::parse(env).context("--env")?;
    let repository = SqlRepository::connect(&config.database_url)
        .await
        .context("connecting to the database")?;
    let snapshot = repository
        .snapshot(&env)
        .await
        .context("reading the environment")?;
    let yaml = yaml || out.as_deref().is_some_and(flag_file::is_yaml_file);
    let document = transfer::render_document(&env, &snapshot, yaml)
        .map_err(|error| anyhow::anyhow!("rendering the document: {error}"))?;
    match out {
        Some(path) => std::fs::write(&path, &document)
            .with_context(|| format!("writing {}", path.display()))?,
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(&document)
                .context("writing to standard output")?;
        }
    }
    Ok(())
}

/// `flag-server import`: through the service over the configured database and cache, so that
/// caches and other instances hear of it as they hear of an HTTP write.
async fn import(
    config: &Config,
    env: &str,
    file: &std::path::Path,
    mode: ImportModeArg,
    dry_run: bool,
    actor: &str,
) -> anyhow::Result<()> {
    let env = Environment::parse(env).context("--env")?;
    let actor = Actor::parse(actor).context("--actor")?;
    let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let problems = |problems: Vec<ImportProblem>| {
        let listed: Vec<String> = problems
            .iter()
            .map(|problem| format!("  {}: {}", problem.path, problem.message))
            .collect();
        anyhow::anyhow!(
            "{} cannot be imported:\n{}",
            file.display(),
            listed.join("\n")
        )
    };
    let document = flag_file::parse_document(&text, flag_file::is_yaml_file(file))
        .map_err(|problem| problems(vec![problem]))?;
    let (service, _flags_file) = wiring::service_from(config).await?;
    service
        .ping_repository()
        .await
        .context("the database does not answer")?;
    let mode = match mode {
        ImportModeArg::Merge => ImportMode::Merge,
        ImportModeArg::Replace => ImportMode::Replace,
    };
    let imported =
        match transfer::import_document(&service, &env, &document, mode, None, dry_run, &actor)
            .await
        {
            Ok(imported) => imported,
            Err(transfer::ImportFailure::Document(found)) => return Err(problems(found)),
            Err(transfer::ImportFailure::Service(error)) => {
                return Err(anyhow::Error::new(error).context("importing"));
            }
        };
    let answer = transfer::ImportAnswer::of(&env, &imported, dry_run);
    println!(
        "{}",
        serde_json::to_string_pretty(&answer).context("printing the answer")?
    );
    Ok(())
}

async fn serve(config: Config, telemetry: Option<&Telemetry>) -> anyhow::Result<()> {
    tracing::info!(config = ?config, "starting flag-server {}", env!("CARGO_PKG_VERSION"));
    let state = wiring::state_from(&config).await?;
    if let Some(telemetry) = telemetry {
        telemetry.observe(&state);
        tracing::info!(
            traces = telemetry.traces(),
            "exporting OpenTelemetry over OTLP/HTTP"
        );
    }
    let mut limits = wiring::connection_limits(&config)?;
    limits.max_connections = fit_descriptors(limits.max_connections);
    let shutdown = Shutdown::listen();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;
    tracing::info!(%address, cache = state.service.cache_backend(), repository = state.service.repository_backend(), "listening");
    println!("flag-server listening on http://{address}");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = state.service.clone();
    let streams = state.streams.clone();
    let server = tokio::spawn(serve::serve(
        listener,
        app::App::new(state),
        limits,
        async {
            let _ = stopped.await;
        },
    ));
    shutdown.wait().await;
    tracing::info!("shutting down: draining in-flight requests");
    // Event streams would hold the drain for the whole grace period: end them now; their
    // clients reconnect to another instance.
    streams.close_all();
    let _ = stop.send(());
    let grace = tokio::time::Instant::now() + Duration::from_millis(config.shutdown_grace_ms);
    match tokio::time::timeout_at(grace, server).await {
        Ok(joined) => joined.context("server task")?,
        Err(_) => tracing::warn!("grace period over; exiting with requests still in flight"),
    }
    // Invalidations still being retried would be lost with the process: try each once more,
    // within what is left of the grace period.
    match tokio::time::timeout_at(grace, service.flush_invalidations()).await {
        Ok(0) => {}
        Ok(left) => tracing::warn!(
            environments = left,
            "invalidations still failing at exit; those cache entries expire with their TTL"
        ),
        Err(_) => tracing::warn!("grace period over while flushing pending invalidations"),
    }
    Ok(())
}

/// Descriptors kept for everything but client connections: the listener, database and Redis
/// connections, files, and the one a connection past the cap needs for an instant.
const RESERVED_DESCRIPTORS: u64 = 64;

/// Raises the soft descriptor limit to the hard one (a default soft limit of 1024, or 256, is far
/// below `FLAG_MAX_CONNECTIONS`), and answers the connection cap that fits in it.
fn fit_descriptors(max_connections: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "could not read or raise the descriptor limit");
            return max_connections;
        }
    };
    let fits = usize::try_from(limit.saturating_sub(RESERVED_DESCRIPTORS)).unwrap_or(usize::MAX);
    if fits < max_connections {
        tracing::warn!(
            descriptors = limit,
            max_connections,
            held = fits,
            "FLAG_MAX_CONNECTIONS does not fit in the descriptor limit; holding fewer"
        );
        return fits.max(1);
    }
    tracing::debug!(descriptors = limit, "descriptor limit");
    max_connections
}

/// SIGTERM and Ctrl-C, listened for from the moment it is made: made before the server says it
/// listens, so a SIGTERM sent right after is a clean shutdown, never the signal's default action.
struct Shutdown {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Shutdown {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signals = signal(SignalKind::terminate())
                .and_then(|terminate| Ok((terminate, signal(SignalKind::interrupt())?)))
                .map_err(|error| tracing::warn!(%error, "cannot listen for SIGTERM; Ctrl-C only"))
                .ok();
            Self { signals }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Resolves on SIGTERM or Ctrl-C.
    async fn wait(self) {
        #[cfg(unix)]
        if let Some((mut terminate, mut interrupt)) = self.signals {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
