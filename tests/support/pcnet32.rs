//! A "pcnet32 driver" harness: Rust code doing what Linux's drivers/net/ethernet/amd/pcnet32.c
//! does (probe, open, start_xmit, interrupt handler, NAPI rx/tx, set_multicast_list, close),
//! against the Lance model on a `GuestMemoryMmap`, with a recording backend and interrupt line.
//! The machine (`Machine`) plays the VMM: every register write that returns `tx_demand` is
//! followed by `transmit()`, like the VMM's I/O thread.
//!
//! Descriptor and init block layouts are written here independently of the model's own code.

use lancet::frame::{FrameTx, MAX_FRAME_LEN};
use lancet::lance::{IrqLine, Lance, RegEffect};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

// ---- recording stand-ins ----

/// Interrupt line that records every level change.
#[derive(Debug, Default)]
pub struct RecordingIrq {
    pub level: bool,
    pub transitions: Vec<bool>,
}

impl IrqLine for RecordingIrq {
    fn set_level(&mut self, asserted: bool) {
        self.level = asserted;
        self.transitions.push(asserted);
    }
}

/// Backend that records every committed frame.
#[derive(Debug)]
pub struct RecordingTx {
    pub frames: Vec<Vec<u8>>,
    pub link: bool,
    /// Buffers the backend can still lend (`None`: unlimited).
    pub credits: Option<usize>,
    pub flushes: u32,
    pub buffers_lent: u32,
    buf: Vec<u8>,
}

impl Default for RecordingTx {
    fn default() -> Self {
        RecordingTx {
            frames: Vec::new(),
            link: true,
            credits: None,
            flushes: 0,
            buffers_lent: 0,
            buf: vec![0; MAX_FRAME_LEN],
        }
    }
}

impl FrameTx for RecordingTx {
    fn link_up(&self) -> bool {
        self.link
    }
    fn tx_buffer(&mut self) -> Option<&mut [u8]> {
        if let Some(c) = self.credits.as_mut() {
            if *c == 0 {
                return None;
            }
            *c -= 1;
        }
        self.buffers_lent += 1;
        // Poison so that a model that forgets to copy is caught.
        self.buf.fill(0xa5);
        Some(&mut self.buf)
    }
    fn tx_commit(&mut self, len: usize) {
        self.frames.push(self.buf[..len].to_vec());
    }
    fn tx_flush(&mut self) {
        self.flushes += 1;
    }
}

// ---- the machine: model + memory + backend ----

pub const MEM_SIZE: usize = 16 << 20;
pub const IO_BASE: u16 = 0xc000;

/// Register access width the driver uses (Linux `pcnet32_wio` / `pcnet32_dwio`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Wio,
    Dwio,
}

/// The model, its guest memory and a backend (`T`: the recording backend by default; a test of a
/// real backend passes its own with `Machine::with_backend`).
pub struct Machine<T: FrameTx = RecordingTx> {
    pub lance: Lance<RecordingIrq>,
    pub mem: GuestMemoryMmap<()>,
    pub tx: T,
    /// Register accesses performed (like VM exits).
    pub accesses: u64,
}

impl Machine<RecordingTx> {
    /// A machine whose firmware assigned BAR0 and enabled I/O + bus mastering (what
    /// pci_enable_device + pci_set_master leave behind), with the recording backend.
    pub fn new(mac: [u8; 6]) -> Self {
        Machine::with_backend(mac, RecordingTx::default())
    }
}

impl<T: FrameTx> Machine<T> {
    /// Like `new`, with the given backend behind the chip.
    pub fn with_backend(mac: [u8; 6], tx: T) -> Self {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let mut lance = Lance::new(mac, RecordingIrq::default());
        lance.pci_config_write(0x10, &u32::from(IO_BASE).to_le_bytes());
        lance.pci_config_write(0x3c, &[11]);
        lance.pci_config_write(0x04, &0x0005u16.to_le_bytes());
        Machine {
            lance,
            mem,
            tx,
            accesses: 0,
        }
    }

