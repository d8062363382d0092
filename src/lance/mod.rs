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
//!     // Registers: `offset` is relative to BAR0 or BAR1 (both decode the same 0x20 bytes).
//!     pub fn read<M: GuestMemory>(&mut self, mem: &M, offset: u64, data: &mut [u8]);
//!     pub fn write<M: GuestMemory>(&mut self, mem: &M, offset: u64, data: &[u8]) -> RegEffect;
//!     // TX: walk owned descriptors from the current position (bounded by the ring length),
//!     // assemble STP..ENP chains straight into the backend's buffer, write status back.
//!     // Called by the VMM after RegEffect::tx_demand, and periodically when tx_polling() is true.
//!     pub fn transmit<M: GuestMemory, T: FrameTx + ?Sized>(&mut self, mem: &M, tx: &mut T) -> TxReport;
//!     pub fn tx_polling(&self) -> bool;      // TXON and not CSR4 DPOLL
//!     // RX: how many frames the guest ring can take now (owned descriptors from the current
//!     // position, 0 when not running), so a backend can leave the rest queued.
//!     pub fn rx_room<M: GuestMemory>(&self, mem: &M) -> usize;
//!     pub fn receive<M: GuestMemory>(&mut self, mem: &M, frame: &[u8]) -> RxOutcome;
//!     pub fn irq_level(&self) -> bool;
//!     pub fn mac(&self) -> [u8; 6];          // current PADR (station address)
//!     pub fn stats(&self) -> &LanceStats;
//! }
//! ```

/// The interrupt line (PCI INTA#) the model drives. Called only when the level changes.
pub trait IrqLine {
    /// Assert (`true`) or deassert (`false`) the line.
    fn set_level(&mut self, asserted: bool);
}

/// The transmit half of a backend, as the model sees it. The model assembles a frame straight into
/// the buffer the backend lends it (one copy: guest memory to backend buffer).
pub trait FrameTx {
    /// Carrier: `false` makes the model report LCAR (loss of carrier) on transmitted frames.
    fn link_up(&self) -> bool {
        true
    }
    /// A buffer of at least [`MAX_FRAME_LEN`] bytes for the next frame, or `None` when the backend
    /// cannot take a frame now (the descriptor then stays owned by the chip and is retried later).
    fn tx_buffer(&mut self) -> Option<&mut [u8]>;
    /// Send the first `len` bytes of the buffer returned by the last `tx_buffer` call.
    fn tx_commit(&mut self, len: usize);
    /// End of a batch: push what was committed to the wire (one kick per batch).
    fn tx_flush(&mut self) {}
}

/// Largest frame the chip sends or receives, FCS included (1514 + 4).
pub const MAX_FRAME_LEN: usize = 1518;
