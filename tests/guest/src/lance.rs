//! The ring-3 Am79C970A driver: register access through the MMIO BAR in 16-bit (WIO) mode,
//! probe and initialisation as Linux pcnet32 does them, and the RX/TX descriptor rings (SWSTYLE 2,
//! 32-bit structures) polled in memory. After start-up RAP always stays 0 (CSR0), because the
//! ring-0 interrupt stub writes CSR0 through RDP without setting RAP.

use core::mem::MaybeUninit;
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{compiler_fence, Ordering};

use crate::cmdline::Kick;

/// Register offsets in the I/O / MMIO window, WIO (16-bit) mode.
const REG_RDP: usize = 0x10;
const REG_RAP: usize = 0x12;
const REG_RESET: usize = 0x14;
const REG_BDP: usize = 0x16;

/// CSR numbers.
const CSR0: u16 = 0;
const CSR_INIT_BLOCK_LOW: u16 = 1;
const CSR_INIT_BLOCK_HIGH: u16 = 2;
const CSR_INTERRUPT_MASKS: u16 = 3;
const CSR_FEATURES: u16 = 4;
const CSR_CHIP_ID_LOW: u16 = 88;
const CSR_CHIP_ID_HIGH: u16 = 89;
const CSR_MISSED_FRAMES: u16 = 112;
/// BCR numbers.
const BCR_MISC: u16 = 2;
const BCR_SWSTYLE: u16 = 20;

/// CSR0 bits.
const CSR0_INIT: u16 = 0x0001;
const CSR0_STRT: u16 = 0x0002;
const CSR0_STOP: u16 = 0x0004;
const CSR0_TDMD: u16 = 0x0008;
const CSR0_IENA: u16 = 0x0040;
const CSR0_IDON: u16 = 0x0100;
/// All write-1-to-clear status bits (BABL, CERR, MISS, MERR, RINT, TINT, IDON).
const CSR0_ACK_ALL: u16 = 0x7f00;
/// CSR3 masks.
const CSR3_IDONM: u16 = 0x0100;
const CSR3_TINTM: u16 = 0x0200;
/// CSR4 as Linux pcnet32 writes it (auto pad on transmit, ...).
const CSR4_PCNET32: u16 = 0x0915;
/// BCR2 auto-select of the media port.
const BCR2_ASEL: u16 = 0x0002;
/// BCR20 software style 2: 32-bit structures, PCnet-PCI.
const SWSTYLE_PCNET_PCI: u16 = 2;

/// Chip id of the Am79C970A: CSR88 | CSR89 << 16, as Linux decodes it.
const CHIP_ID_VERSION_MASK: u32 = 0xfff;
const CHIP_ID_VERSION_AMD: u32 = 0x003;
const CHIP_ID_PART_79C970A: u32 = 0x2621;
/// Polls of CSR0 for IDON after INIT (each is one MMIO exit).
const IDON_POLL_LIMIT: u32 = 1000;

/// `Kick::Lazy`: how long (TSC cycles, ~10-30 us) queued frames may wait for the chip's own TX
/// poll before TDMD is written. A VMM busy-polling the ring takes them within a few microseconds.
const LAZY_KICK_CYCLES: u64 = 50_000;

/// Descriptor status bits (upper half of word 1).
const DESC_OWN: u32 = 0x8000_0000;
const DESC_ERR: u32 = 0x4000_0000;
const DESC_STP: u32 = 0x0200_0000;
const DESC_ENP: u32 = 0x0100_0000;
/// BCNT is a 12-bit two's complement with the top nibble set.
const BCNT_ONES: u32 = 0xf000;
const MCNT_MASK: u32 = 0x0fff;
const FCS_LEN: usize = 4;
/// How long (TSC cycles, ~0.3-1 s) a descriptor may show OWN clear without ENP/ERR (or without a
/// length) before it is consumed as an error. QEMU's pcnet clears OWN in a first store and writes
/// ENP and MCNT in a second one, so a ring-3 poller at native speed can see that state; the
/// limit is time-based because the host may preempt QEMU between the two stores.
const INCOMPLETE_TIMEOUT_CYCLES: u64 = 1_000_000_000;

