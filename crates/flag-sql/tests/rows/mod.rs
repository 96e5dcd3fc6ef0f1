//! The stored rows of a SQL repository, reached around the port for the conformance property on
//! tolerant reads: what a newer release or damage leaves in the `flags` table.

use flag_conformance::flag_core::{Environment, FlagKey, async_trait};
use flag_conformance::repository::StoredRows;
use sqlx::Connection;

/// The `flags` table of the database at a URL (SQLite or Postgres).
pub(crate) struct SqlRows(pub(crate) String);

#[async_trait]
impl StoredRows for SqlRows {
    async fn replace_definition(
        &self,
        env: &Environment,
        key: &FlagKey,
        definition: &str,
    ) -> Result<(), String> {
        sqlx::any::install_default_drivers();
        let mut connection = sqlx::AnyConnection::connect(&self.0)
            .await
            .map_err(|error| error.to_string())?;
        let updated =
            sqlx::query("UPDATE flags SET definition = $1 WHERE environment = $2 AND key = $3")
                .bind(definition)
                .bind(env.as_str())
                .bind(key.as_str())
                .execute(&mut connection)
                .await
                .map_err(|error| error.to_string())?
                .rows_affected();
        if updated == 1 {
            Ok(())
        } else {
            Err(format!("{updated} rows hold {env}/{key}"))
        }
    }
}