    fn after_write(&mut self, effect: RegEffect) {
        if effect.tx_demand {
            self.lance.transmit(&self.mem, &mut self.tx);
        }
    }

    pub fn inb(&mut self, off: u64) -> u8 {
        let mut b = [0u8; 1];
        self.accesses += 1;
        self.lance.read(&self.mem, off, &mut b);
        b[0]
    }
    pub fn inw(&mut self, off: u64) -> u16 {
        let mut b = [0u8; 2];
        self.accesses += 1;
        self.lance.read(&self.mem, off, &mut b);
        u16::from_le_bytes(b)
    }
    pub fn inl(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.accesses += 1;
        self.lance.read(&self.mem, off, &mut b);
        u32::from_le_bytes(b)
    }
    pub fn outw(&mut self, off: u64, v: u16) {
        self.accesses += 1;
        let e = self.lance.write(&self.mem, off, &v.to_le_bytes());
        self.after_write(e);
    }
    pub fn outl(&mut self, off: u64, v: u32) {
        self.accesses += 1;
        let e = self.lance.write(&self.mem, off, &v.to_le_bytes());
        self.after_write(e);
    }

    pub fn irq(&self) -> bool {
        self.lance.irq_level()
    }

    /// Deliver a frame from the wire.
    pub fn wire_rx(&mut self, frame: &[u8]) -> lancet::lance::RxOutcome {
        self.lance.receive(&self.mem, frame)
    }

    pub fn w16(&self, addr: u64, v: u16) {
        self.mem.write_obj(v, GuestAddress(addr)).unwrap();
    }
    pub fn w32(&self, addr: u64, v: u32) {
        self.mem.write_obj(v, GuestAddress(addr)).unwrap();
    }
    pub fn r16(&self, addr: u64) -> u16 {
        self.mem.read_obj(GuestAddress(addr)).unwrap()
    }
    pub fn r32(&self, addr: u64) -> u32 {
        self.mem.read_obj(GuestAddress(addr)).unwrap()
    }
    pub fn w8(&self, addr: u64, v: u8) {
        self.mem.write_obj(v, GuestAddress(addr)).unwrap();
    }
    pub fn r8(&self, addr: u64) -> u8 {
        self.mem.read_obj(GuestAddress(addr)).unwrap()
    }
    pub fn write_bytes(&self, addr: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(addr)).unwrap();
    }
    pub fn read_bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

// ---- register access methods (pcnet32_wio_* / pcnet32_dwio_*) ----

impl Access {
    fn rdp(self) -> u64 {
        0x10
    }
    fn rap(self) -> u64 {
        match self {
            Access::Wio => 0x12,
            Access::Dwio => 0x14,
        }
    }
    fn reset_port(self) -> u64 {
        match self {
            Access::Wio => 0x14,
            Access::Dwio => 0x18,
        }
    }
    fn bdp(self) -> u64 {
        match self {
            Access::Wio => 0x16,
            Access::Dwio => 0x1c,
        }
    }

