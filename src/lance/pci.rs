//! PCI configuration space of the Am79C970A function: identity (1022:2000 rev 0x10, class 020000),
//! command register (I/O, memory and bus-master enables, INTx disable), BAR0 (I/O, 32 bytes) and
//! BAR1 (MMIO alias, 32 bytes) with sizing and relocation, interrupt line/pin.

use super::regs::IO_WINDOW_LEN;

pub const VENDOR_AMD: u16 = 0x1022;
pub const DEVICE_PCNET: u16 = 0x2000;
pub const REVISION: u8 = 0x10;
/// Class code: network controller (0x02), Ethernet (0x00), programming interface 0.
pub const CLASS_ETHERNET: [u8; 3] = [0x00, 0x00, 0x02];

pub const CONFIG_SPACE_LEN: usize = 256;

const OFF_VENDOR: usize = 0x00;
const OFF_DEVICE: usize = 0x02;
const OFF_COMMAND: usize = 0x04;
const OFF_STATUS: usize = 0x06;
const OFF_REVISION: usize = 0x08;
const OFF_CLASS: usize = 0x09;
const OFF_LATENCY: usize = 0x0d;
const OFF_BAR0: usize = 0x10;
const OFF_BAR1: usize = 0x14;
const OFF_INT_LINE: usize = 0x3c;
const OFF_INT_PIN: usize = 0x3d;
const OFF_MIN_GNT: usize = 0x3e;
const OFF_MAX_LAT: usize = 0x3f;

pub const COMMAND_IO: u16 = 0x0001;
pub const COMMAND_MEM: u16 = 0x0002;
pub const COMMAND_BUS_MASTER: u16 = 0x0004;
pub const COMMAND_PARITY: u16 = 0x0040;
pub const COMMAND_SERR: u16 = 0x0100;
pub const COMMAND_INTX_DISABLE: u16 = 0x0400;
const COMMAND_WRITABLE: u16 = COMMAND_IO
    | COMMAND_MEM
    | COMMAND_BUS_MASTER
    | COMMAND_PARITY
    | COMMAND_SERR
    | COMMAND_INTX_DISABLE;
/// Status: fast back-to-back capable, medium DEVSEL timing.
const STATUS_RESET: u16 = 0x0280;
/// Status bits that are write-1-to-clear (parity/abort/SERR errors).
const STATUS_W1C: u16 = 0xf900;

const BAR_IO_FLAG: u32 = 0x1;
const INT_PIN_A: u8 = 1;
const MIN_GNT: u8 = 0x06;
const MAX_LAT: u8 = 0xff;

/// The configuration space registers the function implements; everything else reads zero.
#[derive(Debug, Clone)]
pub struct PciConfig {
    command: u16,
    status: u16,
    latency: u8,
    bar0: u32,
    bar1: u32,
    int_line: u8,
}

impl Default for PciConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl PciConfig {
    pub fn new() -> Self {
        PciConfig {
            command: 0,
            status: STATUS_RESET,
            latency: 0,
            bar0: BAR_IO_FLAG,
            bar1: 0,
            int_line: 0,
        }
    }

    /// One byte of configuration space.
    fn byte(&self, offset: usize) -> u8 {
        let le16 = |v: u16, o: usize| v.to_le_bytes()[o];
        let le32 = |v: u32, o: usize| v.to_le_bytes()[o];
        match offset {
            OFF_VENDOR..=0x01 => le16(VENDOR_AMD, offset - OFF_VENDOR),
            OFF_DEVICE..=0x03 => le16(DEVICE_PCNET, offset - OFF_DEVICE),
            OFF_COMMAND..=0x05 => le16(self.command, offset - OFF_COMMAND),
            OFF_STATUS..=0x07 => le16(self.status, offset - OFF_STATUS),
            OFF_REVISION => REVISION,
            OFF_CLASS..=0x0b => CLASS_ETHERNET[offset - OFF_CLASS],
            OFF_LATENCY => self.latency,
            OFF_BAR0..=0x13 => le32(self.bar0, offset - OFF_BAR0),
            OFF_BAR1..=0x17 => le32(self.bar1, offset - OFF_BAR1),
            OFF_INT_LINE => self.int_line,
            OFF_INT_PIN => INT_PIN_A,
            OFF_MIN_GNT => MIN_GNT,
            OFF_MAX_LAT => MAX_LAT,
            _ => 0,
        }
    }

