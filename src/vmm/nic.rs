//! What the machine needs from its network device ([`NicModel`], implemented by the Lance model
//! below; tests plug in fakes), and the state the NIC shares with its backend (the one backend
//! contract, [`crate::net::Backend`]) between the vCPU and I/O threads ([`NetShared`]).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::frame::FrameTx;
use crate::lance::{LanceStats, RegEffect, TxReport};
use crate::net::Backend;

use super::error::{os_err, Result};

/// Size of the register window decoded in BAR0 (I/O) and BAR1 (MMIO).
pub const NIC_REGISTER_WINDOW: u64 = 0x20;

/// The PCI network function as the machine drives it (implemented by the Lance model; tests plug
/// in fakes). Results and counters are the model's own types.
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
    /// Register write at `offset` inside the BAR window; says what the machine should do next.
    fn write_reg(&mut self, mem: &GuestMemoryMmap, offset: u64, data: &[u8]) -> RegEffect;
    /// Walks the TX ring and sends what the guest queued.
    fn transmit(&mut self, mem: &GuestMemoryMmap, tx: &mut dyn FrameTx) -> TxReport;
    /// Whether the chip polls its TX ring on its own (TXON and not DPOLL).
    fn tx_polling(&self) -> bool;
    /// Frames the guest's RX ring can take now.
    fn rx_room(&self, mem: &GuestMemoryMmap) -> usize;
    /// [`NicModel::rx_room`] counted no further than `limit` (cheaper on a long ring).
    fn rx_room_up_to(&self, mem: &GuestMemoryMmap, limit: usize) -> usize {
        self.rx_room(mem).min(limit)
    }
    /// Delivers one received frame into the RX ring (every outcome is counted in the stats).
    fn receive(&mut self, mem: &GuestMemoryMmap, frame: &[u8]);
    /// Counters for `--stats-json` (frames, bytes, drops by reason).
    fn stats(&self) -> LanceStats;
    /// Frames the chip moved (TX + RX), for exits-per-frame.
    fn frames_moved(&self) -> u64 {
        let s = self.stats();
        s.tx_frames + s.rx_frames
    }
    /// Carrier as the guest sees it (the link status the driver reads).
    fn set_link(&mut self, _up: bool) {}
}

/// The NIC and its backend, locked together: every guest register access, TX ring walk and RX
/// batch holds this one lock for its duration (see the locking notes in `vmm/mod.rs`).
pub struct NetState {
    pub nic: Box<dyn NicModel>,
    pub backend: Option<Box<dyn Backend>>,
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
        let report = match self.backend.as_mut().filter(|_| !self.backend_lost) {
            Some(backend) => self.nic.transmit(mem, backend),
            None => self.nic.transmit(mem, &mut Unplugged),
        };
        self.tx_blocked = report.blocked;
        report.frames as usize
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
        backend: Option<Box<dyn Backend>>,
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
    fn write_reg(&mut self, mem: &GuestMemoryMmap, offset: u64, data: &[u8]) -> RegEffect {
        self.write(mem, offset, data)
    }
    fn transmit(&mut self, mem: &GuestMemoryMmap, tx: &mut dyn FrameTx) -> TxReport {
        crate::lance::Lance::transmit(self, mem, tx)
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
    fn stats(&self) -> LanceStats {
        crate::lance::Lance::stats(self).clone()
    }
    fn set_link(&mut self, up: bool) {
        crate::lance::Lance::set_link(self, up)
    }
}
