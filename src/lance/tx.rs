//! The transmit path: walks owned descriptors from the current ring position (at most one ring
//! length per call), assembles STP..ENP chains straight into the backend's buffer (or the
//! loopback buffer), hands descriptors back with status/error bits, TINT, LCAR, UFLO/BUFF,
//! oversize drops, auto-padding, and the polling predicate.

use vm_memory::GuestMemory;

use super::desc::{encode_tx_misc, Desc, Style};
use super::dma::RingMem;
use super::regs::*;
use super::rx::Fcs;
use super::{FrameTx, IrqLine, Lance, TxReport, MAX_FRAME_LEN};

/// How a chain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChainEnd {
    /// ENP found.
    Complete,
    /// The next descriptor was not owned, or the ring length was exhausted, before ENP.
    Underflow,
    /// The next descriptor could not be read (MERR): the walk stops here.
    DescriptorFault,
}

/// What happened to one chain.
struct Chain {
    /// Bytes assembled.
    len: usize,
    end: ChainEnd,
    /// TMD2 error bits written to the last descriptor (0: frame good).
    errors: u32,
    /// The chain did not fit the frame buffer.
    oversize: bool,
    /// The last descriptor asked for an interrupt (LTINT).
    ltint: bool,
}

impl Chain {
    fn good(&self) -> bool {
        self.end == ChainEnd::Complete && self.errors == 0
    }
}

/// Where the bytes of a chain go.
enum Sink<'a> {
    /// Copy into this buffer (backend or loopback), at most `MAX_FRAME_LEN` bytes.
    Buffer(&'a mut [u8]),
    /// Walk and hand back without copying (frame dropped, e.g. no carrier).
    Discard,
}

/// Where a frame's chain walk starts and how it reads the ring: the same whichever [`Sink`] the
/// frame goes to.
struct ChainStart<'r, 'm, M: GuestMemory + ?Sized> {
    mem: &'m M,
    ring: &'r RingMem<'m, M>,
    style: Style,
    /// Address bits 24-31 for 16-bit structures (CSR2 high byte), 0 for 32-bit ones.
    high: u32,
    /// The STP descriptor and its guest address.
    first: Desc,
    first_addr: u64,
}

impl<I: IrqLine> Lance<I> {
    fn tx_running(&self) -> bool {
        self.csr[CSR_STATUS] & CSR0_TXON != 0
            && !self.stopped_or_suspended()
            && self.pci.bus_master()
    }

    /// The chip polls its TX ring by itself: TXON, not stopped/suspended, and CSR4 DPOLL clear.
    /// The VMM may call `transmit()` periodically while this holds.
    pub fn tx_polling(&self) -> bool {
        self.tx_running() && self.csr[CSR_FEATURES] & CSR4_DPOLL == 0
    }

    /// Transmit every complete frame the guest has handed to the chip, visiting at most one ring
    /// length of descriptors, into `tx` (or back into RX in loopback mode).
    pub fn transmit<M: GuestMemory + ?Sized, T: FrameTx + ?Sized>(
        &mut self,
        mem: &M,
        tx: &mut T,
    ) -> TxReport {
        let mut report = TxReport::default();
        self.csr[CSR_STATUS] &= !CSR0_TDMD;
        let committed = if self.tx_running() {
            self.transmit_frames(mem, tx, &mut report)
        } else {
            0
        };
        if committed > 0 {
            tx.tx_flush();
        }
        self.update_irq();
        report
    }

