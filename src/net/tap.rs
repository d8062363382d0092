//! The TAP backend (the baseline): a TAP device (IFF_TAP | IFF_NO_PI, nonblocking), optionally
//! enslaved to a Linux bridge together with the NIC: the classic bridged path. RX reads up to a
//! batch per wakeup; TX collects a batch of frames and writes them at tx_flush (one write each:
//! the tun driver takes one frame per write).

use std::{
    ffi::CString,
    fs::File,
    io::{self, Read, Seek},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

use super::{nic, Backend, BackendStats, FrameTx, NetError, MAX_FRAME_LEN};

/// The tun/tap clone device.
const TUN_DEVICE: &str = "/dev/net/tun";
/// Per-namespace interface counters (opened in the TAP's namespace; the file keeps it).
const PROC_NET_DEV: &str = "/proc/thread-self/net/dev";
/// Frames collected before they are written even without tx_flush.
const TX_BATCH: usize = 64;
/// Size of one TX slot (a maximum frame, rounded up).
const TX_SLOT_SIZE: usize = 2048;
/// RX read buffer: larger than any frame so oversize frames are detected, not truncated.
const RX_BUF_SIZE: usize = 65536;
/// /proc/net/dev columns after the name: receive bytes, packets, errs, drop, ...; transmit from 8.
const PROC_RX_DROP_COLUMN: usize = 3;
const PROC_TX_DROP_COLUMN: usize = 11;

/// How to open a [`TapBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapConfig {
    /// Name of the TAP device to create (at most 15 bytes).
    pub name: String,
    /// A Linux bridge to enslave the TAP device to (it must exist).
    pub bridge: Option<String>,
}

impl TapConfig {
    /// A TAP device `name`, enslaved to `bridge` when given.
    pub fn new(name: impl Into<String>, bridge: Option<&str>) -> Self {
        Self {
            name: name.into(),
            bridge: bridge.map(str::to_string),
        }
    }
}

/// The TAP backend. The device exists as long as the backend (it is not persistent).
#[derive(Debug)]
pub struct TapBackend {
    fd: OwnedFd,
    name: String,
    rx_buf: Vec<u8>,
    tx_slots: Vec<u8>,
    tx_lens: Vec<usize>,
    tx_lent: bool,
    counters: BackendStats,
    proc_net_dev: Option<File>,
}

