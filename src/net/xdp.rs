//! The AF_XDP backend: one XSK bound to a queue of the bridged NIC (zero-copy when the driver
//! allows it, copy mode otherwise, need_wakeup), fed by the steering program, with a UMEM of the
//! VMM's own 4 KiB frames: the RX half circulates through fill ring -> RX ring -> model -> fill ring,
//! the TX half through free list -> model (lent buffer) -> TX ring -> completion ring -> free list.
//!
//! UMEM layout: `2 * rx_ring_size` RX frames then `tx_frames` TX frames, 4 KiB each (256 bytes of
//! XDP headroom, up to 3840 frame bytes). Half the RX frames sit in the fill ring while the other
//! half can wait in the RX ring, so a full RX ring never starves the fill ring.
//!
//! Back-pressure: `recv_batch(max)` takes at most `max` frames (the guest ring's room) off the RX
//! ring; the rest wait there. When the RX ring is full the kernel drops and counts (`rx_ring_full`
//! in XDP_STATISTICS). TX: `tx_buffer` returns `None` when every TX frame is in flight.
//!
//! Copies: RX = kernel copy into the UMEM frame (copy mode; none in zero-copy mode) + the model's
//! copy into guest memory. TX = the model's copy from guest memory into the UMEM frame + the
//! kernel's copy into an skb (copy mode). The UMEM is the VMM's own memory, never guest RAM: after
//! a guest stops or resets its NIC the kernel can only ever write into VMM-owned frames, and guest
//! buffers (any alignment, chained) need no registration.
//!
//! When a live VM already holds the NIC queue, the socket binds queue 0 of a veth port of its own
//! instead ([`super::port`]); the backend works the same from there (copy mode).
//!
//! Multi-queue NICs: the NIC may spread a VM's frames over all its RX queues (RSS), so the VM that
//! holds the NIC binds one XSK per RX queue ([`super::nic::rx_queue_count`]), all sharing the one
//! UMEM (XDP_SHARED_UMEM), and registers as [`ALL_QUEUES`]: the program redirects to the XSKMAP
//! slot of the queue the frame arrived on. Each queue has its own fill ring fed from its own
//! `2 * rx_ring_size` RX frames; TX goes through the first socket. `recv_batch` takes from the
//! queues round-robin, `poll_fd` is an epoll set of every queue's socket, XDP_STATISTICS are
//! summed. A single-queue NIC keeps one socket registered on its queue number.

use std::{
    convert::TryInto,
    net::{Ipv4Addr, Ipv6Addr},
    num::NonZeroU32,
    os::fd::{AsRawFd, RawFd},
    time::{Duration, Instant},
};

use xsk_rs::{
    config::{BindFlags, FrameSize, LibxdpFlags, QueueSize, SocketConfig, UmemConfig},
    socket::Socket,
    umem::{frame::FrameDesc, Umem},
    CompQueue, FillQueue, RxQueue, TxQueue,
};

use super::{
    names::{IfName, VmName as ValidVmName},
    nic::{self, LinkProbe, Membership, MembershipKind},
    port::{VethPort, ALL_QUEUES, PORT_QUEUE},
    rulemaps::VmName,
    steer::{link_local_from_mac, Registration, Steering, XdpMode, MAX_VMS},
    tap::{TapBackend, TapConfig},
    Backend, BackendStats, FrameTx, NetError, MAX_FRAME_LEN,
};

/// Mirror counters of one AF_XDP backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct MirrorStats {
    /// Frames a mirror rule sent to this VM (each also meant for the host).
    pub frames: u64,
    /// Host copies written to the mirror TAP device.
    pub host_copies: u64,
    /// Host copies lost: no mirror device configured, or it had no room.
    pub host_copy_drops: u64,
}

/// Size of one UMEM frame (a page): holds the 256-byte XDP headroom plus up to 3840 frame bytes.
pub const UMEM_FRAME_SIZE: u32 = 4096;
/// Headroom the kernel reserves in front of each received frame (XDP_PACKET_HEADROOM).
const XDP_HEADROOM: u32 = 256;
/// Largest frame a UMEM frame holds without multi-buffer (XDP_USE_SG).
pub const UMEM_MAX_FRAME: u32 = UMEM_FRAME_SIZE - XDP_HEADROOM;
/// Ethernet header plus one VLAN tag: what a frame adds on top of the MTU.
const ETH_OVERHEAD: u32 = 18;
/// Frames moved per ring operation on RX (the scratch descriptor array).
const RX_BATCH: usize = 64;
/// Committed TX frames are pushed to the TX ring once this many are pending, even before tx_flush.
const TX_BATCH: usize = 64;
/// Upper bound on sendto() kicks per flush: copy-mode sendto sends at most 32 frames per call.
const MAX_KICKS_PER_FLUSH: usize = 64;
// The 4-byte XDP metadata tag the steering program puts in front of a mirrored frame.
use super::abi::MIRROR_META_MAGIC;
/// How often `reap` re-reads the NIC's link state (an ioctl) for `link_up`.
const LINK_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How the NIC is made to accept the VM's MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MacFilter {
    /// Add the VM's MAC to the NIC's unicast filter (promiscuous fallback by the kernel).
    #[default]
    Unicast,
    /// Put the NIC in promiscuous mode.
    Promiscuous,
    /// Leave the NIC alone (veth, or a NIC already promiscuous).
    Untouched,
}

