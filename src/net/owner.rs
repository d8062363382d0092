//! Who owns a VM's steering entries, and whether that owner still runs: every registered VM holds
//! an exclusive flock on its own owner file `/run/lancet/owners/<token>` for as long as it runs.
//! The kernel drops the lock when the process dies (also after kill -9), so "the lock is held" is
//! the liveness test: it needs no pid (which means nothing in another pid namespace and can be
//! reused) and no signal permission.
//!
//! The token is a small number unique among running VMs: the process id when its file is free,
//! else another number above `pid_max` (two VMs of one process, or two processes with the same
//! pid in different pid namespaces). It is what `vm_names` stores as `pid` and what veth port
//! names are made of. The file's content says which NIC (pin directory name), slot, queue and MAC
//! the registration uses, so the next VMM on that NIC can remove a dead VM's entries.
//!
//! Removal protocol: the holder unlinks the file before closing it; whoever takes a lock checks
//! that the file it locked is still the one at the path (else it retries), so a lock on an unlinked
//! file never counts.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::{
        fd::AsRawFd,
        unix::fs::{MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
};

use super::NetError;

/// Where owner files live (root's own directory: /run is not writable by other users).
pub const OWNER_ROOT: &str = "/run/lancet/owners";
/// Mode of the owner directory and files.
const PRIVATE_DIR_MODE: u32 = 0o700;
const PRIVATE_FILE_MODE: u32 = 0o600;
/// Above the largest `pid_max` (2^22): tokens from here on are never a process id.
const TOKEN_ALT_FIRST: u32 = 4_194_305;
/// Tokens stay at 7 digits so a veth port name (`lt-p<token>n<slot>a`) fits IFNAMSIZ.
const TOKEN_ALT_END: u32 = 10_000_000;
/// Tokens tried before giving up.
const TOKEN_ATTEMPTS: u32 = 64;

/// What a registration records in its owner file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRecord {
    /// The owner's token.
    pub token: u32,
    /// The NIC's pin directory name ("" for steering that is not pinned).
    pub key: String,
    /// XSKMAP or `ports` slot.
    pub slot: u32,
    /// NIC queue, or `PORT_QUEUE`.
    pub queue: u32,
    /// The VM's MAC.
    pub mac: [u8; 6],
}

impl OwnerRecord {
    fn render(&self) -> String {
        let m = self.mac;
        format!(
            "{} {} {} {:02x}{:02x}{:02x}{:02x}{:02x}{:02x}\n",
            self.key, self.slot, self.queue, m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }

    fn parse(token: u32, text: &str) -> Option<Self> {
        let mut words = text.split_whitespace();
        let key = words.next()?.to_string();
        let slot = words.next()?.parse().ok()?;
        let queue = words.next()?.parse().ok()?;
        let hex = words.next()?;
        if hex.len() != 12 {
            return None;
        }
        let mut mac = [0u8; 6];
        for (i, b) in mac.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self {
            token,
            key: if key == "-" { String::new() } else { key },
            slot,
            queue,
            mac,
        })
    }
}

/// The owner file of a running VM (this process), locked until dropped.
#[derive(Debug)]
pub struct OwnerLock {
    token: u32,
    path: PathBuf,
    file: File,
}

fn path_of(token: u32) -> PathBuf {
    Path::new(OWNER_ROOT).join(token.to_string())
}

fn ensure_root() -> Result<(), NetError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(OWNER_ROOT)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(NetError::io(format!("creating {OWNER_ROOT}"), e)),
    }
}

