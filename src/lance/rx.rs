//! The receive path: address filter, padding to 60 bytes, writing a frame (plus FCS) into the
//! owned descriptors from the current ring position, STP..ENP chaining, MCNT and match bits,
//! OFLO/BUFF on overflow, MISS/CSR112 when nothing is owned, RINT. Also the "can receive" query.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::desc::{encode_mcnt, encode_status, Desc, Style};
use super::dma::RingMem;
use super::filter::{classify, Accept};
use super::regs::*;
use super::{IrqLine, Lance, RxOutcome, MAX_FRAME_LEN};

/// Frames whose padded length plus FCS fits here are assembled on the stack and written with one
/// guest-memory write per buffer.
const STACK_FRAME: usize = 128;
const ZEROS: [u8; MIN_FRAME_NO_FCS] = [0; MIN_FRAME_NO_FCS];

/// The bytes a received frame occupies in guest buffers: the frame, zero padding up to
/// `padded_len`, then the FCS trailer (if any).
struct RxData<'a> {
    frame: &'a [u8],
    padded_len: usize,
    trailer: &'a [u8],
}

impl RxData<'_> {
    fn total(&self) -> usize {
        self.padded_len + self.trailer.len()
    }

    /// Copy bytes `start..start + len` of the frame image to guest address `addr`.
    fn write_to<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        addr: u64,
        start: usize,
        len: usize,
    ) -> bool {
        let end = start + len;
        let segments: [(&[u8], usize); 3] = [
            (self.frame, 0),
            (
                &ZEROS[..self.padded_len - self.frame.len()],
                self.frame.len(),
            ),
            (self.trailer, self.padded_len),
        ];
        for (bytes, seg_start) in segments {
            let seg_end = seg_start + bytes.len();
            let lo = start.max(seg_start);
            let hi = end.min(seg_end);
            if lo >= hi {
                continue;
            }
            let dst = GuestAddress(addr + (lo - start) as u64);
            if mem
                .write_slice(&bytes[lo - seg_start..hi - seg_start], dst)
                .is_err()
            {
                return false;
            }
        }
        true
    }
}

/// Where the FCS of a received frame comes from.
pub(super) enum Fcs {
    /// From the backend: the host strips the FCS; four zero bytes stand in for it.
    Zero,
    /// Loopback with FCS generation: the computed CRC of the padded frame.
    Computed,
    /// Loopback without FCS generation: the frame already ends in its FCS.
    InFrame,
}

impl<I: IrqLine> Lance<I> {
    fn rx_running(&self) -> bool {
        let csr0 = self.csr[CSR_STATUS];
        csr0 & CSR0_RXON != 0 && !self.stopped_or_suspended() && self.pci.bus_master()
    }

    /// Frames the guest ring can take now: owned descriptors from the current position (each
    /// frame up to one buffer long needs one). 0 when RX is not running or in loopback.
    pub fn rx_room<M: GuestMemory + ?Sized>(&self, mem: &M) -> usize {
        self.rx_room_up_to(mem, usize::from(self.rx_len))
    }

    /// [`Lance::rx_room`], counted no further than `limit`: reads at most `limit` descriptors (a
    /// caller that moves a bounded batch need not scan a long, mostly free ring every time).
    pub fn rx_room_up_to<M: GuestMemory + ?Sized>(&self, mem: &M, limit: usize) -> usize {
        if limit == 0 || !self.rx_running() || self.loopback() {
            return 0;
        }
        let style = self.style();
        let (status_off, status_len) = style.status_field();
        let ring = RingMem::new(
            mem,
            self.rx_ring,
            usize::from(self.rx_len) * style.desc_len(),
        );
        let mut pos = self.rx_pos;
        let mut room = 0;
        for _ in 0..usize::from(self.rx_len).min(limit) {
            let addr = Self::desc_addr(self.rx_ring, pos, style) + status_off as u64;
            let mut status = [0u8; 2];
            if !ring.read(addr, &mut status[..status_len]) {
                break;
            }
            let own = match style {
                Style::Bits16 => (u16::from(status[0]) << 8) & DESC_OWN != 0,
                Style::Bits32 | Style::Bits32Swapped => u16::from_le_bytes(status) & DESC_OWN != 0,
            };
            if !own {
                break;
            }
            room += 1;
            pos = Self::next_pos(pos, self.rx_len);
        }
        room
    }

    /// Receive one frame from the wire (destination MAC first, no FCS).
    pub fn receive<M: GuestMemory + ?Sized>(&mut self, mem: &M, frame: &[u8]) -> RxOutcome {
        let outcome = if self.loopback() {
            self.stats.rx_not_running += 1;
            RxOutcome::NotRunning
        } else {
            self.receive_frame(mem, frame, Fcs::Zero)
        };
        self.update_irq();
        outcome
    }