    /// The walk behind `transmit`; returns how many frames were committed to the backend.
    fn transmit_frames<M: GuestMemory + ?Sized, T: FrameTx + ?Sized>(
        &mut self,
        mem: &M,
        tx: &mut T,
        report: &mut TxReport,
    ) -> u32 {
        let mut committed = 0;
        let style = self.style();
        let high = self.high_addr(style);
        let desc_len = style.desc_len();
        let apad = self.csr[CSR_FEATURES] & CSR4_APAD_XMT != 0;
        let ring = RingMem::new(mem, self.tx_ring, usize::from(self.tx_len) * desc_len);
        let mut budget = u32::from(self.tx_len);
        let mut raw = [0u8; 16];
        while budget > 0 {
            let addr = Self::desc_addr(self.tx_ring, self.tx_pos, style);
            if !self.ring_read(&ring, addr, &mut raw[..desc_len]) {
                return committed;
            }
            let first = Desc::decode(style, &raw, high);
            if first.status & DESC_OWN == 0 {
                return committed;
            }
            if first.status & DESC_STP == 0 {
                // Not the start of a frame: hand it back unsent, flagged.
                budget -= 1;
                self.tx_pos = Self::next_pos(self.tx_pos, self.tx_len);
                self.stats.tx_underflow += 1;
                self.stats.tx_errors += 1;
                report.errors += 1;
                if !self.finish_descriptor(&ring, style, addr, first.status, TMD_BUFF) {
                    return committed;
                }
                continue;
            }
            let start = ChainStart {
                mem,
                ring: &ring,
                style,
                high,
                first,
                first_addr: addr,
            };
            let loopback = self.loopback();
            let chain = if !loopback && !tx.link_up() {
                self.walk_chain(&start, &mut budget, Sink::Discard, TMD_LCAR)
            } else if loopback {
                let mut buf = std::mem::take(&mut self.loop_buf);
                let chain = self.walk_chain(&start, &mut budget, Sink::Buffer(&mut buf), 0);
                if chain.good() {
                    let len = pad_frame(apad, &mut buf, chain.len);
                    let add_fcs =
                        first.status & TMD_ADD_FCS != 0 || self.csr[CSR_MODE] & MODE_DXMTFCS == 0;
                    let fcs = if add_fcs { Fcs::Computed } else { Fcs::InFrame };
                    self.receive_frame(mem, &buf[..len], fcs);
                    self.stats.loopback_frames += 1;
                    self.count_sent(report, len);
                }
                self.loop_buf = buf;
                chain
            } else {
                let Some(buf) = tx.tx_buffer() else {
                    report.blocked = true;
                    self.stats.tx_blocked += 1;
                    return committed;
                };
                let chain = self.walk_chain(&start, &mut budget, Sink::Buffer(&mut *buf), 0);
                let sent = chain.good().then(|| pad_frame(apad, buf, chain.len));
                if let Some(len) = sent {
                    tx.tx_commit(len);
                    committed += 1;
                    self.count_sent(report, len);
                }
                chain
            };
            self.account_chain(&chain, first.status, report);
            match chain.end {
                ChainEnd::Complete => {}
                ChainEnd::DescriptorFault => return committed,
                ChainEnd::Underflow => {
                    if self.csr[CSR_MASKS] & CSR3_DXSUFLO == 0 {
                        // The transmitter turns off on underflow unless DXSUFLO.
                        self.csr[CSR_STATUS] &= !CSR0_TXON;
                        return committed;
                    }
                }
            }
        }
        committed
    }

    fn count_sent(&mut self, report: &mut TxReport, len: usize) {
        report.frames += 1;
        report.bytes += len as u64;
        self.stats.tx_frames += 1;
        self.stats.tx_bytes += len as u64;
        self.csr[CSR_FEATURES] |= CSR4_TXSTRT;
    }

    /// Counters and TINT for a finished chain.
    fn account_chain(&mut self, chain: &Chain, first_status: u16, report: &mut TxReport) {
        if !chain.good() {
            report.errors += 1;
            self.stats.tx_errors += 1;
            if chain.errors & TMD_LCAR != 0 {
                self.stats.tx_lcar += 1;
            } else if chain.oversize {
                self.stats.tx_dropped_oversize += 1;
            } else if chain.errors & TMD_UFLO != 0 {
                self.stats.tx_underflow += 1;
            }
        }
        let csr5 = self.csr[CSR_EXT_CTRL];
        let ltint = chain.ltint || first_status & TMD_LTINT != 0;
        if csr5 & CSR5_TOKINTD == 0 || (csr5 & CSR5_LTINTEN != 0 && ltint) || !chain.good() {
            self.csr[CSR_STATUS] |= CSR0_TINT;
        }
    }

