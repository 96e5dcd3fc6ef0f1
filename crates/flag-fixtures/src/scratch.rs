//! A scratch directory that is removed with everything in it when the test is done.

use std::path::{Path, PathBuf};

use crate::unique_name;

/// A fresh directory under the system's temporary directory, removed with everything in it on
/// drop.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates the directory.
    pub fn new() -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(unique_name("flag-scratch-"));
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