/// Ring sizes (log2): a long RX ring absorbs the VMM or host pausing the vCPU for a while.
pub const RX_RING_LOG2: u8 = 9;
pub const RX_RING_LEN: usize = 1 << RX_RING_LOG2;
pub const TX_RING_LOG2: u8 = 7;
pub const TX_RING_LEN: usize = 1 << TX_RING_LOG2;
/// Buffer size per descriptor, as pcnet32 uses (one buffer per frame).
pub const BUF_SIZE: usize = 1544;

/// One 32-bit (SWSTYLE 2) descriptor.
#[repr(C, align(16))]
struct Descriptor {
    address: u32,
    bcnt_status: u32,
    misc: u32,
    user: u32,
}

/// The 28-byte 32-bit initialisation block.
#[repr(C, align(16))]
struct InitBlock {
    mode: u16,
    rx_log2: u8,
    tx_log2: u8,
    mac: [u8; 6],
    reserved: u16,
    ladrf: [u32; 2],
    rx_ring: u32,
    tx_ring: u32,
}

/// All memory the chip reads or writes; in `.noinit` (not loaded, not zeroed).
#[repr(C, align(4096))]
struct DmaArea {
    rx: [Descriptor; RX_RING_LEN],
    tx: [Descriptor; TX_RING_LEN],
    init: InitBlock,
    rx_buffers: [[u8; BUF_SIZE]; RX_RING_LEN],
    tx_buffers: [[u8; BUF_SIZE]; TX_RING_LEN],
}

#[link_section = ".noinit.dma"]
static mut DMA: MaybeUninit<DmaArea> = MaybeUninit::uninit();

fn dma() -> *mut DmaArea {
    addr_of_mut!(DMA).cast()
}

/// Guest-physical address of a DMA object (memory is identity mapped below 4 GiB).
fn phys<T>(pointer: *const T) -> u32 {
    pointer as usize as u32
}

/// Why the driver could not bring the chip up.
pub enum ProbeError {
    NotStopped(u16),
    RapReadback(u16),
    ChipId(u32),
    NoInitDone(u16),
}

/// The chip's register window (BAR1).
struct Regs {
    base: usize,
}

impl Regs {
    fn read(&self, offset: usize) -> u16 {
        // SAFETY: base is the Lance's MMIO BAR, mapped uncached and user-accessible by boot.rs.
        unsafe { read_volatile((self.base + offset) as *const u16) }
    }

    fn write(&self, offset: usize, value: u16) {
        // SAFETY: as in `read`.
        unsafe { write_volatile((self.base + offset) as *mut u16, value) }
    }

    fn csr(&self, number: u16) -> u16 {
        self.write(REG_RAP, number);
        self.read(REG_RDP)
    }

    fn set_csr(&self, number: u16, value: u16) {
        self.write(REG_RAP, number);
        self.write(REG_RDP, value);
    }

    fn bcr(&self, number: u16) -> u16 {
        self.write(REG_RAP, number);
        self.read(REG_BDP)
    }

    fn set_bcr(&self, number: u16, value: u16) {
        self.write(REG_RAP, number);
        self.write(REG_BDP, value);
    }
}

/// A started Lance with its two rings.
pub struct Lance {
    regs: Regs,
    pub mac: [u8; 6],
    irq_mode: bool,
    /// When `kick` writes TDMD.
    kick_policy: Kick,
    /// Lazy kicks: TSC when frames were first left unkicked (0 = none waiting).
    tx_unkicked_since: u64,
    rx_next: usize,
    /// TSC when `rx_next` was first seen handed back but incomplete (0 = not seen).
    rx_incomplete_since: u64,
    tx_next: usize,
    /// Descriptors handed to the chip since the last TDMD.
    tx_unkicked: usize,
    /// Descriptors handed to the chip and not yet seen back.
    tx_in_flight: usize,
    pub tx_done: u64,
    pub tx_errors: u64,
    pub rx_errors: u64,
}

