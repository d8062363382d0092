//! Initialization block and ring descriptor formats (SWSTYLE 0: 16-bit structures, 2: 32-bit,
//! 3: 32-bit with words 0 and 2 swapped): decoding from guest bytes and encoding of the words the
//! chip writes back. Pure byte layout, no guest memory access.

use super::regs::{BCNT_MASK, MAX_RING_LEN, MAX_RING_LOG2, STATUS_HIGH_BYTE};

/// Descriptor and init block layout selected by BCR20 SWSTYLE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// SWSTYLE 0 (and any invalid style): 8-byte descriptors, 24-bit addresses, 24-byte init block.
    Bits16,
    /// SWSTYLE 1 and 2: 16-byte descriptors, 28-byte init block.
    Bits32,
    /// SWSTYLE 3: like `Bits32` with descriptor words 0 (address) and 2 (misc) swapped.
    Bits32Swapped,
}

impl Style {
    /// The layout for a BCR20 software style number.
    pub fn from_swstyle(style: u8) -> Self {
        match style {
            1 | 2 => Style::Bits32,
            3 => Style::Bits32Swapped,
            _ => Style::Bits16,
        }
    }

    /// Bytes per descriptor.
    pub fn desc_len(self) -> usize {
        match self {
            Style::Bits16 => 8,
            Style::Bits32 | Style::Bits32Swapped => 16,
        }
    }

    /// Bytes of the initialization block.
    pub fn init_block_len(self) -> usize {
        match self {
            Style::Bits16 => 24,
            Style::Bits32 | Style::Bits32Swapped => 28,
        }
    }

    /// Offset inside a descriptor of the status the chip hands back, and its width in bytes (the
    /// 16-bit style only holds the high status byte).
    pub fn status_field(self) -> (usize, usize) {
        match self {
            Style::Bits16 => (3, 1),
            Style::Bits32 | Style::Bits32Swapped => (6, 2),
        }
    }

    /// Offset inside a descriptor of the misc word (RX: MCNT, TX: error bits) and its width.
    pub fn misc_field(self) -> (usize, usize) {
        match self {
            Style::Bits16 => (6, 2),
            Style::Bits32 => (8, 4),
            Style::Bits32Swapped => (0, 4),
        }
    }
}

/// A ring descriptor, normalized across styles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Desc {
    /// Buffer address (physical, full width).
    pub buf: u64,
    /// Raw BCNT word (two's complement byte count in the low 12 bits; the top nibble is ignored).
    pub bcnt: u16,
    /// Status word (16-bit style: only the high byte exists).
    pub status: u16,
    /// RX: MCNT word; TX: error word (16-bit style: the error bits live in the high half).
    pub misc: u32,
}

impl Desc {
    /// Decode a descriptor from its guest bytes (`bytes` holds at least `style.desc_len()`).
    /// `high_addr` supplies address bits 24-31 in the 16-bit style (CSR2 high byte).
    pub fn decode(style: Style, bytes: &[u8; 16], high_addr: u32) -> Self {
        let word = |i: usize| {
            u32::from_le_bytes([
                bytes[4 * i],
                bytes[4 * i + 1],
                bytes[4 * i + 2],
                bytes[4 * i + 3],
            ])
        };
        match style {
            Style::Bits16 => {
                let w0 = word(0);
                Desc {
                    buf: u64::from((w0 & 0x00ff_ffff) | high_addr),
                    bcnt: u16::from_le_bytes([bytes[4], bytes[5]]),
                    status: (w0 >> 16) as u16 & STATUS_HIGH_BYTE,
                    misc: u32::from(u16::from_le_bytes([bytes[6], bytes[7]])) << 16,
                }
            }
            Style::Bits32 | Style::Bits32Swapped => {
                let (addr, misc) = if style == Style::Bits32 {
                    (word(0), word(2))
                } else {
                    (word(2), word(0))
                };
                let w1 = word(1);
                Desc {
                    buf: u64::from(addr),
                    bcnt: w1 as u16,
                    status: (w1 >> 16) as u16,
                    misc,
                }
            }
        }
    }

    /// Buffer length in bytes: the 12-bit two's complement of BCNT (1..=4096).
    pub fn buf_len(&self) -> usize {
        0x1000 - usize::from(self.bcnt & BCNT_MASK)
    }
}

/// Encode the status word as stored for `style`; returns the bytes and how many of them to write.
pub fn encode_status(style: Style, status: u16) -> ([u8; 2], usize) {
    match style {
        Style::Bits16 => ([(status >> 8) as u8, 0], 1),
        Style::Bits32 | Style::Bits32Swapped => (status.to_le_bytes(), 2),
    }
}

