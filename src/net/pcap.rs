//! A capture of what a VM sends and receives (`lancet run ... --pcap FILE`), in the classic libpcap
//! format with LINKTYPE_ETHERNET, readable by `tcpdump -r` and Wireshark.
//!
//! Called from the VMM's I/O path, so it never blocks for long: records go into a 256 KiB buffer
//! that is written out when full and on [`PcapWriter::flush`] / drop. A failed write disables the
//! capture (counted in [`PcapWriter::errors`]) instead of stalling the VM. Classic pcap has no
//! direction field; the direction is counted per writer (`rx_frames` / `tx_frames`). The TX side
//! records what the guest sent, also frames anti-spoofing then keeps off the wire.
//!
//! The guest decides how much it sends, so the file is capped (`--pcap-max-mb`, default
//! [`DEFAULT_MAX_BYTES`]): a record that would take the file past the cap stops the capture (no
//! rotation: the file keeps the first frames, which show how a problem started); the frames not
//! captured from then on are counted ([`PcapWriter::not_captured`]). The file is created with mode
//! 0600 and never through a symlink ([`create_private`]).

use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

/// Classic pcap magic (microsecond timestamps), written in native byte order.
const PCAP_MAGIC: u32 = 0xa1b2_c3d4;
const PCAP_VERSION_MAJOR: u16 = 2;
const PCAP_VERSION_MINOR: u16 = 4;
/// LINKTYPE_ETHERNET.
const LINKTYPE_ETHERNET: u32 = 1;
/// Largest frame stored per record (longer frames are truncated; orig_len keeps the length).
pub const SNAPLEN: u32 = 65535;
/// Buffer between the I/O path and the file.
const BUFFER_BYTES: usize = 256 * 1024;
/// Default cap on the capture file's size (`--pcap-max-mb`).
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// The file header.
const FILE_HEADER_LEN: u64 = 24;
/// Each record's header.
const RECORD_HEADER_LEN: u64 = 16;
/// Mode of the log files lancet creates (captures and the serial log hold guest data).
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Create (truncate) a log file for guest data: mode 0600, and never through a symlink at the
/// final component (`O_NOFOLLOW`: a local user's `/tmp/x.pcap -> /etc/shadow` fails with ELOOP
/// instead of root truncating the target). An existing file of ours is narrowed to 0600 too.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::new(
                    e.kind(),
                    format!("{} is a symbolic link: give the real path", path.display()),
                )
            } else {
                e
            }
        })?;
    file.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))?;
    Ok(file)
}

/// Which way a frame went, seen from the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received by the VM (host/wire -> guest).
    Rx,
    /// Sent by the VM (guest -> host/wire).
    Tx,
}

/// Writes frames into a pcap file.
#[derive(Debug)]
pub struct PcapWriter {
    out: Option<BufWriter<File>>,
    rx_frames: u64,
    tx_frames: u64,
    errors: u64,
    /// Bytes in the file (header and records, buffered ones included).
    written: u64,
    max_bytes: u64,
    not_captured: u64,
}

impl PcapWriter {
    /// Create (truncate) `path` and write the pcap file header; the file stops growing at
    /// [`DEFAULT_MAX_BYTES`].
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Self::create_capped(path, DEFAULT_MAX_BYTES)
    }

    /// Create (truncate) `path`, write the pcap file header, and capture until the file would
    /// exceed `max_bytes`.
    pub fn create_capped(path: &Path, max_bytes: u64) -> std::io::Result<Self> {
        let file = create_private(path)?;
        let mut out = BufWriter::with_capacity(BUFFER_BYTES, file);
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&PCAP_MAGIC.to_ne_bytes());
        header.extend_from_slice(&PCAP_VERSION_MAJOR.to_ne_bytes());
        header.extend_from_slice(&PCAP_VERSION_MINOR.to_ne_bytes());
        header.extend_from_slice(&0i32.to_ne_bytes()); // thiszone
        header.extend_from_slice(&0u32.to_ne_bytes()); // sigfigs
        header.extend_from_slice(&SNAPLEN.to_ne_bytes());
        header.extend_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
        out.write_all(&header)?;
        Ok(Self {
            out: Some(out),
            rx_frames: 0,
            tx_frames: 0,
            errors: 0,
            written: FILE_HEADER_LEN,
            max_bytes,
            not_captured: 0,
        })
    }

    /// Append one frame (Ethernet header first, no FCS) with the current time.
    pub fn record(&mut self, dir: Direction, frame: &[u8]) {
        let Some(out) = self.out.as_mut() else {
            self.not_captured += 1;
            return;
        };
        let orig = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let incl = orig.min(SNAPLEN);
        let size = RECORD_HEADER_LEN + u64::from(incl);
        if self.written + size > self.max_bytes {
            tracing::warn!(
                max_bytes = self.max_bytes,
                "pcap capture reached its size cap (--pcap-max-mb): capture stopped"
            );
            if let Err(e) = out.flush() {
                tracing::warn!(error = %e, "pcap flush failed");
                self.errors += 1;
            }
            self.out = None;
            self.not_captured += 1;
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut rec = [0u8; 16];
        rec[..4].copy_from_slice(&(now.as_secs() as u32).to_ne_bytes());
        rec[4..8].copy_from_slice(&now.subsec_micros().to_ne_bytes());
        rec[8..12].copy_from_slice(&incl.to_ne_bytes());
        rec[12..].copy_from_slice(&orig.to_ne_bytes());
        let result = out
            .write_all(&rec)
            .and_then(|_| out.write_all(&frame[..incl as usize]));
        match result {
            Ok(()) => {
                self.written += size;
                match dir {
                    Direction::Rx => self.rx_frames += 1,
                    Direction::Tx => self.tx_frames += 1,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "pcap write failed: capture stopped");
                self.errors += 1;
                self.not_captured += 1;
                self.out = None;
            }
        }
    }

    /// Write buffered records to the file.
    pub fn flush(&mut self) {
        if let Some(out) = self.out.as_mut() {
            if let Err(e) = out.flush() {
                tracing::warn!(error = %e, "pcap flush failed: capture stopped");
                self.errors += 1;
                self.out = None;
            }
        }
    }

    /// Frames recorded as received by the VM.
    pub fn rx_frames(&self) -> u64 {
        self.rx_frames
    }

    /// Frames recorded as sent by the VM.
    pub fn tx_frames(&self) -> u64 {
        self.tx_frames
    }

    /// Write errors (the capture stops at the first).
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Frames not captured because the capture stopped (size cap reached or a write error).
    pub fn not_captured(&self) -> u64 {
        self.not_captured
    }
}

impl Drop for PcapWriter {
    fn drop(&mut self) {
        self.flush();
    }
}