impl Lance {
    /// Resets the chip and checks it is a 79C970A in STOP; reads the MAC from the APROM.
    pub fn probe(mmio_base: u32) -> Result<Lance, ProbeError> {
        let regs = Regs {
            base: mmio_base as usize,
        };
        regs.read(REG_RESET);
        let csr0 = regs.csr(CSR0);
        if csr0 != CSR0_STOP {
            return Err(ProbeError::NotStopped(csr0));
        }
        regs.write(REG_RAP, CSR_CHIP_ID_LOW);
        let rap = regs.read(REG_RAP);
        if rap != CSR_CHIP_ID_LOW {
            return Err(ProbeError::RapReadback(rap));
        }
        let id =
            u32::from(regs.csr(CSR_CHIP_ID_LOW)) | (u32::from(regs.csr(CSR_CHIP_ID_HIGH)) << 16);
        if id & CHIP_ID_VERSION_MASK != CHIP_ID_VERSION_AMD
            || (id >> 12) & 0xffff != CHIP_ID_PART_79C970A
        {
            return Err(ProbeError::ChipId(id));
        }
        let mut mac = [0u8; 6];
        for (i, pair) in mac.chunks_exact_mut(2).enumerate() {
            pair.copy_from_slice(&regs.read(2 * i).to_le_bytes());
        }
        Ok(Lance {
            regs,
            mac,
            irq_mode: false,
            kick_policy: Kick::Always,
            tx_unkicked_since: 0,
            rx_next: 0,
            rx_incomplete_since: 0,
            tx_next: 0,
            tx_unkicked: 0,
            tx_in_flight: 0,
            tx_done: 0,
            tx_errors: 0,
            rx_errors: 0,
        })
    }

    /// Programs SWSTYLE 2, the init block and rings, runs INIT, waits for IDON and starts the
    /// chip (with IENA in interrupt mode). `tx_interrupts` leaves TINT unmasked.
    pub fn start(&mut self, irq_mode: bool, tx_interrupts: bool) -> Result<(), ProbeError> {
        self.irq_mode = irq_mode;
        let regs = &self.regs;
        regs.set_bcr(BCR_SWSTYLE, SWSTYLE_PCNET_PCI);
        let misc = regs.bcr(BCR_MISC);
        regs.set_bcr(BCR_MISC, misc | BCR2_ASEL);
        let area = dma();
        // SAFETY: the chip is stopped, so ring 3 owns the whole DMA area; every field is written
        // before the chip is told where it is.
        unsafe {
            for i in 0..RX_RING_LEN {
                let rx = addr_of_mut!((*area).rx[i]);
                write_volatile(
                    addr_of_mut!((*rx).address),
                    phys(addr_of!((*area).rx_buffers[i])),
                );
                write_volatile(addr_of_mut!((*rx).misc), 0);
                write_volatile(addr_of_mut!((*rx).user), 0);
                write_volatile(addr_of_mut!((*rx).bcnt_status), DESC_OWN | rx_bcnt());
            }
            for i in 0..TX_RING_LEN {
                let tx = addr_of_mut!((*area).tx[i]);
                write_volatile(
                    addr_of_mut!((*tx).address),
                    phys(addr_of!((*area).tx_buffers[i])),
                );
                write_volatile(addr_of_mut!((*tx).misc), 0);
                write_volatile(addr_of_mut!((*tx).user), 0);
                write_volatile(addr_of_mut!((*tx).bcnt_status), 0);
            }
            let init = addr_of_mut!((*area).init);
            write_volatile(
                init,
                InitBlock {
                    mode: 0,
                    rx_log2: RX_RING_LOG2 << 4,
                    tx_log2: TX_RING_LOG2 << 4,
                    mac: self.mac,
                    reserved: 0,
                    ladrf: [0; 2],
                    rx_ring: phys(addr_of!((*area).rx)),
                    tx_ring: phys(addr_of!((*area).tx)),
                },
            );
            compiler_fence(Ordering::SeqCst);
            let address = phys(init);
            regs.set_csr(CSR_INIT_BLOCK_LOW, address as u16);
            regs.set_csr(CSR_INIT_BLOCK_HIGH, (address >> 16) as u16);
        }
        let masks = CSR3_IDONM | if tx_interrupts { 0 } else { CSR3_TINTM };
        regs.set_csr(CSR_INTERRUPT_MASKS, masks);
        regs.set_csr(CSR_FEATURES, CSR4_PCNET32);
        regs.set_csr(CSR0, CSR0_INIT);
        let mut csr0 = 0;
        for _ in 0..IDON_POLL_LIMIT {
            csr0 = regs.read(REG_RDP);
            if csr0 & CSR0_IDON != 0 {
                break;
            }
        }
        if csr0 & CSR0_IDON == 0 {
            return Err(ProbeError::NoInitDone(csr0));
        }
        regs.write(
            REG_RDP,
            CSR0_IDON | CSR0_STRT | if irq_mode { CSR0_IENA } else { 0 },
        );
        Ok(())
    }

