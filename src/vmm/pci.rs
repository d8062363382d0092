//! PCI configuration mechanism #1 (address latch at 0xCF8, data window 0xCFC..0xCFF, any width) on
//! bus 0, and the host bridge at 00:00.0 (Intel 440FX id, read-only). The NIC's function is decoded
//! here and served by the bus with the NIC's own config space.

/// The 32-bit CONFIG_ADDRESS register.
pub const CONFIG_ADDRESS_PORT: u16 = 0xcf8;
/// First byte of the 4-byte CONFIG_DATA window.
pub const CONFIG_DATA_PORT: u16 = 0xcfc;
/// Bytes of the data window.
pub const CONFIG_DATA_LEN: u16 = 4;
/// CONFIG_ADDRESS bit 31: configuration cycle enable.
const CONFIG_ENABLE: u32 = 1 << 31;
/// CONFIG_ADDRESS bits 7..2: dword-aligned register.
const CONFIG_REGISTER_MASK: u32 = 0xfc;

/// PCI device number of the host bridge on bus 0.
pub const HOST_BRIDGE_DEVICE: u8 = 0;
/// PCI device number of the NIC on bus 0 (00:03.0).
pub const NIC_DEVICE: u8 = 3;
/// Host bridge identity: Intel 82441FX (440FX), the id every PC guest knows.
const HOST_BRIDGE_VENDOR: u16 = 0x8086;
const HOST_BRIDGE_DEVICE_ID: u16 = 0x1237;
/// Class code 06/00/00: bridge, host bridge.
const CLASS_BRIDGE: u8 = 0x06;

// Standard config header offsets.
const CFG_VENDOR: usize = 0x00;
const CFG_DEVICE: usize = 0x02;
const CFG_COMMAND: usize = 0x04;
const CFG_STATUS: usize = 0x06;
const CFG_CLASS: usize = 0x0b;
const CFG_HEADER_TYPE: usize = 0x0e;
/// COMMAND: memory space enable (what a host bridge reports).
const COMMAND_MEMORY: u16 = 1 << 1;
/// STATUS: medium DEVSEL timing.
const STATUS_DEVSEL_MEDIUM: u16 = 1 << 9;

/// Who a config cycle addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigTarget {
    HostBridge(usize),
    Nic(usize),
    /// No function there: reads return all ones, writes are dropped.
    Nothing,
}

/// The config mechanism's state: the address latch and the host bridge's config space.
pub struct PciConfigMechanism {
    address: u32,
    host_bridge: [u8; 256],
}

impl Default for PciConfigMechanism {
    fn default() -> Self {
        Self::new()
    }
}

impl PciConfigMechanism {
    pub fn new() -> Self {
        let mut host_bridge = [0u8; 256];
        host_bridge[CFG_VENDOR..CFG_VENDOR + 2].copy_from_slice(&HOST_BRIDGE_VENDOR.to_le_bytes());
        host_bridge[CFG_DEVICE..CFG_DEVICE + 2]
            .copy_from_slice(&HOST_BRIDGE_DEVICE_ID.to_le_bytes());
        host_bridge[CFG_COMMAND..CFG_COMMAND + 2].copy_from_slice(&COMMAND_MEMORY.to_le_bytes());
        host_bridge[CFG_STATUS..CFG_STATUS + 2]
            .copy_from_slice(&STATUS_DEVSEL_MEDIUM.to_le_bytes());
        host_bridge[CFG_CLASS] = CLASS_BRIDGE;
        host_bridge[CFG_HEADER_TYPE] = 0;
        Self {
            address: 0,
            host_bridge,
        }
    }

    /// Read of the address latch (only full 32-bit accesses at 0xCF8 reach it).
    pub fn read_address(&self, data: &mut [u8]) {
        if data.len() == 4 {
            data.copy_from_slice(&self.address.to_le_bytes());
        } else {
            data.fill(0xff);
        }
    }

    /// Write of the address latch (32-bit only; byte writes to 0xCF8..0xCFB are other PC registers).
    pub fn write_address(&mut self, data: &[u8]) {
        if let Ok(bytes) = <[u8; 4]>::try_from(data) {
            self.address = u32::from_le_bytes(bytes);
        }
    }

    /// Decodes an access to the data window at `port_offset` (0..4) with the current latch.
    pub fn target(&self, port_offset: u16, len: usize) -> ConfigTarget {
        if self.address & CONFIG_ENABLE == 0 || usize::from(port_offset) + len > 4 {
            return ConfigTarget::Nothing;
        }
        let bus = (self.address >> 16) & 0xff;
        let device = ((self.address >> 11) & 0x1f) as u8;
        let function = (self.address >> 8) & 0x7;
        let offset = (self.address & CONFIG_REGISTER_MASK) as usize + usize::from(port_offset);
        match (bus, device, function) {
            (0, HOST_BRIDGE_DEVICE, 0) => ConfigTarget::HostBridge(offset),
            (0, NIC_DEVICE, 0) => ConfigTarget::Nic(offset),
            _ => ConfigTarget::Nothing,
        }
    }

    /// Read from the host bridge's config space (`offset + data.len() <= 256`, checked by `target`).
    pub fn host_bridge_read(&self, offset: usize, data: &mut [u8]) {
        match self.host_bridge.get(offset..offset + data.len()) {
            Some(src) => data.copy_from_slice(src),
            None => data.fill(0xff),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(device: u32, register: u32) -> [u8; 4] {
        (CONFIG_ENABLE | (device << 11) | register).to_le_bytes()
    }

    #[test]
    fn decodes_devices_and_byte_offsets() {
        let mut pci = PciConfigMechanism::new();
        pci.write_address(&address(3, 0x3c));
        assert_eq!(pci.target(1, 1), ConfigTarget::Nic(0x3d));
        assert_eq!(pci.target(2, 2), ConfigTarget::Nic(0x3e));
        assert_eq!(
            pci.target(3, 2),
            ConfigTarget::Nothing,
            "crosses the window"
        );
        pci.write_address(&address(0, 0));
        assert_eq!(pci.target(0, 4), ConfigTarget::HostBridge(0));
        let mut id = [0u8; 4];
        pci.host_bridge_read(0, &mut id);
        assert_eq!(u32::from_le_bytes(id), 0x1237_8086);
        pci.write_address(&address(5, 0));
        assert_eq!(pci.target(0, 4), ConfigTarget::Nothing);
        pci.write_address(&(3u32 << 11).to_le_bytes());
        assert_eq!(pci.target(0, 4), ConfigTarget::Nothing, "enable bit clear");
    }

    #[test]
    fn address_latch_is_32_bit_only() {
        let mut pci = PciConfigMechanism::new();
        pci.write_address(&address(3, 0));
        pci.write_address(&[0]);
        let mut out = [0u8; 4];
        pci.read_address(&mut out);
        assert_eq!(out, address(3, 0));
        let mut byte = [0u8; 1];
        pci.read_address(&mut byte);
        assert_eq!(byte, [0xff]);
    }
}
