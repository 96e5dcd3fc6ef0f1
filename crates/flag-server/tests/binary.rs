//! The real binary: `migrate` against a real SQLite file (idempotent), `serve` on the embedded
//! default (SQLite + memory, no outside service) answering over HTTP, and a clean exit on SIGTERM.
//! Every run clears the environment: CI exports REDIS_URL and DATABASE_URL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flag_conformance::fixtures::ScratchDir;

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
    let directory = ScratchDir::new().unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_flag-server"))
        .env_clear()
        .current_dir(directory.path())
        .env("FLAG_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let address = loop {
        let line = lines
            .next()
            .expect("the server exited before listening")
            .unwrap();
        if let Some(address) = line.strip_prefix("flag-server listening on http://") {
            break address.to_owned();
        }
        assert!(Instant::now() < deadline, "no listening line");
    };
    let health = get(&address, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(get(&address, "/readyz").contains(r#""status":"ready""#));
    assert!(
        directory.path().join("flags.db").exists(),
        "the default database is a SQLite file"
    );

    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = server.wait().unwrap();
    assert!(
        exit.success(),
        "flag-server exited with {exit:?} on SIGTERM"
    );
}
