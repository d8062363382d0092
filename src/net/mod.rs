//! The host side of the wire: the [`Backend`] trait that the VMM's I/O thread drives, and its two
//! implementations (AF_XDP with XDP steering: the product; TAP on a Linux bridge: the baseline).
//!
//! INTERFACE CONTRACT (the VMM is written against it):
//!
//! ```ignore
//! pub trait Backend: FrameTx + Send {
//!     fn kind(&self) -> &'static str;                 // "xdp" | "tap"
//!     fn poll_fd(&self) -> RawFd;                     // readable when RX frames are pending
//!     // Hand up to `max` received frames to `deliver`, oldest first; the rest stay queued.
//!     fn recv_batch(&mut self, max: usize, deliver: &mut dyn FnMut(&[u8])) -> Result<usize, NetError>;
//!     fn reap(&mut self);                             // TX completions, fill-ring refill
//!     fn stats(&self) -> BackendStats;                // frames, bytes, drops by reason
//!     // optional: local bridge / mirror counters, steering of learned addresses (AF_XDP)
//! }
//! ```
//!
//! It is the only backend contract: the VMM holds a `Box<dyn Backend>`, and what wraps a backend
//! (anti-spoofing, capture, stats publishing) is a [`layer::Layer`] of hooks put on it by
//! [`layer::Layered`], the one place that forwards the contract.
//!
//! Several VMs on one NIC: the first VM's AF_XDP socket binds the NIC's queue; every further VM
//! gets its own veth port fed by an XDP redirect from the steering program ([`port`]), so each VM
//! keeps its own process and UMEM. Frames between a VM and the host that owns the NIC, between
//! VMs on one NIC, and broadcast/multicast copies go through the local bridge ([`bridge`]: a TAP
//! device per VM and TC programs; [`local::LocalLink`] routes each transmitted frame).
//!
//! Copies per frame (both backends): RX = kernel -> backend buffer (AF_XDP copy mode: into a UMEM
//! frame; TAP: read() into a buffer), then the model copies it into guest memory. TX = the model
//! assembles the frame from guest memory into the buffer [`FrameTx::tx_buffer`] lends (a UMEM frame
//! or a TAP batch slot), then the kernel copies it into an skb (copy-mode sendto / write()).

use std::os::fd::RawFd;

use serde::{Deserialize, Serialize};

use crate::frame::{FrameTx, MAX_FRAME_LEN};

pub mod abi;
pub mod bridge;
pub mod layer;
pub mod learn;
pub mod liblog;
pub mod local;
pub mod names;
pub mod netlink;
pub mod netns;
pub mod nic;
pub mod owner;
pub mod pcap;
pub mod pin;
pub mod port;
pub mod rulemaps;
pub mod rules;
pub mod spoof;
pub mod stats;
pub mod steer;
pub mod table;
pub mod tap;
pub mod vmnet;
pub mod xdp;

pub use steer::{SteerCounters, XdpMode};
pub use tap::{TapBackend, TapConfig};
pub use xdp::{MacFilter, XdpBackend, XdpConfig};

/// An epoll descriptor that is readable (EPOLLIN) while any of `fds` is: a backend with several
/// receive descriptors offers it as its one `poll_fd` (epoll descriptors nest).
pub(crate) fn epoll_set(fds: &[RawFd]) -> Result<vmm_sys_util::epoll::Epoll, NetError> {
    use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
    let epoll = Epoll::new().map_err(|e| NetError::io("creating an epoll descriptor", e))?;
    for &fd in fds {
        epoll
            .ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, fd as u64),
            )
            .map_err(|e| NetError::io("adding a descriptor to the epoll set", e))?;
    }
    Ok(epoll)
}

