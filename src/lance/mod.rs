//! The AMD Am79C970A (PCnet-PCI II, "Lance") device model: PCI function, register file, init block,
//! descriptor rings, address filter and interrupt line. Pure: no syscalls, no threads.
//!
//! INTERFACE CONTRACT (other modules are written against it; keep these names and signatures):
//!
//! ```ignore
//! pub struct Lance<I: IrqLine> { .. }
//! impl<I: IrqLine> Lance<I> {
//!     pub fn new(mac: [u8; 6], irq: I) -> Self;
//!     // PCI function (config space: 256 bytes, little endian, any access width 1/2/4)
//!     pub fn pci_config_read(&self, offset: usize, data: &mut [u8]);
//!     pub fn pci_config_write(&mut self, offset: usize, data: &[u8]);
//!     pub fn io_bar(&self) -> Option<u16>;   // BAR0 base when I/O decoding is enabled
//!     pub fn mmio_bar(&self) -> Option<u64>; // BAR1 base when memory decoding is enabled
//!     pub fn interrupt_line(&self) -> u8;    // PCI Interrupt Line register (as written by the guest)
//!     // Registers: `offset` is relative to BAR0 or BAR1 (both decode the same 0x20 bytes).
//!     pub fn read<M: GuestMemory + ?Sized>(&mut self, mem: &M, offset: u64, data: &mut [u8]);
//!     pub fn write<M: GuestMemory + ?Sized>(&mut self, mem: &M, offset: u64, data: &[u8]) -> RegEffect;
//!     // TX: walk owned descriptors from the current position (bounded by the ring length),
//!     // assemble STP..ENP chains straight into the backend's buffer, write status back.
//!     // Called by the VMM after RegEffect::tx_demand, and periodically when tx_polling() is true.
//!     pub fn transmit<M: GuestMemory + ?Sized, T: FrameTx + ?Sized>(&mut self, mem: &M, tx: &mut T) -> TxReport;
//!     pub fn tx_polling(&self) -> bool;      // TXON and not CSR4 DPOLL (and not stopped/suspended)
//!     // RX: how many frames the guest ring can take now (owned descriptors from the current
//!     // position, 0 when not running), so a backend can leave the rest queued.
//!     pub fn rx_room<M: GuestMemory + ?Sized>(&self, mem: &M) -> usize;
//!     pub fn rx_room_up_to<M: GuestMemory + ?Sized>(&self, mem: &M, limit: usize) -> usize;
//!     pub fn receive<M: GuestMemory + ?Sized>(&mut self, mem: &M, frame: &[u8]) -> RxOutcome;
//!     pub fn irq_level(&self) -> bool;
//!     pub fn mac(&self) -> [u8; 6];          // current PADR (station address)
//!     pub fn stats(&self) -> &LanceStats;
//!     pub fn set_link(&mut self, up: bool);  // link LED (BCR4-7) the guest driver reads
//!     pub fn hard_reset(&mut self);          // H_RESET (PCI reset): registers, BCRs, WIO mode
//!     pub fn irq_line(&self) -> &I;          // the IrqLine sink (tests inspect recorders)
//!     pub fn irq_line_mut(&mut self) -> &mut I;
//! }
//! ```
//!
//! Guest memory: `M: GuestMemory` is vm-memory 0.18's `GuestMemory` (every `GuestMemoryBackend`
//! such as `GuestMemoryMmap` implements it, and it provides the range-checked
//! `Bytes<GuestAddress>` reads/writes the model uses). A failed access (address outside the
//! regions) sets CSR0 MERR and counts `dma_errors`; with PCI bus mastering off the model performs
//! no DMA at all.
//!
//! Semantics the VMM/backends rely on:
//! - `transmit` calls `tx.tx_buffer()` once per frame it is about to send. A `None` stops the
//!   walk with the descriptor still owned (`TxReport::blocked`). A buffer that is not followed by
//!   `tx_commit` was abandoned (bad guest chain); the next `tx_buffer` may hand out the same one.
//!   `tx_flush` is called once at the end of a `transmit` that committed frames.
//! - `receive` drops (and counts) frames longer than [`MAX_FRAME_LEN`] without touching memory.
//!   `rx_room` counts owned descriptors, an upper bound for frames that need one buffer each.
//! - With CSR15 LOOP the transmitted frames are received by the model itself, not the backend,
//!   and frames from the backend are refused (`NotRunning`).