    pub fn read_csr<T: FrameTx>(self, m: &mut Machine<T>, index: u16) -> u16 {
        match self {
            Access::Wio => {
                m.outw(self.rap(), index);
                m.inw(self.rdp())
            }
            Access::Dwio => {
                m.outl(self.rap(), u32::from(index));
                (m.inl(self.rdp()) & 0xffff) as u16
            }
        }
    }
    pub fn write_csr<T: FrameTx>(self, m: &mut Machine<T>, index: u16, v: u16) {
        match self {
            Access::Wio => {
                m.outw(self.rap(), index);
                m.outw(self.rdp(), v);
            }
            Access::Dwio => {
                m.outl(self.rap(), u32::from(index));
                m.outl(self.rdp(), u32::from(v));
            }
        }
    }
    pub fn read_bcr<T: FrameTx>(self, m: &mut Machine<T>, index: u16) -> u16 {
        match self {
            Access::Wio => {
                m.outw(self.rap(), index);
                m.inw(self.bdp())
            }
            Access::Dwio => {
                m.outl(self.rap(), u32::from(index));
                (m.inl(self.bdp()) & 0xffff) as u16
            }
        }
    }
    pub fn write_bcr<T: FrameTx>(self, m: &mut Machine<T>, index: u16, v: u16) {
        match self {
            Access::Wio => {
                m.outw(self.rap(), index);
                m.outw(self.bdp(), v);
            }
            Access::Dwio => {
                m.outl(self.rap(), u32::from(index));
                m.outl(self.bdp(), u32::from(v));
            }
        }
    }
    pub fn read_rap<T: FrameTx>(self, m: &mut Machine<T>) -> u16 {
        match self {
            Access::Wio => m.inw(self.rap()),
            Access::Dwio => (m.inl(self.rap()) & 0xffff) as u16,
        }
    }
    pub fn reset<T: FrameTx>(self, m: &mut Machine<T>) {
        match self {
            Access::Wio => {
                m.inw(self.reset_port());
            }
            Access::Dwio => {
                m.inl(self.reset_port());
            }
        }
    }
    /// pcnet32_{wio,dwio}_check: RAP reads back 88 after writing 88.
    pub fn check<T: FrameTx>(self, m: &mut Machine<T>) -> bool {
        match self {
            Access::Wio => m.outw(self.rap(), 88),
            Access::Dwio => m.outl(self.rap(), 88),
        }
        self.read_rap(m) == 88
    }
}

// ---- descriptor layouts, written independently of the model ----

pub const CSR0_INIT: u16 = 0x0001;
pub const CSR0_START: u16 = 0x0002;
pub const CSR0_STOP: u16 = 0x0004;
pub const CSR0_TXPOLL: u16 = 0x0008;
pub const CSR0_INTEN: u16 = 0x0040;
pub const CSR0_IDON: u16 = 0x0100;
pub const CSR0_NORMAL: u16 = CSR0_START | CSR0_INTEN;
pub const CSR5_SUSPEND: u16 = 0x0001;
pub const PKT_BUF_SIZE: u16 = 1544;
pub const NEG_BUF_SIZE: u16 = PKT_BUF_SIZE.wrapping_neg();

/// The descriptor format the driver programs (BCR20 SWSTYLE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwStyle {
    /// SWSTYLE 0: 16-bit structures (8-byte descriptors, 24-bit addresses).
    Lance16 = 0,
    /// SWSTYLE 2: what Linux uses.
    Pcnet32 = 2,
    /// SWSTYLE 3: words 0 and 2 swapped.
    Swapped = 3,
}

/// A descriptor as the driver sees it (the fields of `struct pcnet32_{rx,tx}_head`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Head {
    pub base: u32,
    pub length: u16,
    pub status: u16,
    /// RX: msg_length; TX: misc.
    pub misc: u32,
}

impl SwStyle {
    pub fn desc_size(self) -> u64 {
        match self {
            SwStyle::Lance16 => 8,
            _ => 16,
        }
    }

    /// Write a descriptor; the status goes last (after a "wmb()").
    pub fn write_head<T: FrameTx>(self, m: &Machine<T>, addr: u64, h: Head) {
        match self {
            SwStyle::Lance16 => {
                m.w16(addr, h.base as u16);
                m.w8(addr + 2, (h.base >> 16) as u8);
                m.w16(addr + 4, h.length);
                m.w16(addr + 6, (h.misc >> 16) as u16);
                m.w8(addr + 3, (h.status >> 8) as u8);
            }
            SwStyle::Pcnet32 | SwStyle::Swapped => {
                let (w0, w2) = if self == SwStyle::Pcnet32 {
                    (0, 8)
                } else {
                    (8, 0)
                };
                m.w32(addr + w0, h.base);
                m.w16(addr + 4, h.length);
                m.w32(addr + w2, h.misc);
                m.w16(addr + 6, h.status);
            }
        }
    }