/// flock `file` without blocking; `Ok(false)` when someone else holds a conflicting lock.
fn try_flock(file: &File, op: libc::c_int) -> io::Result<bool> {
    // SAFETY: flock on a descriptor we own; LOCK_NB never blocks.
    let ret = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
    if ret == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Whether the file at `path` is still the one `file` has open.
fn still_linked(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

/// Take the owner file of `token` exclusively: `Ok(None)` when a live owner holds it.
fn take(token: u32) -> Result<Option<(File, PathBuf)>, NetError> {
    let path = path_of(token);
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(PRIVATE_FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| NetError::io(format!("opening the owner file {}", path.display()), e))?;
        if !try_flock(&file, libc::LOCK_EX)
            .map_err(|e| NetError::io(format!("locking {}", path.display()), e))?
        {
            return Ok(None);
        }
        if still_linked(&file, &path) {
            return Ok(Some((file, path)));
        }
        // Its holder removed it between our open and our lock: try the new file.
    }
}

impl OwnerLock {
    /// Become a live owner: lock a fresh owner file (the pid's when free) and record `record`
    /// in it (its `token` is filled in).
    pub fn acquire(record: &OwnerRecord) -> Result<Self, NetError> {
        ensure_root()?;
        let pid = std::process::id();
        let span = TOKEN_ALT_END - TOKEN_ALT_FIRST;
        let candidates = std::iter::once(pid).chain(
            (0..TOKEN_ATTEMPTS)
                .map(|i| TOKEN_ALT_FIRST + (pid.wrapping_mul(7919) + i * 104_729) % span),
        );
        for token in candidates {
            let Some((file, path)) = take(token)? else {
                continue;
            };
            let mut lock = Self { token, path, file };
            lock.write(&OwnerRecord {
                token,
                ..record.clone()
            })?;
            return Ok(lock);
        }
        Err(NetError::InvalidConfig(format!(
            "no free owner token under {OWNER_ROOT} after {TOKEN_ATTEMPTS} tries"
        )))
    }

    /// Replace what the owner file records (e.g. once the slot is known).
    pub fn write(&mut self, record: &OwnerRecord) -> Result<(), NetError> {
        let text = OwnerRecord {
            key: if record.key.is_empty() {
                "-".into()
            } else {
                record.key.clone()
            },
            ..record.clone()
        }
        .render();
        let err = |e| NetError::io(format!("writing {}", self.path.display()), e);
        self.file.set_len(0).map_err(err)?;
        use std::io::Seek;
        self.file.rewind().map_err(err)?;
        self.file.write_all(text.as_bytes()).map_err(err)
    }

    /// This owner's token.
    pub fn token(&self) -> u32 {
        self.token
    }
}

impl Drop for OwnerLock {
    fn drop(&mut self) {
        // Unlinked while still locked: see the module docs.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether a running VM holds the owner file of `token`.
pub fn is_live(token: u32) -> bool {
    let Ok(file) = File::open(path_of(token)) else {
        return false; // no file: nobody (or a lancet without owner files) registered it
    };
    // A shared lock is refused only while an owner holds its exclusive one.
    match try_flock(&file, libc::LOCK_SH) {
        Ok(got) => !got,
        Err(_) => true, // cannot tell: never treat a possibly live VM as dead
    }
}

/// A dead owner's record, its file locked by us: [`StaleOwner::remove`] deletes the file once its
/// entries are gone.
#[derive(Debug)]
pub struct StaleOwner {
    /// What the dead owner had registered.
    pub record: OwnerRecord,
    path: PathBuf,
    _file: File,
}

impl StaleOwner {
    /// Delete the owner file (while still holding its lock).
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Every owner file: (record, live). Unreadable or malformed files are skipped.
pub fn list() -> Vec<(OwnerRecord, bool)> {
    entries()
        .into_iter()
        .filter_map(|token| {
            let text = std::fs::read_to_string(path_of(token)).ok()?;
            let record = OwnerRecord::parse(token, &text)?;
            Some((record, is_live(token)))
        })
        .collect()
}

fn entries() -> Vec<u32> {
    std::fs::read_dir(OWNER_ROOT)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Lock and return the owner files of dead VMs that were registered on the NIC of pin directory
/// name `key`.
pub fn take_stale(key: &str) -> Vec<StaleOwner> {
    let mut out = Vec::new();
    for token in entries() {
        let Ok(Some((file, path))) = take(token) else {
            continue; // live, or gone meanwhile
        };
        let record = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| OwnerRecord::parse(token, &t));
        match record {
            Some(record) if record.key == key => out.push(StaleOwner {
                record,
                path,
                _file: file,
            }),
            // Another NIC's dead VM: that NIC's next VMM cleans up.
            Some(record) if !record.key.is_empty() => {}
            // A dead VM whose maps died with it (not pinned), or garbage: nothing to clean.
            _ => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    out
}
