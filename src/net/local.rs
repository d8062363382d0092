//! [`LocalLink`]: an [`XdpBackend`] plus its VM's place on the NIC's local bridge
//! ([`super::bridge`]). It decides per transmitted frame, by destination MAC, where it goes:
//!
//! - the NIC's own MAC or another local VM's MAC: the tap only (the bridge programs deliver it to
//!   the host's stack or that VM), never the wire;
//! - broadcast/multicast: the XSK (the wire) and the tap (the host and the other VMs);
//! - anything else: the XSK, as before (the unicast fast path; its only added cost is comparing
//!   the destination with the few local MACs).
//!
//! Received frames come from the XSK (the fast path) and from the tap (the host, other VMs, group
//! copies); both go to the model, whose address filter decides. `poll_fd` is an epoll descriptor
//! holding both; the tap is read when the XSK had nothing, or every [`TAP_READ_EVERY`] batches
//! while it keeps delivering, so the fast path pays no extra syscall per batch. The set of local MACs is a snapshot refreshed from the bridge's map at most every
//! [`LOCAL_REFRESH`].

use std::{
    os::fd::{AsRawFd, RawFd},
    time::{Duration, Instant},
};

use serde::Serialize;
use vmm_sys_util::epoll::Epoll;

use super::{
    bridge::{Bridge, BridgeCounters},
    Backend, BackendStats, FrameTx, NetError, XdpBackend,
};

/// How often the snapshot of local MACs is re-read from the bridge's map.
pub const LOCAL_REFRESH: Duration = Duration::from_millis(500);
/// Bytes of a MAC address / offset of the destination MAC in a frame.
const MAC_LEN: usize = 6;
/// While the XSK keeps delivering, the tap is read (a syscall) only every this many batches; an
/// idle XSK round always reads it. The epoll fd stays readable while the tap holds frames, so
/// they wait at most this many batches.
const TAP_READ_EVERY: u32 = 8;

/// Counters of one VM's local link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LocalStats {
    /// Unicast frames the VM sent to the host or another local VM (through the tap, not the wire).
    pub tx_local: u64,
    /// Broadcast/multicast frames the VM sent, also copied to the tap (host and other VMs).
    pub tx_group_copies: u64,
    /// Frames received through the tap (from the host, another VM, or a group copy).
    pub rx_local: u64,
    /// Frames lost on the tap: writes that failed or were too long, and frames the kernel dropped
    /// because the VMM did not read them in time.
    pub tap_drops: u64,
    /// The NIC-wide counters of the bridge programs (shared by every VM on the NIC).
    pub bridge: BridgeCounters,
}

/// An AF_XDP backend with the local bridge (see the module docs).
pub struct LocalLink {
    xdp: XdpBackend,
    bridge: Bridge,
    epoll: Epoll,
    local: Vec<[u8; 6]>,
    refreshed: Instant,
    stats: LocalStats,
    /// `recv_batch` calls since the tap was last read.
    since_tap_read: u32,
}

impl std::fmt::Debug for LocalLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLink")
            .field("xdp", &self.xdp)
            .field("local", &self.local.len())
            .finish_non_exhaustive()
    }
}

impl LocalLink {
    /// Put the VM of `xdp` (its MAC `vm_mac`, on NIC `nic`) on the NIC's local bridge. Must run
    /// in the NIC's network namespace.
    pub fn open(xdp: XdpBackend, nic: &str, vm_mac: [u8; 6]) -> Result<Self, NetError> {
        let pin_dir = xdp.steering().pin_dir().map(|p| p.to_path_buf());
        let bridge = Bridge::open(nic, vm_mac, xdp.owner_token(), pin_dir.as_deref())?;
        let epoll = super::epoll_set(&[xdp.poll_fd(), bridge.tap_ref().poll_fd()])?;
        let local = bridge.local_macs();
        Ok(Self {
            xdp,
            bridge,
            epoll,
            local,
            refreshed: Instant::now(),
            stats: LocalStats::default(),
            since_tap_read: 0,
        })
    }

    /// The AF_XDP backend.
    pub fn xdp(&self) -> &XdpBackend {
        &self.xdp
    }

    /// The AF_XDP backend, mutable.
    pub fn xdp_mut(&mut self) -> &mut XdpBackend {
        &mut self.xdp
    }

