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

/// Runs the binary to its exit (or for at most a few seconds) and returns stdout and stderr.
fn output_of(extra_env: &[(&str, &str)]) -> String {
    let directory = ScratchDir::new().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_flag-server"));
    command
        .env_clear()
        .current_dir(directory.path())
        .env("FLAG_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (name, value) in extra_env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn secrets_in_urls_and_tokens_never_reach_the_logs_in_text_or_json() {
    for format in ["text", "json"] {
        // A password in the query of an unreachable database: start fails, naming the cause.
        let logs = output_of(&[
            ("FLAG_LOG_FORMAT", format),
            (
                "DATABASE_URL",
                "postgres://app@127.0.0.1:1/flags?password=q-s3cret&sslmode=disable",
            ),
        ]);
        assert!(logs.contains("127.0.0.1:1"), "{logs}");
        assert!(!logs.contains("q-s3cret"), "{format}: {logs}");
        // Passwords holding `/`, `?` and `@`, and tokens, on a server that starts.
        let logs = output_of(&[
            ("FLAG_LOG_FORMAT", format),
            ("REDIS_URL", "redis://:pa/ss?w@rd-s3cret@127.0.0.1:1/0"),
            ("CACHE_BACKEND", "tiered"),
            ("FLAG_ADMIN_TOKEN", "admin-s3cret"),
            (
                "FLAG_CLIENT_TOKENS",
                "client-s3cret,production:scoped-s3cret",
            ),
        ]);
        assert!(logs.contains("listening"), "{logs}");
        for secret in [
            "rd-s3cret",
            "ss?w",
            "admin-s3cret",
            "client-s3cret",
            "scoped-s3cret",
        ] {
            assert!(!logs.contains(secret), "{format}: {secret} in {logs}");
        }
    }
}

#[test]
fn a_setting_out_of_range_refuses_to_start_naming_it() {
    for (name, value) in [
        ("CACHE_TTL_MS", "9223372036854775807"),
        ("CACHE_TTL_MS", "0"),
        ("FLAG_MAX_IN_FLIGHT", "0"),
        ("REDIS_TIMEOUT_MS", "0"),
        ("FLAG_MAX_CONTEXT_BYTES", "2000000"),
    ] {
        let directory = ScratchDir::new().unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_flag-server"))
            .env_clear()
            .current_dir(directory.path())
            .env("FLAG_LISTEN", "127.0.0.1:0")
            .env(name, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name}={value} started");
        assert!(
            stderr.contains(&format!("{name} must be between")),
            "{name}={value}: {stderr}"
        );
    }
}
