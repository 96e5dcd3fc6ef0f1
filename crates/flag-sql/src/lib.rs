//! `SqlRepository`: the SQL implementation of [`FeatureFlagRepository`](flag_core::FeatureFlagRepository), Postgres or SQLite by the
//! URL's scheme (`postgres://…`, `sqlite://…`).
//!
//! # Schema
//!
//! `environments (name, revision)`, `flags (environment, key, definition, version, updated_at)` and
//! `audit_log (environment, key, kind, action, old_version, new_version, revision, at, actor,
//! before_definition, after_definition)`, created
//! by embedded migrations (`migrations/postgres`, `migrations/sqlite`) that run at connect (and by
//! `flag-server migrate`). `definition` holds the flag's JSON exactly as the API shows it.
//!
//! # Writes
//!
//! One transaction per write: make sure the environment row exists, bump its revision (which also
//! locks the row, so writers of one environment queue up instead of racing), check the
//! precondition against the flag's current version (`Precondition::check`), write the flag,
//! append the audit row, commit. A failed precondition rolls everything back, so the revision
//! only moves with a real write. A crash never leaves a revision bump, a version bump or an
//! audit row without the others.
//!
//! # Reads
//!
//! A snapshot is one statement (environment joined with its flags), so its revision and flags
//! always come from one committed state, on Postgres as on SQLite.
//!
//! # Modules
//!
//! `connection` (URL, pool, migrations), `deferred` (a repository still connecting in the
//! background, for a server started while the database is down), `repository` (the port: reads
//! and write transactions),
//! `audit` (the log each write appends to), `columns` (values across the SQL boundary). The
//! precondition rule itself is `flag_core::Precondition::check`, shared with every repository.
//!
//! # Operations
//!
//! Queries are built at run time (building needs no database). The pool is bounded
//! ([`SqlRepositoryBuilder::max_connections`], default 10) and every call is bounded by
//! [`SqlRepositoryBuilder::timeout`] (default 5 s, connection acquisition included): a database
//! that is down or unreachable gives [`RepositoryError::Unavailable`](flag_core::RepositoryError::Unavailable) or
//! [`RepositoryError::Timeout`](flag_core::RepositoryError::Timeout), never a hang. Connections are tested before use, so the same pool
//! survives a database restart. SQLite runs in WAL mode with `synchronous = FULL` and a 5 s busy
//! timeout; a `sqlite::memory:` database is kept on a single connection (each SQLite connection
//! to `:memory:` would otherwise be a database of its own).
//!
//! # Audit log
//!
//! Each write's audit row names the actor the port was given (the admin token's name) and keeps
//! the definitions before and after as stored (migration 0004; older rows hold `NULL` there). The
//! port's `audit` reads it newest first by the row's id, which is the cursor: `id < before`, so a
//! write landing while someone pages neither repeats nor skips an entry.

mod audit;
mod columns;
mod connection;
mod deferred;
mod repository;

pub use connection::{
    Backend, DEFAULT_MIGRATION_TIMEOUT, DEFAULT_TIMEOUT, SqlError, SqlRepositoryBuilder,
};
pub use deferred::DeferredSqlRepository;
pub use repository::SqlRepository;
