//! Port I/O and MMIO dispatch for the vCPU threads: COM1, PCI config mechanism #1, the debug-exit
//! port, a minimal CMOS, and the NIC's BAR0 (I/O) and BAR1 (MMIO) windows at their *current*
//! addresses (the guest may move them). Everything else reads as all ones and ignores writes.

use std::sync::{Arc, Mutex, MutexGuard};

use vm_memory::GuestMemoryMmap;

use super::nic::{NetShared, NetState, NIC_REGISTER_WINDOW};
use super::pci::{
    ConfigTarget, PciConfigMechanism, CONFIG_ADDRESS_PORT, CONFIG_DATA_LEN, CONFIG_DATA_PORT,
};
use super::serial::{SerialConsole, SERIAL_PORT_BASE, SERIAL_PORT_COUNT};
use super::stats::{ExitReason, ExitStats};

/// isa-debug-exit compatible port: a byte written here ends the VM with that status.
pub const DEBUG_EXIT_PORT: u16 = 0x501;
/// CMOS/RTC index register.
const CMOS_INDEX_PORT: u16 = 0x70;
/// CMOS/RTC data register.
const CMOS_DATA_PORT: u16 = 0x71;
/// CMOS register D: bit 7 "valid RAM and time".
const CMOS_REG_D: u8 = 0x0d;
const CMOS_REG_D_VRT: u8 = 0x80;
/// CMOS index bits (bit 7 is the NMI mask).
const CMOS_INDEX_MASK: u8 = 0x7f;

/// What the vCPU loop must do after an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusAction {
    Continue,
    /// The guest asked to stop with this status (debug-exit port).
    GuestExit(u8),
}

