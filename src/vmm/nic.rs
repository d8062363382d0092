//! What the machine needs from its network device and from the backend behind it, as two small
//! traits ([`NicModel`], [`NetPort`]), and the state they share between the vCPU and I/O threads
//! ([`NetShared`]). The Lance model and the AF_XDP/TAP backends implement them (see `adapters`);
//! tests plug in fakes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::frame::FrameTx;

use super::error::{os_err, Result};

/// Size of the register window decoded in BAR0 (I/O) and BAR1 (MMIO).
pub const NIC_REGISTER_WINDOW: u64 = 0x20;

/// What a register write asks the machine to do next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NicEffect {
    /// The guest set TDMD (or started the transmitter): walk the TX ring now.
    pub tx_demand: bool,
    /// The guest handed RX descriptors back or restarted the receiver: retry pending RX frames.
    pub rx_kick: bool,
}

/// What one TX ring walk did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxOutcome {
    /// Frames handed to the backend.
    pub frames: usize,
    /// The backend had no buffer: frames are still queued in the ring, retry after `reap`.
    pub blocked: bool,
}

/// The PCI network function as the machine drives it (implemented by the Lance model).
pub trait NicModel: Send {
    /// Config-space read at `offset` (any width 1/2/4).
    fn pci_config_read(&self, offset: usize, data: &mut [u8]);
    /// Config-space write at `offset` (any width 1/2/4).
    fn pci_config_write(&mut self, offset: usize, data: &[u8]);
    /// Current I/O BAR base when I/O decoding is enabled.
    fn io_bar(&self) -> Option<u16>;
    /// Current MMIO BAR base when memory decoding is enabled.
    fn mmio_bar(&self) -> Option<u64>;
    /// Register read at `offset` inside the BAR window.
    fn read_reg(&mut self, mem: &GuestMemoryMmap, offset: u64, data: &mut [u8]);
    /// Register write at `offset` inside the BAR window.
    fn write_reg(&mut self, mem: &GuestMemoryMmap, offset: u64, data: &[u8]) -> NicEffect;
    /// Walks the TX ring and sends what the guest queued.
    fn transmit(&mut self, mem: &GuestMemoryMmap, tx: &mut dyn FrameTx) -> TxOutcome;
    /// Whether the chip polls its TX ring on its own (TXON and not DPOLL).
    fn tx_polling(&self) -> bool;
    /// Frames the guest's RX ring can take now.
    fn rx_room(&self, mem: &GuestMemoryMmap) -> usize;
    /// [`NicModel::rx_room`] counted no further than `limit` (cheaper on a long ring).
    fn rx_room_up_to(&self, mem: &GuestMemoryMmap, limit: usize) -> usize {
        self.rx_room(mem).min(limit)
    }
    /// Delivers one received frame into the RX ring.
    fn receive(&mut self, mem: &GuestMemoryMmap, frame: &[u8]);
    /// Counters for `--stats-json` (frames, bytes, drops by reason).
    fn stats_json(&self) -> serde_json::Value;
    /// Frames the chip moved (TX + RX), for exits-per-frame.
    fn frames_moved(&self) -> u64;
    /// Carrier as the guest sees it (the link status the driver reads).
    fn set_link(&mut self, _up: bool) {}
}

