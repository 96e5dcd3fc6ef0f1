//! `flag-server`: the feature-flag HTTP service.
//!
//! The HTTP service itself is not built yet (issue "flag-server"); for now the binary parses its
//! final configuration, prints it (secrets redacted) and exits.

mod config;

use clap::Parser;

use crate::config::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    println!("flag-server {} ({command:?})", env!("CARGO_PKG_VERSION"));
    println!("{:#?}", cli.config);
    println!("The HTTP service is not implemented yet; exiting.");
    Ok(())
}