impl TapBackend {
    /// Create the TAP device `cfg.name`, bring it up and enslave it to `cfg.bridge`. Must run in
    /// the network namespace the device belongs in.
    pub fn open(cfg: &TapConfig) -> Result<Self, NetError> {
        let bad_name = || {
            NetError::InvalidConfig(format!(
                "TAP name {:?} must be 1..15 bytes without NUL",
                cfg.name
            ))
        };
        if cfg.name.is_empty() || cfg.name.len() >= libc::IFNAMSIZ {
            return Err(bad_name());
        }
        let path = CString::new(TUN_DEVICE).map_err(|_| bad_name())?;
        // SAFETY: plain open(2) of a NUL-terminated path; the result is checked.
        let raw = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(NetError::io(
                format!("opening {TUN_DEVICE} (is the tun driver available?)"),
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `raw` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        if cfg.name.as_bytes().contains(&0) {
            return Err(bad_name());
        }
        for (dst, src) in req.ifr_name.iter_mut().zip(cfg.name.as_bytes()) {
            *dst = *src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF takes a pointer to a valid ifreq living across the call.
        let ret = unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::TUNSETIFF as _,
                &mut req as *mut libc::ifreq,
            )
        };
        if ret < 0 {
            let err = io::Error::last_os_error();
            let what = if err.raw_os_error() == Some(libc::EBUSY) {
                format!(
                    "creating TAP device {:?} (a device with that name exists)",
                    cfg.name
                )
            } else {
                format!("creating TAP device {:?}", cfg.name)
            };
            return Err(NetError::io(what, err));
        }
        nic::set_up(&cfg.name)?;
        if let Some(bridge) = &cfg.bridge {
            nic::bridge_add_port(bridge, &cfg.name)?;
        }
        let proc_net_dev = File::open(PROC_NET_DEV).ok();
        Ok(Self {
            fd,
            name: cfg.name.clone(),
            rx_buf: vec![0; RX_BUF_SIZE],
            tx_slots: vec![0; TX_BATCH * TX_SLOT_SIZE],
            tx_lens: Vec::with_capacity(TX_BATCH),
            tx_lent: false,
            counters: BackendStats::default(),
            proc_net_dev,
        })
    }

    /// The TAP device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Write every collected frame (one write per frame).
    fn write_pending(&mut self) {
        for (i, &len) in self.tx_lens.iter().enumerate() {
            let frame = &self.tx_slots[i * TX_SLOT_SIZE..i * TX_SLOT_SIZE + len];
            // SAFETY: `frame` is a valid buffer of `len` bytes for the duration of the call.
            let ret =
                unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
            if ret < 0 || ret as usize != len {
                self.counters.drops.tx_error += 1;
            } else {
                self.counters.tx_frames += 1;
                self.counters.tx_bytes += len as u64;
            }
        }
        self.tx_lens.clear();
    }

    /// (rx_dropped, tx_dropped) of the TAP device from /proc/net/dev, if readable.
    fn kernel_drops(&self) -> Option<(u64, u64)> {
        let mut file = self.proc_net_dev.as_ref()?;
        file.rewind().ok()?;
        let mut text = String::new();
        file.read_to_string(&mut text).ok()?;
        let line = text.lines().find_map(|l| {
            let (name, rest) = l.split_once(':')?;
            (name.trim() == self.name).then_some(rest)
        })?;
        let cols: Vec<u64> = line
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .collect();
        Some((
            *cols.get(PROC_RX_DROP_COLUMN)?,
            *cols.get(PROC_TX_DROP_COLUMN)?,
        ))
    }
}

impl FrameTx for TapBackend {
    fn tx_buffer(&mut self) -> Option<&mut [u8]> {
        if !self.tx_lent && self.tx_lens.len() >= TX_BATCH {
            self.write_pending();
        }
        self.tx_lent = true;
        let start = self.tx_lens.len() * TX_SLOT_SIZE;
        self.tx_slots.get_mut(start..start + TX_SLOT_SIZE)
    }

    fn tx_commit(&mut self, len: usize) {
        if !std::mem::take(&mut self.tx_lent) {
            return;
        }
        if len == 0 || len > MAX_FRAME_LEN {
            self.counters.drops.tx_oversize += 1;
            return;
        }
        self.tx_lens.push(len);
        if self.tx_lens.len() >= TX_BATCH {
            self.write_pending();
        }
    }

    fn tx_flush(&mut self) {
        self.write_pending();
    }
}

impl Backend for TapBackend {
    fn kind(&self) -> &'static str {
        "tap"
    }

    fn poll_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn recv_batch(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, NetError> {
        let mut delivered = 0;
        while delivered < max {
            // SAFETY: `rx_buf` is a valid writable buffer of its length.
            let ret = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    self.rx_buf.as_mut_ptr().cast(),
                    self.rx_buf.len(),
                )
            };
            if ret < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EINTR) => break,
                    _ => {
                        return Err(NetError::io(
                            format!("reading from TAP device {:?}", self.name),
                            err,
                        ))
                    }
                }
            }
            let len = ret as usize;
            if len == 0 {
                break;
            }
            if len > MAX_FRAME_LEN {
                self.counters.drops.rx_oversize += 1;
                continue;
            }
            deliver(&self.rx_buf[..len]);
            self.counters.rx_frames += 1;
            self.counters.rx_bytes += len as u64;
            delivered += 1;
        }
        Ok(delivered)
    }

    fn reap(&mut self) {
        if !self.tx_lent && !self.tx_lens.is_empty() {
            self.write_pending();
        }
    }

    fn stats(&self) -> BackendStats {
        let mut stats = self.counters;
        if let Some((rx_dropped, tx_dropped)) = self.kernel_drops() {
            // The TAP's TX is our RX: its tx_dropped counts frames lost because we did not read.
            stats.drops.rx_ring_full = tx_dropped;
            stats.drops.rx_kernel_other = rx_dropped;
        }
        stats
    }
}
