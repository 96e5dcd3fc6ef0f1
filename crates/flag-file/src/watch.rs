//! Reloading a flags file when it changes: a file-system watcher on its directory, and a slow
//! poll behind it for the changes watchers miss (network file systems, a watcher out of room).

use std::path::PathBuf;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::repository::FileRepository;

/// How long events are gathered before one reload: an editor's save, or a rename into place,
/// is several events.
const SETTLE: Duration = Duration::from_millis(50);

/// Reloads a [`FileRepository`] while it lives; dropping it stops the watcher and the poll.
#[derive(Debug)]
pub struct FileWatcher {
    /// `None` when the system's watcher could not start (only the poll runs).
    _watcher: Option<notify::RecommendedWatcher>,
    task: JoinHandle<()>,
}

impl Drop for FileWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FileRepository {
    /// Reloads the file whenever its directory reports a change to it, and every `poll` in any
    /// case. The directory is watched rather than the file, so a file replaced by a rename
    /// (editors, `kubectl` ConfigMaps, `mv` into place) is followed. A watcher that cannot
    /// start is logged, and the poll alone reloads.
    pub fn watch(&self, poll: Duration) -> FileWatcher {
        let path = self.path().to_path_buf();
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let (events, mut heard) = mpsc::channel::<()>(1);
        let name = path.file_name().map(ToOwned::to_owned);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let concerns_file = event.is_ok_and(|event| {
                // Kubernetes swaps a ConfigMap's files through a `..data` link: any change in
                // the directory may be one to the file, and a reload of an unchanged file costs
                // one read.
                event.paths.is_empty()
                    || event.paths.iter().any(|changed| {
                        changed.file_name() == name.as_deref()
                            || changed
                                .file_name()
                                .is_some_and(|changed| changed.to_string_lossy().starts_with(".."))
                    })
            });
            if concerns_file {
                // Full: a reload is already due, which will read this change too.
                let _ = events.try_send(());
            }
        })
        .and_then(|mut watcher| {
            watcher.watch(&directory, RecursiveMode::NonRecursive)?;
            Ok(watcher)
        });
        let watcher = match watcher {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(%error, directory = %directory.display(), every_ms = poll.as_millis(),
                    "cannot watch the flags file's directory: reading the file on a timer only");
                None
            }
        };
        let repository = self.clone();
        let task = tokio::spawn(async move {
            let mut timer = tokio::time::interval(poll);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            timer.tick().await;
            loop {
                tokio::select! {
                    heard_one = heard.recv() => {
                        if heard_one.is_none() {
                            // The watcher is gone: the timer alone goes on.
                            timer.tick().await;
                        } else {
                            tokio::time::sleep(SETTLE).await;
                            while heard.try_recv().is_ok() {}
                        }
                    }
                    _ = timer.tick() => {}
                }
                // Errors are counted and logged by reload itself.
                let _ = repository.reload().await;
            }
        });
        FileWatcher {
            _watcher: watcher,
            task,
        }
    }
}
