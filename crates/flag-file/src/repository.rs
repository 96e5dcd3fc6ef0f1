//! `FileRepository`: the environments of a flags file, served from memory and swapped whole
//! when a reload reads a valid new file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use flag_core::time::OffsetDateTime;
use flag_core::{
    Actor, AuditPage, AuditQuery, Deleted, DocumentContents, Environment, EnvironmentSnapshot,
    EnvironmentSummary, FeatureFlag, FeatureFlagRepository, FlagKey, ImportProblem, ImportRequest,
    Imported, Precondition, RepositoryError, Revision, Segment, SegmentKey, Upserted,
    UpsertedSegment, async_trait, plan_import,
};
use tokio::sync::broadcast;

use crate::document::{is_yaml_file, read_flags_file};

/// Why a flags file could not be (re)loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("{path}: {message}")]
    Unreadable {
        /// The file.
        path: String,
        /// What the system said.
        message: String,
    },
    /// The file was read but is not a valid flags file.
    #[error("{path} is not a valid flags file: {}", problems.iter().map(|problem| format!("{}: {}", problem.path, problem.message)).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The file.
        path: String,
        /// Every problem, with its path in the file.
        problems: Vec<ImportProblem>,
    },
}

/// An environment whose contents a reload changed, at its new revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// The environment.
    pub environment: Environment,
    /// Its revision now.
    pub revision: Revision,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The file holds what is served already.
    Unchanged,
    /// The new file is served; these environments changed.
    Applied(Vec<FileChange>),
}

/// How reloads went, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileStats {
    /// Reloads that served a new file (the first load included).
    pub applied: u64,
    /// Reloads that kept the last valid file because the new one was unreadable or invalid.
    pub rejected: u64,
    /// Why the last rejected reload was rejected, until a later one applies.
    pub last_error: Option<String>,
}

/// What is served: the last valid file's environments.
#[derive(Debug, Default)]
struct Served {
    /// The text they were read from.
    text: Vec<u8>,
    environments: BTreeMap<Environment, Arc<EnvironmentSnapshot>>,
    /// Environments a reload removed, at the revision they were emptied with (so that caches
    /// holding them take the empty one).
    removed: BTreeMap<Environment, Revision>,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    default_environment: Environment,
    served: RwLock<Arc<Served>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    applied: AtomicU64,
    rejected: AtomicU64,
    last_error: Mutex<Option<String>>,
    changes: broadcast::Sender<FileChange>,
}

/// A read-only [`FeatureFlagRepository`] over a flags file (offline mode): every environment
/// of the file, served from memory; [`FileRepository::reload`] (which the watcher of
/// [`FileRepository::watch`] calls) swaps in a valid new file whole, and keeps the last valid
/// one when the new one is not. Every write answers [`RepositoryError::ReadOnly`].
///
/// Decisions:
/// - Revisions: an environment whose contents a reload changes (or removes) gets
///   `max(previous + 1, now in Unix milliseconds)`, so revisions grow within a process and
///   across restarts (a shared cache holding an older file's snapshot takes the new one);
///   an unchanged environment keeps its revision.
/// - Versions: a flag or segment the reload leaves unchanged keeps its version and
///   `updatedAt`; a changed one takes the next version, a new one version 1.
/// - The first load must succeed: a server whose file is invalid from the start has nothing
///   to serve, so [`FileRepository::open`] fails.
/// - There is no audit log (nothing is written through the repository): its pages are empty.
#[derive(Debug, Clone)]
pub struct FileRepository {
    shared: Arc<Shared>,
}

impl FileRepository {
    /// Loads `path` (JSON, or YAML by a `.yaml`/`.yml` name); an environment document that
    /// names no environment, and a flagd file, are served as `default_environment`.
    pub async fn open(
        path: impl Into<PathBuf>,
        default_environment: Environment,
    ) -> Result<Self, FileError> {
        let (changes, _) = broadcast::channel(1024);
        let repository = Self {
            shared: Arc::new(Shared {
                path: path.into(),
                default_environment,
                served: RwLock::new(Arc::new(Served::default())),
                reloading: tokio::sync::Mutex::new(()),
                applied: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                last_error: Mutex::new(None),
                changes,
            }),
        };
        repository.reload().await?;
        Ok(repository)
    }