/// A host-side network backend: the receive half plus [`FrameTx`], the transmit half.
pub trait Backend: FrameTx + Send {
    /// "xdp" or "tap".
    fn kind(&self) -> &'static str;
    /// A descriptor that is readable (EPOLLIN) while received frames are pending.
    fn poll_fd(&self) -> RawFd;
    /// Hand up to `max` received frames to `deliver`, oldest first; frames beyond `max` stay queued
    /// in the backend (back-pressure) and are counted as drops only when that queue overflows.
    fn recv_batch(&mut self, max: usize, deliver: &mut dyn FnMut(&[u8]))
        -> Result<usize, NetError>;
    /// TX completions and fill-ring refill; cheap when idle.
    fn reap(&mut self);
    /// Frames, bytes and drops by reason.
    fn stats(&self) -> BackendStats;
    /// Whether received frames are waiting, when the backend can tell without a system call
    /// (AF_XDP: the RX rings' producer index), so a busy I/O thread can spin on it instead of
    /// polling `poll_fd`. `None`: it cannot tell, ask `poll_fd`.
    fn rx_pending(&mut self) -> Option<bool> {
        None
    }
    /// The local bridge's counters (an AF_XDP VM on the NIC's local bridge; `None` otherwise).
    fn local_stats(&self) -> Option<local::LocalStats> {
        None
    }
    /// The mirror counters (an AF_XDP VM; `None` otherwise).
    fn mirror_stats(&self) -> Option<xdp::MirrorStats> {
        None
    }
    /// Steer traffic for `ip`, an address the VM was seen using, to this VM (AF_XDP: ARP and
    /// neighbour solicitations for it). Backends on a Linux bridge need nothing: it learns itself.
    fn steer_address(&mut self, _ip: std::net::IpAddr) -> Result<(), NetError> {
        Ok(())
    }
    /// Stop steering `ip` to this VM (its learned address expired).
    fn unsteer_address(&mut self, _ip: std::net::IpAddr) {}
}

/// A boxed backend (what [`open_backend`] returns) is a backend, so layers go on it too.
impl<B: Backend + ?Sized> FrameTx for Box<B> {
    fn link_up(&self) -> bool {
        (**self).link_up()
    }
    fn tx_buffer(&mut self) -> Option<&mut [u8]> {
        (**self).tx_buffer()
    }
    fn tx_commit(&mut self, len: usize) {
        (**self).tx_commit(len)
    }
    fn tx_flush(&mut self) {
        (**self).tx_flush()
    }
}

impl<B: Backend + ?Sized> Backend for Box<B> {
    fn kind(&self) -> &'static str {
        (**self).kind()
    }
    fn poll_fd(&self) -> RawFd {
        (**self).poll_fd()
    }
    fn recv_batch(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, NetError> {
        (**self).recv_batch(max, deliver)
    }
    fn reap(&mut self) {
        (**self).reap()
    }
    fn stats(&self) -> BackendStats {
        (**self).stats()
    }
    fn rx_pending(&mut self) -> Option<bool> {
        (**self).rx_pending()
    }
    fn local_stats(&self) -> Option<local::LocalStats> {
        (**self).local_stats()
    }
    fn mirror_stats(&self) -> Option<xdp::MirrorStats> {
        (**self).mirror_stats()
    }
    fn steer_address(&mut self, ip: std::net::IpAddr) -> Result<(), NetError> {
        (**self).steer_address(ip)
    }
    fn unsteer_address(&mut self, ip: std::net::IpAddr) {
        (**self).unsteer_address(ip)
    }
}

/// Counters of one backend. Every frame the backend or the kernel below it drops is in `drops`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackendStats {
    /// Frames handed to the device model.
    pub rx_frames: u64,
    /// Bytes handed to the device model.
    pub rx_bytes: u64,
    /// Frames queued to the kernel for transmission.
    pub tx_frames: u64,
    /// Bytes queued to the kernel for transmission.
    pub tx_bytes: u64,
    /// Times `tx_buffer` had no buffer to lend (back-pressure on the model, not a drop).
    pub tx_busy: u64,
    /// Frames dropped, by reason.
    pub drops: DropStats,
    /// The steering program's verdicts (AF_XDP backend only; zero for TAP).
    pub steer: SteerCounters,
}