/// All devices reachable from a vCPU exit. Shared by every vCPU thread.
pub struct Bus {
    serial: Mutex<SerialConsole>,
    pci: Mutex<PciConfigMechanism>,
    cmos_index: Mutex<u8>,
    net: Option<Arc<NetShared>>,
    mem: GuestMemoryMmap,
    stats: Arc<ExitStats>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Bus {
    pub fn new(
        serial: SerialConsole,
        net: Option<Arc<NetShared>>,
        mem: GuestMemoryMmap,
        stats: Arc<ExitStats>,
    ) -> Self {
        Self {
            serial: Mutex::new(serial),
            pci: Mutex::new(PciConfigMechanism::new()),
            cmos_index: Mutex::new(0),
            net,
            mem,
            stats,
        }
    }

    pub fn stats(&self) -> &Arc<ExitStats> {
        &self.stats
    }

    pub fn flush_serial(&self) {
        lock(&self.serial).flush();
    }

    /// The offset inside the NIC's register window of an access of `len` bytes at `addr`, when the
    /// window currently starts at `base`.
    fn window_offset(base: Option<u64>, addr: u64, len: usize) -> Option<u64> {
        let offset = addr.checked_sub(base?)?;
        (offset + len as u64 <= NIC_REGISTER_WINDOW).then_some(offset)
    }

    pub fn pio_read(&self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        match port {
            p if (SERIAL_PORT_BASE..SERIAL_PORT_BASE + SERIAL_PORT_COUNT).contains(&p) => {
                self.stats.count(ExitReason::PioSerial);
                let mut serial = lock(&self.serial);
                for (i, b) in data.iter_mut().enumerate() {
                    *b = serial.read((p - SERIAL_PORT_BASE) as u8 + i as u8);
                }
            }
            CONFIG_ADDRESS_PORT => {
                self.stats.count(ExitReason::PioPci);
                lock(&self.pci).read_address(data);
            }
            p if (CONFIG_DATA_PORT..CONFIG_DATA_PORT + CONFIG_DATA_LEN).contains(&p) => {
                self.stats.count(ExitReason::PioPci);
                self.config_read(p - CONFIG_DATA_PORT, data);
            }
            CMOS_DATA_PORT => {
                self.stats.count(ExitReason::PioOther);
                let index = *lock(&self.cmos_index);
                data[0] = if index == CMOS_REG_D {
                    CMOS_REG_D_VRT
                } else {
                    0
                };
            }
            _ => self.nic_or_unhandled_pio(port, Some(data), None),
        }
    }

    pub fn pio_write(&self, port: u16, data: &[u8]) -> BusAction {
        match port {
            p if (SERIAL_PORT_BASE..SERIAL_PORT_BASE + SERIAL_PORT_COUNT).contains(&p) => {
                self.stats.count(ExitReason::PioSerial);
                let mut serial = lock(&self.serial);
                for (i, b) in data.iter().enumerate() {
                    serial.write((p - SERIAL_PORT_BASE) as u8 + i as u8, *b);
                }
            }
            DEBUG_EXIT_PORT => {
                self.stats.count(ExitReason::PioDebugExit);
                return BusAction::GuestExit(data.first().copied().unwrap_or(0));
            }
            CONFIG_ADDRESS_PORT => {
                self.stats.count(ExitReason::PioPci);
                lock(&self.pci).write_address(data);
            }
            p if (CONFIG_DATA_PORT..CONFIG_DATA_PORT + CONFIG_DATA_LEN).contains(&p) => {
                self.stats.count(ExitReason::PioPci);
                self.config_write(p - CONFIG_DATA_PORT, data);
            }
            CMOS_INDEX_PORT => {
                self.stats.count(ExitReason::PioOther);
                *lock(&self.cmos_index) = data.first().copied().unwrap_or(0) & CMOS_INDEX_MASK;
            }
            _ => self.nic_or_unhandled_pio(port, None, Some(data)),
        }
        BusAction::Continue
    }

    fn nic_or_unhandled_pio(&self, port: u16, read: Option<&mut [u8]>, write: Option<&[u8]>) {
        let len = read
            .as_ref()
            .map_or_else(|| write.map_or(0, <[u8]>::len), |r| r.len());
        if let Some(net) = &self.net {
            let state = net.lock();
            let base = state.nic.io_bar().map(u64::from);
            if let Some(offset) = Self::window_offset(base, u64::from(port), len) {
                self.stats.count(ExitReason::PioNic);
                self.nic_access(net, state, offset, read, write);
                return;
            }
        }
        self.stats.count(ExitReason::PioOther);
        self.stats
            .unhandled_accesses
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        data.fill(0xff);
        self.mmio(addr, Some(data), None);
    }

    pub fn mmio_write(&self, addr: u64, data: &[u8]) {
        self.mmio(addr, None, Some(data));
    }

    fn mmio(&self, addr: u64, read: Option<&mut [u8]>, write: Option<&[u8]>) {
        let len = read
            .as_ref()
            .map_or_else(|| write.map_or(0, <[u8]>::len), |r| r.len());
        if let Some(net) = &self.net {
            let state = net.lock();
            if let Some(offset) = Self::window_offset(state.nic.mmio_bar(), addr, len) {
                self.stats.count(ExitReason::MmioNic);
                self.nic_access(net, state, offset, read, write);
                return;
            }
        }
        self.stats.count(ExitReason::MmioOther);
        self.stats
            .unhandled_accesses
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// A register access to the NIC, on this vCPU thread, with the NIC lock already held (the same
    /// hold that decoded the BAR, so a concurrent BAR move cannot slip in between). TX demand is
    /// served inline or handed to the I/O thread (`NetShared::tx_inline`); RX kicks always go to the
    /// I/O thread.
    fn nic_access(
        &self,
        net: &NetShared,
        mut state: MutexGuard<'_, NetState>,
        offset: u64,
        read: Option<&mut [u8]>,
        write: Option<&[u8]>,
    ) {
        if let Some(data) = read {
            state.nic.read_reg(&self.mem, offset, data);
            return;
        }
        let Some(data) = write else { return };
        let effect = state.nic.write_reg(&self.mem, offset, data);
        let mut wake_io = effect.rx_kick;
        if effect.tx_demand {
            if net.tx_inline {
                state.transmit(&self.mem);
                // The chip may keep polling its ring, or frames wait for backend buffers: the
                // I/O thread takes over from here.
                wake_io |= state.nic.tx_polling() || state.tx_blocked;
            } else {
                wake_io = true;
            }
        }
        drop(state);
        if wake_io {
            net.kick_io();
        }
    }

    fn config_read(&self, port_offset: u16, data: &mut [u8]) {
        let target = lock(&self.pci).target(port_offset, data.len());
        match target {
            ConfigTarget::HostBridge(offset) => lock(&self.pci).host_bridge_read(offset, data),
            ConfigTarget::Nic(offset) => match &self.net {
                Some(net) => net.lock().nic.pci_config_read(offset, data),
                None => data.fill(0xff),
            },
            ConfigTarget::Nothing => data.fill(0xff),
        }
    }

    fn config_write(&self, port_offset: u16, data: &[u8]) {
        let target = lock(&self.pci).target(port_offset, data.len());
        if let (ConfigTarget::Nic(offset), Some(net)) = (target, &self.net) {
            net.lock().nic.pci_config_write(offset, data);
        }
    }
}