    /// The file served.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// How reloads went.
    pub fn stats(&self) -> FileStats {
        FileStats {
            applied: self.shared.applied.load(Ordering::Relaxed),
            rejected: self.shared.rejected.load(Ordering::Relaxed),
            last_error: self
                .shared
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    /// Every change a later reload makes, one [`FileChange`] per environment.
    pub fn changes(&self) -> broadcast::Receiver<FileChange> {
        self.shared.changes.subscribe()
    }

    /// Reads the file again and serves it when it is valid and differs from what is served;
    /// an unreadable or invalid file is counted and logged, and the last valid one stays.
    pub async fn reload(&self) -> Result<Reloaded, FileError> {
        let shared = &self.shared;
        let _one_at_a_time = shared.reloading.lock().await;
        let path = shared.path.display().to_string();
        let outcome = match tokio::fs::read(&shared.path).await {
            Err(error) => Err(FileError::Unreadable {
                path,
                message: error.to_string(),
            }),
            Ok(text) if text == self.served().text => return Ok(Reloaded::Unchanged),
            Ok(text) => {
                match read_flags_file(
                    &text,
                    is_yaml_file(&shared.path),
                    &shared.default_environment,
                ) {
                    Err(problems) => Err(FileError::Invalid { path, problems }),
                    Ok(environments) => Ok(self.swap(text, environments)),
                }
            }
        };
        match outcome {
            Ok(changes) => {
                shared.applied.fetch_add(1, Ordering::Relaxed);
                *shared
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
                tracing::info!(file = %shared.path.display(), changed = changes.len(), "flags file loaded");
                for change in &changes {
                    // No receiver is no error: nobody needs telling.
                    let _ = shared.changes.send(change.clone());
                }
                Ok(Reloaded::Applied(changes))
            }
            Err(error) => {
                shared.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "flags file not loaded: still serving the last valid one");
                *shared
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
                Err(error)
            }
        }
    }

    fn served(&self) -> Arc<Served> {
        Arc::clone(
            &self
                .shared
                .served
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Serves `environments` (read from `text`) from now on; answers what changed.
    fn swap(
        &self,
        text: Vec<u8>,
        environments: BTreeMap<Environment, DocumentContents>,
    ) -> Vec<FileChange> {
        let previous = self.served();
        let now = OffsetDateTime::now_utc();
        let next = |before: Option<Revision>| {
            let millis = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| {
                    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
                });
            Revision(millis.max(before.map_or(0, |revision| revision.get().saturating_add(1))))
        };
        let mut served = Served {
            text,
            environments: BTreeMap::new(),
            removed: previous.removed.clone(),
        };
        let mut changes = Vec::new();
        for (env, contents) in environments {
            let before = previous.environments.get(&env);
            let (flags, segments, changed) = versioned(before.map(AsRef::as_ref), contents, now);
            let revision = match before {
                Some(before) if !changed => before.revision(),
                before => next(
                    before
                        .map(|snapshot| snapshot.revision())
                        .or_else(|| served.removed.get(&env).copied()),
                ),
            };
            let snapshot = if !changed {
                before.map(Arc::clone)
            } else {
                EnvironmentSnapshot::new(revision, flags)
                    .ok()
                    .and_then(|snapshot| snapshot.with_segments(segments).ok())
                    .map(Arc::new)
            };
            // read_flags_file refused duplicates; a snapshot that still cannot be built keeps
            // the environment's previous one.
            let Some(snapshot) = snapshot.or_else(|| before.map(Arc::clone)) else {
                continue;
            };
            if changed {
                changes.push(FileChange {
                    environment: env.clone(),
                    revision: snapshot.revision(),
                });
            }
            served.removed.remove(&env);
            served.environments.insert(env, snapshot);
        }
        for (env, snapshot) in &previous.environments {
            if !served.environments.contains_key(env) {
                let revision = next(Some(snapshot.revision()));
                served.removed.insert(env.clone(), revision);
                changes.push(FileChange {
                    environment: env.clone(),
                    revision,
                });
            }
        }
        *self
            .shared
            .served
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(served);
        changes
    }

    fn refuse<T>(&self) -> Result<T, RepositoryError> {
        Err(RepositoryError::ReadOnly {
            source_name: self.shared.path.display().to_string(),
        })
    }

    fn environment(&self, env: &Environment) -> Arc<EnvironmentSnapshot> {
        let served = self.served();
        match served.environments.get(env) {
            Some(snapshot) => Arc::clone(snapshot),
            None => Arc::new(EnvironmentSnapshot::empty(
                served.removed.get(env).copied().unwrap_or_default(),
            )),
        }
    }
}

/// The flags and segments of `contents` with their versions: kept where `before` holds the
/// same definition, the next one where it holds another, 1 where it holds none; and whether
/// anything differs from `before` (added, changed or removed).
fn versioned(
    before: Option<&EnvironmentSnapshot>,
    contents: DocumentContents,
    now: OffsetDateTime,
) -> (Vec<FeatureFlag>, Vec<Segment>, bool) {
    let stored_flags: Vec<FeatureFlag> = before
        .map(|snapshot| snapshot.flags().map(|flag| (**flag).clone()).collect())
        .unwrap_or_default();
    let stored_segments: Vec<Segment> = before
        .map(|snapshot| {
            snapshot
                .segments()
                .map(|segment| (**segment).clone())
                .collect()
        })
        .unwrap_or_default();
    // The import plan is the one definition of "unchanged". It cannot refuse contents that were
    // read as a whole environment; if it did, everything counts as changed.
    let diff = plan_import(&stored_flags, &stored_segments, &contents.as_replacement())
        .map(|plan| plan.diff)
        .ok();
    let changed = before.is_none() || diff.as_ref().is_none_or(|diff| diff.changes_anything());
    let (unchanged_flags, unchanged_segments): (BTreeSet<String>, BTreeSet<String>) = diff
        .map(|diff| {
            (
                diff.flags.unchanged.into_iter().collect(),
                diff.segments.unchanged.into_iter().collect(),
            )
        })
        .unwrap_or_default();
    let flags = contents
        .flags
        .into_iter()
        .map(|flag| {
            let stored = before.and_then(|snapshot| snapshot.flag(flag.key().as_str()));
            match stored {
                Some(stored) if unchanged_flags.contains(flag.key().as_str()) => (**stored).clone(),
                Some(stored) => flag.stored_as(stored.version() + 1, now),
                None => flag.stored_as(1, now),
            }
        })
        .collect();
    let segments = contents
        .segments
        .into_iter()
        .map(|segment| {
            let stored = before.and_then(|snapshot| snapshot.segment(segment.key().as_str()));
            match stored {
                Some(stored) if unchanged_segments.contains(segment.key().as_str()) => {
                    (**stored).clone()
                }
                Some(stored) => segment.stored_as(stored.version() + 1, now),
                None => segment.stored_as(1, now),
            }
        })
        .collect();
    (flags, segments, changed)
}

#[async_trait]
impl FeatureFlagRepository for FileRepository {
    fn backend(&self) -> &'static str {
        "file"
    }

    async fn snapshot(&self, env: &Environment) -> Result<EnvironmentSnapshot, RepositoryError> {
        Ok((*self.environment(env)).clone())
    }

    async fn revision(&self, env: &Environment) -> Result<Revision, RepositoryError> {
        Ok(self.environment(env).revision())
    }

    async fn flag_count(&self, env: &Environment) -> Result<u64, RepositoryError> {
        Ok(u64::try_from(self.environment(env).len()).unwrap_or(u64::MAX))
    }

    async fn flag(
        &self,
        env: &Environment,
        key: &FlagKey,
    ) -> Result<Option<FeatureFlag>, RepositoryError> {
        Ok(self
            .environment(env)
            .flag(key.as_str())
            .map(|flag| (**flag).clone()))
    }

    async fn upsert(
        &self,
        _: &Environment,
        _: FeatureFlag,
        _: Precondition,
        _: &Actor,
    ) -> Result<Upserted, RepositoryError> {
        self.refuse()
    }

    async fn delete(
        &self,
        _: &Environment,
        _: &FlagKey,
        _: Precondition,
        _: &Actor,
    ) -> Result<Deleted, RepositoryError> {
        self.refuse()
    }

    async fn segment(
        &self,
        env: &Environment,
        key: &SegmentKey,
    ) -> Result<Option<Segment>, RepositoryError> {
        Ok(self
            .environment(env)
            .segment(key.as_str())
            .map(|segment| (**segment).clone()))
    }

    async fn upsert_segment(
        &self,
        _: &Environment,
        _: Segment,
        _: Precondition,
        _: &Actor,
    ) -> Result<UpsertedSegment, RepositoryError> {
        self.refuse()
    }

    async fn delete_segment(
        &self,
        _: &Environment,
        _: &SegmentKey,
        _: Precondition,
        _: &Actor,
    ) -> Result<Deleted, RepositoryError> {
        self.refuse()
    }

    async fn audit(&self, _: &Environment, _: &AuditQuery) -> Result<AuditPage, RepositoryError> {
        Ok(AuditPage {
            entries: Vec::new(),
            next: None,
        })
    }

    async fn import(
        &self,
        _: &Environment,
        _: ImportRequest,
        _: &Actor,
    ) -> Result<Imported, RepositoryError> {
        self.refuse()
    }

    async fn environments(&self) -> Result<Vec<EnvironmentSummary>, RepositoryError> {
        Ok(self
            .served()
            .environments
            .iter()
            .map(|(name, snapshot)| EnvironmentSummary {
                name: name.clone(),
                revision: snapshot.revision(),
                flag_count: u64::try_from(snapshot.len()).unwrap_or(u64::MAX),
            })
            .collect())
    }

    async fn delete_environment(&self, _: &Environment) -> Result<Revision, RepositoryError> {
        self.refuse()
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        // What is served is in memory: it always answers (a bad file is counted and logged).
        Ok(())
    }
    // The file takes no writes (changes of the file are not writes: no actor, no audit entry),
    // so its outbox never holds anything; see `docs/flags-as-files.md`.
    async fn outbox_follow(&self, _receiver: &str) -> Result<(), RepositoryError> {
        Ok(())
    }

    async fn outbox_pending(
        &self,
        _receiver: &str,
        _limit: usize,
    ) -> Result<Vec<flag_core::OutboxEntry>, RepositoryError> {
        Ok(Vec::new())
    }

    async fn outbox_delivered(
        &self,
        _receiver: &str,
        _env: &Environment,
        _position: flag_core::AuditCursor,
    ) -> Result<(), RepositoryError> {
        Ok(())
    }

    async fn outbox_hold(
        &self,
        _receiver: &str,
        _holder: &str,
        _now_ms: u64,
        _for_ms: u64,
    ) -> Result<bool, RepositoryError> {
        Ok(true)
    }
}
