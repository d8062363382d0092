//! Register numbers, bit masks and reset values of the Am79C970A (CSRs, BCRs, the I/O window and
//! the descriptor/status bits), as named constants. No logic lives here.

// ---- I/O window (offsets inside BAR0 / BAR1) ----
/// Size of the register window decoded by BAR0 (I/O) and BAR1 (MMIO).
pub const IO_WINDOW_LEN: u64 = 0x20;
/// End (exclusive) of the address PROM at the start of the window.
pub const APROM_END: u64 = 0x10;
/// WIO and DWIO: register data port (CSR[RAP]).
pub const RDP: u64 = 0x10;
/// WIO: register address port.
pub const WIO_RAP: u64 = 0x12;
/// WIO: reading resets the chip (S_RESET).
pub const WIO_RESET: u64 = 0x14;
/// WIO: bus configuration data port (BCR[RAP]).
pub const WIO_BDP: u64 = 0x16;
/// DWIO: register address port.
pub const DWIO_RAP: u64 = 0x14;
/// DWIO: reading resets the chip (S_RESET).
pub const DWIO_RESET: u64 = 0x18;
/// DWIO: bus configuration data port.
pub const DWIO_BDP: u64 = 0x1c;
/// RAP holds a 7-bit register number.
pub const RAP_MASK: u16 = 0x7f;

// ---- CSR numbers ----
pub const CSR_STATUS: usize = 0;
pub const CSR_IADR_LO: usize = 1;
pub const CSR_IADR_HI: usize = 2;
pub const CSR_MASKS: usize = 3;
pub const CSR_FEATURES: usize = 4;
pub const CSR_EXT_CTRL: usize = 5;
pub const CSR_RING_LENS: usize = 6;
pub const CSR_LADRF0: usize = 8;
pub const CSR_PADR0: usize = 12;
pub const CSR_MODE: usize = 15;
pub const CSR_IADR_LO_ALIAS: usize = 16;
pub const CSR_IADR_HI_ALIAS: usize = 17;
pub const CSR_SWSTYLE_ALIAS: usize = 58;
pub const CSR_RX_COUNTER: usize = 72;
pub const CSR_TX_COUNTER: usize = 74;
pub const CSR_RX_RING_LEN: usize = 76;
pub const CSR_TX_RING_LEN: usize = 78;
pub const CSR_DMA_FIFO: usize = 80;
pub const CSR_CHIP_ID_LO: usize = 88;
pub const CSR_CHIP_ID_HI: usize = 89;
pub const CSR_BUS_TIMEOUT: usize = 100;
pub const CSR_MISSED_FRAMES: usize = 112;
pub const CSR_TEST: usize = 124;
/// Number of CSRs addressable through RAP.
pub const CSR_COUNT: usize = 128;

// ---- CSR0 bits ----
pub const CSR0_INIT: u16 = 0x0001;
pub const CSR0_STRT: u16 = 0x0002;
pub const CSR0_STOP: u16 = 0x0004;
pub const CSR0_TDMD: u16 = 0x0008;
pub const CSR0_TXON: u16 = 0x0010;
pub const CSR0_RXON: u16 = 0x0020;
pub const CSR0_IENA: u16 = 0x0040;
pub const CSR0_INTR: u16 = 0x0080;
pub const CSR0_IDON: u16 = 0x0100;
pub const CSR0_TINT: u16 = 0x0200;
pub const CSR0_RINT: u16 = 0x0400;
pub const CSR0_MERR: u16 = 0x0800;
pub const CSR0_MISS: u16 = 0x1000;
pub const CSR0_CERR: u16 = 0x2000;
pub const CSR0_BABL: u16 = 0x4000;
pub const CSR0_ERR: u16 = 0x8000;
/// Status bits a write of 1 clears.
pub const CSR0_W1C: u16 = 0x7f00;
/// Status bits that raise INTR unless masked in CSR3.
pub const CSR0_INT_SOURCES: u16 = 0x5f00;
/// Status bits whose OR is reported as ERR.
pub const CSR0_ERR_SOURCES: u16 = CSR0_BABL | CSR0_CERR | CSR0_MISS | CSR0_MERR;
/// Value of CSR0 after reset: stopped.
pub const CSR0_RESET: u16 = CSR0_STOP;

