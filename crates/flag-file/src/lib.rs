//! Offline mode: a read-only [`FeatureFlagRepository`](flag_core::FeatureFlagRepository) over a
//! flags file, so a server needs no database (CI, edge locations, air-gapped sites, flags kept in
//! Git).
//!
//! - [`FileRepository`] serves every environment of the file from memory. The file is one
//!   environment document (as `export` writes it), several under `{"environments": {...}}`, or a
//!   flagd flag file (the subset that maps exactly), in JSON or YAML.
//! - [`FileRepository::watch`] reloads it when it changes. A valid new file is swapped in whole;
//!   an invalid one keeps the last valid one, is logged and counted ([`FileStats`]).
//!   [`FileRepository::changes`] tells which environments changed, so caches and event streams
//!   can be told.
//! - Every write answers `RepositoryError::ReadOnly`.
//!
//! ```no_run
//! # async fn run() -> Result<(), flag_file::FileError> {
//! use std::time::Duration;
//! use flag_core::Environment;
//! use flag_file::FileRepository;
//!
//! let default = Environment::parse("production").expect("a valid name");
//! let repository = FileRepository::open("/etc/flags/flags.yaml", default).await?;
//! let _watcher = repository.watch(Duration::from_secs(5));
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod document;
mod repository;
mod watch;

pub use document::{is_yaml_file, parse_document};
pub use repository::{FileChange, FileError, FileRepository, FileStats, Reloaded};
pub use watch::FileWatcher;