/// How to open an [`XdpBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpConfig {
    /// The bridged NIC (in the calling thread's network namespace).
    pub ifname: String,
    /// The NIC queue to bind (0 on a veth or single-queue NIC).
    pub queue: u32,
    /// The VM's MAC: unicast frames to it go to the VM.
    pub vm_mac: [u8; 6],
    /// The VM's IPv4 address: ARP requests for it go to the VM.
    pub vm_ip: Option<Ipv4Addr>,
    /// IPv6 addresses whose neighbour solicitations go to the VM (the MAC's link-local address is
    /// always added).
    pub vm_ipv6: Vec<Ipv6Addr>,
    /// Native, generic or automatic XDP attach.
    pub mode: XdpMode,
    /// How the NIC accepts the VM's MAC.
    pub mac_filter: MacFilter,
    /// XSK RX ring size (power of two): how many frames wait when the guest stops draining.
    pub rx_ring_size: u32,
    /// TX frames in the UMEM (power of two): how many frames can be in flight.
    pub tx_frames: u32,
    /// The VM's name for filter rules (`to vm NAME`); registered in the pinned `vm_names` map.
    pub vm_name: Option<String>,
    /// Pin the program's maps under `/sys/fs/bpf/lancet/<ifname>/` (and reuse a program that
    /// `lancet nic attach` pinned) so `lancet filter` / `lancet stats` reach them.
    pub pin: bool,
    /// Where the host copy of a mirrored frame goes: a TAP device of this name is created and
    /// the copy written into it (the host stack receives it there). `None`: counted, not copied.
    pub mirror_tap: Option<String>,
}

impl XdpConfig {
    /// Defaults: queue 0, automatic mode, unicast filter, 1024-entry RX ring, 256 TX frames.
    pub fn new(ifname: impl Into<String>, vm_mac: [u8; 6]) -> Self {
        Self {
            ifname: ifname.into(),
            queue: 0,
            vm_mac,
            vm_ip: None,
            vm_ipv6: Vec::new(),
            mode: XdpMode::Auto,
            mac_filter: MacFilter::Unicast,
            rx_ring_size: 1024,
            tx_frames: 256,
            vm_name: None,
            pin: false,
            mirror_tap: None,
        }
    }
}

/// The AF_XDP backend. Drop order: socket, UMEM, steering (detach), MAC membership.
pub struct XdpBackend {
    tx_q: TxQueue,
    /// One RX socket per bound queue (the first one also carries TX).
    rx: Vec<RxSocket>,
    comp_q: CompQueue,
    umem: Umem,
    /// With several queues: an epoll set of every queue's socket (the `poll_fd`).
    rx_epoll: Option<vmm_sys_util::epoll::Epoll>,
    /// The queue `recv_batch` starts with (rotates, so no queue starves the others).
    next_rx: usize,
    /// The VM's steering entries and owner lock; dropped before `steering`.
    registration: Registration,
    steering: Steering,
    _membership: Option<Membership>,
    zero_copy: bool,
    tx_ring_size: u32,
    /// TX frames free for the model.
    tx_free: Vec<FrameDesc>,
    /// The frame lent by the last `tx_buffer`, not yet committed.
    tx_lent: Option<FrameDesc>,
    /// Committed frames not yet in the TX ring.
    tx_pending: Vec<FrameDesc>,
    /// Frames in the TX ring or waiting in the completion ring.
    tx_in_flight: usize,
    scratch: Vec<FrameDesc>,
    counters: BackendStats,
    /// The VM's name as registered in `vm_names` (unregistered on drop).
    vm_name: Option<String>,
    /// Where host copies of mirrored frames go.
    mirror_sink: Option<TapBackend>,
    /// Mirrored frames received / whose host copy could not be written.
    mirror: MirrorStats,
    link: LinkProbe,
    link_up: bool,
    link_checked: Instant,
    /// The VM's veth port when another VM holds the NIC queue (deleted after the socket closes).
    port: Option<VethPort>,
}

impl std::fmt::Debug for XdpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpBackend")
            .field("registration", &self.registration)
            .field("zero_copy", &self.zero_copy)
            .field("mode", &self.steering.mode())
            .finish_non_exhaustive()
    }
}

/// One queue's receive side: its socket's RX ring, the fill ring of its (ifname, queue) pair and
/// the RX frames of its share of the UMEM that are not in the kernel's hands.
struct RxSocket {
    rx_q: RxQueue,
    fill_q: FillQueue,
    /// RX frames not currently owned by the kernel (fill ring refill failed for them).
    spare: Vec<FrameDesc>,
}

