//! A directory an attack must not touch: one known file, checked with [`Victim::intact`].

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// A private temporary directory with one file, removed on drop.
pub struct Victim {
    pub dir: PathBuf,
}

impl Victim {
    /// A fresh directory (unpredictable name) holding the file `precious`.
    pub fn new() -> Self {
        let template = std::env::temp_dir().join("lt-victim-XXXXXX");
        let dir = nix::unistd::mkdtemp(&template).unwrap();
        std::fs::write(dir.join("precious"), b"keep me").unwrap();
        Self { dir }
    }

    /// Whether the file is still there, unchanged.
    pub fn intact(&self) -> bool {
        std::fs::read(self.dir.join("precious")).is_ok_and(|b| b == b"keep me")
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        // A test may have made the directory read-only.
        let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
