//! The contract in `docs/` is kept true by comparing its tables with the code they describe: the
//! route table with the router's, the configuration table with the parser's variables, flags and
//! defaults, the metric families with what `/metrics` renders, the operators with the engine's.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use clap::CommandFactory;
use flag_core::Operator;
use flag_server::config::{CacheBackend, Cli};
use flag_server::routes::ROUTES;
use support::{Backend, TestServer};

/// A page of `docs/`.
fn page(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The body rows of the Markdown table whose header row begins with `| <first> |`, as cells with
/// their surrounding spaces trimmed.
fn table(text: &str, first: &str) -> Vec<Vec<String>> {
    let header = format!("| {first} |");
    let mut lines = text.lines().skip_while(|line| !line.starts_with(&header));
    assert!(lines.next().is_some(), "no table headed {header:?}");
    lines
        .skip(1) // the |---| line
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            line.trim_matches('|')
                .split(" | ")
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect()
}

/// The text of a cell that is one code span: `` `x` `` → `x`.
fn code(cell: &str) -> &str {
    cell.strip_prefix('`')
        .and_then(|rest| rest.strip_suffix('`'))
        .unwrap_or_else(|| panic!("{cell:?} is not one code span"))
}

#[test]
fn the_route_table_is_the_routers() {
    let documented: BTreeSet<String> = table(&page("http-api.md"), "route")
        .iter()
        .map(|row| code(&row[0]).to_owned())
        .collect();
    let served: BTreeSet<String> = ROUTES
        .iter()
        .map(|(method, path)| format!("{method} {path}"))
        .collect();
    assert_eq!(documented, served);
}

#[test]
fn the_configuration_table_is_the_parsers() {
    let rows = table(&page("configuration.md"), "variable");
    let command = Cli::command();
    let mut parsed = BTreeSet::new();
    for argument in command.get_arguments() {
        let Some(variable) = argument.get_env() else {
            continue;
        };
        let variable = variable.to_string_lossy().into_owned();
        let row = rows
            .iter()
            .find(|row| code(&row[0]) == variable)
            .unwrap_or_else(|| panic!("{variable} is not in docs/configuration.md"));
        let long = argument.get_long().expect("every setting has a flag");
        assert_eq!(code(&row[1]), format!("--{long}"), "the flag of {variable}");
        if let Some(default) = argument.get_default_values().first() {
            let default = format!("`{}`", default.to_string_lossy());
            assert!(
                row[2].starts_with(&default),
                "{variable}: documented default {:?}, parser's {default}",
                row[2]
            );
        }
        parsed.insert(variable);
    }
    let documented: BTreeSet<String> = rows
        .iter()
        .map(|row| code(&row[0]).to_owned())
        .filter(|variable| variable != "RUST_LOG") // read by the log filter, not the parser
        .collect();
    assert_eq!(documented, parsed);
}

#[test]
fn every_operator_is_documented_and_only_those() {
    let documented: BTreeSet<String> = table(&page("flags.md"), "operator")
        .iter()
        .map(|row| code(&row[0]).to_owned())
        .collect();
    let engine: BTreeSet<String> = Operator::ALL
        .iter()
        .map(|operator| operator.as_str().to_owned())
        .collect();
    assert_eq!(documented, engine);
}

/// On `tiered` over a flags file with evaluation counts and a webhook on (the setup with the
/// most families)
/// every family `/metrics` renders is in the
/// table, with its type, and nothing else is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metric_families_are_the_ones_rendered() {
    // With a flags file for repository, so that offline mode's families are rendered too.
    let directory = flag_fixtures::ScratchDir::new().unwrap();
    let file = directory.path().join("flags.json");
    std::fs::write(&file, r#"{"flags": []}"#).unwrap();
    let server = TestServer::start_with(Backend::RedisPostgres, |config| {
        config.cache_backend = Some(CacheBackend::Tiered);
        config.database_url = format!("file://{}", file.display());
        config.evaluation_metrics = flag_server::config::Switch::On;
        // A receiver nothing listens on: its families are rendered all the same.
        config.webhooks = Some(vec!["http://127.0.0.1:9/hooks".to_owned()]);
    })
    .await;
    // One request, so that the HTTP families have a series.
    server.request("GET", "/healthz", &[], "").await;
    let reply = server.request("GET", "/metrics", &[], "").await;
    let rendered: BTreeSet<(String, String)> = reply
        .body
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|rest| {
            let (name, kind) = rest.split_once(' ').unwrap();
            (name.to_owned(), kind.to_owned())
        })
        .collect();
    let documented: BTreeSet<(String, String)> = table(&page("metrics.md"), "family")
        .iter()
        .map(|row| (code(&row[0]).to_owned(), row[1].clone()))
        .collect();
    assert_eq!(documented, rendered);
}
