//! The feature-flag HTTP service: OFREP evaluation, health, configuration and wiring.
//!
//! `app::router` builds the whole API from an `AppState`; `wiring::state_from` builds that state
//! from `Config`; the binary (`main.rs`) adds logging, signals and graceful shutdown. Routers are
//! per area (`ofrep`, `ops`), merged in one place.
//!
//! Built so far: OFREP single and bulk evaluation (with `ETag`/`304` and client tokens), the
//! management API (`/v1`, admin token, `If-Match` / `If-None-Match: *`), `/healthz`, `/readyz`,
//! a 1 MiB body limit (`413`), JSON `404` for unmatched routes, `flag-server migrate`. Still to
//! come: `/metrics`, `/openapi.json`, request timeouts, `tiered`.

mod admin;
pub mod app;
pub mod config;
pub mod metrics;
mod no_cache;
mod ofrep;
mod ops;
pub mod wiring;

pub use no_cache::NoCache;