impl RxSocket {
    /// Give spare frames back to the kernel through this queue's fill ring (and wake it).
    fn refill(&mut self) {
        if !self.spare.is_empty() {
            // SAFETY: spare frames are owned by us and belong to this backend's UMEM.
            let n = unsafe { self.fill_q.produce(&self.spare) };
            self.spare.drain(..n);
        }
        if self.fill_q.needs_wakeup() {
            let _ = self.fill_q.wakeup(self.rx_q.fd_mut(), 0);
        }
    }
}

/// A UMEM with a socket bound on each of `queues`: the TX ring and completion ring of the first,
/// and every queue's RX socket with its RX frames handed to its fill ring.
struct Bound {
    umem: Umem,
    tx_q: TxQueue,
    comp_q: CompQueue,
    rx: Vec<RxSocket>,
    tx_free: Vec<FrameDesc>,
}

fn queue_size(n: u32, what: &str) -> Result<QueueSize, NetError> {
    QueueSize::new(n)
        .map_err(|_| NetError::InvalidConfig(format!("{what} must be a power of two, got {n}")))
}

/// The `std::io::Error` under an xsk-rs error, for the message.
fn xsk_io_error(e: &dyn std::error::Error) -> std::io::Error {
    e.source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .and_then(|io| io.raw_os_error())
        .map(std::io::Error::from_raw_os_error)
        .unwrap_or_else(|| std::io::Error::other(e.to_string()))
}

/// Create a UMEM of `2 * rx_ring_size` RX frames per queue plus `tx_frames` TX frames and bind a
/// socket to each of `queues` of `ifname` with `bind_flags` (the sockets after the first share the
/// UMEM: XDP_SHARED_UMEM, each with its own fill and completion ring).
fn bind(
    cfg: &XdpConfig,
    ifname: &str,
    queues: &[u32],
    bind_flags: BindFlags,
) -> Result<Bound, NetError> {
    let rx_frames = cfg.rx_ring_size * 2;
    let queue_count = u32::try_from(queues.len())
        .map_err(|_| NetError::InvalidConfig("too many queues".into()))?;
    let frame_count = rx_frames
        .checked_mul(queue_count)
        .and_then(|n| n.checked_add(cfg.tx_frames))
        .and_then(NonZeroU32::new)
        .ok_or_else(|| NetError::InvalidConfig("the UMEM frame count is out of range".into()))?;
    let frame_size: FrameSize = UMEM_FRAME_SIZE
        .try_into()
        .map_err(|e| NetError::InvalidConfig(format!("UMEM frame size: {e}")))?;
    let umem_cfg = UmemConfig::builder()
        .frame_size(frame_size)
        .frame_headroom(0)
        .fill_queue_size(queue_size(rx_frames, "the fill ring size")?)
        .comp_queue_size(queue_size(cfg.tx_frames, "tx_frames")?)
        .build()
        .map_err(|e| NetError::InvalidConfig(format!("UMEM configuration: {e}")))?;
    let (umem, mut frames) = Umem::new(umem_cfg, frame_count, false).map_err(|e| {
        NetError::io(
            format!(
                "creating a {} KiB UMEM (needs CAP_IPC_LOCK or a larger memlock limit above 8 MiB)",
                u64::from(frame_count.get()) * 4
            ),
            xsk_io_error(&e),
        )
    })?;
    let sock_cfg = SocketConfig::builder()
        .rx_queue_size(queue_size(cfg.rx_ring_size, "rx_ring_size")?)
        .tx_queue_size(queue_size(cfg.tx_frames, "tx_frames")?)
        .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
        .bind_flags(bind_flags)
        .build();
    let if_name = ifname.parse().map_err(|_| NetError::InterfaceNotFound {
        ifname: ifname.to_string(),
    })?;
    let tx_free = frames.split_off(rx_frames as usize * queues.len());
    let mut first_tx = None;
    let mut rx = Vec::with_capacity(queues.len());
    for &queue in queues {
        // SAFETY: each (interface, queue) pair is bound once, by this UMEM only (the caller checked
        // no other VM holds the NIC's queues and owns the attached program), and
        // XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD is set as sharing the UMEM requires.
        let (tx_q, rx_q, rings) = unsafe { Socket::new(sock_cfg, &umem, &if_name, queue) }
            .map_err(|e| {
                let source = xsk_io_error(&e);
                let what = if source.raw_os_error() == Some(libc::EBUSY) {
                    format!(
                        "binding an AF_XDP socket to {ifname:?} queue {queue} (another socket is bound to it)"
                    )
                } else {
                    format!("binding an AF_XDP socket to {ifname:?} queue {queue}")
                };
                NetError::io(what, source)
            })?;
        let (mut fill_q, comp_q) = rings.ok_or_else(|| {
            NetError::InvalidConfig(format!(
                "the UMEM returned no fill/completion rings for {ifname:?} queue {queue}"
            ))
        })?;
        let rest = frames.split_off(rx_frames as usize);
        let mut mine = std::mem::replace(&mut frames, rest);
        // SAFETY: these RX frames are owned by nobody yet; they belong to this UMEM.
        let filled = unsafe { fill_q.produce(&mine) };
        let spare = mine.split_off(filled);
        rx.push(RxSocket {
            rx_q,
            fill_q,
            spare,
        });
        // TX goes through the first socket; the others' TX rings stay unused.
        if first_tx.is_none() {
            first_tx = Some((tx_q, comp_q));
        }
    }
    let (tx_q, comp_q) = first_tx
        .ok_or_else(|| NetError::InvalidConfig("no queue to bind an AF_XDP socket to".into()))?;
    Ok(Bound {
        umem,
        tx_q,
        comp_q,
        rx,
        tx_free,
    })
}

