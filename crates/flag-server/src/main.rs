//! `flag-server`: the feature-flag HTTP service.
//!
//! `flag-server migrate` applies the database migrations and exits. The HTTP service itself is
//! not built yet (issue "flag-server"); until then `flag-server serve` (the default) parses its
//! final configuration, prints it (secrets redacted) and exits.

mod config;

use anyhow::Context;
use clap::Parser;
use flag_sql::SqlRepository;

use crate::config::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            let repository = SqlRepository::connect(&cli.config.database_url)
                .await
                .context("applying migrations")?;
            println!("migrations applied to {:?}", repository.database());
        }
        Command::Serve => {
            println!("flag-server {}", env!("CARGO_PKG_VERSION"));
            println!("{:#?}", cli.config);
            println!("The HTTP service is not implemented yet; exiting.");
        }
    }
    Ok(())
}
