//! `flag-server migrate` against a real SQLite file: the binary applies the migrations, and a
//! second run is a no-op.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::process::Command;

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
