//! Last-known-good snapshots on disk (`FLAG_LAST_GOOD_DIR`), so an instance restarted during a
//! full outage (database and cache both out) still has something to answer with.
//!
//! One file per environment, `<dir>/<environment>.json`: the snapshot's revision and flags and
//! the wall-clock time the stores last confirmed it. A file is written when the environment's
//! last-known-good snapshot changes, and again at most once a minute while reads keep confirming
//! it (so the age a restarted instance sees is at most a minute too old); always to a temporary
//! file first, synced, then renamed over the old one, so a crash leaves the old file or the new
//! one, never half of one. Writing happens on a background task, never in a read. At start every
//! file is read back (files that cannot be read are skipped with a warning); what is younger than
//! the stale-if-error bound becomes last-known-good again.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::flag::FeatureFlag;
use crate::names::Environment;
use crate::snapshot::{EnvironmentSnapshot, Revision};

/// How often an unchanged snapshot's confirmation is written again.
const CONFIRM_EVERY: Duration = Duration::from_secs(60);

/// A snapshot as written.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Written<'a> {
    environment: &'a Environment,
    revision: Revision,
    confirmed_at_ms: u64,
    flags: Vec<&'a FeatureFlag>,
}

/// A snapshot as read back (flags read tolerantly, like every stored flag).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Read {
    environment: Environment,
    revision: Revision,
    confirmed_at_ms: u64,
    flags: Vec<FeatureFlag>,
}

/// A snapshot read back from disk, with when the stores last confirmed it.
#[derive(Debug)]
pub(super) struct Restored {
    pub(super) environment: Environment,
    pub(super) snapshot: Arc<EnvironmentSnapshot>,
    pub(super) confirmed: SystemTime,
}

/// One snapshot to write.
struct Save {
    env: Environment,
    snapshot: Arc<EnvironmentSnapshot>,
    confirmed: SystemTime,
}

/// The directory of last-known-good snapshots and the task that writes to it.
#[derive(Debug)]
pub(crate) struct Archive {
    writer: mpsc::UnboundedSender<Save>,
    /// Per environment: the revision last handed to the writer, and when.
    offered: Mutex<HashMap<Environment, (Revision, Instant)>>,
}

impl std::fmt::Debug for Save {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Save({}@{})", self.env, self.snapshot.revision())
    }
}

impl Archive {
    /// Opens (creating it if needed) `directory`, reads back every snapshot in it, and starts the
    /// writer on the current Tokio runtime.
    pub(crate) fn open(directory: &Path) -> std::io::Result<(Self, Vec<Restored>)> {
        std::fs::create_dir_all(directory)?;
        let restored = read_all(directory)?;
        let (writer, mut saves) = mpsc::unbounded_channel::<Save>();
        let target = directory.to_path_buf();
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|error| std::io::Error::other(error.to_string()))?;
        runtime.spawn(async move {
            while let Some(save) = saves.recv().await {
                let target = target.clone();
                let env = save.env.clone();
                let written = tokio::task::spawn_blocking(move || write(&target, &save)).await;
                match written {
                    Ok(Ok(())) => tracing::debug!(%env, "last-known-good snapshot written"),
                    Ok(Err(error)) => {
                        tracing::warn!(%env, %error, "could not write the last-known-good snapshot");
                    }
                    Err(error) => tracing::warn!(%env, %error, "last-known-good writer failed"),
                }
            }
        });
        Ok((
            Self {
                writer,
                offered: Mutex::default(),
            },
            restored,
        ))
    }

    /// Hands `snapshot` of `env`, just confirmed, to the writer when it is new or its last
    /// confirmation written is older than [`CONFIRM_EVERY`].
    pub(crate) fn offer(&self, env: &Environment, snapshot: &Arc<EnvironmentSnapshot>) {
        {
            let mut offered = self.offered.lock().unwrap_or_else(PoisonError::into_inner);
            let due = offered.get(env).is_none_or(|(revision, at)| {
                *revision != snapshot.revision() || at.elapsed() >= CONFIRM_EVERY
            });
            if !due {
                return;
            }
            offered.insert(env.clone(), (snapshot.revision(), Instant::now()));
        }
        let _ = self.writer.send(Save {
            env: env.clone(),
            snapshot: Arc::clone(snapshot),
            confirmed: SystemTime::now(),
        });
    }
}

/// The file of `env` in `directory`.
fn file_of(directory: &Path, env: &Environment) -> PathBuf {
    directory.join(format!("{env}.json"))
}

/// Writes `save` atomically: a temporary file, synced, renamed over the old one.
fn write(directory: &Path, save: &Save) -> std::io::Result<()> {
    let written = Written {
        environment: &save.env,
        revision: save.snapshot.revision(),
        confirmed_at_ms: save
            .confirmed
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64),
        flags: save.snapshot.flags().map(|flag| &**flag).collect(),
    };
    let json = serde_json::to_vec(&written).map_err(std::io::Error::other)?;
    let target = file_of(directory, &save.env);
    let temporary = directory.join(format!(".{}.json.tmp", save.env));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(&json)?;
    file.sync_all()?;
    std::fs::rename(&temporary, &target)?;
    // The rename itself is durable once the directory is synced.
    if let Ok(directory) = std::fs::File::open(directory) {
        let _ = directory.sync_all();
    }
    Ok(())
}

/// Every snapshot file of `directory` that can be read.
fn read_all(directory: &Path) -> std::io::Result<Vec<Restored>> {
    let mut restored = Vec::new();
    for entry in std::fs::read_dir(directory)? {
        let path = entry?.path();
        if path.extension().is_none_or(|extension| extension != "json") {
            continue;
        }
        match read_one(&path) {
            Ok(snapshot) => restored.push(snapshot),
            Err(error) => tracing::warn!(path = %path.display(), %error,
                "skipping an unreadable last-known-good snapshot"),
        }
    }
    Ok(restored)
}

fn read_one(path: &Path) -> Result<Restored, String> {
    let text = std::fs::read(path).map_err(|error| error.to_string())?;
    let read: Read = serde_json::from_slice(&text).map_err(|error| error.to_string())?;
    let snapshot =
        EnvironmentSnapshot::new(read.revision, read.flags).map_err(|error| error.to_string())?;
    Ok(Restored {
        environment: read.environment,
        snapshot: Arc::new(snapshot),
        confirmed: UNIX_EPOCH + Duration::from_millis(read.confirmed_at_ms),
    })
}