pub mod desc;
mod dma;
pub mod filter;
mod io;
pub mod pci;
pub mod regs;
mod rx;
mod tx;

use serde::Serialize;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use desc::Style;
use pci::PciConfig;
use regs::*;

pub(crate) use crate::frame::{FrameTx, MAX_FRAME_LEN};

/// The interrupt line (PCI INTA#) the model drives. Called only when the level changes.
pub trait IrqLine {
    /// Assert (`true`) or deassert (`false`) the line.
    fn set_level(&mut self, asserted: bool);
}

/// What a register write asks of the VMM.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RegEffect {
    /// TDMD written or the chip started: call `transmit()`.
    pub tx_demand: bool,
    /// State changed so RX may now be possible (STRT, INIT, CSR0 write, SPND cleared): retry
    /// frames the backend kept queued.
    pub rx_kick: bool,
}

/// Result of one `transmit()` call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TxReport {
    /// Frames handed to the backend (or looped back).
    pub frames: u32,
    /// Bytes of those frames.
    pub bytes: u64,
    /// Frames dropped with error bits in their descriptors (oversize, underflow, LCAR, DMA).
    pub errors: u32,
    /// The backend had no buffer: the next frame is still owned by the chip, retry later.
    pub blocked: bool,
}

/// Result of one `receive()` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxOutcome {
    /// Written to the guest ring.
    Delivered,
    /// The address filter rejected the frame.
    Filtered,
    /// No owned descriptor at the current position: MISS set, CSR112 counted.
    Missed,
    /// Longer than the owned buffers (OFLO/BUFF written) or than [`MAX_FRAME_LEN`].
    Overflow,
    /// RX is off, stopped, suspended, disabled (DRX), in loopback, or bus mastering is off.
    NotRunning,
    /// A descriptor or buffer address is outside guest memory (MERR).
    DmaError,
}

/// Counters of everything the model did or dropped. Every dropped frame is counted here.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LanceStats {
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames whose descriptors were returned with an error (all reasons below).
    pub tx_errors: u64,
    pub tx_dropped_oversize: u64,
    /// Frames dropped because the backend's link was down (LCAR).
    pub tx_lcar: u64,
    /// Chains that ended without ENP (BUFF/UFLO), or descriptors without STP outside a chain.
    pub tx_underflow: u64,
    /// `transmit()` calls stopped because the backend had no buffer (frame kept, not dropped).
    pub tx_blocked: u64,
    /// Frames transmitted in loopback mode (also counted in tx_frames and rx_*).
    pub loopback_frames: u64,
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub rx_filtered: u64,
    pub rx_missed: u64,
    pub rx_overflow: u64,
    pub rx_not_running: u64,
    /// Guest memory accesses that failed (address outside the regions), or DMA needed with bus
    /// mastering off.
    pub dma_errors: u64,
    /// Rising edges of the interrupt line.
    pub irqs_raised: u64,
}

/// The Am79C970A.
pub struct Lance<I: IrqLine> {
    pci: PciConfig,
    csr: [u16; CSR_COUNT],
    bcr: [u16; BCR_COUNT],
    rap: u16,
    aprom: [u8; 16],
    rx_ring: u64,
    tx_ring: u64,
    rx_len: u16,
    tx_len: u16,
    rx_pos: u16,
    tx_pos: u16,
    link_up: bool,
    irq: I,
    irq_asserted: bool,
    /// Frame assembly buffer for loopback (allocated once).
    loop_buf: Box<[u8]>,
    stats: LanceStats,
}

/// Build the 16-byte address PROM: MAC, zeros, 0x11, zeros, checksum, 'WW'.
fn build_aprom(mac: [u8; 6]) -> [u8; 16] {
    const APROM_HW_ID: u8 = 0x11;
    const APROM_SIGNATURE: u8 = 0x57;
    let mut p = [0u8; 16];
    p[..6].copy_from_slice(&mac);
    p[9] = APROM_HW_ID;
    p[14] = APROM_SIGNATURE;
    p[15] = APROM_SIGNATURE;
    let sum: u16 = p
        .iter()
        .map(|&b| u16::from(b))
        .fold(0u16, u16::wrapping_add);
    p[12..14].copy_from_slice(&sum.to_le_bytes());
    p
}