/// Check what `XdpBackend::open` can check before touching anything: the MAC, names, MTU and
/// queue numbers. Returns the NIC's RX queue count.
fn check_config(cfg: &XdpConfig) -> Result<u32, NetError> {
    if cfg.vm_mac[0] & 1 != 0 || cfg.vm_mac == [0; 6] {
        return Err(NetError::InvalidConfig(format!(
            "VM MAC {} is not a unicast address",
            crate::frame::MacAddr(cfg.vm_mac)
        )));
    }
    IfName::new(&cfg.ifname)?;
    if let Some(name) = &cfg.vm_name {
        // The `vm_names` key holds 15 bytes: a longer name would be truncated there.
        ValidVmName::new(name)?;
    }
    nic::ifindex(&cfg.ifname)?;
    let mtu = nic::mtu(&cfg.ifname)?;
    if mtu + ETH_OVERHEAD > UMEM_MAX_FRAME {
        return Err(NetError::MtuTooLarge {
            ifname: cfg.ifname.clone(),
            mtu,
            max: UMEM_MAX_FRAME - ETH_OVERHEAD,
            reason: "a 4 KiB UMEM frame holds",
        });
    }
    if cfg.queue >= MAX_VMS {
        return Err(NetError::InvalidConfig(format!(
            "queue {} is above the {MAX_VMS} XSKMAP slots (the slot is the queue number)",
            cfg.queue
        )));
    }
    let nic_queues = nic::rx_queue_count(&cfg.ifname)?;
    if nic_queues > MAX_VMS {
        return Err(NetError::InvalidConfig(format!(
            "{:?} has {nic_queues} RX queues, above the {MAX_VMS} XSKMAP slots (the slot is the \
             queue number): reduce them with `ethtool -L {} combined {MAX_VMS}`",
            cfg.ifname, cfg.ifname
        )));
    }
    Ok(nic_queues)
}

/// A VM's place on the NIC while `XdpBackend::open` builds it (the attach policy): its steering
/// registration (MAC, addresses, slot, owner lock), its veth port when another VM holds the NIC
/// queue, and where its sockets bind. Dropping it releases exactly what it took: the
/// registration removes the entries it inserted, then the port is deleted.
struct Attachment {
    registration: Registration,
    port: Option<VethPort>,
    /// XSKMAP slot (or `ports` index for a port VM).
    slot: u32,
    /// The queue as registered: a NIC queue, [`ALL_QUEUES`] or [`PORT_QUEUE`].
    queue: u32,
    /// The queues the sockets bind to (of the NIC, or queue 0 of the port).
    bind_queues: Vec<u32>,
}

impl Attachment {
    /// Register the VM on `steering` under the pin directory lock: sweep what dead VMs left,
    /// choose the slot (a NIC queue, every queue, or a veth port when another VM holds the
    /// queue), insert the MAC and address entries.
    fn register(steering: &Steering, cfg: &XdpConfig, nic_queues: u32) -> Result<Self, NetError> {
        // Sweeping the dead, choosing a slot and inserting the entries happen under the pin
        // directory lock, so two VMs starting at once never pick the same slot or address.
        let _dir_lock = steering.rules().lock().map_err(filter_to_net)?;
        // Registrations left by VMM processes that were killed (pinned maps outlive them).
        steering.sweep_stale();
        let mut registration = steering.begin_registration(cfg.vm_mac)?;
        let port = Self::port_if_queue_taken(steering, cfg, nic_queues, &registration)?;
        // One socket per queue (one UMEM per queue), so the queue number is the XSKMAP slot; a
        // port VM's slot is its `ports` index; a VM holding every queue of a multi-queue NIC has
        // a socket at each queue's slot (the program picks the slot of the arrival queue).
        let ((slot, queue), bind_queues) = match &port {
            Some((slot, _)) => ((*slot, PORT_QUEUE), vec![0]),
            None if nic_queues > 1 => ((0, ALL_QUEUES), (0..nic_queues).collect()),
            None => ((cfg.queue, cfg.queue), vec![cfg.queue]),
        };
        registration.claim(slot, queue)?;
        let mut attachment = Self {
            registration,
            port: port.map(|(_, p)| p),
            slot,
            queue,
            bind_queues,
        };
        attachment.add_addresses(cfg)?;
        Ok(attachment)
    }