    /// Write only the status word (what `rxp->status = 0x8000` does).
    pub fn write_status<T: FrameTx>(self, m: &Machine<T>, addr: u64, status: u16) {
        match self {
            SwStyle::Lance16 => m.w8(addr + 3, (status >> 8) as u8),
            _ => m.w16(addr + 6, status),
        }
    }

    pub fn read_head<T: FrameTx>(self, m: &Machine<T>, addr: u64) -> Head {
        match self {
            SwStyle::Lance16 => {
                let w0 = m.r32(addr);
                // In 16-bit style RMD3 is MCNT (RX) and TMD3 holds the error bits (TX): callers
                // know which; keep both views in `misc` (low half = raw word, high half = word<<16).
                let w3 = m.r16(addr + 6);
                Head {
                    base: w0 & 0xff_ffff,
                    length: m.r16(addr + 4),
                    status: ((w0 >> 16) & 0xff00) as u16,
                    misc: u32::from(w3) | (u32::from(w3) << 16),
                }
            }
            SwStyle::Pcnet32 | SwStyle::Swapped => {
                let (w0, w2) = if self == SwStyle::Pcnet32 {
                    (0, 8)
                } else {
                    (8, 0)
                };
                Head {
                    base: m.r32(addr + w0),
                    length: m.r16(addr + 4),
                    status: m.r16(addr + 6),
                    misc: m.r32(addr + w2),
                }
            }
        }
    }

    /// MCNT of an RX head.
    pub fn mcnt(self, h: &Head) -> u16 {
        (h.misc & 0xfff) as u16
    }

    /// TX error bits (TMD2 layout) of a TX head.
    pub fn tx_errors(self, h: &Head) -> u32 {
        match self {
            SwStyle::Lance16 => h.misc & 0xffff_0000,
            _ => h.misc,
        }
    }
}

// ---- the driver ----

/// Frame the driver's NAPI rx handed to the stack, with the descriptor facts the tests check.
#[derive(Debug, Clone)]
pub struct RxFrame {
    pub data: Vec<u8>,
    pub status: u16,
    pub mcnt: u16,
}

/// `dev->stats` counters the driver maintains.
#[derive(Debug, Default, Clone)]
pub struct DevStats {
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_over_errors: u64,
    pub rx_fifo_errors: u64,
    pub rx_missed_errors: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_carrier_errors: u64,
    pub tx_fifo_errors: u64,
}

/// Driver configuration (Linux defaults: WIO, SWSTYLE 2, 16 TX / 32 RX).
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub access: Access,
    pub style: SwStyle,
    pub log_tx: u8,
    pub log_rx: u8,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            access: Access::Wio,
            style: SwStyle::Pcnet32,
            log_tx: 4,
            log_rx: 5,
        }
    }
}

/// Guest-physical layout the driver allocates from (below 16 MiB so 24-bit styles work).
pub const INIT_BLOCK: u64 = 0x1000;
pub const RX_RING: u64 = 0x2000;
pub const TX_RING: u64 = 0x4000;
pub const RX_BUFS: u64 = 0x10_0000;
pub const TX_BUFS: u64 = 0x40_0000;

pub struct Pcnet32 {
    pub cfg: Config,
    pub a: Access,
    pub mac: [u8; 6],
    pub chip_version: u32,
    pub rx_ring_size: usize,
    pub tx_ring_size: usize,
    pub cur_rx: usize,
    pub cur_tx: usize,
    pub dirty_tx: usize,
    pub tx_full: bool,
    pub promisc: bool,
    pub mc_list: Vec<[u8; 6]>,
    pub received: Vec<RxFrame>,
    pub stats: DevStats,
    pub napi_budget: usize,
    pub must_restart: bool,
    pub irq_handled: u64,
}