    /// Hands received frames (FCS stripped) to `handle`, at most `budget`, re-arming each
    /// descriptor afterwards. Returns how many descriptors were consumed.
    pub fn receive(&mut self, budget: usize, mut handle: impl FnMut(&[u8], &mut TxQueue)) -> usize {
        let area = dma();
        let mut done = 0;
        while done < budget {
            let index = self.rx_next;
            // SAFETY: index < RX_RING_LEN; descriptor words are read volatile because the chip
            // writes them; a descriptor with OWN clear belongs to the driver until re-armed.
            unsafe {
                let rx = addr_of_mut!((*area).rx[index]);
                let status = read_volatile(addr_of!((*rx).bcnt_status));
                if status & DESC_OWN != 0 {
                    break;
                }
                compiler_fence(Ordering::Acquire);
                let length = (read_volatile(addr_of!((*rx).misc)) & MCNT_MASK) as usize;
                let complete = status & DESC_ERR != 0 || (status & DESC_ENP != 0 && length > 0);
                if !complete {
                    let now = crate::user::rdtsc();
                    if self.rx_incomplete_since == 0 {
                        self.rx_incomplete_since = now;
                    }
                    if now.wrapping_sub(self.rx_incomplete_since) < INCOMPLETE_TIMEOUT_CYCLES {
                        break;
                    }
                }
                self.rx_incomplete_since = 0;
                if status & (DESC_ERR | DESC_STP | DESC_ENP) == DESC_STP | DESC_ENP
                    && length > FCS_LEN
                {
                    let frame_len = (length - FCS_LEN).min(BUF_SIZE);
                    let frame = core::slice::from_raw_parts(
                        addr_of!((*area).rx_buffers[index]).cast::<u8>(),
                        frame_len,
                    );
                    let mut queue = TxQueue { lance: self };
                    handle(frame, &mut queue);
                } else {
                    self.rx_errors += 1;
                }
                write_volatile(addr_of_mut!((*rx).misc), 0);
                compiler_fence(Ordering::Release);
                write_volatile(addr_of_mut!((*rx).bcnt_status), DESC_OWN | rx_bcnt());
            }
            self.rx_next = (index + 1) % RX_RING_LEN;
            done += 1;
        }
        done
    }

    /// Frees TX descriptors the chip has handed back; returns true if the next one is free.
    fn reclaim(&mut self) -> bool {
        let area = dma();
        while self.tx_in_flight > 0 {
            let oldest = (self.tx_next + TX_RING_LEN - self.tx_in_flight) % TX_RING_LEN;
            // SAFETY: oldest < TX_RING_LEN; the status word is read volatile.
            let status = unsafe { read_volatile(addr_of!((*area).tx[oldest].bcnt_status)) };
            if status & DESC_OWN != 0 {
                break;
            }
            if status & DESC_ERR != 0 {
                self.tx_errors += 1;
            } else {
                self.tx_done += 1;
            }
            self.tx_in_flight -= 1;
        }
        self.tx_in_flight < TX_RING_LEN
    }

    /// Number of frames handed to the chip and not yet completed.
    pub fn tx_in_flight(&mut self) -> usize {
        self.reclaim();
        self.tx_in_flight
    }