    /// The local link's counters.
    pub fn counters(&self) -> LocalStats {
        let tap = self.bridge.tap_ref().stats();
        LocalStats {
            tap_drops: tap.drops.tx_total() + tap.drops.rx_total(),
            bridge: self.bridge.counters(),
            ..self.stats
        }
    }

    /// Re-read the local MACs now (e.g. after another VM joined).
    pub fn refresh(&mut self) {
        self.local = self.bridge.local_macs();
        self.refreshed = Instant::now();
    }

    /// Copy `len` bytes of the lent XSK buffer to the tap; false if the tap had no room.
    fn copy_to_tap(&mut self, len: usize) -> bool {
        let Some(frame) = self.xdp.tx_buffer().and_then(|b| b.get(..len)) else {
            return false;
        };
        let tap = self.bridge.tap();
        match tap.tx_buffer() {
            Some(buf) if buf.len() >= len => {
                buf[..len].copy_from_slice(frame);
                tap.tx_commit(len);
                true
            }
            Some(_) => {
                tap.tx_commit(0); // counted as tx_oversize by the tap
                false
            }
            None => false,
        }
    }
}

impl FrameTx for LocalLink {
    fn link_up(&self) -> bool {
        self.xdp.link_up()
    }

    fn tx_buffer(&mut self) -> Option<&mut [u8]> {
        self.xdp.tx_buffer()
    }

    fn tx_commit(&mut self, len: usize) {
        let dst = self
            .xdp
            .tx_buffer()
            .filter(|_| len >= MAC_LEN)
            .and_then(|b| b.get(..MAC_LEN))
            .and_then(|d| <[u8; 6]>::try_from(d).ok());
        match dst {
            Some(dst) if dst[0] & 1 != 0 => {
                if self.copy_to_tap(len) {
                    self.stats.tx_group_copies += 1;
                }
                self.xdp.tx_commit(len);
            }
            Some(dst) if self.local.contains(&dst) => {
                if self.copy_to_tap(len) {
                    self.stats.tx_local += 1;
                }
                self.xdp.tx_cancel();
            }
            _ => self.xdp.tx_commit(len),
        }
    }

    fn tx_flush(&mut self) {
        self.xdp.tx_flush();
        self.bridge.tap().tx_flush();
    }
}

impl Backend for LocalLink {
    fn kind(&self) -> &'static str {
        self.xdp.kind()
    }

    fn poll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    fn recv_batch(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, NetError> {
        let n = self.xdp.recv_batch(max, deliver)?;
        self.since_tap_read += 1;
        let local = if n < max && (n == 0 || self.since_tap_read >= TAP_READ_EVERY) {
            self.since_tap_read = 0;
            self.bridge.tap().recv_batch(max - n, deliver)?
        } else {
            0
        };
        self.stats.rx_local += local as u64;
        Ok(n + local)
    }

    fn reap(&mut self) {
        self.xdp.reap();
        self.bridge.tap().reap();
        if self.refreshed.elapsed() >= LOCAL_REFRESH {
            self.refresh();
        }
    }

    fn stats(&self) -> BackendStats {
        let mut stats = self.xdp.stats();
        let tap = self.bridge.tap_ref().stats();
        stats.rx_frames += tap.rx_frames;
        stats.rx_bytes += tap.rx_bytes;
        stats.tx_frames += self.stats.tx_local;
        stats.drops.rx_ring_full += tap.drops.rx_ring_full;
        stats.drops.rx_kernel_other += tap.drops.rx_kernel_other;
        stats.drops.rx_oversize += tap.drops.rx_oversize;
        stats.drops.tx_error += tap.drops.tx_error;
        stats.drops.tx_oversize += tap.drops.tx_oversize;
        stats
    }

    fn local_stats(&self) -> Option<LocalStats> {
        Some(self.counters())
    }

    fn mirror_stats(&self) -> Option<super::xdp::MirrorStats> {
        Some(self.xdp.mirror_stats())
    }

    fn steer_address(&mut self, ip: std::net::IpAddr) -> Result<(), NetError> {
        self.xdp.steer_address(ip)
    }

    fn unsteer_address(&mut self, ip: std::net::IpAddr) {
        self.xdp.unsteer_address(ip)
    }

    /// The XSK's rings only: frames on the bridge's TAP are found through `poll_fd`.
    fn rx_pending(&mut self) -> Option<bool> {
        self.xdp.rx_pending()
    }
}