/// The host side of the wire as the machine drives it (implemented by the AF_XDP and TAP backends).
pub trait NetPort: Send {
    /// "xdp" | "tap" (or a test backend's name).
    fn kind(&self) -> &'static str;
    /// Readable when RX frames are pending.
    fn poll_fd(&self) -> std::os::fd::RawFd;
    /// Hands up to `max` received frames to `deliver`, oldest first; the rest stay queued.
    fn recv_batch(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> std::result::Result<usize, String>;
    /// TX completions, fill-ring refill.
    fn reap(&mut self);
    /// The transmit half, for [`NicModel::transmit`].
    fn frame_tx(&mut self) -> &mut dyn FrameTx;
    /// Counters for `--stats-json`.
    fn stats_json(&self) -> serde_json::Value;
    /// Whether RX frames are waiting, if the port can tell without a system call (see
    /// `net::Backend::rx_pending`); `None`: ask `poll_fd`.
    fn rx_pending(&mut self) -> Option<bool> {
        None
    }
}

/// The NIC and its backend, locked together: every guest register access, TX ring walk and RX
/// batch holds this one lock for its duration (see the locking notes in `vmm/mod.rs`).
pub struct NetState {
    pub nic: Box<dyn NicModel>,
    pub backend: Option<Box<dyn NetPort>>,
    /// The last TX walk stopped for lack of backend buffers: the I/O thread retries.
    pub tx_blocked: bool,
    /// The backend is gone (its fd reported an error or hang-up, e.g. the TAP device was deleted):
    /// carrier lost for good, TX frames are handed back with LCAR and counted by the model.
    pub backend_lost: bool,
}

impl NetState {
    /// Reaps TX completions and walks the TX ring into the backend. Returns frames sent.
    pub fn transmit(&mut self, mem: &GuestMemoryMmap) -> usize {
        if let Some(backend) = self.backend.as_mut().filter(|_| !self.backend_lost) {
            backend.reap();
        }
        self.walk_tx(mem)
    }

    /// Walks the TX ring into the backend without reaping first (the I/O thread reaps on its own
    /// schedule; the backends reap by themselves when out of TX buffers). Returns frames sent.
    pub fn walk_tx(&mut self, mem: &GuestMemoryMmap) -> usize {
        let outcome = match self.backend.as_mut().filter(|_| !self.backend_lost) {
            Some(backend) => self.nic.transmit(mem, backend.frame_tx()),
            None => self.nic.transmit(mem, &mut Unplugged),
        };
        self.tx_blocked = outcome.blocked;
        outcome.frames
    }
    /// Takes the link down for good after the backend failed: the model shows no carrier and
    /// further TX is dropped as LCAR (counted by the model), nothing more is read from the backend.
    pub fn lose_backend(&mut self) {
        self.backend_lost = true;
        self.tx_blocked = false;
        self.nic.set_link(false);
    }
}

/// The wire when no backend is attached: carrier lost, nothing is sent.
struct Unplugged;

impl FrameTx for Unplugged {
    fn link_up(&self) -> bool {
        false
    }
    fn tx_buffer(&mut self) -> Option<&mut [u8]> {
        None
    }
    fn tx_commit(&mut self, _len: usize) {}
}

/// Shared between the vCPU threads (register accesses) and the I/O thread (backend I/O).
pub struct NetShared {
    state: Mutex<NetState>,
    /// Threads blocked in [`NetShared::lock`] right now (a spinning I/O thread lets them in first).
    waiters: AtomicU32,
    /// Signalled by a vCPU when a register write asks for TX or RX work.
    pub kick: EventFd,
    /// Transmit on the vCPU thread at TDMD (true) or hand TX to the I/O thread (false).
    pub tx_inline: bool,
}

impl NetShared {
    pub fn new(
        nic: Box<dyn NicModel>,
        backend: Option<Box<dyn NetPort>>,
        tx_inline: bool,
    ) -> Result<Self> {
        Ok(Self {
            state: Mutex::new(NetState {
                nic,
                backend,
                tx_blocked: false,
                backend_lost: false,
            }),
            waiters: AtomicU32::new(0),
            kick: EventFd::new(EFD_NONBLOCK).map_err(os_err("the NIC kick eventfd"))?,
            tx_inline,
        })
    }

    /// Locks the NIC and backend. A poisoned lock (a thread panicked while holding it) is taken over:
    /// the model's own invariants do not depend on the panicking thread.
    pub fn lock(&self) -> MutexGuard<'_, NetState> {
        match self.state.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                self.waiters.fetch_add(1, Ordering::SeqCst);
                let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
                self.waiters.fetch_sub(1, Ordering::SeqCst);
                guard
            }
        }
    }

    /// Whether another thread is blocked waiting for [`NetShared::lock`] (a thread that takes the
    /// lock in a tight loop checks this first, so it does not starve a vCPU's register access).
    pub fn contended(&self) -> bool {
        self.waiters.load(Ordering::SeqCst) > 0
    }

    /// Wakes the I/O thread.
    pub fn kick_io(&self) {
        // An eventfd write only fails on counter overflow, which still leaves it readable.
        let _ = self.kick.write(1);
    }
}

