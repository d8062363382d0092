//! A private temporary directory for the bench's files (the VMM's `--stats-json` output): made by
//! `mkdtemp` (an unpredictable name, mode 0700, created atomically so a local user cannot plant it
//! or a symlink in its place beforehand) under `$TMPDIR` (default /tmp), removed with its contents
//! when dropped.

use std::path::{Path, PathBuf};

use super::BenchError;

/// The fixed part of the directory name; `mkdtemp` replaces the `XXXXXX`.
const TEMPLATE: &str = "lancet-bench-XXXXXX";

/// A directory only its owner can enter, removed on drop.
#[derive(Debug)]
pub struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    /// Create `$TMPDIR/lancet-bench-XXXXXX` (mode 0700).
    pub fn new() -> Result<Self, BenchError> {
        Self::new_in(&std::env::temp_dir())
    }

    /// Create `<parent>/lancet-bench-XXXXXX` (mode 0700).
    pub fn new_in(parent: &Path) -> Result<Self, BenchError> {
        let template = parent.join(TEMPLATE);
        let path = nix::unistd::mkdtemp(&template).map_err(|e| {
            BenchError::Io(format!(
                "creating a private directory {}: {e}",
                template.display()
            ))
        })?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        // remove_dir_all does not follow symlinks inside the directory.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn private_dir_is_0700_unpredictable_and_removed() {
        let a = PrivateDir::new().unwrap();
        let b = PrivateDir::new().unwrap();
        let meta = std::fs::symlink_metadata(a.path()).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
        assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
        // Two directories of one process get different names: nothing derived from the pid.
        assert_ne!(a.path(), b.path());
        let name = a.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("lancet-bench-"), "{name}");
        assert!(!name.contains(&std::process::id().to_string()), "{name}");
        std::fs::write(a.path().join("run-1.json"), b"{}").unwrap();
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists());
    }
}