/// Encode an RX MCNT value as stored for `style` (bytes, count).
pub fn encode_mcnt(style: Style, mcnt: u16) -> ([u8; 4], usize) {
    match style {
        Style::Bits16 => {
            let b = mcnt.to_le_bytes();
            ([b[0], b[1], 0, 0], 2)
        }
        Style::Bits32 | Style::Bits32Swapped => (u32::from(mcnt).to_le_bytes(), 4),
    }
}

/// Encode a TX error word (TMD2 layout, bits 16-31 are the error bits) as stored for `style`.
pub fn encode_tx_misc(style: Style, misc: u32) -> ([u8; 4], usize) {
    match style {
        Style::Bits16 => {
            let b = ((misc >> 16) as u16).to_le_bytes();
            ([b[0], b[1], 0, 0], 2)
        }
        Style::Bits32 | Style::Bits32Swapped => (misc.to_le_bytes(), 4),
    }
}

/// Ring length from a log2 field: `1 << log2`, at most 512 (so never 0).
pub fn ring_len_from_log2(log2: u8) -> u16 {
    if log2 >= MAX_RING_LOG2 {
        MAX_RING_LEN
    } else {
        1 << log2
    }
}

/// The contents of an initialization block, normalized across styles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InitBlock {
    pub mode: u16,
    pub padr: [u8; 6],
    pub ladrf: [u16; 4],
    pub rx_ring: u64,
    pub tx_ring: u64,
    pub rx_log2: u8,
    pub tx_log2: u8,
}

impl InitBlock {
    /// Decode an init block (`bytes` holds at least `style.init_block_len()`); `high_addr` supplies
    /// ring address bits 24-31 in the 16-bit style.
    pub fn decode(style: Style, bytes: &[u8; 28], high_addr: u32) -> Self {
        let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
        let u32_at =
            |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let mut padr = [0u8; 6];
        match style {
            Style::Bits16 => {
                padr.copy_from_slice(&bytes[2..8]);
                let rdra = u32_at(16);
                let tdra = u32_at(20);
                InitBlock {
                    mode: u16_at(0),
                    padr,
                    ladrf: [u16_at(8), u16_at(10), u16_at(12), u16_at(14)],
                    rx_ring: u64::from((rdra & 0x00ff_ffff) | high_addr),
                    tx_ring: u64::from((tdra & 0x00ff_ffff) | high_addr),
                    rx_log2: (rdra >> 29) as u8,
                    tx_log2: (tdra >> 29) as u8,
                }
            }
            Style::Bits32 | Style::Bits32Swapped => {
                padr.copy_from_slice(&bytes[4..10]);
                InitBlock {
                    mode: u16_at(0),
                    padr,
                    ladrf: [u16_at(12), u16_at(14), u16_at(16), u16_at(18)],
                    rx_ring: u64::from(u32_at(20)),
                    tx_ring: u64::from(u32_at(24)),
                    rx_log2: bytes[2] >> 4,
                    tx_log2: bytes[3] >> 4,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn style_0_descriptor_keeps_24_bit_address_and_status_high_byte() {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&0x8312_3456u32.to_le_bytes());
        b[4..6].copy_from_slice(&(-64i16 as u16).to_le_bytes());
        b[6..8].copy_from_slice(&0x0840u16.to_le_bytes());
        let d = Desc::decode(Style::Bits16, &b, 0x0100_0000);
        assert_eq!(d.buf, 0x0112_3456);
        assert_eq!(d.status, 0x8300);
        assert_eq!(d.buf_len(), 64);
        assert_eq!(d.misc, 0x0840_0000);
    }

    #[test]
    fn style_3_swaps_address_and_misc() {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&0x1111_2222u32.to_le_bytes());
        b[4..8].copy_from_slice(&0x8300_f000u32.to_le_bytes());
        b[8..12].copy_from_slice(&0x0000_9000u32.to_le_bytes());
        let d2 = Desc::decode(Style::Bits32, &b, 0);
        let d3 = Desc::decode(Style::Bits32Swapped, &b, 0);
        assert_eq!((d2.buf, d2.misc), (0x1111_2222, 0x9000));
        assert_eq!((d3.buf, d3.misc), (0x9000, 0x1111_2222));
        assert_eq!(d3.status, 0x8300);
        assert_eq!(d3.buf_len(), 4096);
    }

    #[test]
    fn ring_length_is_never_zero() {
        assert_eq!(ring_len_from_log2(0), 1);
        assert_eq!(ring_len_from_log2(5), 32);
        assert_eq!(ring_len_from_log2(15), 512);
    }
}