// ---- CSR3 (interrupt masks and control) ----
/// Bits of CSR3 that exist (masks 0x5f00, DXSUFLO, LAPPEN, DXMTFCS, EMBA, BSWP).
pub const CSR3_WRITABLE: u16 = 0x5f7c;
pub const CSR3_DXSUFLO: u16 = 0x0040;

// ---- CSR4 (test and features) ----
pub const CSR4_RESET: u16 = 0x0115;
pub const CSR4_DPOLL: u16 = 0x1000;
pub const CSR4_APAD_XMT: u16 = 0x0800;
pub const CSR4_MFCO: u16 = 0x0200;
pub const CSR4_TXSTRT: u16 = 0x0008;
/// Interrupt status bits of CSR4 that a write of 1 clears (JAB, TXSTRT, RCVCCO, MFCO) plus UINT.
pub const CSR4_W1C: u16 = 0x026a;
/// User interrupt command: not implemented, never stored.
pub const CSR4_UINTCMD: u16 = 0x0080;
/// Interrupt bits of CSR4 (each masked by the bit just below it).
pub const CSR4_INT_SOURCES: u16 = 0x022a;
/// Bits cleared by STOP.
pub const CSR4_STOP_CLEARS: u16 = 0x02c2;

// ---- CSR5 (extended control) ----
pub const CSR5_SPND: u16 = 0x0001;
pub const CSR5_LTINTEN: u16 = 0x4000;
pub const CSR5_TOKINTD: u16 = 0x8000;
/// Interrupt status bits of CSR5 that a write of 1 clears (SINT, SLPINT, EXDINT, MPINT).
pub const CSR5_W1C: u16 = 0x0a90;
/// Interrupt bits of CSR5 (each enabled by the bit just below it).
pub const CSR5_INT_SOURCES: u16 = 0x0a90;
/// Bits cleared by STOP (SPND, MPMODE).
pub const CSR5_STOP_CLEARS: u16 = 0x0011;

// ---- CSR15 (mode) ----
pub const MODE_DRX: u16 = 0x0001;
pub const MODE_DTX: u16 = 0x0002;
pub const MODE_LOOP: u16 = 0x0004;
pub const MODE_DXMTFCS: u16 = 0x0008;
pub const MODE_INTL: u16 = 0x0040;
pub const MODE_DRCVPA: u16 = 0x2000;
pub const MODE_DRCVBC: u16 = 0x4000;
pub const MODE_PROM: u16 = 0x8000;
/// Bits of CSR15 kept across S_RESET (as the chip does: PORTSEL, INTL, LOOP... per QEMU 0x21c4).
pub const MODE_KEPT_ON_RESET: u16 = 0x21c4;

// ---- Chip identity (CSR88/89): part 0x2621 (79C970A), version 0x003 ----
pub const CHIP_ID_LO: u16 = 0x1003;
pub const CHIP_ID_HI: u16 = 0x0262;
pub const CSR80_RESET: u16 = 0x1410;
pub const CSR100_RESET: u16 = 0x0200;

// ---- Ring lengths ----
pub const MAX_RING_LEN: u16 = 512;
pub const MAX_RING_LOG2: u8 = 9;