    /// The veth port (and its `ports` index) this VM needs when the queue's one UMEM slot is
    /// another VM's. On a multi-queue NIC the first VM holds every queue, so any VM on the NIC's
    /// queues means a port.
    fn port_if_queue_taken(
        steering: &Steering,
        cfg: &XdpConfig,
        nic_queues: u32,
        registration: &Registration,
    ) -> Result<Option<(u32, VethPort)>, NetError> {
        let live = steering.live_owners();
        let on_nic_queues = |q: u32| q == ALL_QUEUES || q < MAX_VMS;
        if !live
            .iter()
            .any(|v| v.queue == cfg.queue || (on_nic_queues(v.queue) && nic_queues > 1))
        {
            return Ok(None);
        }
        let used: Vec<u32> = live
            .iter()
            .filter(|v| v.queue == PORT_QUEUE)
            .map(|v| v.slot)
            .collect();
        let slot = (0..MAX_VMS).find(|s| !used.contains(s)).ok_or_else(|| {
            NetError::InvalidConfig(format!(
                "{:?} already serves {MAX_VMS} VMs through veth ports",
                cfg.ifname
            ))
        })?;
        let port = VethPort::create(&cfg.ifname, slot, registration.token())?;
        Ok(Some((slot, port)))
    }

    /// Steer the ARP requests and neighbour solicitations for the VM's addresses (the MAC's
    /// link-local IPv6 address always) to it.
    fn add_addresses(&mut self, cfg: &XdpConfig) -> Result<(), NetError> {
        if let Some(ip) = cfg.vm_ip {
            self.registration.add_ip_locked(ip.into())?;
        }
        let link_local = link_local_from_mac(cfg.vm_mac);
        self.registration.add_ip_locked(link_local.into())?;
        for ip in cfg.vm_ipv6.iter().copied().filter(|a| *a != link_local) {
            self.registration.add_ip_locked(ip.into())?;
        }
        Ok(())
    }

    /// Bind the sockets where this attachment says: zero-copy when the NIC is in native mode and
    /// takes it, copy mode otherwise (generic mode, or a veth port, which refuses zero-copy).
    fn bind(&self, cfg: &XdpConfig, mode: XdpMode) -> Result<(bool, Bound), NetError> {
        let ifname = match &self.port {
            Some(p) => p.port_ifname(),
            None => &cfg.ifname,
        };
        let need_wakeup = BindFlags::XDP_USE_NEED_WAKEUP;
        let copy = || {
            bind(
                cfg,
                ifname,
                &self.bind_queues,
                BindFlags::XDP_COPY | need_wakeup,
            )
            .map(|b| (false, b))
        };
        if mode == XdpMode::Generic || self.port.is_some() {
            return copy();
        }
        match bind(
            cfg,
            ifname,
            &self.bind_queues,
            BindFlags::XDP_ZEROCOPY | need_wakeup,
        ) {
            Ok(b) => Ok((true, b)),
            Err(_) => copy(),
        }
    }

    /// Put the bound sockets where the program redirects to: the port's XSKMAP (and the port in
    /// `ports`), every queue's slot, or the queue's slot.
    fn hand_over_sockets(&mut self, rx: &[RxSocket]) -> Result<(), NetError> {
        let fd = |i: usize| -> Result<RawFd, NetError> {
            rx.get(i)
                .map(|r| r.rx_q.fd().as_raw_fd())
                .ok_or_else(|| NetError::InvalidConfig("no socket was bound".into()))
        };
        match (&self.port, self.queue) {
            (Some(p), _) => {
                p.set_socket(fd(0)?)?;
                self.registration.set_port(p.peer_ifindex())?;
            }
            (None, ALL_QUEUES) => {
                for (i, q) in self.bind_queues.iter().enumerate() {
                    self.registration.set_queue_socket(*q, fd(i)?)?;
                }
            }
            (None, _) => self.registration.set_socket(fd(0)?)?,
        }
        Ok(())
    }

    /// Register the VM's name for filter rules (`to vm NAME`), if it has one.
    fn register_name(&self, steering: &Steering, cfg: &XdpConfig) -> Result<(), NetError> {
        let Some(name) = &cfg.vm_name else {
            return Ok(());
        };
        let vm = VmName {
            name: name.clone(),
            slot: self.slot,
            queue: self.queue,
            pid: self.registration.token(),
            mac: cfg.vm_mac,
        };
        steering.rules().register_vm(&vm).map_err(filter_to_net)
    }
}

/// What the VM's MAC needs on the NIC's side of the host: the NIC accepting it (unicast filter
/// or promiscuous), and the TAP the host copies of mirrored frames go to.
struct LocalLink {
    membership: Option<Membership>,
    mirror_sink: Option<TapBackend>,
}