    /// The receive path shared by the wire and loopback. Does not update the interrupt line.
    pub(super) fn receive_frame<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        frame: &[u8],
        fcs: Fcs,
    ) -> RxOutcome {
        if !self.rx_running() {
            self.stats.rx_not_running += 1;
            return RxOutcome::NotRunning;
        }
        if frame.len() > MAX_FRAME_LEN {
            self.stats.rx_overflow += 1;
            return RxOutcome::Overflow;
        }
        let mut dst = [0u8; 6];
        let n = frame.len().min(6);
        dst[..n].copy_from_slice(&frame[..n]);
        let ladrf = (0..4).fold(0u64, |acc, i| {
            acc | (u64::from(self.csr[CSR_LADRF0 + i]) << (16 * i))
        });
        let Some(accept) = classify(&dst, self.csr[CSR_MODE], &self.mac(), ladrf) else {
            self.stats.rx_filtered += 1;
            return RxOutcome::Filtered;
        };

        // Lay out the frame image: padding to 60 bytes and the FCS trailer.
        let mut stack = [0u8; STACK_FRAME];
        let (padded_len, trailer_len) = match fcs {
            Fcs::InFrame => (frame.len(), 0),
            Fcs::Zero | Fcs::Computed => (frame.len().max(MIN_FRAME_NO_FCS), FCS_LEN),
        };
        let mut trailer = [0u8; FCS_LEN];
        if let Fcs::Computed = fcs {
            let mut padded = [0u8; MIN_FRAME_NO_FCS];
            padded[..frame.len().min(MIN_FRAME_NO_FCS)]
                .copy_from_slice(&frame[..frame.len().min(MIN_FRAME_NO_FCS)]);
            let body: &[u8] = if frame.len() >= MIN_FRAME_NO_FCS {
                frame
            } else {
                &padded
            };
            trailer = super::filter::frame_check_sequence(body);
        }
        let total = padded_len + trailer_len;
        let data = if total <= STACK_FRAME {
            stack[..frame.len()].copy_from_slice(frame);
            stack[padded_len..total].copy_from_slice(&trailer[..trailer_len]);
            RxData {
                frame: &stack[..total],
                padded_len: total,
                trailer: &[],
            }
        } else {
            RxData {
                frame,
                padded_len,
                trailer: &trailer[..trailer_len],
            }
        };
        let outcome = self.store_frame(mem, &data, accept);
        match outcome {
            RxOutcome::Delivered => {
                self.stats.rx_frames += 1;
                self.stats.rx_bytes += frame.len() as u64;
            }
            RxOutcome::Overflow => self.stats.rx_overflow += 1,
            _ => {}
        }
        outcome
    }

    /// Write the frame image into owned descriptors from the current position.
    fn store_frame<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        data: &RxData,
        accept: Accept,
    ) -> RxOutcome {
        let style = self.style();
        let high = self.high_addr(style);
        let desc_len = style.desc_len();
        let ring = RingMem::new(mem, self.rx_ring, usize::from(self.rx_len) * desc_len);
        let total = data.total();

        let first_addr = Self::desc_addr(self.rx_ring, self.rx_pos, style);
        let mut raw = [0u8; 16];
        if !self.ring_read(&ring, first_addr, &mut raw[..desc_len]) {
            return RxOutcome::DmaError;
        }
        let first = Desc::decode(style, &raw, high);
        if first.status & DESC_OWN == 0 {
            self.missed_frame();
            return RxOutcome::Missed;
        }

        let mut cur = first;
        let mut cur_addr = first_addr;
        let mut pos = self.rx_pos;
        let mut written = 0usize;
        let mut used: u16 = 0;
        let complete = loop {
            let count = cur.buf_len().min(total - written);
            if !(self.pci.bus_master() && data.write_to(mem, cur.buf, written, count)) {
                self.memory_error();
                return RxOutcome::DmaError;
            }
            written += count;
            used += 1;
            pos = Self::next_pos(pos, self.rx_len);
            if written == total {
                break true;
            }
            if used >= self.rx_len {
                break false;
            }
            let next_addr = Self::desc_addr(self.rx_ring, pos, style);
            if !self.ring_read(&ring, next_addr, &mut raw[..desc_len]) {
                return RxOutcome::DmaError;
            }
            let next = Desc::decode(style, &raw, high);
            if next.status & DESC_OWN == 0 {
                break false;
            }
            // A middle buffer of the chain goes back now (the STP one goes back last).
            if used > 1 && !self.write_status(&ring, style, cur_addr, 0) {
                return RxOutcome::DmaError;
            }
            cur = next;
            cur_addr = next_addr;
        };

        // The last buffer: MCNT and ENP with the match bits, or the overflow error bits.
        let single = used == 1;
        let mut last_status = if single { DESC_STP } else { 0 };
        if complete {
            last_status |= DESC_ENP | accept.status_bits();
            let mcnt = (total as u32 & RMD_MCNT_MASK) as u16;
            let (bytes, n) = encode_mcnt(style, mcnt);
            let (misc_off, _) = style.misc_field();
            if !self.ring_write(&ring, cur_addr + misc_off as u64, &bytes[..n]) {
                return RxOutcome::DmaError;
            }
        } else {
            last_status |= DESC_ERR | RMD_OFLO | RMD_BUFF;
        }
        if !self.write_status(&ring, style, cur_addr, last_status) {
            return RxOutcome::DmaError;
        }
        if !single && !self.write_status(&ring, style, first_addr, DESC_STP) {
            return RxOutcome::DmaError;
        }
        self.rx_pos = pos;
        self.csr[CSR_STATUS] |= CSR0_RINT;
        if complete {
            RxOutcome::Delivered
        } else {
            RxOutcome::Overflow
        }
    }

    /// Hand a descriptor back: write its status word (OWN clear).
    pub(super) fn write_status<M: GuestMemory + ?Sized>(
        &mut self,
        ring: &RingMem<'_, M>,
        style: Style,
        desc: u64,
        status: u16,
    ) -> bool {
        let (off, _) = style.status_field();
        let (bytes, n) = encode_status(style, status & !DESC_OWN);
        self.ring_write(ring, desc + off as u64, &bytes[..n])
    }

    fn missed_frame(&mut self) {
        self.csr[CSR_STATUS] |= CSR0_MISS;
        let (count, wrapped) = self.csr[CSR_MISSED_FRAMES].overflowing_add(1);
        self.csr[CSR_MISSED_FRAMES] = count;
        if wrapped {
            self.csr[CSR_FEATURES] |= CSR4_MFCO;
        }
        self.stats.rx_missed += 1;
    }
}
