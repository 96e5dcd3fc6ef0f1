//! Postgres fixtures: a database of the test's own on the given `DATABASE_URL`'s server, in a
//! container, or on a server of the fixture's own started from the Postgres binaries.

mod database;
mod server;

use std::time::{Duration, Instant};

use flag_core::redact_url;
use sqlx::{Connection, PgConnection};

pub use database::PostgresDatabase;
pub use server::PostgresServer;

const SERVICE: &str = "postgres";
const HINT: &str = "set DATABASE_URL=postgres://…, start Docker, or apt-get install postgresql";

async fn wait_until_ready(url: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match PgConnection::connect(url).await {
            Ok(connection) => {
                let _ = connection.close().await;
                return Ok(());
            }
            Err(error) if Instant::now() > deadline => {
                return Err(format!(
                    "postgres at {} did not answer: {error}",
                    redact_url(url)
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The same server URL with another database name.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(base, query)| (base, Some(query)));
    let authority_start = base.find("://").map_or(0, |index| index + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_swapped_in_urls() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "x"),
            "postgres://u@h:5432/x"
        );
    }
}