/// Dropped frames by reason. The `rx_ring_full`, `rx_fill_ring_empty`, `rx_invalid`,
/// `rx_kernel_other` and `tx_invalid` counters are the socket's XDP_STATISTICS (AF_XDP) or the TAP
/// device's kernel counters; the others are counted by the backend itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DropStats {
    /// RX queue full because the guest stopped draining (XSK RX ring full; TAP queue overflow).
    pub rx_ring_full: u64,
    /// AF_XDP: no free UMEM frame in the fill ring when a frame arrived.
    pub rx_fill_ring_empty: u64,
    /// AF_XDP: invalid RX descriptors (e.g. a frame larger than a UMEM frame).
    pub rx_invalid: u64,
    /// Other kernel-side RX drops (AF_XDP `rx_dropped` plus a veth port's frames that found no
    /// socket; TAP `rx_dropped` of the device).
    pub rx_kernel_other: u64,
    /// Received frames longer than [`MAX_FRAME_LEN`], dropped by the backend.
    pub rx_oversize: u64,
    /// AF_XDP: TX descriptors the kernel rejected.
    pub tx_invalid: u64,
    /// Frames the model committed with a length larger than the lent buffer, dropped.
    pub tx_oversize: u64,
    /// Frames a write/sendto failed for (AF_XDP through a veth port: also frames the port could
    /// not redirect to the NIC).
    pub tx_error: u64,
    /// Frames the VM sent with a source MAC not its own, dropped ([`spoof::SpoofGuard`]).
    pub tx_spoofed: u64,
    /// Frames the VM committed shorter than an Ethernet header, or with a truncated ARP/IP
    /// header, dropped ([`spoof::SpoofGuard`]).
    pub tx_bad_length: u64,
    /// VLAN-tagged frames (or, with `--vlan`, untagged or of another VID), dropped.
    pub tx_vlan: u64,
    /// Frames to an IEEE 802.1 link-local control address (PAUSE, STP, LACP, LLDP), dropped.
    pub tx_link_local: u64,
    /// ARP claiming a MAC or IPv4 address not the VM's, dropped.
    pub tx_arp_sender: u64,
    /// IPv4 frames from an address not the VM's, dropped.
    pub tx_ipv4_source: u64,
    /// IPv6 frames from (or neighbour advertisements for) an address not the VM's, dropped.
    pub tx_ipv6_source: u64,
    /// Frames from a new address beyond the VM's address cap, dropped.
    pub tx_address_cap: u64,
}

impl DropStats {
    /// Every frame lost on the receive side.
    pub fn rx_total(&self) -> u64 {
        self.rx_ring_full
            + self.rx_fill_ring_empty
            + self.rx_invalid
            + self.rx_kernel_other
            + self.rx_oversize
    }

    /// Each counter with its name in the stats JSON, in name order.
    pub fn by_reason(&self) -> [(&'static str, u64); 16] {
        [
            ("rx_fill_ring_empty", self.rx_fill_ring_empty),
            ("rx_invalid", self.rx_invalid),
            ("rx_kernel_other", self.rx_kernel_other),
            ("rx_oversize", self.rx_oversize),
            ("rx_ring_full", self.rx_ring_full),
            ("tx_address_cap", self.tx_address_cap),
            ("tx_arp_sender", self.tx_arp_sender),
            ("tx_bad_length", self.tx_bad_length),
            ("tx_error", self.tx_error),
            ("tx_invalid", self.tx_invalid),
            ("tx_ipv4_source", self.tx_ipv4_source),
            ("tx_ipv6_source", self.tx_ipv6_source),
            ("tx_link_local", self.tx_link_local),
            ("tx_oversize", self.tx_oversize),
            ("tx_spoofed", self.tx_spoofed),
            ("tx_vlan", self.tx_vlan),
        ]
    }

    /// Every frame lost on the transmit side.
    pub fn tx_total(&self) -> u64 {
        self.tx_invalid
            + self.tx_oversize
            + self.tx_error
            + self.tx_spoofed
            + self.tx_bad_length
            + self.tx_vlan
            + self.tx_link_local
            + self.tx_arp_sender
            + self.tx_ipv4_source
            + self.tx_ipv6_source
            + self.tx_address_cap
    }
}

/// Errors of the backends and the steering program, each saying what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("network interface {ifname:?} not found in this network namespace: check the name with `ip link`")]
    InterfaceNotFound { ifname: String },
    #[error("interface {ifname:?} has MTU {mtu}, larger than {max} that {reason}: lower it with `ip link set {ifname} mtu {max}`")]
    MtuTooLarge {
        ifname: String,
        mtu: u32,
        max: u32,
        reason: &'static str,
    },
    #[error("another XDP program (id {prog_id}) is attached to {ifname:?}: detach it first (`ip link set {ifname} xdp off`, or stop the process holding its link)")]
    XdpProgramPresent { ifname: String, prog_id: u32 },
    #[error("{what} needs CAP_NET_ADMIN and CAP_BPF (and CAP_IPC_LOCK for a large UMEM): run as root or grant the capabilities")]
    PermissionDenied { what: String },
    #[error(
        "MAC address {mac} is already in use on {ifname:?} ({by}): give the VM a different MAC"
    )]
    MacInUse {
        mac: String,
        ifname: String,
        by: String,
    },
    #[error("{what} address {addr} is already steered to {by} on {ifname:?}: give this VM another address, or stop that VM")]
    AddressInUse {
        what: &'static str,
        addr: String,
        ifname: String,
        by: String,
    },
    #[error("native XDP is not supported by the driver of {ifname:?}: use generic mode (`XdpMode::Generic`) or `Auto`")]
    NativeUnsupported { ifname: String },
    #[error("invalid backend configuration: {0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Name(#[from] names::NameError),
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
    #[error("{path} is {why}: a local user could plant or replace lancet's pins there; remove it (as root) and run again")]
    UntrustedDir { path: String, why: String },
    #[error("{context}: {source}")]
    Bpf {
        context: String,
        source: libbpf_rs::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl NetError {
    /// An I/O error with context; EPERM becomes [`NetError::PermissionDenied`].
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        let context = context.into();
        if source.raw_os_error() == Some(libc::EPERM) {
            return NetError::PermissionDenied { what: context };
        }
        NetError::Io { context, source }
    }
}

