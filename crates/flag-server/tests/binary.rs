//! The real binary: `migrate` against a real SQLite file (idempotent), `serve` on the embedded
//! default (SQLite + memory, no outside service) answering over HTTP, a clean exit on SIGTERM, and
//! JSON logs on request. (How connections are held and drained is `connections.rs`.)
//! Every run clears the environment: CI exports REDIS_URL and DATABASE_URL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::io::{Read, Write};
use std::process::Command;

use flag_fixtures::ScratchDir;

mod support;

use support::Running;

#[test]
fn migrate_creates_the_schema_and_is_idempotent() {
    let directory = ScratchDir::new().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        directory.path().join("flags.db").display()
    );
    for _ in 0..2 {
        let output = Command::new(env!("CARGO_BIN_EXE_flag-server"))
            .arg("migrate")
            .env_clear()
            .env("DATABASE_URL", &url)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("migrations applied to Sqlite"));
    }
    assert!(directory.path().join("flags.db").exists());
}

#[test]
fn migrate_against_nothing_fails_with_the_reason() {
    let output = Command::new(env!("CARGO_BIN_EXE_flag-server"))
        .arg("migrate")
        .env_clear()
        .env("DATABASE_URL", "postgres://app:secret@127.0.0.1:1/flags")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot connect") && !stderr.contains("secret"),
        "{stderr}"
    );
}

fn get(address: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn serve_runs_on_the_embedded_default_and_exits_cleanly_on_sigterm() {
    let mut server = Running::start(&[]);
    let health = get(&server.address, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(get(&server.address, "/readyz").contains(r#""status":"ready""#));
    assert!(
        server.directory.path().join("flags.db").exists(),
        "the default database is a SQLite file"
    );
    server.terminate();
    let exit = server.child.wait().unwrap();
    assert!(
        exit.success(),
        "flag-server exited with {exit:?} on SIGTERM"
    );
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let mut server = Running::start(&[("FLAG_LOG_FORMAT", "json")]);
    assert!(get(&server.address, "/healthz").starts_with("HTTP/1.1 200"));
    server.terminate();
    assert!(server.child.wait().unwrap().success());
    let mut logs = String::new();
    server
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|line| line["message"] == "listening" && line["level"] == "INFO"),
        "{logs}"
    );
    assert!(!logs.contains("admin-secret"), "a secret reached the logs");
}
