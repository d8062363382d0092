//! The register window behind BAR0/BAR1: APROM, RDP/RAP/RESET/BDP in WIO (16-bit) and DWIO
//! (32-bit) modes and the switch between them, CSR and BCR read/write semantics (read-only,
//! write-1-to-clear, writable-only-while-stopped), and the CSR0 commands INIT/STRT/STOP/TDMD.

use vm_memory::GuestMemory;

use super::desc::{ring_len_from_log2, InitBlock};
use super::regs::*;
use super::{IrqLine, Lance, RegEffect};

/// Which port of the register window an access hits (after the WIO/DWIO decode).
enum Port {
    Rdp,
    Rap,
    Reset,
    Bdp,
    /// A 32-bit write to RDP while in WIO: switches to DWIO.
    SwitchToDwio,
    Ignored,
}

impl<I: IrqLine> Lance<I> {
    fn dwio(&self) -> bool {
        self.bcr[BCR_BSBC] & BSBC_DWIO != 0
    }

    fn decode_port(&self, offset: u64, width: usize, is_write: bool) -> Port {
        match (self.dwio(), width, offset) {
            (false, 2, RDP) => Port::Rdp,
            (false, 2, WIO_RAP) => Port::Rap,
            (false, 2, WIO_RESET) => Port::Reset,
            (false, 2, WIO_BDP) => Port::Bdp,
            (false, 4, RDP) if is_write => Port::SwitchToDwio,
            (true, 4, RDP) => Port::Rdp,
            (true, 4, DWIO_RAP) => Port::Rap,
            (true, 4, DWIO_RESET) => Port::Reset,
            (true, 4, DWIO_BDP) => Port::Bdp,
            _ => Port::Ignored,
        }
    }

    /// Read `data.len()` bytes at `offset` in the register window. Accesses of the wrong width
    /// for the current mode, or outside the window, read as all ones.
    pub fn read<M: GuestMemory + ?Sized>(&mut self, _mem: &M, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        let Some(end) = offset.checked_add(data.len() as u64) else {
            return;
        };
        if end <= APROM_END {
            // The PROM reads at any width in both modes (Linux uses byte reads in DWIO too).
            for (i, b) in data.iter_mut().enumerate() {
                *b = self.aprom[offset as usize + i];
            }
            return;
        }
        if end > IO_WINDOW_LEN {
            return;
        }
        let value: u16 = match self.decode_port(offset, data.len(), false) {
            Port::Rdp => self.read_csr(usize::from(self.rap)),
            Port::Rap => self.rap,
            Port::Reset => {
                self.soft_reset();
                0
            }
            Port::Bdp => self.read_bcr(usize::from(self.rap)),
            Port::SwitchToDwio | Port::Ignored => return,
        };
        let bytes = u32::from(value).to_le_bytes();
        data.copy_from_slice(&bytes[..data.len()]);
        self.update_irq();
    }