/// The Lance model as the machine's NIC.
impl<I: crate::lance::IrqLine + Send> NicModel for crate::lance::Lance<I> {
    fn pci_config_read(&self, offset: usize, data: &mut [u8]) {
        crate::lance::Lance::pci_config_read(self, offset, data)
    }
    fn pci_config_write(&mut self, offset: usize, data: &[u8]) {
        crate::lance::Lance::pci_config_write(self, offset, data)
    }
    fn io_bar(&self) -> Option<u16> {
        crate::lance::Lance::io_bar(self)
    }
    fn mmio_bar(&self) -> Option<u64> {
        crate::lance::Lance::mmio_bar(self)
    }
    fn read_reg(&mut self, mem: &GuestMemoryMmap, offset: u64, data: &mut [u8]) {
        self.read(mem, offset, data)
    }
    fn write_reg(&mut self, mem: &GuestMemoryMmap, offset: u64, data: &[u8]) -> NicEffect {
        let effect = self.write(mem, offset, data);
        NicEffect {
            tx_demand: effect.tx_demand,
            rx_kick: effect.rx_kick,
        }
    }
    fn transmit(&mut self, mem: &GuestMemoryMmap, tx: &mut dyn FrameTx) -> TxOutcome {
        let report = crate::lance::Lance::transmit(self, mem, tx);
        TxOutcome {
            frames: report.frames as usize,
            blocked: report.blocked,
        }
    }
    fn tx_polling(&self) -> bool {
        crate::lance::Lance::tx_polling(self)
    }
    fn rx_room(&self, mem: &GuestMemoryMmap) -> usize {
        crate::lance::Lance::rx_room(self, mem)
    }
    fn rx_room_up_to(&self, mem: &GuestMemoryMmap, limit: usize) -> usize {
        crate::lance::Lance::rx_room_up_to(self, mem, limit)
    }
    fn receive(&mut self, mem: &GuestMemoryMmap, frame: &[u8]) {
        // Every outcome other than Delivered is counted in the model's stats.
        let _ = crate::lance::Lance::receive(self, mem, frame);
    }
    fn stats_json(&self) -> serde_json::Value {
        serde_json::to_value(self.stats()).unwrap_or_default()
    }
    fn frames_moved(&self) -> u64 {
        let s = self.stats();
        s.tx_frames + s.rx_frames
    }
    fn set_link(&mut self, up: bool) {
        crate::lance::Lance::set_link(self, up)
    }
}

/// A backend of `crate::net` (as `net::open_backend` returns it) as the machine's port.
pub struct BackendPort(pub Box<dyn crate::net::Backend>);

impl FrameTx for BackendPort {
    fn link_up(&self) -> bool {
        self.0.link_up()
    }
    fn tx_buffer(&mut self) -> Option<&mut [u8]> {
        self.0.tx_buffer()
    }
    fn tx_commit(&mut self, len: usize) {
        self.0.tx_commit(len)
    }
    fn tx_flush(&mut self) {
        self.0.tx_flush()
    }
}

impl NetPort for BackendPort {
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
    fn poll_fd(&self) -> std::os::fd::RawFd {
        self.0.poll_fd()
    }
    fn recv_batch(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> std::result::Result<usize, String> {
        self.0.recv_batch(max, deliver).map_err(|e| e.to_string())
    }
    fn reap(&mut self) {
        self.0.reap()
    }
    fn rx_pending(&mut self) -> Option<bool> {
        self.0.rx_pending()
    }
    fn frame_tx(&mut self) -> &mut dyn FrameTx {
        self
    }
    fn stats_json(&self) -> serde_json::Value {
        let mut json = serde_json::to_value(self.0.stats()).unwrap_or_default();
        if let (Some(local), Some(map)) = (self.0.local_stats(), json.as_object_mut()) {
            map.insert(
                "local".into(),
                serde_json::to_value(local).unwrap_or_default(),
            );
        }
        json
    }
}
