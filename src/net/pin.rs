//! The steering program's state under the BPF filesystem, one directory per NIC:
//! `/sys/fs/bpf/lancet/<ifname>/` holds every map (by its name in bpf/steer.bpf.c) and, after
//! `lancet nic attach`, the program's bpf_link as `link`.
//!
//! Lifetimes:
//! - `lancet run` without `nic attach`: the link belongs to the process (it disappears with it, also
//!   after kill -9); the maps are pinned so `lancet filter` / `lancet stats` / bpftool reach them,
//!   and the process removes the directory when it exits cleanly. After a kill -9 the map pins stay
//!   and the next `lancet run` on that NIC reuses them (the rules survive), or `nic detach` clears.
//! - `lancet nic attach`: the link is pinned too, so the program stays attached with no process;
//!   a later `lancet run` finds the pinned link and reuses the program and its maps instead of
//!   failing on "another XDP program attached". `lancet nic detach` removes the pins; the program
//!   detaches when the last holder (pin or running VMM) lets go.
//!
//! bpffs is global, not per network namespace, and two namespaces may each have a NIC of the same
//! name (every test bed has an `lt-nic`): outside the initial network namespace the directory is
//! `<ifname>@<netns inode>`. Commands given a bare `<ifname>` find the directory of their own
//! namespace, else `<ifname>`, else the only `<ifname>@*` (several: they ask for the full name).

use std::{
    ffi::{CStr, CString},
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

use libbpf_rs::libbpf_sys;
use nix::{errno::Errno, fcntl::OFlag, sys::stat::Mode, unistd::UnlinkatFlags};
use serde::Serialize;

use super::{
    names::{IfName, NicKey},
    NetError,
};

/// Where the BPF filesystem is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";
/// lancet's directory inside it.
pub const PIN_ROOT: &str = "/sys/fs/bpf/lancet";
/// Name of the pinned bpf_link inside a NIC's directory.
pub const LINK_PIN: &str = "link";
/// statfs magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Options of a bpffs lancet mounts itself: its root is root's alone (the default is 0777).
const BPFFS_MOUNT_OPTIONS: &str = "mode=0700";
/// Mode of the directories lancet creates under bpffs.
const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode bits that let others than the owner add or remove entries.
const GROUP_OTHER_WRITE: u32 = 0o022;
/// How pin directories are opened: a directory, never through a symlink.
const DIR_NOFOLLOW: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// The inode of the calling thread's network namespace when it is not the initial one.
fn netns_tag() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &str| std::fs::metadata(p).ok().map(|m| m.ino());
    let mine = ino("/proc/thread-self/ns/net")?;
    match ino("/proc/1/ns/net") {
        Some(init) if init == mine => None,
        _ => Some(mine),
    }
}

/// Inodes of the network namespaces that exist now: those with a name (`ip netns`, bind mounts
/// under /run/netns) and those some process is in. Bounded by the number of processes.
pub(crate) fn live_netns_inodes() -> std::collections::HashSet<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut live = std::collections::HashSet::new();
    for dir in ["/run/netns", "/var/run/netns"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            live.extend(
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.ino()),
            );
        }
    }
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            if p.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
            {
                if let Ok(m) = std::fs::metadata(p.path().join("ns/net")) {
                    live.insert(m.ino());
                }
            }
        }
    }
    live
}

/// The pin directory a NIC named `ifname` in the calling thread's namespace gets (`ifname` must
/// be a valid [`IfName`]: [`pin_dir`] and [`ensure_pin_dir`] check).
pub fn pin_dir_here(ifname: &str) -> PathBuf {
    match netns_tag() {
        Some(tag) => Path::new(PIN_ROOT).join(format!("{ifname}@{tag}")),
        None => Path::new(PIN_ROOT).join(ifname),
    }
}

