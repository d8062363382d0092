//! A "null guest" for the backend tests and `benches/net_bench.rs`: a minimal in-process driver that programs
//! the Lance model the way Linux pcnet32 does (WIO register access, SWSTYLE 2, 32-bit descriptors),
//! polls the rings instead of taking interrupts, and connects the model to a backend the way the
//! VMM's I/O thread does (`rx_room` -> `recv_batch` -> `receive`; TDMD -> `transmit`).

use crate::lance::{
    pci::{COMMAND_BUS_MASTER, COMMAND_IO, COMMAND_MEM},
    regs::{
        CSR0_IDON, CSR0_INIT, CSR0_STRT, CSR0_TDMD, CSR_IADR_HI, CSR_IADR_LO, CSR_STATUS, RDP,
        WIO_BDP, WIO_RAP, WIO_RESET,
    },
    IrqLine, Lance, TxReport,
};
use crate::net::{Backend, NetError};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};

/// The interrupt line of a polling guest: ignored.
pub struct NoIrq;

impl IrqLine for NoIrq {
    fn set_level(&mut self, _asserted: bool) {}
}

const MEM_SIZE: usize = 4 << 20;
const INIT_BLOCK: u64 = 0x1000;
const RX_RING: u64 = 0x2000;
const TX_RING: u64 = 0x4000;
const BUFFERS: u64 = 0x10000;
const BUF_SIZE: u64 = 1536;
const DESC_SIZE: u64 = 16;
const FCS_LEN: usize = 4;
/// BCR20 software style 2: 32-bit structures (PCnet-PCI II).
const SWSTYLE_PCNET_PCI: u16 = 2;
const BCR_SWS: u16 = 20;
/// PCI configuration space offset of the COMMAND register.
const PCI_COMMAND: usize = 0x04;
/// Descriptor word 1 bits (SWSTYLE 2).
const OWN: u32 = 1 << 31;
const ERR: u32 = 1 << 30;
const STP: u32 = 1 << 25;
const ENP: u32 = 1 << 24;
const ONES: u32 = 0xf000;
const BCNT_MASK: u32 = 0x0fff;

/// The guest side: guest memory, the model, ring positions.
pub struct NullGuest {
    pub mem: GuestMemoryMmap,
    pub lance: Lance<NoIrq>,
    rx_len: u32,
    tx_len: u32,
    rx_next: u32,
    tx_next: u32,
    tx_clean: u32,
    tx_busy: u32,
}