    /// Write `data` at `offset` in the register window.
    pub fn write<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        offset: u64,
        data: &[u8],
    ) -> RegEffect {
        let mut effect = RegEffect::default();
        let Some(end) = offset.checked_add(data.len() as u64) else {
            return effect;
        };
        // APROM writes need BCR2 APROMWE and an EEPROM-less board; not modelled: ignored.
        if end <= APROM_END || end > IO_WINDOW_LEN {
            return effect;
        }
        let mut raw = [0u8; 4];
        raw[..data.len().min(4)].copy_from_slice(&data[..data.len().min(4)]);
        let value = u32::from_le_bytes(raw) as u16;
        match self.decode_port(offset, data.len(), true) {
            Port::Rdp => effect = self.write_csr(mem, usize::from(self.rap), value),
            Port::Rap => self.rap = value & RAP_MASK,
            Port::Bdp => self.write_bcr(usize::from(self.rap), value),
            Port::SwitchToDwio => self.bcr[BCR_BSBC] |= BSBC_DWIO,
            Port::Reset | Port::Ignored => {}
        }
        self.update_irq();
        effect
    }

    fn read_csr(&self, rap: usize) -> u16 {
        match rap {
            CSR_STATUS => {
                let csr0 = self.csr[CSR_STATUS];
                if csr0 & CSR0_ERR_SOURCES != 0 {
                    csr0 | CSR0_ERR
                } else {
                    csr0
                }
            }
            CSR_IADR_LO_ALIAS => self.csr[CSR_IADR_LO],
            CSR_IADR_HI_ALIAS => self.csr[CSR_IADR_HI],
            CSR_SWSTYLE_ALIAS => self.bcr[BCR_SWS],
            CSR_RX_COUNTER => self.rx_len - self.rx_pos,
            CSR_TX_COUNTER => self.tx_len - self.tx_pos,
            CSR_RX_RING_LEN => self.rx_len,
            CSR_TX_RING_LEN => self.tx_len,
            _ => self.csr.get(rap).copied().unwrap_or(0),
        }
    }

    fn write_csr<M: GuestMemory + ?Sized>(&mut self, mem: &M, rap: usize, value: u16) -> RegEffect {
        let mut effect = RegEffect::default();
        let configurable = self.stopped_or_suspended();
        match rap {
            CSR_STATUS => return self.write_csr0(mem, value),
            CSR_MASKS => self.csr[CSR_MASKS] = value & CSR3_WRITABLE,
            CSR_FEATURES => {
                let old = self.csr[CSR_FEATURES];
                let status = old & CSR4_W1C & !value;
                self.csr[CSR_FEATURES] = (value & !CSR4_W1C & !CSR4_UINTCMD) | status;
            }
            CSR_EXT_CTRL => {
                let old = self.csr[CSR_EXT_CTRL];
                let status = old & CSR5_W1C & !value;
                self.csr[CSR_EXT_CTRL] = (value & !CSR5_W1C) | status;
                if old & CSR5_SPND != 0 && value & CSR5_SPND == 0 {
                    effect = RegEffect {
                        tx_demand: true,
                        rx_kick: true,
                    };
                }
            }
            CSR_IADR_LO_ALIAS => return self.write_csr(mem, CSR_IADR_LO, value),
            CSR_IADR_HI_ALIAS => return self.write_csr(mem, CSR_IADR_HI, value),
            CSR_SWSTYLE_ALIAS => self.write_bcr(BCR_SWS, value),
            // Writable only while stopped or suspended.
            CSR_IADR_LO | CSR_IADR_HI | 8..=15 | 18..=47 | CSR_MISSED_FRAMES if configurable => {
                self.csr[rap] = value;
            }
            CSR_RX_COUNTER if configurable => {
                self.rx_pos = self.rx_len - value.clamp(1, self.rx_len);
            }
            CSR_TX_COUNTER if configurable => {
                self.tx_pos = self.tx_len - value.clamp(1, self.tx_len);
            }
            CSR_RX_RING_LEN if configurable => {
                self.rx_len = Self::ring_len_from_register(value);
                self.rx_pos %= self.rx_len;
            }
            CSR_TX_RING_LEN if configurable => {
                self.tx_len = Self::ring_len_from_register(value);
                self.tx_pos %= self.tx_len;
            }
            CSR_DMA_FIFO | CSR_BUS_TIMEOUT | CSR_TEST => self.csr[rap] = value,
            _ => {}
        }
        effect
    }

    /// A ring length written to CSR76/78: 0 means 512 (never a zero-length ring), capped at 512.
    fn ring_len_from_register(value: u16) -> u16 {
        if value == 0 {
            MAX_RING_LEN
        } else {
            value.min(MAX_RING_LEN)
        }
    }

    fn write_csr0<M: GuestMemory + ?Sized>(&mut self, mem: &M, value: u16) -> RegEffect {
        let mut effect = RegEffect {
            tx_demand: false,
            rx_kick: true,
        };
        let mut csr0 = self.csr[CSR_STATUS] & !(value & CSR0_W1C);
        csr0 = (csr0 & !CSR0_IENA) | (value & CSR0_IENA);
        if value & CSR0_TDMD != 0 {
            csr0 |= CSR0_TDMD;
        }
        self.csr[CSR_STATUS] = csr0;
        let mut command = value & (CSR0_INIT | CSR0_STRT | CSR0_STOP);
        if command == CSR0_INIT | CSR0_STRT | CSR0_STOP {
            command = CSR0_STOP;
        }
        if command & CSR0_STOP != 0 && self.csr[CSR_STATUS] & CSR0_STOP == 0 {
            self.stop();
        }
        if command & CSR0_INIT != 0 && self.csr[CSR_STATUS] & CSR0_INIT == 0 {
            self.init(mem);
        }
        if command & CSR0_STRT != 0 && self.csr[CSR_STATUS] & CSR0_STRT == 0 {
            self.start();
            effect.tx_demand = true;
        }
        if self.csr[CSR_STATUS] & CSR0_TDMD != 0 {
            effect.tx_demand = true;
        }
        effect
    }

    fn stop(&mut self) {
        self.csr[CSR_STATUS] = CSR0_STOP;
        self.csr[CSR_FEATURES] &= !CSR4_STOP_CLEARS;
        self.csr[CSR_EXT_CTRL] &= !CSR5_STOP_CLEARS;
    }

    fn start(&mut self) {
        let mode = self.csr[CSR_MODE];
        let mut csr0 = self.csr[CSR_STATUS] & !CSR0_STOP;
        csr0 |= CSR0_STRT;
        if mode & MODE_DTX == 0 {
            csr0 |= CSR0_TXON;
        }
        if mode & MODE_DRX == 0 {
            csr0 |= CSR0_RXON;
        }
        self.csr[CSR_STATUS] = csr0;
    }

    /// Read the initialization block at CSR1/2 and load rings, mode, PADR and LADRF.
    fn init<M: GuestMemory + ?Sized>(&mut self, mem: &M) {
        let style = self.style();
        let iadr = u64::from(self.csr[CSR_IADR_LO]) | (u64::from(self.csr[CSR_IADR_HI]) << 16);
        let mut raw = [0u8; 28];
        if !self.dma_read(mem, iadr, &mut raw[..style.init_block_len()]) {
            return;
        }
        let block = InitBlock::decode(style, &raw, self.high_addr(style));
        self.rx_len = ring_len_from_log2(block.rx_log2);
        self.tx_len = ring_len_from_log2(block.tx_log2);
        self.rx_pos = 0;
        self.tx_pos = 0;
        self.rx_ring = block.rx_ring;
        self.tx_ring = block.tx_ring;
        self.csr[CSR_RING_LENS] =
            (u16::from(block.tx_log2) << 12) | (u16::from(block.rx_log2) << 8);
        self.csr[CSR_MODE] = block.mode;
        self.csr[CSR_LADRF0..CSR_LADRF0 + 4].copy_from_slice(&block.ladrf);
        for i in 0..3 {
            self.csr[CSR_PADR0 + i] =
                u16::from_le_bytes([block.padr[2 * i], block.padr[2 * i + 1]]);
        }
        self.csr[CSR_STATUS] = (self.csr[CSR_STATUS] | CSR0_INIT | CSR0_IDON) & !CSR0_STOP;
    }

    fn read_bcr(&self, rap: usize) -> u16 {
        match rap {
            BCR_LNKST..=BCR_LED3 => {
                let value = self.bcr[rap] & !LED_OUT;
                let active_events = if self.link_up { LED_LINK } else { 0 };
                if value & LED_EVENT_MASK & active_events != 0 {
                    value | LED_OUT
                } else {
                    value
                }
            }
            _ => self.bcr.get(rap).copied().unwrap_or(0),
        }
    }

    fn write_bcr(&mut self, rap: usize, value: u16) {
        match rap {
            BCR_SWS => {
                if !self.stopped_or_suspended() {
                    return;
                }
                let derived = match value & SWS_STYLE_MASK {
                    0 => SWS_CSRPCNET,
                    1 => SWS_SSIZE32,
                    2 | 3 => SWS_SSIZE32 | SWS_CSRPCNET,
                    // Invalid style (Linux writes 4 at close): behave as style 0.
                    _ => {
                        self.bcr[BCR_SWS] = SWS_CSRPCNET;
                        return;
                    }
                };
                self.bcr[BCR_SWS] = (value & SWS_STYLE_MASK) | derived;
            }
            BCR_BSBC => {
                self.bcr[BCR_BSBC] = (value & !BSBC_DWIO) | (self.bcr[BCR_BSBC] & BSBC_DWIO);
            }
            BCR_LNKST..=BCR_LED3 => self.bcr[rap] = value & !LED_OUT,
            BCR_MC | BCR_FDC | BCR_EECAS | BCR_PLAT => self.bcr[rap] = value,
            _ => {}
        }
    }
}