/// The pin directory `name` (an interface name, or `<ifname>@<netns inode>`) refers to; may not
/// exist. Errors when several namespaces pinned a NIC of that name.
pub fn pin_dir(name: &str) -> Result<PathBuf, NetError> {
    // Validated before any path is built: an absolute path or `..` would leave PIN_ROOT.
    NicKey::new(name)?;
    if IfName::new(name).is_ok() {
        let here = pin_dir_here(name);
        if here.exists() {
            return Ok(here);
        }
    }
    let exact = Path::new(PIN_ROOT).join(name);
    if exact.exists() || name.contains('@') {
        return Ok(exact);
    }
    let prefix = format!("{name}@");
    let live = live_netns_inodes();
    let found: Vec<PathBuf> = std::fs::read_dir(PIN_ROOT)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    let file_name = e.file_name();
                    let file_name = file_name.to_string_lossy();
                    // A directory left by a process killed with its namespace gone cannot be
                    // what the user means: only namespaces that still exist count.
                    file_name
                        .strip_prefix(&prefix)
                        .and_then(|tag| tag.parse::<u64>().ok())
                        .is_some_and(|tag| live.contains(&tag))
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    match found.len() {
        0 => Ok(exact),
        1 => Ok(found[0].clone()),
        _ => Err(NetError::InvalidConfig(format!(
            "NICs named {name:?} are pinned from several network namespaces ({}): give the full name",
            found
                .iter()
                .filter_map(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Mount bpffs at [`BPFFS`] unless it is already (mode 0700: only root enters), and create the
/// pin directory of `ifname` in the calling thread's namespace. [`PIN_ROOT`] and the NIC's
/// directory are created 0700; existing ones are used only when [`open_trusted_dir`] accepts them.
pub fn ensure_pin_dir(ifname: &str) -> Result<PathBuf, NetError> {
    let ifname = IfName::new(ifname)?;
    if !is_bpffs(Path::new(BPFFS)) {
        nix::mount::mount(
            Some("bpf"),
            BPFFS,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            Some(BPFFS_MOUNT_OPTIONS),
        )
        .map_err(|e| {
            NetError::io(
                format!("mounting the BPF filesystem at {BPFFS} (`mount -t bpf -o {BPFFS_MOUNT_OPTIONS} bpf {BPFFS}`)"),
                io::Error::from(e),
            )
        })?;
    }
    let root = ensure_trusted_dir(None, Path::new(PIN_ROOT))?;
    sweep_dead_namespaces(&root);
    let dir = pin_dir_here(&ifname);
    let name = dir.file_name().unwrap_or_default();
    ensure_trusted_dir(Some(&root), Path::new(name)).map_err(|e| match e {
        NetError::UntrustedDir { why, .. } => NetError::UntrustedDir {
            path: dir.display().to_string(),
            why,
        },
        other => other,
    })?;
    Ok(dir)
}

/// Create directory `path` (relative to `at`, else to the working directory) with mode 0700
/// unless it exists, then open it with [`open_trusted_dir`].
fn ensure_trusted_dir(at: Option<&OwnedFd>, path: &Path) -> Result<OwnedFd, NetError> {
    let at_fd = at.map(|fd| fd.as_raw_fd());
    match nix::sys::stat::mkdirat(at_fd, path, Mode::from_bits_truncate(PRIVATE_DIR_MODE)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => {
            return Err(NetError::io(
                format!("creating {}", path.display()),
                io::Error::from(e),
            ))
        }
    }
    open_trusted_dir_at(at, path)
}

/// Open directory `path` for use as lancet's pin state, refusing one a local user could have
/// planted or can change: a symlink (never followed), a non-directory, a directory owned by
/// another user than root (or this process's own user), or one group or others can write.
pub fn open_trusted_dir(path: &Path) -> Result<OwnedFd, NetError> {
    open_trusted_dir_at(None, path)
}

fn open_trusted_dir_at(at: Option<&OwnedFd>, path: &Path) -> Result<OwnedFd, NetError> {
    let untrusted = |why: String| NetError::UntrustedDir {
        path: path.display().to_string(),
        why,
    };
    let fd = match nix::fcntl::openat(
        at.map(|fd| fd.as_raw_fd()),
        path,
        DIR_NOFOLLOW,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
            let is_link = nix::sys::stat::fstatat(
                at.map(|fd| fd.as_raw_fd()),
                path,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK);
            return Err(untrusted(
                if is_link {
                    "a symbolic link"
                } else {
                    "not a directory"
                }
                .into(),
            ));
        }
        Err(e) => {
            return Err(NetError::io(
                format!("opening {}", path.display()),
                io::Error::from(e),
            ))
        }
    };
    // SAFETY: `fd` is a fresh descriptor openat returned, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let st = nix::sys::stat::fstat(fd.as_raw_fd())
        .map_err(|e| NetError::io(format!("reading {}", path.display()), io::Error::from(e)))?;
    let me = nix::unistd::geteuid().as_raw();
    if st.st_uid != 0 && st.st_uid != me {
        return Err(untrusted(format!(
            "owned by uid {}, not by root",
            st.st_uid
        )));
    }
    if st.st_mode & GROUP_OTHER_WRITE != 0 {
        return Err(untrusted(format!(
            "writable by group or others (mode {:o})",
            st.st_mode & 0o7777
        )));
    }
    Ok(fd)
}

/// Remove the pin directories (`<ifname>@<netns inode>`) of namespaces that no longer exist: a
/// process killed with -9 leaves its pins, and once its namespace is gone nothing can use them, but
/// pinned maps keep their kernel memory. Best effort; directories of live namespaces are kept.
/// Works relative to the open [`PIN_ROOT`] and never follows a symlink.
fn sweep_dead_namespaces(root: &OwnedFd) {
    let names = match list_dir(root) {
        Ok(names) => names,
        Err(e) => {
            tracing::warn!("cannot list {PIN_ROOT}: {e}");
            return;
        }
    };
    let live = live_netns_inodes();
    for name in names {
        let Some((_, tag)) = name.to_str().ok().and_then(|n| n.rsplit_once('@')) else {
            continue;
        };
        if tag.parse::<u64>().is_ok_and(|tag| !live.contains(&tag)) {
            let shown = Path::new(PIN_ROOT).join(std::ffi::OsStr::from_bytes(name.as_bytes()));
            if let Err(err) = remove_entry_at(root, &name, &shown) {
                tracing::warn!("cannot remove stale pins: {err}");
            }
        }
    }
}

/// The names in the open directory `dir` (without `.` and `..`).
fn list_dir(dir: &OwnedFd) -> Result<Vec<CString>, Errno> {
    let mut d = nix::dir::Dir::openat(Some(dir.as_raw_fd()), ".", DIR_NOFOLLOW, Mode::empty())?;
    Ok(d.iter()
        .flatten()
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect())
}

/// Remove entry `name` of the open directory `parent`: a directory with the pins in it, or a
/// symlink or file as such (never what a symlink points at). `shown` names it in errors.
fn remove_entry_at(parent: &OwnedFd, name: &CStr, shown: &Path) -> Result<(), NetError> {
    let err = |what: &str, e: Errno| NetError::io(format!("{what} {}", shown.display()), e.into());
    let unlink = |fd: RawFd, name: &CStr, flag| nix::unistd::unlinkat(Some(fd), name, flag);
    match nix::fcntl::openat(Some(parent.as_raw_fd()), name, DIR_NOFOLLOW, Mode::empty()) {
        Ok(fd) => {
            // SAFETY: `fd` is a fresh descriptor openat returned, owned by nobody else.
            let dir = unsafe { OwnedFd::from_raw_fd(fd) };
            for entry in list_dir(&dir).map_err(|e| err("reading", e))? {
                unlink(dir.as_raw_fd(), &entry, UnlinkatFlags::NoRemoveDir)
                    .map_err(|e| err("unpinning an entry of", e))?;
            }
            drop(dir);
            unlink(parent.as_raw_fd(), name, UnlinkatFlags::RemoveDir)
                .map_err(|e| err("removing", e))
        }
        Err(Errno::ENOENT) => Ok(()),
        // A symlink (ELOOP) or any other non-directory: remove the entry itself.
        Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
            unlink(parent.as_raw_fd(), name, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| err("removing", e))
        }
        Err(e) => Err(err("opening", e)),
    }
}

pub(crate) fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
        .unwrap_or(false)
}

/// Unpin everything in the trusted pin directory `dir`, keeping the directory (its flock holders
/// keep their lock); never follows a symlink.
pub fn clear_dir(dir: &Path) -> Result<(), NetError> {
    let fd = open_trusted_dir(dir)?;
    let err = |what: &str, e: Errno| NetError::io(format!("{what} {}", dir.display()), e.into());
    for entry in list_dir(&fd).map_err(|e| err("reading", e))? {
        nix::unistd::unlinkat(
            Some(fd.as_raw_fd()),
            entry.as_c_str(),
            UnlinkatFlags::NoRemoveDir,
        )
        .map_err(|e| err("unpinning an entry of", e))?;
    }
    Ok(())
}

/// Remove the pin directory `name` refers to and everything pinned in it.
pub fn remove_pins(name: &str) -> Result<(), NetError> {
    remove_dir(&pin_dir(name)?)
}

/// Remove pin directory `dir` (an entry of [`PIN_ROOT`]) and everything pinned in it, relative
/// to the open, trusted parent directory and without following symlinks.
pub fn remove_dir(dir: &Path) -> Result<(), NetError> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(NetError::InvalidConfig(format!(
            "{} is not a pin directory",
            dir.display()
        )));
    };
    let parent = match open_trusted_dir(parent) {
        Ok(fd) => fd,
        Err(NetError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    remove_entry_at(&parent, &c_path(Path::new(name))?, dir)
}

fn c_path(path: &Path) -> Result<CString, NetError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| NetError::InvalidConfig(format!("bad path {}", path.display())))
}

/// Pin a BPF object (a link) at `path`.
pub fn pin_fd(fd: &OwnedFd, path: &Path) -> Result<(), NetError> {
    let p = c_path(path)?;
    // SAFETY: a valid descriptor and a NUL-terminated path living across the call.
    let ret = unsafe { libbpf_sys::bpf_obj_pin(fd.as_raw_fd(), p.as_ptr()) };
    if ret < 0 {
        return Err(NetError::io(
            format!("pinning at {}", path.display()),
            io::Error::from_raw_os_error(-ret),
        ));
    }
    Ok(())
}

/// Open the BPF object pinned at `path`; `None` when nothing is pinned there.
pub fn open_pinned(path: &Path) -> Result<Option<OwnedFd>, NetError> {
    let p = c_path(path)?;
    // SAFETY: a NUL-terminated path living across the call.
    let ret = unsafe { libbpf_sys::bpf_obj_get(p.as_ptr()) };
    if ret < 0 {
        let e = io::Error::from_raw_os_error(-ret);
        if e.kind() == io::ErrorKind::NotFound {
            return Ok(None);
        }
        return Err(NetError::io(format!("opening {}", path.display()), e));
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(ret) }))
}