impl Pcnet32 {
    /// pcnet32_probe1: reset, find the access method, check the chip id, read the MAC.
    pub fn probe<T: FrameTx>(m: &mut Machine<T>, cfg: Config) -> Result<Self, String> {
        Access::Wio.reset(m);
        let a = if Access::Wio.read_csr(m, 0) == 4 && Access::Wio.check(m) {
            Access::Wio
        } else {
            Access::Dwio.reset(m);
            if Access::Dwio.read_csr(m, 0) == 4 && Access::Dwio.check(m) {
                Access::Dwio
            } else {
                return Err("No access methods".into());
            }
        };
        let chip_version = u32::from(a.read_csr(m, 88)) | (u32::from(a.read_csr(m, 89)) << 16);
        if chip_version & 0xfff != 0x003 {
            return Err(format!("Unsupported chip version {chip_version:#x}"));
        }
        if (chip_version >> 12) & 0xffff != 0x2621 {
            return Err(format!("not a PCnet/PCI II 79C970A: {chip_version:#x}"));
        }
        let mut mac = [0u8; 6];
        for i in 0..3 {
            let v = a.read_csr(m, 12 + i as u16);
            mac[2 * i] = v as u8;
            mac[2 * i + 1] = (v >> 8) as u8;
        }
        let mut prom = [0u8; 6];
        for (i, b) in prom.iter_mut().enumerate() {
            *b = m.inb(i as u64);
        }
        if prom != mac {
            return Err(format!("PROM {prom:02x?} != CSR12-14 {mac:02x?}"));
        }
        let drv = Pcnet32 {
            cfg,
            a,
            mac,
            chip_version,
            rx_ring_size: 1 << cfg.log_rx,
            tx_ring_size: 1 << cfg.log_tx,
            cur_rx: 0,
            cur_tx: 0,
            dirty_tx: 0,
            tx_full: false,
            promisc: false,
            mc_list: Vec::new(),
            received: Vec::new(),
            stats: DevStats::default(),
            napi_budget: ((1usize << cfg.log_rx) / 2).max(1),
            must_restart: false,
            irq_handled: 0,
        };
        // init block "Disable Rx and Tx", then switch to the chosen style and point CSR1/2 at it.
        drv.write_init_block(m, 0x0003);
        a.write_bcr(m, 20, cfg.style as u16);
        a.write_csr(m, 1, (INIT_BLOCK & 0xffff) as u16);
        a.write_csr(m, 2, (INIT_BLOCK >> 16) as u16);
        // enable LED writes
        let v = a.read_bcr(m, 2);
        a.write_bcr(m, 2, v | 0x1000);
        Ok(drv)
    }

    fn ladrf(&self) -> [u16; 4] {
        let mut t = [0u16; 4];
        for addr in &self.mc_list {
            let crc = lancet::lance::filter::ether_crc_le(addr) >> 26;
            t[(crc >> 4) as usize] |= 1 << (crc & 0xf);
        }
        t
    }

    fn write_init_block<T: FrameTx>(&self, m: &Machine<T>, mode: u16) {
        let ib = INIT_BLOCK;
        let ladrf = self.ladrf();
        match self.cfg.style {
            SwStyle::Lance16 => {
                m.w16(ib, mode);
                m.write_bytes(ib + 2, &self.mac);
                for (i, w) in ladrf.iter().enumerate() {
                    m.w16(ib + 8 + 2 * i as u64, *w);
                }
                m.w32(
                    ib + 16,
                    (RX_RING as u32 & 0xff_ffff) | (u32::from(self.cfg.log_rx) << 29),
                );
                m.w32(
                    ib + 20,
                    (TX_RING as u32 & 0xff_ffff) | (u32::from(self.cfg.log_tx) << 29),
                );
            }
            _ => {
                m.w16(ib, mode);
                m.w16(
                    ib + 2,
                    (u16::from(self.cfg.log_tx) << 12) | (u16::from(self.cfg.log_rx) << 4),
                );
                m.write_bytes(ib + 4, &self.mac);
                m.w16(ib + 10, 0);
                for (i, w) in ladrf.iter().enumerate() {
                    m.w16(ib + 12 + 2 * i as u64, *w);
                }
                m.w32(ib + 20, RX_RING as u32);
                m.w32(ib + 24, TX_RING as u32);
            }
        }
    }