    /// A queue to transmit through outside of `receive`.
    pub fn tx(&mut self) -> TxQueue<'_> {
        TxQueue { lance: self }
    }

    /// When `kick` writes TDMD. Without a kick, queued frames wait for the chip's TX poll (TXON
    /// with CSR4 DPOLL clear, as this driver programs it); `arm` still sets TDMD.
    pub fn set_kick_policy(&mut self, policy: Kick) {
        self.kick_policy = policy;
    }

    /// Writes TDMD if frames were queued since the last one (in interrupt mode this also leaves
    /// IENA off until `arm`): one MMIO exit. `Kick::Never`: no write. `Kick::Lazy`: a write only
    /// once queued frames have waited [`LAZY_KICK_CYCLES`] without the chip taking them, so
    /// call it again while waiting (it is cheap: no MMIO until then).
    pub fn kick(&mut self) {
        if self.tx_unkicked == 0 {
            return;
        }
        match self.kick_policy {
            Kick::Always => self.write_tdmd(),
            Kick::Never => self.tx_unkicked = 0,
            Kick::Lazy => {
                let now = crate::user::rdtsc();
                if self.tx_unkicked_since == 0 {
                    self.tx_unkicked_since = now.max(1);
                }
                self.reclaim();
                if self.tx_in_flight == 0 {
                    // The chip's poll took (and finished) every queued frame by itself.
                    self.tx_unkicked = 0;
                    self.tx_unkicked_since = 0;
                } else if now.wrapping_sub(self.tx_unkicked_since) > LAZY_KICK_CYCLES {
                    self.write_tdmd();
                }
            }
        }
    }

    fn write_tdmd(&mut self) {
        self.regs.write(REG_RDP, CSR0_TDMD);
        self.tx_unkicked = 0;
        self.tx_unkicked_since = 0;
    }

    /// Interrupt mode, before sleeping: acknowledges every status bit, sets IENA and kicks any
    /// queued frames in one CSR0 write. The caller must look at the rings once more afterwards.
    pub fn arm(&mut self) {
        let tdmd = if self.tx_unkicked > 0 { CSR0_TDMD } else { 0 };
        self.regs.write(REG_RDP, CSR0_ACK_ALL | CSR0_IENA | tdmd);
        self.tx_unkicked = 0;
        self.tx_unkicked_since = 0;
    }

    /// Whether the next RX descriptor holds a frame (no MMIO).
    pub fn rx_ready(&self) -> bool {
        // SAFETY: rx_next < RX_RING_LEN; volatile read of a chip-written word.
        let status = unsafe { read_volatile(addr_of!((*dma()).rx[self.rx_next].bcnt_status)) };
        status & DESC_OWN == 0
    }

    pub fn irq_mode(&self) -> bool {
        self.irq_mode
    }

    /// The chip's missed-frame counter (CSR112). Briefly clears IENA so the interrupt stub,
    /// which assumes RAP = 0, cannot run while RAP points elsewhere.
    pub fn missed_frames(&mut self) -> u16 {
        self.regs.write(REG_RDP, 0);
        let missed = self.regs.csr(CSR_MISSED_FRAMES);
        self.regs.write(REG_RAP, CSR0);
        missed
    }
}

fn rx_bcnt() -> u32 {
    (BUF_SIZE as u32).wrapping_neg() & 0xfff | BCNT_ONES
}

/// Transmit side of a started Lance.
pub struct TxQueue<'a> {
    lance: &'a mut Lance,
}

