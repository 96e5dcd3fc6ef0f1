//! The file repository on real files: the read-only repository suite (JSON and YAML files), and
//! reloading: a change heard by the watcher, a file renamed into place, an invalid or missing
//! file keeping the last valid one (counted), and revisions that keep growing across restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers report failure by panicking

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flag_conformance::source::{EnvironmentContents, SharedSource, Source};
use flag_conformance::{SharedRepository, read_only_repository_suite};
use flag_core::{Environment, FeatureFlagRepository, Revision, async_trait};
use flag_file::{FileError, FileRepository, Reloaded};
use serde_json::{Value, json};

/// A fresh directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "flag-file-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `text` to `path` as an editor or a deployment would: a new file renamed into place.
fn replace(path: &Path, text: &str) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

fn production() -> Environment {
    Environment::parse("production").unwrap()
}

/// The suite's source for a file repository: the environments written as one file (JSON or
/// YAML), then reloaded.
struct FileSource {
    repository: FileRepository,
    yaml: bool,
    _scratch: Arc<Scratch>,
}

#[async_trait]
impl Source for FileSource {
    async fn serve(&self, environments: &[EnvironmentContents]) -> Result<(), String> {
        let mut named = serde_json::Map::new();
        for contents in environments {
            named.insert(
                contents.environment.to_string(),
                json!({"flags": contents.flags, "segments": contents.segments}),
            );
        }
        let document = json!({ "environments": named });
        let text = if self.yaml {
            serde_yaml::to_string(&document).map_err(|error| error.to_string())?
        } else {
            serde_json::to_string_pretty(&document).map_err(|error| error.to_string())?
        };
        replace(self.repository.path(), &text);
        self.repository
            .reload()
            .await
            .map(drop)
            .map_err(|error| error.to_string())
    }
}

async fn file_repository(yaml: bool) -> (SharedRepository, SharedSource) {
    let scratch = Arc::new(Scratch::new());
    let path = scratch
        .0
        .join(if yaml { "flags.yaml" } else { "flags.json" });
    std::fs::write(
        &path,
        if yaml {
            "environments: {}\n"
        } else {
            r#"{"environments": {}}"#
        },
    )
    .unwrap();
    let repository = FileRepository::open(&path, production()).await.unwrap();
    let source = FileSource {
        repository: repository.clone(),
        yaml,
        _scratch: scratch,
    };
    (Arc::new(repository), Arc::new(source))
}

read_only_repository_suite!(json_file, || file_repository(false));
read_only_repository_suite!(yaml_file, || file_repository(true));

fn flags_file(enabled: bool) -> String {
    json!({"environments": {
        "production": {"flags": [{"key": "checkout", "enabled": enabled}]},
        "staging": {"flags": [{"key": "other", "enabled": true}]}
    }})
    .to_string()
}

async fn enabled(repository: &FileRepository) -> Option<bool> {
    let key = flag_core::FlagKey::parse("checkout").unwrap();
    repository
        .flag(&production(), &key)
        .await
        .unwrap()
        .map(|flag| flag.enabled())
}