    pub fn rx_desc(&self, i: usize) -> u64 {
        RX_RING + i as u64 * self.cfg.style.desc_size()
    }
    pub fn tx_desc(&self, i: usize) -> u64 {
        TX_RING + i as u64 * self.cfg.style.desc_size()
    }
    pub fn rx_buf(&self, i: usize) -> u64 {
        RX_BUFS + i as u64 * 2048
    }
    pub fn tx_buf(&self, i: usize) -> u64 {
        TX_BUFS + i as u64 * 2048
    }

    /// pcnet32_init_ring
    fn init_ring<T: FrameTx>(&mut self, m: &Machine<T>) {
        self.cur_rx = 0;
        self.cur_tx = 0;
        self.dirty_tx = 0;
        self.tx_full = false;
        for i in 0..self.rx_ring_size {
            self.cfg.style.write_head(
                m,
                self.rx_desc(i),
                Head {
                    base: self.rx_buf(i) as u32,
                    length: NEG_BUF_SIZE,
                    status: 0x8000,
                    misc: 0,
                },
            );
        }
        for i in 0..self.tx_ring_size {
            self.cfg
                .style
                .write_head(m, self.tx_desc(i), Head::default());
        }
    }

    /// Rewrite the init block and both rings as `open` leaves them (for tests that reset the
    /// chip behind the driver's back).
    pub fn write_rings_for_test<T: FrameTx>(&mut self, m: &mut Machine<T>) {
        let mode = if self.promisc { 0x8000 } else { 0 };
        self.write_init_block(m, mode);
        self.init_ring(m);
    }

    /// pcnet32_open
    pub fn open<T: FrameTx>(&mut self, m: &mut Machine<T>) {
        let a = self.a;
        a.reset(m);
        a.write_bcr(m, 20, self.cfg.style as u16);
        let v = a.read_bcr(m, 2) & !2;
        a.write_bcr(m, 2, v | 2); // ASEL
        let v = a.read_bcr(m, 9) & !3; // fdx chip, ASEL: no forced full duplex
        a.write_bcr(m, 9, v);
        let v = a.read_csr(m, 124) & !0x10;
        a.write_csr(m, 124, v);
        let mode = if self.promisc { 0x8000 } else { 0 };
        self.write_init_block(m, mode);
        self.init_ring(m);
        a.write_csr(m, 1, (INIT_BLOCK & 0xffff) as u16);
        a.write_csr(m, 2, (INIT_BLOCK >> 16) as u16);
        a.write_csr(m, 4, 0x0915);
        a.write_csr(m, 0, CSR0_INIT);
        let mut i = 0;
        while i < 100 {
            i += 1;
            if a.read_csr(m, 0) & CSR0_IDON != 0 {
                break;
            }
        }
        a.write_csr(m, 0, CSR0_NORMAL);
    }

    /// pcnet32_get_link (no MII on a 79C970A: BCR4 != 0xc0 means link).
    pub fn link_ok<T: FrameTx>(&self, m: &mut Machine<T>) -> bool {
        self.a.read_bcr(m, 4) != 0xc0
    }

    /// pcnet32_start_xmit. Returns false (NETDEV_TX_BUSY) if the ring is full.
    pub fn start_xmit<T: FrameTx>(&mut self, m: &mut Machine<T>, frame: &[u8]) -> bool {
        if self.tx_full {
            return false;
        }
        let entry = self.cur_tx & (self.tx_ring_size - 1);
        let buf = self.tx_buf(entry);
        m.write_bytes(buf, frame);
        let style = self.cfg.style;
        style.write_head(
            m,
            self.tx_desc(entry),
            Head {
                base: buf as u32,
                length: (frame.len() as u16).wrapping_neg(),
                status: 0x8300,
                misc: 0,
            },
        );
        self.cur_tx += 1;
        self.a.write_csr(m, 0, CSR0_INTEN | CSR0_TXPOLL);
        let next = (entry + 1) & (self.tx_ring_size - 1);
        if style.read_head(m, self.tx_desc(next)).base != 0 {
            self.tx_full = true;
        }
        true
    }

