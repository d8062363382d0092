//! lancet's state under bpffs cannot be turned against root by a local user (issue 11, item 8):
//! the stale-pin sweep never follows a symlink planted in /sys/fs/bpf/lancet, and a pin directory
//! a user owns or can write is refused.

mod support;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use lancet::net::{pin, NetError};
use support::victim::Victim;

/// Removes a path under bpffs (a symlink or a pin directory) on drop.
struct Planted(PathBuf);

impl Drop for Planted {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.0).is_ok_and(|m| m.is_symlink()) {
            let _ = std::fs::remove_file(&self.0);
        } else {
            let _ = pin::remove_dir(&self.0);
        }
    }
}

fn nic_name(tag: &str) -> String {
    format!("lt-{tag}{}", std::process::id() % 100_000)
}

#[test]
fn the_stale_pin_sweep_does_not_follow_a_planted_symlink() {
    let victim = Victim::new();
    // Creates /sys/fs/bpf/lancet (mounting bpffs if needed).
    let own = Planted(pin::ensure_pin_dir(&nic_name("ps")).unwrap());
    // Inode 1 is never a network namespace: the sweep takes this for a dead namespace's pins.
    let link = Planted(Path::new(pin::PIN_ROOT).join(format!("{}@1", nic_name("sl"))));
    symlink(&victim.dir, &link.0).unwrap();
    // The next pin directory creation sweeps.
    let _again = pin::ensure_pin_dir(&nic_name("ps")).unwrap();
    assert!(
        victim.intact(),
        "the sweep deleted a file through the symlink {}",
        link.0.display()
    );
    assert!(
        std::fs::symlink_metadata(&link.0).is_err(),
        "the planted symlink itself is removed"
    );
    // Removing a pin directory that is a symlink removes the link, not its target's files.
    let link2 = Planted(Path::new(pin::PIN_ROOT).join(nic_name("sm")));
    symlink(&victim.dir, &link2.0).unwrap();
    pin::remove_pins(&nic_name("sm")).unwrap();
    assert!(victim.intact(), "remove_pins deleted through a symlink");
    drop(own);
}

#[test]
fn a_pin_directory_a_user_could_change_is_refused() {
    let victim = Victim::new();
    let dir = &victim.dir;
    let set_mode =
        |mode: u32| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
    set_mode(0o700);
    assert!(pin::open_trusted_dir(dir).is_ok());

    // Owned by another user (nobody).
    std::os::unix::fs::chown(dir, Some(65534), None).unwrap();
    let err = pin::open_trusted_dir(dir).unwrap_err();
    assert!(matches!(err, NetError::UntrustedDir { .. }), "{err}");
    assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    std::os::unix::fs::chown(dir, Some(0), None).unwrap();

    // Root's, but writable by others or the group.
    for mode in [0o777, 0o1777, 0o770] {
        set_mode(mode);
        let err = pin::open_trusted_dir(dir).unwrap_err();
        assert!(
            err.to_string().contains("writable by group or others"),
            "{err}"
        );
    }
    set_mode(0o700);

    // A symlink to a good directory is not followed.
    let link = dir.with_extension("link");
    symlink(dir, &link).unwrap();
    let err = pin::open_trusted_dir(&link);
    let _ = std::fs::remove_file(&link);
    let err = err.unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
}

#[test]
fn lancet_creates_its_pin_directories_private() {
    let own = Planted(pin::ensure_pin_dir(&nic_name("pm")).unwrap());
    let mode = std::fs::symlink_metadata(&own.0)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{} mode {mode:o}", own.0.display());
    let root = std::fs::symlink_metadata(pin::PIN_ROOT).unwrap();
    assert!(root.is_dir());
    assert_eq!(
        root.permissions().mode() & 0o022,
        0,
        "{} is not writable by others",
        pin::PIN_ROOT
    );
}
