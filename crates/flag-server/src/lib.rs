//! The feature-flag HTTP service: OFREP evaluation, health, configuration and wiring.
//!
//! `app::router` builds the whole API from an `AppState`; `wiring::state_from` builds that state
//! from `Config`; the binary (`main.rs`) adds logging, signals and graceful shutdown. Routers are
//! per area (`ofrep`, `ops`), merged in one place.
//!
//! Built so far: OFREP single and bulk evaluation (with `ETag`/`304` and client tokens),
//! `/healthz`, `/readyz`, JSON `404` for unmatched routes, `flag-server migrate`. Still to come:
//! the management API, `/metrics`, `/openapi.json`, body limits and request timeouts, `tiered`.

pub mod app;
pub mod config;
mod no_cache;
mod ofrep;
mod ops;
pub mod wiring;

pub use no_cache::NoCache;