impl TxQueue<'_> {
    /// Builds a frame with `build` in the next free TX buffer and hands it to the chip.
    /// Returns false (nothing queued) when the ring is full or `build` returns 0.
    pub fn send(&mut self, build: impl FnOnce(&mut [u8; BUF_SIZE]) -> usize) -> bool {
        let lance = &mut *self.lance;
        if !lance.reclaim() {
            return false;
        }
        let index = lance.tx_next;
        let area = dma();
        // SAFETY: index < TX_RING_LEN and its descriptor is not owned by the chip (reclaim checked
        // that fewer than TX_RING_LEN are in flight), so its buffer belongs to the driver.
        unsafe {
            let length = build(&mut *addr_of_mut!((*area).tx_buffers[index])).min(BUF_SIZE);
            if length == 0 {
                return false;
            }
            let tx = addr_of_mut!((*area).tx[index]);
            write_volatile(addr_of_mut!((*tx).misc), 0);
            compiler_fence(Ordering::Release);
            let bcnt = (length as u32).wrapping_neg() & 0xfff | BCNT_ONES;
            write_volatile(
                addr_of_mut!((*tx).bcnt_status),
                DESC_OWN | DESC_STP | DESC_ENP | bcnt,
            );
        }
        lance.tx_next = (index + 1) % TX_RING_LEN;
        lance.tx_in_flight += 1;
        lance.tx_unkicked += 1;
        true
    }

    /// Whether a TX descriptor is free.
    pub fn has_room(&mut self) -> bool {
        self.lance.reclaim()
    }

    /// Frames queued since the last TDMD.
    pub fn unkicked(&self) -> usize {
        self.lance.tx_unkicked
    }
}

/// Unchecked access for the hostile program: registers and the DMA area with no driver
/// invariants, to program the chip the way a broken or malicious guest would.
pub struct RawLance {
    regs: Regs,
    pub mac: [u8; 6],
}

/// A guest-physical address with no RAM behind it for any VM of at most 1 GiB.
pub const OUTSIDE_RAM: u32 = 0x3ff0_0000;

impl RawLance {
    pub fn new(lance: &Lance) -> RawLance {
        RawLance {
            regs: Regs {
                base: lance.regs.base,
            },
            mac: lance.mac,
        }
    }

    /// Resets the chip (a read of RESET in WIO mode) and returns CSR0, which must be STOP.
    pub fn reset(&self) -> u16 {
        self.regs.read(REG_RESET);
        self.regs.csr(CSR0)
    }

    /// Resets the chip through the DWIO RESET register (a 32-bit read at 0x18) and returns CSR0
    /// read with 32-bit accesses (RAP at 0x14, RDP at 0x10). For a chip left in DWIO, which an
    /// Am79C970A leaves only on H_RESET (BCR18 DWIO survives S_RESET).
    pub fn reset_dwio(&self) -> u16 {
        self.read32(DWIO_RESET_OFFSET);
        self.write32(DWIO_RAP_OFFSET, u32::from(CSR0));
        self.read32(RDP_OFFSET) as u16
    }

    pub fn csr(&self, number: u16) -> u16 {
        self.regs.csr(number)
    }

    pub fn set_csr(&self, number: u16, value: u16) {
        self.regs.set_csr(number, value)
    }

    pub fn set_bcr(&self, number: u16, value: u16) {
        self.regs.set_bcr(number, value)
    }

    /// A 32-bit access at `offset` (in WIO mode a 32-bit write to RDP switches the chip to DWIO).
    pub fn write32(&self, offset: usize, value: u32) {
        // SAFETY: an access inside the Lance's 32-byte MMIO BAR, mapped by boot.rs.
        unsafe { write_volatile((self.regs.base + offset) as *mut u32, value) }
    }

    pub fn read32(&self, offset: usize) -> u32 {
        // SAFETY: as in `write32`.
        unsafe { read_volatile((self.regs.base + offset) as *const u32) }
    }

    pub fn set_rx(&self, index: usize, address: u32, bcnt_status: u32) {
        // SAFETY: the index is reduced into the ring; plain stores into the DMA area.
        unsafe {
            let rx = addr_of_mut!((*dma()).rx[index % RX_RING_LEN]);
            write_volatile(addr_of_mut!((*rx).address), address);
            write_volatile(addr_of_mut!((*rx).misc), 0);
            write_volatile(addr_of_mut!((*rx).bcnt_status), bcnt_status);
        }
    }