impl LocalLink {
    fn open(cfg: &XdpConfig) -> Result<Self, NetError> {
        let mirror_sink = match &cfg.mirror_tap {
            Some(name) => Some(TapBackend::open(&TapConfig::new(name.clone(), None))?),
            None => None,
        };
        let membership = match cfg.mac_filter {
            MacFilter::Unicast => Some(Membership::add(
                &cfg.ifname,
                MembershipKind::Unicast(cfg.vm_mac),
            )?),
            MacFilter::Promiscuous => {
                Some(Membership::add(&cfg.ifname, MembershipKind::Promiscuous)?)
            }
            MacFilter::Untouched => None,
        };
        Ok(Self {
            membership,
            mirror_sink,
        })
    }
}

/// A rule-map error as a backend error.
fn filter_to_net(e: super::rulemaps::FilterError) -> NetError {
    match e {
        super::rulemaps::FilterError::Net(n) => n,
        other => NetError::InvalidConfig(other.to_string()),
    }
}

impl XdpBackend {
    /// Attach the steering program to `cfg.ifname`, bind an AF_XDP socket to `cfg.queue` and make
    /// the NIC accept `cfg.vm_mac`. Must run in the NIC's network namespace; the backend keeps
    /// working from any thread afterwards.
    pub fn open(cfg: &XdpConfig) -> Result<Self, NetError> {
        let nic_queues = check_config(cfg)?;
        let link = LinkProbe::new(&cfg.ifname)?;
        let steering = if cfg.pin {
            Steering::attach_pinned(&cfg.ifname, cfg.mode)?
        } else {
            Steering::attach(&cfg.ifname, cfg.mode)?
        };
        // Every step below returns a guard: an error drops what the earlier steps took, in
        // reverse order (the attachment removes exactly the entries it inserted and its port).
        let mut attachment = Attachment::register(&steering, cfg, nic_queues)?;
        let (zero_copy, bound) = attachment.bind(cfg, steering.mode())?;
        attachment.hand_over_sockets(&bound.rx)?;
        let rx_epoll = if bound.rx.len() > 1 {
            let fds: Vec<RawFd> = bound.rx.iter().map(|r| r.rx_q.fd().as_raw_fd()).collect();
            Some(super::epoll_set(&fds)?)
        } else {
            None
        };
        let local = LocalLink::open(cfg)?;
        // Last: the name (`XdpBackend::drop` unregisters it; nothing after this can fail).
        attachment.register_name(&steering, cfg)?;
        tracing::info!(ifname = %cfg.ifname, queues = ?attachment.bind_queues, zero_copy, mode = ?steering.mode(), "AF_XDP backend open");
        let Bound {
            umem,
            tx_q,
            comp_q,
            rx,
            tx_free,
        } = bound;
        let Attachment {
            registration, port, ..
        } = attachment;
        Ok(Self {
            tx_q,
            rx,
            comp_q,
            umem,
            rx_epoll,
            next_rx: 0,
            steering,
            _membership: local.membership,
            registration,
            zero_copy,
            tx_ring_size: cfg.tx_frames,
            tx_free,
            tx_lent: None,
            tx_pending: Vec::with_capacity(TX_BATCH),
            tx_in_flight: 0,
            scratch: vec![FrameDesc::default(); RX_BATCH],
            counters: BackendStats::default(),
            vm_name: cfg.vm_name.clone(),
            mirror_sink: local.mirror_sink,
            mirror: MirrorStats::default(),
            link_up: link.is_up(),
            link,
            link_checked: Instant::now(),
            port,
        })
    }

    /// Steer ARP requests / neighbour solicitations for `ip` (an address the guest started to
    /// use) to this VM. Refused with [`NetError::AddressInUse`] when a live VM owns it.
    pub fn steer_address(&mut self, ip: std::net::IpAddr) -> Result<(), NetError> {
        self.registration.add_ip(ip)
    }

    /// Stop steering `ip` to this VM (the guest stopped using it).
    pub fn unsteer_address(&mut self, ip: std::net::IpAddr) {
        self.registration.remove_ip(ip);
    }

    /// This VM's owner token ([`super::owner`]): names its ports and taps, proves it alive.
    pub fn owner_token(&self) -> u32 {
        self.registration.token()
    }

    /// Whether the socket is bound in zero-copy mode (false: copy mode).
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// The mode the steering program is attached in.
    pub fn xdp_mode(&self) -> XdpMode {
        self.steering.mode()
    }

    /// The steering program of this backend.
    pub fn steering(&self) -> &Steering {
        &self.steering
    }

    /// The steering program, mutable (e.g. to pin its link).
    pub fn steering_mut(&mut self) -> &mut Steering {
        &mut self.steering
    }

    /// The veth port this VM is served through, when it shares the NIC queue with another VM.
    pub fn port(&self) -> Option<&VethPort> {
        self.port.as_ref()
    }

    /// Mirror counters.
    pub fn mirror_stats(&self) -> MirrorStats {
        self.mirror
    }

