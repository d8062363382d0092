//! Namespaces as lancet meets them: entering a named network namespace (`ip netns`, a handle under
//! /run/netns) in the calling thread, naming the one a process runs in, and telling whether the
//! process sees the system's BPF filesystem at all. `ip netns exec NS cmd` gives `cmd` a private
//! mount namespace with a fresh /sys: whatever it pins under /sys/fs/bpf lands in a bpffs that only
//! it sees and that vanishes when it exits, so `lancet filter|stats|nic` in any other shell find
//! nothing. [`check_shared_bpffs`] detects that before anything is pinned.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::names::{NameError, NetnsName};
use super::pin::BPFFS;

/// Where `ip netns` keeps its namespace handles.
pub const NETNS_RUN_DIR: &str = "/run/netns";
/// This thread's network namespace.
const SELF_NETNS: &str = "/proc/thread-self/ns/net";
/// The BPF filesystem as the initial process (the rest of the system) sees it.
const INIT_BPFFS: &str = "/proc/1/root/sys/fs/bpf";
/// The initial process's mount namespace.
const INIT_MNT_NS: &str = "/proc/1/ns/mnt";
/// This process's mount namespace.
const SELF_MNT_NS: &str = "/proc/self/ns/mnt";

/// Why a namespace could not be entered, or why pinning here would be lost.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("network namespace {name} not found ({path}: {source}): list them with `ip netns`, create one with `ip netns add {name}`")]
    NotFound {
        name: String,
        path: String,
        source: std::io::Error,
    },
    #[error("cannot enter network namespace {name}: {source} (needs root / CAP_SYS_ADMIN)")]
    Enter { name: String, source: nix::Error },
    #[error("this process runs in a private mount namespace (`ip netns exec {netns}` gives it its own /sys): what it pins under /sys/fs/bpf is invisible to `lancet filter`, `lancet stats` and `lancet nic` and vanishes when it exits; run `lancet {subcommand} --netns {netns} ...` instead of `ip netns exec {netns} lancet {subcommand} ...`")]
    PrivateBpffs {
        /// The namespace's `ip netns` name ("NAME" when it has none).
        netns: String,
        /// The subcommand that would pin, e.g. "run" or "nic attach".
        subcommand: &'static str,
    },
}

/// Move the calling thread into the network namespace `name` (as `ip netns` names it). Sockets it
/// creates afterwards live there; other threads are unaffected.
pub fn enter_netns(name: &str) -> Result<(), NetnsError> {
    let name = NetnsName::new(name)?;
    let path = Path::new(NETNS_RUN_DIR).join(name.as_ref());
    let handle = File::open(&path).map_err(|source| NetnsError::NotFound {
        name: name.to_string(),
        path: path.display().to_string(),
        source,
    })?;
    nix::sched::setns(&handle, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|source| {
        NetnsError::Enter {
            name: name.to_string(),
            source,
        }
    })
}

/// The `ip netns` name of the calling thread's network namespace, if it has one.
pub fn current_netns_name() -> Option<String> {
    let mine = std::fs::metadata(SELF_NETNS).ok()?;
    std::fs::read_dir(NETNS_RUN_DIR)
        .ok()?
        .flatten()
        .find(|e| {
            std::fs::metadata(e.path())
                .is_ok_and(|m| m.ino() == mine.ino() && m.dev() == mine.dev())
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
}

/// Whether what this process pins under `/sys/fs/bpf` would be lost to the rest of the system:
/// `/sys/fs/bpf` here is another filesystem than the one the initial process (pid 1) or the parent
/// process sees there (under `ip netns exec`: a fresh sysfs, with no bpffs or a bpffs of its own),
/// or this process has a mount namespace of its own and no bpffs yet (the one lancet would mount
/// would be its alone). `None` when it cannot be told (no access to /proc/1 and the parent).
pub fn bpffs_is_private() -> Option<bool> {
    let dev = |p: &str| std::fs::metadata(p).ok().map(|m| m.dev());
    let ino = |p: &str| std::fs::metadata(p).ok().map(|m| m.ino());
    let parent = std::os::unix::process::parent_id();
    let others = [
        (dev(INIT_BPFFS), ino(INIT_MNT_NS)),
        (
            dev(&format!("/proc/{parent}/root{BPFFS}")),
            ino(&format!("/proc/{parent}/ns/mnt")),
        ),
    ];
    let mine = (dev(BPFFS)?, ino(SELF_MNT_NS));
    if others.iter().all(|(d, _)| d.is_none()) {
        return None;
    }
    let other_fs = others.iter().any(|(d, _)| d.is_some_and(|d| d != mine.0));
    let own_mounts = others
        .iter()
        .any(|(_, ns)| ns.is_some() && mine.1.is_some() && *ns != mine.1);
    Some(other_fs || (own_mounts && !super::pin::is_bpffs(Path::new(BPFFS))))
}

/// Refuse to go on when pins made here would be lost (see [`bpffs_is_private`]); the error
/// names `lancet {subcommand} --netns NS` as the fix (NS: the namespace's `ip netns` name).
pub fn check_shared_bpffs(subcommand: &'static str) -> Result<(), NetnsError> {
    if bpffs_is_private() != Some(true) {
        return Ok(());
    }
    Err(NetnsError::PrivateBpffs {
        netns: current_netns_name().unwrap_or_else(|| "NAME".into()),
        subcommand,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_any_path_is_built() {
        assert!(matches!(
            enter_netns("../../proc/1/ns/net"),
            Err(NetnsError::Name(_))
        ));
        let err = enter_netns("lt-no-such-netns-x").unwrap_err().to_string();
        assert!(err.contains("ip netns add lt-no-such-netns-x"), "{err}");
    }

    #[test]
    fn the_test_process_shares_the_system_bpffs() {
        // `cargo test` runs in the machine's own mount namespace.
        assert_ne!(bpffs_is_private(), Some(true));
        assert!(check_shared_bpffs("run").is_ok());
    }
}
