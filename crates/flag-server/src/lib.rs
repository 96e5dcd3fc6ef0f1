//! The feature-flag HTTP service: OFREP evaluation, the management API, health, metrics and the
//! OpenAPI document.
//!
//! `app::App::new` builds the whole API from a `state::AppState` (`app::router` is the same API
//! without the OFREP fast path); `wiring::state_from` builds that state from `config::Config`
//! (the only module that names adapters: the state holds the service, which holds the ports);
//! the binary (`main.rs`) adds logging, signals and graceful shutdown.
//!
//! | module | job |
//! |---|---|
//! | `app` | the one router made of the areas' routers, and the application served |
//! | `fast_path` | OFREP evaluation straight to its handlers, in front of the router |
//! | `routes` | the route table the metrics and the OpenAPI document are held to |
//! | `openapi` | the OpenAPI document: the handlers' annotations plus what each area's layers add |
//! | `ofrep`, `admin`, `ops` | the areas: evaluation, management, operations |
//! | `segments`, `audit`, `explain` | management of segments, the audit log, the explainer |
//! | `transfer` | flags as files: export, import (JSON or YAML) and copy between environments |
//! | `ui` | the web UI at `/ui/`, its files compiled in, with its security headers |
//! | `streams` | the OFREP event streams and their credentials |
//! | `cors` | CORS for the OFREP area (`FLAG_CORS_ORIGINS`) |
//! | `auth` | admin (named tokens: the actor of each write) and client authentication, as extractors |
//! | `errors` | the management and OFREP error bodies, each built once |
//! | `tracking` | the layer that times requests out and records them |
//! | `arrival` | whether a request's body has arrived (`408` or `503`, shutdown) |
//! | `serve` | the accept loop: connection cap, header and idle timeouts, prompt shutdown |
//! | `metrics` | HTTP metrics and the Prometheus exposition |
//! | `telemetry` | OpenTelemetry: spans and metrics over OTLP/HTTP when a collector is configured |
//! | `webhooks` | change webhooks: a worker per receiver delivering the repository's outbox |
//! | `signing` | HMAC-SHA256 and hex, for stream credentials and webhook signatures |
//! | `state`, `config`, `wiring` | what handlers reach, the settings, and how one becomes the other |
//!
//! Decisions where the design contract is silent:
//! - Every route is listed in [`routes::ROUTES`]; the metrics label requests with the route's
//!   template from there (never a user's key or environment, so label cardinality is bounded) and
//!   a test holds `/openapi.json` equal to it.
//! - `/openapi.json` is OpenAPI 3.1, generated from the handlers (`utoipa`, `utoipa-axum`) and the
//!   types they parse and answer, never written by hand.
//! - A request still running after `FLAG_REQUEST_TIMEOUT_MS` (default 5 s) is answered `503` with
//!   `Retry-After: 1`, in the error shape of its API (OFREP or management).
//! - A known path with a method it does not serve is a `405` with the management error shape
//!   (`invalid_request`); unknown paths are a JSON `404` (`not_found`).
//! - `FLAG_CLIENT_TOKENS` set but blank leaves OFREP open (with a warning) rather than locking
//!   every client out.
//! - `--log-format json` writes one JSON object per line with the event's fields at the top level;
//!   `RUST_LOG=debug` adds one event per request (route, method, status, microseconds).
//! - `CACHE_BACKEND=tiered` is `TieredCache` (an in-process `MemoryCache` over `RedisCache`,
//!   invalidated through `RedisBus`); `CACHE_L1_TTL_MS=0` is a start-up error.
//! - `If-Match: *` on a PUT or DELETE of a missing flag is `412`, checked in the write's own
//!   transaction (`Precondition::Exists`), so it never races a concurrent write.
//! - `/readyz` answers `200 degraded` while the database is down but last-known-good flags can
//!   still be served (`FLAG_STALE_IF_ERROR_MS` > 0), so a load balancer keeps sending traffic
//!   that will be answered.
//!
//! Where the time goes (callgrind, requests one at a time; figures and method in
//! `docs/performance.md`, measured by `cargo run --release -p loadtests -- --speed`):
//! - About 23,600 instructions of a request are hyper and axum (parsing, routing, writing the
//!   answer): what the trivial `ceiling` server costs. A single flag costs about 29,500 (as
//!   the runner counts it).
//! - axum's routing, boxed layers, extractors and a clone of `AppState` per request cost about
//!   as much as evaluating the flag, so the two evaluation routes are served by `fast_path` in
//!   front of the router: the same handlers, client check and tracking, called directly, for
//!   requests the router would add nothing to (the rest, and the reference, is the router; a
//!   socket test holds the two to the same answers and counts).
//! - Ours on top of hyper, for one flag: parsing the context (read straight into its
//!   attributes; grows with them), the `tracking` timeout and metrics, the cache lookup and the
//!   evaluation.
//! - Traffic spread over many environments costs cache misses, not instructions (callgrind's
//!   cache simulation: 17.3 last-level misses a request over 1,000 environments, 1.05 on one).
//!   Names are held inline, flags found through a hash index, variants by pointer, and whether
//!   a flag needs its environment decided when it is built: 13.7 now (`flag_core`'s `names`,
//!   `snapshot` and `flag` docs).
//! - The fast path's answer future is boxed where it is made: it holds the evaluation and the
//!   cache lookup inline, and was copied whole at each of five moves (a twentieth of a request).
//! - glibc's allocator was a fifth of a single-flag request: the binary runs on mimalloc, v2,
//!   whose aligned allocations (all of Rust's, through the `mimalloc` crate) stay on the fast
//!   path where v3's fell to an over-allocating fallback whenever a page needed refilling.
//! - Half of a bulk request was `serde_json` escaping and writing 100 entries into a growing
//!   buffer. An OFREP entry follows from the flag, the variant and the reason alone, and a cached
//!   flag never changes, so each flag keeps its answers' bytes once rendered
//!   (`FeatureFlag::rendered_answer`) and `ofrep` copies them into one buffer sized up front;
//!   the single-flag answer is the same entry. What a bulk request costs now is mostly
//!   evaluating its flags (segment lookups, the prerequisite memo, rollout hashes).

mod admin;
pub mod app;
mod arrival;
mod audit;
pub mod auth;
pub mod config;
pub mod cors;
mod errors;
mod explain;
mod fast_path;
pub mod metrics;
mod ofrep;
mod openapi;
mod ops;
pub mod routes;
mod segments;
pub mod serve;
mod signing;
pub mod state;
pub mod streams;
pub mod telemetry;
mod tracking;
pub mod transfer;
pub mod ui;
pub mod webhooks;
pub mod wiring;

pub use errors::ApiErrorCode;