    /// Take back the buffer the last `tx_buffer` lent without sending it (the frame went another
    /// way, e.g. the local bridge: [`super::local::LocalLink`]).
    pub fn tx_cancel(&mut self) {
        if let Some(desc) = self.tx_lent.take() {
            self.tx_free.push(desc);
        }
    }

    /// Hand the host copy of a mirrored frame to the mirror device.
    fn mirror_to_host(&mut self, frame: &[u8]) {
        self.mirror.frames += 1;
        let Some(sink) = self.mirror_sink.as_mut() else {
            self.mirror.host_copy_drops += 1;
            return;
        };
        match sink.tx_buffer() {
            Some(buf) if buf.len() >= frame.len() => {
                buf[..frame.len()].copy_from_slice(frame);
                sink.tx_commit(frame.len());
                self.mirror.host_copies += 1;
            }
            _ => self.mirror.host_copy_drops += 1,
        }
    }

    /// Move completed TX frames back to the free list.
    fn reap_completions(&mut self) {
        while self.tx_in_flight > 0 {
            let want = self.tx_in_flight.min(self.scratch.len());
            // SAFETY: completed frames are returned by the kernel and belong to this UMEM.
            let n = unsafe { self.comp_q.consume(&mut self.scratch[..want]) };
            if n == 0 {
                break;
            }
            self.tx_free.extend_from_slice(&self.scratch[..n]);
            self.tx_in_flight -= n;
        }
    }

    /// Frames in the TX ring the kernel has not consumed yet.
    fn tx_ring_backlog(&mut self) -> u32 {
        self.tx_ring_size.saturating_sub(self.tx_q.nb_free_exact())
    }

    /// Kick the kernel until the TX ring is consumed (copy mode sends only inside sendto, at most
    /// 32 frames per call) or it stops making progress.
    fn kick(&mut self) {
        for _ in 0..MAX_KICKS_PER_FLUSH {
            let before = self.tx_ring_backlog();
            if before == 0 || (self.zero_copy && !self.tx_q.needs_wakeup()) {
                return;
            }
            if let Err(e) = self.tx_q.wakeup() {
                tracing::warn!(error = %e, "AF_XDP TX kick failed");
                return;
            }
            if self.tx_ring_backlog() >= before {
                // No progress (e.g. the completion ring is full): reap and try again later.
                self.reap_completions();
                return;
            }
        }
    }

    /// Push pending frames to the TX ring and kick.
    fn push_pending(&mut self) {
        if !self.tx_pending.is_empty() {
            // SAFETY: pending frames are owned by us (not in any ring) and belong to this UMEM.
            let n = unsafe { self.tx_q.produce(&self.tx_pending) };
            self.tx_in_flight += n;
            self.tx_pending.drain(..n);
        }
        self.kick();
    }

    /// Give RX frames back to the kernel through every queue's fill ring.
    fn refill(&mut self) {
        for sock in &mut self.rx {
            sock.refill();
        }
    }
}

impl FrameTx for XdpBackend {
    /// The NIC's carrier (refreshed by `reap`): the model reports LCAR while it is down.
    fn link_up(&self) -> bool {
        self.link_up
    }

    fn tx_buffer(&mut self) -> Option<&mut [u8]> {
        if self.tx_lent.is_none() {
            if self.tx_free.is_empty() {
                self.reap_completions();
            }
            if self.tx_free.is_empty() {
                self.push_pending();
                self.reap_completions();
            }
            match self.tx_free.pop() {
                Some(desc) => self.tx_lent = Some(desc),
                None => {
                    self.counters.tx_busy += 1;
                    return None;
                }
            }
        }
        let desc = self.tx_lent.as_mut()?;
        // SAFETY: the lent frame is owned by us (in no ring) and belongs to this UMEM.
        let mut data = unsafe { self.umem.data_mut(desc) };
        let mut cursor = data.cursor();
        let capacity = cursor.buf_len();
        cursor.set_pos(capacity);
        let buf = data.contents_mut();
        let (ptr, len) = (buf.as_mut_ptr(), buf.len());
        // SAFETY: the slice covers the data area of a UMEM frame that only this backend can reach
        // until tx_commit; the UMEM mapping lives as long as `self`, and the returned borrow of
        // `self` prevents any other access meanwhile.
        Some(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
    }

    fn tx_commit(&mut self, len: usize) {
        let Some(mut desc) = self.tx_lent.take() else {
            return;
        };
        // SAFETY: the lent frame is owned by us and belongs to this UMEM.
        let mut data = unsafe { self.umem.data_mut(&mut desc) };
        let mut cursor = data.cursor();
        if len == 0 || len > cursor.buf_len() || len > MAX_FRAME_LEN {
            self.counters.drops.tx_oversize += 1;
            self.tx_free.push(desc);
            return;
        }
        cursor.set_pos(len);
        self.counters.tx_frames += 1;
        self.counters.tx_bytes += len as u64;
        self.tx_pending.push(desc);
        if self.tx_pending.len() >= TX_BATCH {
            self.push_pending();
        }
    }

    fn tx_flush(&mut self) {
        self.push_pending();
    }
}

impl Backend for XdpBackend {
    fn kind(&self) -> &'static str {
        "xdp"
    }