    /// Follow a chain from its STP descriptor to ENP, copying buffers into `sink`, handing every
    /// descriptor back (the last one with `errors` and any error found). Consumes `budget`.
    fn walk_chain<M: GuestMemory + ?Sized>(
        &mut self,
        start: &ChainStart<'_, '_, M>,
        budget: &mut u32,
        mut sink: Sink,
        errors: u32,
    ) -> Chain {
        let ChainStart {
            mem,
            ring,
            style,
            high,
            first,
            first_addr,
        } = *start;
        let limit = match &sink {
            Sink::Buffer(buf) => buf.len().min(MAX_FRAME_LEN),
            Sink::Discard => 0,
        };
        let mut chain = Chain {
            len: 0,
            end: ChainEnd::Complete,
            errors,
            oversize: false,
            ltint: false,
        };
        let (mut cur, mut cur_addr) = (first, first_addr);
        let mut raw = [0u8; 16];
        loop {
            *budget = budget.saturating_sub(1);
            self.tx_pos = Self::next_pos(self.tx_pos, self.tx_len);
            if chain.errors == 0 {
                if let Sink::Buffer(buf) = &mut sink {
                    let n = cur.buf_len();
                    if chain.len + n > limit {
                        chain.oversize = true;
                        chain.errors |= TMD_BUFF;
                    } else if self.dma_read(mem, cur.buf, &mut buf[chain.len..chain.len + n]) {
                        chain.len += n;
                    } else {
                        chain.errors |= TMD_BUFF;
                    }
                }
            }
            if cur.status & DESC_ENP != 0 {
                chain.ltint = cur.status & TMD_LTINT != 0;
                self.finish_descriptor(ring, style, cur_addr, cur.status, chain.errors);
                return chain;
            }
            let mut next = None;
            if *budget > 0 {
                let addr = Self::desc_addr(self.tx_ring, self.tx_pos, style);
                if self.ring_read(ring, addr, &mut raw[..style.desc_len()]) {
                    let desc = Desc::decode(style, &raw, high);
                    if desc.status & DESC_OWN != 0 {
                        next = Some((desc, addr));
                    }
                } else {
                    chain.end = ChainEnd::DescriptorFault;
                }
            }
            let Some((desc, addr)) = next else {
                if chain.end == ChainEnd::Complete {
                    chain.end = ChainEnd::Underflow;
                }
                chain.errors |= TMD_BUFF | TMD_UFLO;
                self.finish_descriptor(ring, style, cur_addr, cur.status, chain.errors);
                return chain;
            };
            // A middle descriptor goes back as soon as the chip moves past it.
            self.finish_descriptor(ring, style, cur_addr, cur.status, 0);
            cur = desc;
            cur_addr = addr;
        }
    }

    /// Hand a TX descriptor back: error word first (when there are errors), then the status with
    /// OWN cleared (and ERR when there are errors).
    fn finish_descriptor<M: GuestMemory + ?Sized>(
        &mut self,
        ring: &RingMem<'_, M>,
        style: Style,
        desc: u64,
        status: u16,
        errors: u32,
    ) -> bool {
        let mut status = status;
        if errors != 0 {
            let (off, _) = style.misc_field();
            let (bytes, n) = encode_tx_misc(style, errors);
            if !self.ring_write(ring, desc + off as u64, &bytes[..n]) {
                return false;
            }
            status |= DESC_ERR;
        }
        self.write_status(ring, style, desc, status)
    }
}

/// Auto-pad (CSR4 APAD_XMT): frames shorter than 60 bytes are padded with zeros.
fn pad_frame(apad: bool, buf: &mut [u8], len: usize) -> usize {
    if apad && len < MIN_FRAME_NO_FCS && buf.len() >= MIN_FRAME_NO_FCS {
        buf[len..MIN_FRAME_NO_FCS].fill(0);
        MIN_FRAME_NO_FCS
    } else {
        len
    }
}