    /// pcnet32_interrupt + the NAPI poll it schedules. Returns false if the line was not
    /// asserted (the handler would not run).
    pub fn interrupt<T: FrameTx>(&mut self, m: &mut Machine<T>) -> bool {
        if !m.irq() {
            return false;
        }
        self.irq_handled += 1;
        let a = self.a;
        let csr0 = a.read_csr(m, 0);
        // Linux loops while csr0 & 0x8f00, but napi_schedule_prep succeeds on the first pass
        // and the loop breaks right after scheduling NAPI.
        if csr0 & 0x8f00 != 0 {
            // Acknowledge all of the current interrupt sources ASAP.
            a.write_csr(m, 0, csr0 & !0x004f);
            if csr0 & 0x4000 != 0 {
                self.stats.tx_errors += 1;
            }
            if csr0 & 0x1000 != 0 {
                self.stats.rx_errors += 1;
            }
            let v = a.read_csr(m, 3) | 0x5f00;
            a.write_csr(m, 3, v);
            // The NAPI softirq polls again while a poll uses its whole budget.
            let mut polls = 0;
            while self.napi_poll(m) >= self.napi_budget {
                polls += 1;
                assert!(polls < 10_000, "NAPI never completes");
            }
        }
        true
    }

    /// pcnet32_poll
    pub fn napi_poll<T: FrameTx>(&mut self, m: &mut Machine<T>) -> usize {
        let work = self.rx(m, self.napi_budget);
        if self.tx(m) {
            self.must_restart = true;
        }
        if work < self.napi_budget {
            let v = self.a.read_csr(m, 3) & 0x00ff;
            self.a.write_csr(m, 3, v);
            self.a.write_csr(m, 0, CSR0_INTEN);
        }
        work
    }

    /// pcnet32_rx + pcnet32_rx_entry
    fn rx<T: FrameTx>(&mut self, m: &mut Machine<T>, budget: usize) -> usize {
        let style = self.cfg.style;
        let mut n = 0;
        while n < budget {
            let entry = self.cur_rx & (self.rx_ring_size - 1);
            let addr = self.rx_desc(entry);
            let head = style.read_head(m, addr);
            if head.status & 0x8000 != 0 {
                break;
            }
            let status = head.status >> 8;
            if status != 0x03 {
                if status & 0x01 != 0 {
                    self.stats.rx_errors += 1;
                }
                if status & 0x10 != 0 {
                    self.stats.rx_over_errors += 1;
                }
                if status & 0x04 != 0 {
                    self.stats.rx_fifo_errors += 1;
                }
                self.received.push(RxFrame {
                    data: Vec::new(),
                    status: head.status,
                    mcnt: style.mcnt(&head),
                });
            } else {
                let mcnt = style.mcnt(&head);
                let pkt_len = usize::from(mcnt).saturating_sub(4);
                let data = m.read_bytes(u64::from(head.base), pkt_len);
                self.stats.rx_packets += 1;
                self.received.push(RxFrame {
                    data,
                    status: head.status,
                    mcnt,
                });
            }
            n += 1;
            // give the buffer back: length first, then status (wmb)
            m.w16(addr + 4, NEG_BUF_SIZE);
            style.write_status(m, addr, 0x8000);
            self.cur_rx += 1;
        }
        n
    }