impl NullGuest {
    /// A started chip with `rx_log2`/`tx_log2` ring sizes (Linux pcnet32: 5 and 4) and every RX
    /// descriptor owned by the chip.
    pub fn new(mac: [u8; 6], rx_log2: u8, tx_log2: u8) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)])
            .expect("the null guest's own memory");
        let mut lance = Lance::new(mac, NoIrq);
        let command = COMMAND_IO | COMMAND_MEM | COMMAND_BUS_MASTER;
        lance.pci_config_write(PCI_COMMAND, &command.to_le_bytes());
        let mut g = Self {
            mem,
            lance,
            rx_len: 1 << rx_log2,
            tx_len: 1 << tx_log2,
            rx_next: 0,
            tx_next: 0,
            tx_clean: 0,
            tx_busy: 0,
        };
        let mut scratch = [0u8; 2];
        g.lance.read(&g.mem, WIO_RESET, &mut scratch);
        g.bcr_write(BCR_SWS, SWSTYLE_PCNET_PCI);
        // Init block, SWSTYLE 2: MODE, RLEN/TLEN nibbles, PADR, LADRF, RDRA, TDRA.
        let mut ib = [0u8; 28];
        ib[2] = rx_log2 << 4;
        ib[3] = tx_log2 << 4;
        ib[4..10].copy_from_slice(&mac);
        ib[20..24].copy_from_slice(&(RX_RING as u32).to_le_bytes());
        ib[24..28].copy_from_slice(&(TX_RING as u32).to_le_bytes());
        g.mem
            .write_slice(&ib, GuestAddress(INIT_BLOCK))
            .expect("the null guest's own memory");
        for i in 0..g.rx_len {
            g.give_rx(i);
        }
        for i in 0..g.tx_len {
            g.write_u32(TX_RING + u64::from(i) * DESC_SIZE, g.tx_buf(i) as u32);
            g.write_u32(TX_RING + u64::from(i) * DESC_SIZE + 4, 0);
        }
        g.csr_write(CSR_IADR_LO as u16, INIT_BLOCK as u16);
        g.csr_write(CSR_IADR_HI as u16, (INIT_BLOCK >> 16) as u16);
        g.csr_write(CSR_STATUS as u16, CSR0_INIT);
        assert!(
            g.csr_read(CSR_STATUS as u16) & CSR0_IDON != 0,
            "the model did not finish INIT"
        );
        g.csr_write(CSR_STATUS as u16, CSR0_IDON | CSR0_STRT);
        g
    }

    fn rx_buf(&self, i: u32) -> u64 {
        BUFFERS + u64::from(i) * BUF_SIZE
    }

    fn tx_buf(&self, i: u32) -> u64 {
        BUFFERS + u64::from(self.rx_len + i) * BUF_SIZE
    }

    fn read_u32(&self, addr: u64) -> u32 {
        self.mem
            .read_obj::<u32>(GuestAddress(addr))
            .expect("the null guest's own memory")
    }

    fn write_u32(&self, addr: u64, v: u32) {
        self.mem
            .write_obj(v, GuestAddress(addr))
            .expect("the null guest's own memory")
    }

    fn csr_write(&mut self, csr: u16, value: u16) -> crate::lance::RegEffect {
        self.lance.write(&self.mem, WIO_RAP, &csr.to_le_bytes());
        self.lance.write(&self.mem, RDP, &value.to_le_bytes())
    }

    fn csr_read(&mut self, csr: u16) -> u16 {
        self.lance.write(&self.mem, WIO_RAP, &csr.to_le_bytes());
        let mut b = [0u8; 2];
        self.lance.read(&self.mem, RDP, &mut b);
        u16::from_le_bytes(b)
    }

    fn bcr_write(&mut self, bcr: u16, value: u16) {
        self.lance.write(&self.mem, WIO_RAP, &bcr.to_le_bytes());
        self.lance.write(&self.mem, WIO_BDP, &value.to_le_bytes());
    }

    /// Hand RX descriptor `i` (with its buffer) to the chip.
    fn give_rx(&self, i: u32) {
        let d = RX_RING + u64::from(i) * DESC_SIZE;
        self.write_u32(d, self.rx_buf(i) as u32);
        self.write_u32(d + 8, 0);
        let bcnt = (BUF_SIZE as u32).wrapping_neg() & BCNT_MASK;
        self.write_u32(d + 4, OWN | ONES | bcnt);
    }

    /// The guest's receive poll: hand every completed frame (without FCS) to `f`, give the
    /// descriptors back. Bounded by the ring length.
    pub fn poll_rx(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let mut buf = [0u8; 1536];
        let mut n = 0;
        while n < self.rx_len as usize {
            let d = RX_RING + u64::from(self.rx_next) * DESC_SIZE;
            let status = self.read_u32(d + 4);
            if status & OWN != 0 {
                break;
            }
            if status & ERR == 0 {
                let mcnt = (self.read_u32(d + 8) & BCNT_MASK) as usize;
                let len = mcnt.saturating_sub(FCS_LEN).min(buf.len());
                self.mem
                    .read_slice(&mut buf[..len], GuestAddress(self.rx_buf(self.rx_next)))
                    .expect("the null guest's own memory");
                f(&buf[..len]);
            }
            self.give_rx(self.rx_next);
            self.rx_next = (self.rx_next + 1) % self.rx_len;
            n += 1;
        }
        n
    }

    /// Reclaim transmitted descriptors; returns how many TX descriptors are free.
    fn reclaim_tx(&mut self) -> u32 {
        while self.tx_busy > 0 {
            let d = TX_RING + u64::from(self.tx_clean) * DESC_SIZE;
            if self.read_u32(d + 4) & OWN != 0 {
                break;
            }
            self.tx_clean = (self.tx_clean + 1) % self.tx_len;
            self.tx_busy -= 1;
        }
        self.tx_len - self.tx_busy
    }

    /// Queue one frame on the TX ring (false when the ring is full).
    pub fn queue_tx(&mut self, frame: &[u8]) -> bool {
        if frame.len() > BUF_SIZE as usize || self.reclaim_tx() == 0 {
            return false;
        }
        let i = self.tx_next;
        let d = TX_RING + u64::from(i) * DESC_SIZE;
        self.mem
            .write_slice(frame, GuestAddress(self.tx_buf(i)))
            .expect("the null guest's own memory");
        self.write_u32(d + 8, 0);
        let bcnt = (frame.len() as u32).wrapping_neg() & BCNT_MASK;
        self.write_u32(d + 4, OWN | STP | ENP | ONES | bcnt);
        self.tx_next = (i + 1) % self.tx_len;
        self.tx_busy += 1;
        true
    }

    /// The guest writes TDMD; the VMM answers the transmit demand.
    pub fn kick_tx(&mut self, backend: &mut dyn Backend) -> TxReport {
        let effect = self.csr_write(CSR_STATUS as u16, CSR0_TDMD);
        if effect.tx_demand {
            self.lance.transmit(&self.mem, backend)
        } else {
            TxReport::default()
        }
    }

    /// The VMM's RX step: move as many frames from the backend into the guest ring as it has room
    /// for ([`pump_rx`]); the rest stay queued in the backend.
    pub fn pump_rx(&mut self, backend: &mut dyn Backend) -> usize {
        pump_rx(&mut self.lance, &self.mem, backend).unwrap_or(0)
    }
}

/// The VMM's RX pump as the tests and benchmarks drive it: as many frames from `backend` into the
/// chip's receive ring as it has free descriptors for (`rx_room` -> `recv_batch` -> `receive`);
/// the rest stay queued in the backend. Returns how many frames moved.
pub fn pump_rx<I: IrqLine, M: GuestMemory>(
    lance: &mut Lance<I>,
    mem: &M,
    backend: &mut dyn Backend,
) -> Result<usize, NetError> {
    let room = lance.rx_room(mem);
    if room == 0 {
        return Ok(0);
    }
    backend.recv_batch(room, &mut |f| {
        lance.receive(mem, f);
    })
}