impl<I: IrqLine> Lance<I> {
    /// A chip in its power-on state (stopped, WIO mode, PCI decoding off) with `mac` in its PROM.
    pub fn new(mac: [u8; 6], irq: I) -> Self {
        let mut lance = Lance {
            pci: PciConfig::new(),
            csr: [0; CSR_COUNT],
            bcr: [0; BCR_COUNT],
            rap: 0,
            aprom: build_aprom(mac),
            rx_ring: 0,
            tx_ring: 0,
            rx_len: 1,
            tx_len: 1,
            rx_pos: 0,
            tx_pos: 0,
            link_up: true,
            irq,
            irq_asserted: false,
            loop_buf: vec![0u8; MAX_FRAME_LEN + FCS_LEN].into_boxed_slice(),
            stats: LanceStats::default(),
        };
        lance.hard_reset();
        lance
    }

    /// H_RESET: what the PCI reset pin does (BCRs to their defaults, WIO mode, then S_RESET).
    pub fn hard_reset(&mut self) {
        self.bcr = [0; BCR_COUNT];
        self.bcr[BCR_MSRDA] = BCR_MSRDA_RESET;
        self.bcr[BCR_MSWRA] = BCR_MSWRA_RESET;
        self.bcr[BCR_MC] = BCR_MC_RESET;
        self.bcr[BCR_LNKST] = BCR_LNKST_RESET;
        self.bcr[BCR_LED1] = BCR_LED1_RESET;
        self.bcr[BCR_LED2] = BCR_LED2_RESET;
        self.bcr[BCR_LED3] = BCR_LED3_RESET;
        self.bcr[BCR_BSBC] = BCR_BSBC_RESET;
        self.bcr[BCR_EECAS] = BCR_EECAS_RESET;
        self.bcr[BCR_SWS] = BCR_SWS_RESET;
        self.bcr[BCR_PLAT] = BCR_PLAT_RESET;
        self.csr[CSR_MODE] = 0;
        self.soft_reset();
        self.update_irq();
    }

    /// S_RESET (a read of the RESET port): CSRs to their reset values, chip stopped. BCRs and the
    /// DWIO mode are kept (the datasheet clears DWIO only on H_RESET; Linux's DWIO probe relies
    /// on that).
    fn soft_reset(&mut self) {
        let mode = self.csr[CSR_MODE] & MODE_KEPT_ON_RESET;
        let (iadr_lo, iadr_hi) = (self.csr[CSR_IADR_LO], self.csr[CSR_IADR_HI]);
        self.csr = [0; CSR_COUNT];
        self.csr[CSR_STATUS] = CSR0_RESET;
        self.csr[CSR_IADR_LO] = iadr_lo;
        self.csr[CSR_IADR_HI] = iadr_hi;
        self.csr[CSR_FEATURES] = CSR4_RESET;
        for i in 0..3 {
            self.csr[CSR_PADR0 + i] =
                u16::from_le_bytes([self.aprom[2 * i], self.aprom[2 * i + 1]]);
        }
        self.csr[CSR_MODE] = mode;
        self.csr[CSR_DMA_FIFO] = CSR80_RESET;
        self.csr[CSR_CHIP_ID_LO] = CHIP_ID_LO;
        self.csr[CSR_CHIP_ID_HI] = CHIP_ID_HI;
        self.csr[CSR_BUS_TIMEOUT] = CSR100_RESET;
        self.rap = 0;
        self.rx_ring = 0;
        self.tx_ring = 0;
        self.rx_len = 1;
        self.tx_len = 1;
        self.rx_pos = 0;
        self.tx_pos = 0;
    }

    pub fn pci_config_read(&self, offset: usize, data: &mut [u8]) {
        self.pci.read(offset, data);
    }

    pub fn pci_config_write(&mut self, offset: usize, data: &[u8]) {
        self.pci.write(offset, data);
        // INTx disable may have changed.
        self.update_irq();
    }

    pub fn io_bar(&self) -> Option<u16> {
        self.pci.io_bar()
    }

    pub fn mmio_bar(&self) -> Option<u64> {
        self.pci.mmio_bar()
    }

    /// The PCI Interrupt Line register as the guest (or firmware) last wrote it.
    pub fn interrupt_line(&self) -> u8 {
        self.pci.interrupt_line()
    }

    /// Current level of INTA (IENA && INTR, unless INTx is disabled in the PCI command register).
    pub fn irq_level(&self) -> bool {
        self.irq_asserted
    }