/// What a pinned XDP link points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LinkInfo {
    /// The attached program's id.
    pub prog_id: u32,
    /// The interface it is attached to (0 when the interface is gone).
    pub ifindex: u32,
}

/// The program and interface of an XDP bpf_link.
pub fn link_info(link: &OwnedFd) -> Result<LinkInfo, NetError> {
    let mut info = libbpf_sys::bpf_link_info::default();
    let mut len = std::mem::size_of::<libbpf_sys::bpf_link_info>() as u32;
    // SAFETY: `info` is a valid, writable bpf_link_info of `len` bytes.
    let ret = unsafe { libbpf_sys::bpf_link_get_info_by_fd(link.as_raw_fd(), &mut info, &mut len) };
    if ret < 0 {
        return Err(NetError::io(
            "reading the pinned link's info",
            io::Error::from_raw_os_error(-ret),
        ));
    }
    // SAFETY: the kernel filled the xdp member for an XDP link (ifindex 0 otherwise).
    let ifindex = unsafe { info.__bindgen_anon_1.xdp.ifindex };
    Ok(LinkInfo {
        prog_id: info.prog_id,
        ifindex,
    })
}

/// An fd of the XDP bpf_link attaching program `prog_id` to `ifindex` (held by another process,
/// e.g. the first `lancet run` on a NIC); `None` when the program is not attached by a link.
/// Holding the fd keeps the link, and so the program, attached.
pub fn find_xdp_link(ifindex: u32, prog_id: u32) -> Result<Option<OwnedFd>, NetError> {
    let mut id = 0u32;
    loop {
        let mut next = 0u32;
        // SAFETY: `next` is a valid u32 the kernel writes the next link id into.
        if unsafe { libbpf_sys::bpf_link_get_next_id(id, &mut next) } < 0 {
            return Ok(None);
        }
        id = next;
        // SAFETY: plain syscall wrapper taking an id.
        let fd = unsafe { libbpf_sys::bpf_link_get_fd_by_id(id) };
        if fd < 0 {
            continue; // the link went away meanwhile
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        let link = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut info = libbpf_sys::bpf_link_info::default();
        let mut len = std::mem::size_of::<libbpf_sys::bpf_link_info>() as u32;
        // SAFETY: `info` is a valid, writable bpf_link_info of `len` bytes.
        let ret =
            unsafe { libbpf_sys::bpf_link_get_info_by_fd(link.as_raw_fd(), &mut info, &mut len) };
        if ret < 0 || info.type_ != libbpf_sys::BPF_LINK_TYPE_XDP || info.prog_id != prog_id {
            continue;
        }
        // SAFETY: the kernel filled the xdp member of an XDP link.
        if unsafe { info.__bindgen_anon_1.xdp.ifindex } == ifindex {
            return Ok(Some(link));
        }
    }
}

/// Whether program `prog_id` uses the map pinned at `map_path` (so it is the program those pins
/// belong to).
pub fn prog_uses_pinned_map(prog_id: u32, map_path: &Path) -> Result<bool, NetError> {
    let Some(map) = open_pinned(map_path)? else {
        return Ok(false);
    };
    let mut map_info = libbpf_sys::bpf_map_info::default();
    let mut len = std::mem::size_of::<libbpf_sys::bpf_map_info>() as u32;
    // SAFETY: `map_info` is a valid, writable bpf_map_info of `len` bytes.
    let ret =
        unsafe { libbpf_sys::bpf_map_get_info_by_fd(map.as_raw_fd(), &mut map_info, &mut len) };
    if ret < 0 {
        return Ok(false);
    }
    // SAFETY: plain syscall wrapper taking an id.
    let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(prog_id) };
    if fd < 0 {
        return Ok(false);
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    let prog = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut ids = [0u32; 64];
    let mut prog_info = libbpf_sys::bpf_prog_info {
        nr_map_ids: ids.len() as u32,
        map_ids: ids.as_mut_ptr() as u64,
        ..Default::default()
    };
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: `prog_info` is a valid bpf_prog_info of `len` bytes whose map_ids points at `ids`,
    // room for nr_map_ids ids, alive across the call.
    let ret =
        unsafe { libbpf_sys::bpf_prog_get_info_by_fd(prog.as_raw_fd(), &mut prog_info, &mut len) };
    if ret < 0 {
        return Ok(false);
    }
    let n = (prog_info.nr_map_ids as usize).min(ids.len());
    Ok(ids[..n].contains(&map_info.id))
}