/// Waits until `condition` holds, failing after 10 s.
async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    for _ in 0..1000 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_heard_served_and_announced() {
    let scratch = Scratch::new();
    let path = scratch.0.join("flags.json");
    std::fs::write(&path, flags_file(false)).unwrap();
    let repository = FileRepository::open(&path, production()).await.unwrap();
    let before = repository.revision(&production()).await.unwrap();
    let staging = repository
        .revision(&Environment::parse("staging").unwrap())
        .await
        .unwrap();
    let mut changes = repository.changes();
    // A poll far beyond the test: only the watcher can make it in time.
    let _watcher = repository.watch(Duration::from_secs(3600));
    replace(&path, &flags_file(true));
    let change = tokio::time::timeout(Duration::from_secs(10), changes.recv())
        .await
        .expect("the watcher heard the change")
        .unwrap();
    assert_eq!(change.environment, production());
    assert!(change.revision > before);
    assert_eq!(enabled(&repository).await, Some(true));
    // Staging did not change: same revision, and no announcement of it.
    assert_eq!(
        repository
            .revision(&Environment::parse("staging").unwrap())
            .await
            .unwrap(),
        staging
    );
    assert!(changes.try_recv().is_err());
    // Written in place (no rename) too.
    std::fs::write(&path, flags_file(false)).unwrap();
    eventually("an in-place write is served", async || {
        enabled(&repository).await == Some(false)
    })
    .await;
    assert_eq!(repository.stats().applied, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_or_missing_file_keeps_the_last_valid_one_and_is_counted() {
    let scratch = Scratch::new();
    let path = scratch.0.join("flags.json");
    std::fs::write(&path, flags_file(true)).unwrap();
    let repository = FileRepository::open(&path, production()).await.unwrap();
    let revision = repository.revision(&production()).await.unwrap();
    let _watcher = repository.watch(Duration::from_millis(100));

    replace(
        &path,
        r#"{"environments": {"production": {"flags": [{"key": "checkout", "variants": {}}]}}}"#,
    );
    eventually("the invalid file is rejected", async || {
        repository.stats().rejected == 1
    })
    .await;
    let stats = repository.stats();
    assert!(
        stats
            .last_error
            .as_deref()
            .is_some_and(|error| error.contains("environments.production.flags[0]")),
        "{stats:?}"
    );
    assert_eq!(enabled(&repository).await, Some(true));
    assert_eq!(repository.revision(&production()).await.unwrap(), revision);

    std::fs::remove_file(&path).unwrap();
    eventually("the missing file is counted", async || {
        repository.stats().rejected >= 2
    })
    .await;
    assert_eq!(enabled(&repository).await, Some(true));

    replace(&path, &flags_file(false));
    eventually("a valid file is served again", async || {
        enabled(&repository).await == Some(false)
    })
    .await;
    assert_eq!(repository.stats().last_error, None);
    assert!(repository.revision(&production()).await.unwrap() > revision);
}

#[tokio::test]
async fn a_file_invalid_from_the_start_is_refused_with_every_problem() {
    let scratch = Scratch::new();
    let path = scratch.0.join("flags.yaml");
    std::fs::write(
        &path,
        "environments:\n  production:\n    flags:\n      - key: a\n        defaultVariant: nowhere\n      - enabled: true\n",
    )
    .unwrap();
    let Err(FileError::Invalid { problems, .. }) = FileRepository::open(&path, production()).await
    else {
        panic!("an invalid file opened");
    };
    let paths: Vec<&str> = problems
        .iter()
        .map(|problem| problem.path.as_str())
        .collect();
    assert!(
        paths.contains(&"environments.production.flags[1].key"),
        "{problems:?}"
    );
    assert!(
        paths
            .iter()
            .any(|path| path.starts_with("environments.production.flags[0]")),
        "{problems:?}"
    );
    let missing = FileRepository::open(scratch.0.join("none.json"), production()).await;
    assert!(
        matches!(missing, Err(FileError::Unreadable { .. })),
        "{missing:?}"
    );
}

#[tokio::test]
async fn one_environment_documents_and_flagd_files_serve_the_default_environment() {
    let scratch = Scratch::new();
    let path = scratch.0.join("flags.json");
    let flagd =
        include_str!("../../flag-core/tests/vectors/flagd/samples/example_flags.flagd.json");
    std::fs::write(&path, flagd).unwrap();
    let repository = FileRepository::open(&path, production()).await.unwrap();
    assert_eq!(repository.flag_count(&production()).await.unwrap(), 8);
    // An export names its environment.
    let export: Value = json!({"environment": "edge", "revision": 7, "flags": [{"key": "a", "enabled": true}], "segments": []});
    replace(&path, &export.to_string());
    assert!(matches!(
        repository.reload().await.unwrap(),
        Reloaded::Applied(_)
    ));
    let listed = repository.environments().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name.as_str(), "edge");
    // The environment the file no longer holds is empty, at a higher revision.
    let dropped = repository.snapshot(&production()).await.unwrap();
    assert!(dropped.is_empty() && dropped.revision() > Revision::default());
    assert_eq!(repository.reload().await.unwrap(), Reloaded::Unchanged);
}

#[tokio::test]
async fn revisions_keep_growing_across_restarts() {
    let scratch = Scratch::new();
    let path = scratch.0.join("flags.json");
    std::fs::write(&path, flags_file(false)).unwrap();
    let first = FileRepository::open(&path, production())
        .await
        .unwrap()
        .revision(&production())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    std::fs::write(&path, flags_file(true)).unwrap();
    let second = FileRepository::open(&path, production())
        .await
        .unwrap()
        .revision(&production())
        .await
        .unwrap();
    // A cache shared with the first process holds `first`; the new contents must win over it.
    assert!(second > first, "{second:?} after {first:?}");
}