    /// The station address (PADR, CSR12-14).
    pub fn mac(&self) -> [u8; 6] {
        let mut mac = [0u8; 6];
        for i in 0..3 {
            mac[2 * i..2 * i + 2].copy_from_slice(&self.csr[CSR_PADR0 + i].to_le_bytes());
        }
        mac
    }

    pub fn stats(&self) -> &LanceStats {
        &self.stats
    }

    /// Link state shown to the guest through the link LED (BCR4-7 bit 15).
    pub fn set_link(&mut self, up: bool) {
        self.link_up = up;
    }

    /// The interrupt line sink (tests inspect their recorder through this).
    pub fn irq_line(&self) -> &I {
        &self.irq
    }

    /// Mutable access to the interrupt line sink.
    pub fn irq_line_mut(&mut self) -> &mut I {
        &mut self.irq
    }

    // ---- internal helpers shared by io/rx/tx ----

    fn style(&self) -> Style {
        Style::from_swstyle((self.bcr[BCR_SWS] & SWS_STYLE_MASK) as u8)
    }

    /// Address bits 24-31 for 16-bit structures (CSR2 high byte), 0 for 32-bit ones.
    fn high_addr(&self, style: Style) -> u32 {
        match style {
            Style::Bits16 => u32::from(self.csr[CSR_IADR_HI] & CSR2_UPPER_ADDR) << 16,
            Style::Bits32 | Style::Bits32Swapped => 0,
        }
    }

    fn stopped_or_suspended(&self) -> bool {
        self.csr[CSR_STATUS] & CSR0_STOP != 0 || self.csr[CSR_EXT_CTRL] & CSR5_SPND != 0
    }

    fn loopback(&self) -> bool {
        self.csr[CSR_MODE] & MODE_LOOP != 0
    }

    fn desc_addr(ring: u64, pos: u16, style: Style) -> u64 {
        ring + u64::from(pos) * style.desc_len() as u64
    }

    fn next_pos(pos: u16, len: u16) -> u16 {
        if pos + 1 >= len {
            0
        } else {
            pos + 1
        }
    }

    fn memory_error(&mut self) {
        self.csr[CSR_STATUS] |= CSR0_MERR;
        self.stats.dma_errors += 1;
    }

    /// Read guest memory for the chip (DMA). False (MERR counted) when it fails.
    fn dma_read<M: GuestMemory + ?Sized>(&mut self, mem: &M, addr: u64, buf: &mut [u8]) -> bool {
        if self.pci.bus_master() && mem.read_slice(buf, GuestAddress(addr)).is_ok() {
            return true;
        }
        self.memory_error();
        false
    }

    /// Read a descriptor (or other ring bytes) through `ring`. False (MERR counted) on failure.
    fn ring_read<M: GuestMemory + ?Sized>(
        &mut self,
        ring: &dma::RingMem<'_, M>,
        addr: u64,
        buf: &mut [u8],
    ) -> bool {
        if self.pci.bus_master() && ring.read(addr, buf) {
            return true;
        }
        self.memory_error();
        false
    }

    /// Write descriptor bytes through `ring`. False (MERR counted) on failure.
    fn ring_write<M: GuestMemory + ?Sized>(
        &mut self,
        ring: &dma::RingMem<'_, M>,
        addr: u64,
        buf: &[u8],
    ) -> bool {
        if self.pci.bus_master() && ring.write(addr, buf) {
            return true;
        }
        self.memory_error();
        false
    }

    /// Recompute INTR and drive INTA; calls the line only when the level changes.
    fn update_irq(&mut self) {
        let csr0 = self.csr[CSR_STATUS];
        let csr4 = self.csr[CSR_FEATURES];
        let csr5 = self.csr[CSR_EXT_CTRL];
        let intr = csr0 & !self.csr[CSR_MASKS] & CSR0_INT_SOURCES != 0
            || csr4 & CSR4_INT_SOURCES & !(csr4 << 1) != 0
            || csr5 & CSR5_INT_SOURCES & (csr5 << 1) != 0;
        if intr {
            self.csr[CSR_STATUS] |= CSR0_INTR;
        } else {
            self.csr[CSR_STATUS] &= !CSR0_INTR;
        }
        let level = intr && csr0 & CSR0_IENA != 0 && !self.pci.intx_disabled();
        if level != self.irq_asserted {
            self.irq_asserted = level;
            if level {
                self.stats.irqs_raised += 1;
            }
            self.irq.set_level(level);
        }
    }
}