    fn poll_fd(&self) -> RawFd {
        match &self.rx_epoll {
            Some(epoll) => epoll.as_raw_fd(),
            None => self.rx[0].rx_q.fd().as_raw_fd(),
        }
    }

    fn recv_batch(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, NetError> {
        let mut delivered = 0;
        let mut mirrored: Vec<Vec<u8>> = Vec::new();
        let queues = self.rx.len();
        let start = self.next_rx;
        self.next_rx = (start + 1) % queues;
        for i in 0..queues {
            let sock = &mut self.rx[(start + i) % queues];
            while delivered < max {
                let want = (max - delivered).min(self.scratch.len());
                // SAFETY: received frames belong to this UMEM; they go back to this queue's fill
                // ring below.
                let n = unsafe { sock.rx_q.consume(&mut self.scratch[..want]) };
                if n == 0 {
                    break;
                }
                for desc in &self.scratch[..n] {
                    let len = desc.lengths().data();
                    if len > MAX_FRAME_LEN {
                        self.counters.drops.rx_oversize += 1;
                        continue;
                    }
                    // SAFETY: the frame was just received into this UMEM and is owned by us until
                    // refilled.
                    let data = unsafe { self.umem.data(desc) };
                    let frame = data.contents();
                    deliver(frame);
                    if mirror_tag(desc, frame) == Some(MIRROR_META_MAGIC) {
                        mirrored.push(frame.to_vec());
                    }
                    self.counters.rx_frames += 1;
                    self.counters.rx_bytes += len as u64;
                    delivered += 1;
                }
                sock.spare.extend_from_slice(&self.scratch[..n]);
                sock.refill();
            }
        }
        if !mirrored.is_empty() {
            for frame in &mirrored {
                self.mirror_to_host(frame);
            }
            if let Some(sink) = self.mirror_sink.as_mut() {
                sink.tx_flush();
            }
        }
        Ok(delivered)
    }

    fn reap(&mut self) {
        if self.link_checked.elapsed() >= LINK_POLL_INTERVAL {
            self.link_up = self.link.is_up();
            self.link_checked = Instant::now();
        }
        self.reap_completions();
        if !self.tx_pending.is_empty() || self.tx_in_flight > 0 {
            self.push_pending();
        }
        self.refill();
    }

    /// Reads each queue's RX ring producer index (shared memory): no system call.
    fn rx_pending(&mut self) -> Option<bool> {
        Some(self.rx.iter_mut().any(|sock| sock.rx_q.nb_avail(1) > 0))
    }

    fn stats(&self) -> BackendStats {
        let mut stats = self.counters;
        for sock in &self.rx {
            if let Ok(x) = sock.rx_q.fd().xdp_statistics() {
                stats.drops.rx_ring_full += x.rx_ring_full();
                stats.drops.rx_fill_ring_empty += x.rx_fill_ring_empty_descs();
                stats.drops.rx_invalid += x.rx_invalid_descs();
                stats.drops.rx_kernel_other += x.rx_dropped();
                stats.drops.tx_invalid += x.tx_invalid_descs();
            }
        }
        if let Some(port) = &self.port {
            // The veth port's programs drop only when the socket or the NIC is missing.
            let lost = port.drops();
            stats.drops.rx_kernel_other += lost.rx_no_socket;
            stats.drops.tx_error += lost.tx_no_nic;
        }
        stats.steer = self.steering.counters();
        stats
    }
}

impl Drop for XdpBackend {
    fn drop(&mut self) {
        if let Some(name) = &self.vm_name {
            if let Err(e) = self
                .steering
                .rules()
                .unregister_vm(name, self.registration.token())
            {
                tracing::warn!(error = %e, "unregistering the VM name");
            }
        }
        // `registration` (a field declared before `steering`) removes the VM's entries.
    }
}

/// The 4-byte XDP metadata word in front of a received frame, if the frame has that much headroom
/// in its UMEM frame (the steering program writes [`MIRROR_META_MAGIC`] there for mirrored frames;
/// copy mode copies the metadata with the frame).
fn mirror_tag(desc: &FrameDesc, frame: &[u8]) -> Option<u32> {
    let offset_in_frame = desc.addr() % UMEM_FRAME_SIZE as usize;
    if offset_in_frame < 4 || frame.is_empty() {
        return None;
    }
    let mut word = [0u8; 4];
    // SAFETY: `frame` starts `offset_in_frame` (>= 4) bytes into a UMEM frame, so the 4 bytes
    // before it are inside the same frame of the UMEM mapping, owned by us until refilled.
    unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr().sub(4), word.as_mut_ptr(), 4) };
    Some(u32::from_ne_bytes(word))
}