// ---- BCR numbers and reset values ----
pub const BCR_COUNT: usize = 32;
pub const BCR_MSRDA: usize = 0;
pub const BCR_MSWRA: usize = 1;
pub const BCR_MC: usize = 2;
pub const BCR_LNKST: usize = 4;
pub const BCR_LED1: usize = 5;
pub const BCR_LED2: usize = 6;
pub const BCR_LED3: usize = 7;
pub const BCR_FDC: usize = 9;
pub const BCR_BSBC: usize = 18;
pub const BCR_EECAS: usize = 19;
pub const BCR_SWS: usize = 20;
pub const BCR_PLAT: usize = 22;

pub const BCR_MSRDA_RESET: u16 = 0x0005;
pub const BCR_MSWRA_RESET: u16 = 0x0005;
pub const BCR_MC_RESET: u16 = 0x0002;
pub const BCR_LNKST_RESET: u16 = 0x00c0;
pub const BCR_LED1_RESET: u16 = 0x0084;
pub const BCR_LED2_RESET: u16 = 0x0088;
pub const BCR_LED3_RESET: u16 = 0x0090;
pub const BCR_BSBC_RESET: u16 = 0x9001;
pub const BCR_EECAS_RESET: u16 = 0x0002;
pub const BCR_SWS_RESET: u16 = 0x0200;
pub const BCR_PLAT_RESET: u16 = 0xff06;

/// BCR4-7: the LED output is active (reads 1 when an enabled event is active).
pub const LED_OUT: u16 = 0x8000;
/// BCR4-7: events an LED can be enabled for (the link event is 0x0040).
pub const LED_EVENT_MASK: u16 = 0x017f;
/// BCR4-7: link status event.
pub const LED_LINK: u16 = 0x0040;
/// BCR18: double-word I/O mode (read-only to BCR writes; set by a 32-bit RDP write).
pub const BSBC_DWIO: u16 = 0x0080;
/// BCR20: software style in the low byte.
pub const SWS_STYLE_MASK: u16 = 0x00ff;
/// BCR20: 32-bit software structures (derived from the style).
pub const SWS_SSIZE32: u16 = 0x0100;
/// BCR20: PCnet-PCI CSR programming (derived from the style).
pub const SWS_CSRPCNET: u16 = 0x0200;

/// CSR2 bits 8-15: address bits 24-31 for 16-bit software structures.
pub const CSR2_UPPER_ADDR: u16 = 0xff00;
/// 16-bit structures hold only the high byte of a descriptor's status word.
pub const STATUS_HIGH_BYTE: u16 = 0xff00;

// ---- Descriptor status bits (the 16-bit status word) ----
pub const DESC_OWN: u16 = 0x8000;
pub const DESC_ERR: u16 = 0x4000;
pub const DESC_STP: u16 = 0x0200;
pub const DESC_ENP: u16 = 0x0100;
pub const RMD_FRAM: u16 = 0x2000;
pub const RMD_OFLO: u16 = 0x1000;
pub const RMD_CRC: u16 = 0x0800;
pub const RMD_BUFF: u16 = 0x0400;
pub const RMD_PAM: u16 = 0x0040;
pub const RMD_LAFM: u16 = 0x0020;
pub const RMD_BAM: u16 = 0x0010;
pub const TMD_ADD_FCS: u16 = 0x2000;
pub const TMD_LTINT: u16 = 0x1000;
/// RMD2: message byte count (received length including FCS).
pub const RMD_MCNT_MASK: u32 = 0x0fff;
/// Descriptor BCNT: 12-bit two's complement byte count.
pub const BCNT_MASK: u16 = 0x0fff;
// TMD2 error bits.
pub const TMD_BUFF: u32 = 0x8000_0000;
pub const TMD_UFLO: u32 = 0x4000_0000;
pub const TMD_LCOL: u32 = 0x1000_0000;
pub const TMD_LCAR: u32 = 0x0800_0000;
pub const TMD_RTRY: u32 = 0x0400_0000;

// ---- Ethernet ----
/// Shortest frame without FCS; shorter frames are padded with zeros.
pub const MIN_FRAME_NO_FCS: usize = 60;
pub const FCS_LEN: usize = 4;