    pub fn set_tx(&self, index: usize, address: u32, bcnt_status: u32) {
        // SAFETY: the index is reduced into the ring; plain stores into the DMA area.
        unsafe {
            let tx = addr_of_mut!((*dma()).tx[index % TX_RING_LEN]);
            write_volatile(addr_of_mut!((*tx).address), address);
            write_volatile(addr_of_mut!((*tx).misc), 0);
            write_volatile(addr_of_mut!((*tx).bcnt_status), bcnt_status);
        }
    }

    /// Address of TX buffer `index` (valid RAM, BUF_SIZE bytes).
    pub fn tx_buffer(&self, index: usize) -> u32 {
        // SAFETY: only the address is computed.
        phys(unsafe { addr_of!((*dma()).tx_buffers[index % TX_RING_LEN]) })
    }

    pub fn rx_ring(&self) -> u32 {
        // SAFETY: only the address is computed.
        phys(unsafe { addr_of!((*dma()).rx) })
    }

    pub fn tx_ring(&self) -> u32 {
        // SAFETY: only the address is computed.
        phys(unsafe { addr_of!((*dma()).tx) })
    }

    /// Writes a 32-bit init block (SWSTYLE 2) with the given rings, selects SWSTYLE 2, points
    /// CSR1/2 at it and sets INIT. Returns CSR0 after at most IDON_POLL_LIMIT polls.
    pub fn init(&self, rx_log2: u8, tx_log2: u8, rx_ring: u32, tx_ring: u32) -> u16 {
        self.regs.set_bcr(BCR_SWSTYLE, SWSTYLE_PCNET_PCI);
        // SAFETY: the init block lives in the DMA area; the chip is stopped (just reset).
        let address = unsafe {
            let init = addr_of_mut!((*dma()).init);
            write_volatile(
                init,
                InitBlock {
                    mode: 0,
                    rx_log2: rx_log2 << 4,
                    tx_log2: tx_log2 << 4,
                    mac: self.mac,
                    reserved: 0,
                    ladrf: [0; 2],
                    rx_ring,
                    tx_ring,
                },
            );
            phys(init)
        };
        compiler_fence(Ordering::SeqCst);
        self.init_at(address)
    }

    /// Points CSR1/2 at `address` and sets INIT; returns CSR0 once IDON shows or polls run out.
    pub fn init_at(&self, address: u32) -> u16 {
        self.regs.set_csr(CSR_INIT_BLOCK_LOW, address as u16);
        self.regs
            .set_csr(CSR_INIT_BLOCK_HIGH, (address >> 16) as u16);
        self.regs.set_csr(CSR0, CSR0_INIT);
        let mut csr0 = 0;
        for _ in 0..IDON_POLL_LIMIT {
            csr0 = self.regs.read(REG_RDP);
            if csr0 & CSR0_IDON != 0 {
                break;
            }
        }
        csr0
    }

    pub fn start_and_kick(&self) {
        self.regs.set_csr(CSR0, CSR0_IDON | CSR0_STRT | CSR0_TDMD);
    }

    pub fn stop(&self) {
        self.regs.set_csr(CSR0, CSR0_STOP);
    }
}

/// TX descriptor status word for the hostile program.
pub fn tx_word(length: u32, start: bool, end: bool) -> u32 {
    let mut word = DESC_OWN | (length.wrapping_neg() & 0xfff) | BCNT_ONES;
    if start {
        word |= DESC_STP;
    }
    if end {
        word |= DESC_ENP;
    }
    word
}

/// RX descriptor status word (owned by the chip, one full buffer).
pub fn rx_word() -> u32 {
    DESC_OWN | rx_bcnt()
}

/// CSR numbers the hostile program writes directly.
pub const CSR_RX_RING_LENGTH: u16 = 76;
pub const CSR_TX_RING_LENGTH: u16 = 78;
pub const BCR_SOFTWARE_STYLE: u16 = 20;
/// RDP and the DWIO RESET register offsets.
pub const RDP_OFFSET: usize = REG_RDP;
pub const DWIO_RESET_OFFSET: usize = 0x18;
/// The DWIO register address port.
pub const DWIO_RAP_OFFSET: usize = 0x14;