/// Which backend to open with [`open_backend`] (`lancet run|demo --backend xdp|tap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// AF_XDP on the NIC with the steering program.
    Xdp,
    /// A TAP device on the NIC's bridge (or on --nic when it is a bridge).
    Tap,
}

impl BackendKind {
    /// "xdp" or "tap" (as [`Backend::kind`] and `--backend` name it).
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Xdp => "xdp",
            BackendKind::Tap => "tap",
        }
    }
}

/// Everything `lancet run` knows about the VM's network, for [`open_backend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// AF_XDP or TAP.
    pub kind: BackendKind,
    /// The bridged NIC (AF_XDP), or the NIC or its bridge (TAP), in the calling thread's namespace.
    pub nic: String,
    /// The VM's MAC.
    pub vm_mac: [u8; 6],
    /// The VM's IPv4 address (ARP steering for AF_XDP).
    pub vm_ip: Option<std::net::Ipv4Addr>,
    /// Name of the TAP device to create (TAP only; default `lt-tap0`).
    pub tap_name: Option<String>,
    /// XDP attach mode (AF_XDP only).
    pub xdp_mode: XdpMode,
}

/// Default name of the TAP device [`open_backend`] creates.
pub const DEFAULT_TAP_NAME: &str = "lt-tap0";

/// Open the backend `spec` describes. TAP: `spec.nic` may be the bridge itself or a NIC enslaved
/// to one; the TAP device joins that bridge. AF_XDP: `spec.nic` must be the NIC, not a bridge.
pub fn open_backend(spec: &BackendSpec) -> Result<Box<dyn Backend>, NetError> {
    let info = nic::link_info(&spec.nic)?;
    let is_bridge = info.kind.as_deref() == Some("bridge");
    match spec.kind {
        BackendKind::Xdp => {
            if is_bridge {
                return Err(NetError::InvalidConfig(format!(
                    "{:?} is a bridge: AF_XDP attaches to the NIC itself (give the bridge's port, or use the TAP backend)",
                    spec.nic
                )));
            }
            let mut cfg = XdpConfig::new(spec.nic.clone(), spec.vm_mac);
            cfg.vm_ip = spec.vm_ip;
            cfg.mode = spec.xdp_mode;
            Ok(Box::new(XdpBackend::open(&cfg)?))
        }
        BackendKind::Tap => {
            let bridge = if is_bridge {
                spec.nic.clone()
            } else {
                info.master.ok_or_else(|| {
                    NetError::InvalidConfig(format!(
                        "{:?} is in no bridge: create one (`ip link add br0 type bridge; ip link set {} master br0`) or use the AF_XDP backend",
                        spec.nic, spec.nic
                    ))
                })?
            };
            let name = spec
                .tap_name
                .clone()
                .unwrap_or_else(|| DEFAULT_TAP_NAME.to_string());
            Ok(Box::new(TapBackend::open(&TapConfig::new(
                name,
                Some(&bridge),
            ))?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reasons_are_every_counter_under_its_json_name() {
        let mut drops = DropStats::default();
        let mut json = serde_json::to_value(drops).unwrap();
        // Give every counter a distinct value through its JSON name, then read it back.
        for (i, value) in json.as_object_mut().unwrap().values_mut().enumerate() {
            *value = (i as u64 + 1).into();
        }
        drops = serde_json::from_value(json.clone()).unwrap();
        let named = drops.by_reason();
        assert_eq!(named.len(), json.as_object().unwrap().len());
        for (name, n) in named {
            assert_eq!(json[name], n, "{name}");
        }
        assert_eq!(
            drops.rx_total() + drops.tx_total(),
            named.iter().map(|(_, n)| n).sum::<u64>()
        );
    }
}