    /// Read `data.len()` bytes at `offset`; bytes beyond the 256-byte space read as 0xff.
    pub fn read(&self, offset: usize, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = match offset.checked_add(i) {
                Some(o) if o < CONFIG_SPACE_LEN => self.byte(o),
                _ => 0xff,
            };
        }
    }

    /// Write `data` at `offset`. Registers are updated as whole little-endian values so that
    /// partial (byte/word) writes merge with the current contents.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            let Some(o) = offset.checked_add(i) else {
                return;
            };
            self.write_byte(o, b);
        }
    }

    fn write_byte(&mut self, o: usize, b: u8) {
        let merge16 = |old: u16, lane: usize| {
            let mut v = old.to_le_bytes();
            v[lane] = b;
            u16::from_le_bytes(v)
        };
        let merge32 = |old: u32, lane: usize| {
            let mut v = old.to_le_bytes();
            v[lane] = b;
            u32::from_le_bytes(v)
        };
        match o {
            OFF_COMMAND..=0x05 => {
                self.command = merge16(self.command, o - OFF_COMMAND) & COMMAND_WRITABLE;
            }
            OFF_STATUS..=0x07 => {
                let lane = o - OFF_STATUS;
                let clear = u16::from(b) << (8 * lane);
                self.status &= !(clear & STATUS_W1C);
            }
            OFF_LATENCY => self.latency = b,
            OFF_BAR0..=0x13 => {
                let raw = merge32(self.bar0, o - OFF_BAR0);
                self.bar0 = (raw & !(IO_WINDOW_LEN as u32 - 1) & 0xffff) | BAR_IO_FLAG;
            }
            OFF_BAR1..=0x17 => {
                let raw = merge32(self.bar1, o - OFF_BAR1);
                self.bar1 = raw & !(IO_WINDOW_LEN as u32 - 1);
            }
            OFF_INT_LINE => self.int_line = b,
            _ => {}
        }
    }

    pub fn command(&self) -> u16 {
        self.command
    }

    pub fn bus_master(&self) -> bool {
        self.command & COMMAND_BUS_MASTER != 0
    }

    pub fn intx_disabled(&self) -> bool {
        self.command & COMMAND_INTX_DISABLE != 0
    }

    /// BAR0 base when I/O decoding is enabled.
    pub fn io_bar(&self) -> Option<u16> {
        (self.command & COMMAND_IO != 0).then_some((self.bar0 & !(BAR_IO_FLAG | 0x2)) as u16)
    }

    /// BAR1 base when memory decoding is enabled.
    pub fn mmio_bar(&self) -> Option<u64> {
        (self.command & COMMAND_MEM != 0).then_some(u64::from(self.bar1 & !0xf))
    }

    /// The Interrupt Line register (written by firmware or the guest).
    pub fn interrupt_line(&self) -> u8 {
        self.int_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read32(c: &PciConfig, off: usize) -> u32 {
        let mut b = [0u8; 4];
        c.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn identity_and_class() {
        let c = PciConfig::new();
        assert_eq!(read32(&c, 0), 0x2000_1022);
        assert_eq!(read32(&c, 8), 0x0200_0010);
        assert_eq!(read32(&c, 0x3c) >> 8 & 0xff, 1);
    }

    #[test]
    fn bar_sizing_and_relocation() {
        let mut c = PciConfig::new();
        c.write(0x10, &u32::MAX.to_le_bytes());
        assert_eq!(read32(&c, 0x10), 0x0000_ffe1);
        c.write(0x14, &u32::MAX.to_le_bytes());
        assert_eq!(read32(&c, 0x14), 0xffff_ffe0);
        c.write(0x10, &0xc000u32.to_le_bytes());
        c.write(0x14, &0xfebf_0000u32.to_le_bytes());
        assert_eq!(c.io_bar(), None);
        c.write(4, &[0x07, 0]);
        assert_eq!(c.io_bar(), Some(0xc000));
        assert_eq!(c.mmio_bar(), Some(0xfebf_0000));
        assert!(c.bus_master());
    }
}