    /// pcnet32_tx: reap completed descriptors. Returns must_restart (UFLO).
    fn tx<T: FrameTx>(&mut self, m: &mut Machine<T>) -> bool {
        let style = self.cfg.style;
        let mut must_restart = false;
        while self.dirty_tx != self.cur_tx {
            let entry = self.dirty_tx & (self.tx_ring_size - 1);
            let addr = self.tx_desc(entry);
            let head = style.read_head(m, addr);
            if head.status & 0x8000 != 0 {
                break;
            }
            // tx_ring[entry].base = 0
            match style {
                SwStyle::Lance16 => {
                    m.w16(addr, 0);
                    m.w8(addr + 2, 0);
                }
                SwStyle::Pcnet32 => m.w32(addr, 0),
                SwStyle::Swapped => m.w32(addr + 8, 0),
            }
            if head.status & 0x4000 != 0 {
                let err = style.tx_errors(&head);
                self.stats.tx_errors += 1;
                if err & 0x0800_0000 != 0 {
                    self.stats.tx_carrier_errors += 1;
                }
                if err & 0x4000_0000 != 0 {
                    self.stats.tx_fifo_errors += 1;
                    must_restart = true;
                }
            } else {
                self.stats.tx_packets += 1;
            }
            self.dirty_tx += 1;
        }
        let delta = self.cur_tx - self.dirty_tx;
        if self.tx_full && delta < self.tx_ring_size - 2 {
            self.tx_full = false;
        }
        must_restart
    }

    /// pcnet32_suspend (79C970A path): set SPND and poll until it reads back.
    fn suspend<T: FrameTx>(&mut self, m: &mut Machine<T>) -> bool {
        let a = self.a;
        let csr5 = a.read_csr(m, 5);
        a.write_csr(m, 5, csr5 | CSR5_SUSPEND);
        for _ in 0..200 {
            if a.read_csr(m, 5) & CSR5_SUSPEND != 0 {
                return true;
            }
        }
        false
    }

    /// pcnet32_set_multicast_list
    pub fn set_multicast_list<T: FrameTx>(
        &mut self,
        m: &mut Machine<T>,
        promisc: bool,
        list: &[[u8; 6]],
    ) {
        self.promisc = promisc;
        self.mc_list = list.to_vec();
        let a = self.a;
        let suspended = self.suspend(m);
        let csr15 = a.read_csr(m, 15);
        if promisc {
            a.write_csr(m, 15, csr15 | 0x8000);
        } else {
            a.write_csr(m, 15, csr15 & 0x7fff);
            for (i, w) in self.ladrf().iter().enumerate() {
                a.write_csr(m, 8 + i as u16, *w);
            }
        }
        assert!(suspended, "79C970A must suspend");
        let csr5 = a.read_csr(m, 5);
        a.write_csr(m, 5, csr5 & !CSR5_SUSPEND);
    }

    /// pcnet32_close. Returns rx_missed_errors (CSR112).
    pub fn close<T: FrameTx>(&mut self, m: &mut Machine<T>) -> u16 {
        let a = self.a;
        let missed = a.read_csr(m, 112);
        self.stats.rx_missed_errors = u64::from(missed);
        a.write_csr(m, 0, CSR0_STOP);
        a.write_bcr(m, 20, 4);
        // purge rings: CPU owns every descriptor
        for i in 0..self.rx_ring_size {
            self.cfg.style.write_status(m, self.rx_desc(i), 0);
        }
        for i in 0..self.tx_ring_size {
            self.cfg.style.write_status(m, self.tx_desc(i), 0);
        }
        missed
    }

    /// Drive interrupts until the line stays low (what the CPU does with a level interrupt).
    pub fn service_interrupts<T: FrameTx>(&mut self, m: &mut Machine<T>) -> u32 {
        let mut n = 0;
        while self.interrupt(m) {
            n += 1;
            assert!(n < 1000, "interrupt storm: line never drops");
        }
        n
    }
}

/// A test frame: destination, our source, ethertype 0x88b5 (local experimental), a sequence
/// number and a byte pattern, `len` bytes in total.
pub fn make_frame(dst: [u8; 6], src: [u8; 6], seq: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(&seq.to_be_bytes());
    while f.len() < len {
        f.push((f.len() as u32 ^ seq) as u8);
    }
    f.truncate(len);
    f
}
