//! Port I/O and MMIO dispatch for the vCPU threads: COM1, PCI config mechanism #1, the debug-exit
//! port, a minimal CMOS, and the NIC's BAR0 (I/O) and BAR1 (MMIO) windows at their *current*
//! addresses (the guest may move them). Everything else reads as all ones and ignores writes.
//!
//! String port I/O (`rep insb/insw/insd/outs*`): KVM reports one exit with `count` accesses of
//! `size` bytes packed in one buffer; [`Bus::pio_in`] / [`Bus::pio_out`] dispatch them as `count`
//! separate accesses, exactly as the CPU would issue them, never as one wide access.

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
/// The sizes one port access can have (KVM_EXIT_IO `size`).
const PIO_ACCESS_SIZES: [usize; 3] = [1, 2, 4];

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
        let end = offset.checked_add(u64::try_from(len).ok()?)?;
        (end <= NIC_REGISTER_WINDOW).then_some(offset)
    }

    /// The UART register for byte `i` of an access at `port` inside COM1, if still inside COM1
    /// (an access that runs past the last UART port touches nothing there).
    fn serial_reg(port: u16, i: usize) -> Option<u8> {
        let reg = usize::from(port.checked_sub(SERIAL_PORT_BASE)?).checked_add(i)?;
        u8::try_from(reg)
            .ok()
            .filter(|r| u16::from(*r) < SERIAL_PORT_COUNT)
    }

    /// `size` when `len` bytes are a whole number of accesses of that size (1, 2 or 4).
    fn access_size(size: usize, len: usize) -> Option<usize> {
        (PIO_ACCESS_SIZES.contains(&size) && len % size == 0).then_some(size)
    }

    fn count_unhandled(&self, reason: ExitReason) {
        self.stats.count(reason);
        self.stats
            .unhandled_accesses
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// A KVM_EXIT_IO IN: `data.len() / size` reads of `size` bytes from `port` (more than one for
    /// `rep ins*`), result `i` stored at `data[i * size..]`. A size other than 1/2/4, or data that
    /// is not a whole number of accesses, reads as all ones and is counted as unhandled.
    pub fn pio_in(&self, port: u16, size: usize, data: &mut [u8]) {
        let Some(size) = Self::access_size(size, data.len()) else {
            data.fill(0xff);
            self.count_unhandled(ExitReason::PioOther);
            return;
        };
        for access in data.chunks_exact_mut(size) {
            self.pio_read(port, access);
        }
    }

    /// A KVM_EXIT_IO OUT: `data.len() / size` writes of `size` bytes to `port` (more than one for
    /// `rep outs*`), write `i` taken from `data[i * size..]`. Stops at a debug-exit write. A bad
    /// size is dropped and counted as unhandled.
    pub fn pio_out(&self, port: u16, size: usize, data: &[u8]) -> BusAction {
        let Some(size) = Self::access_size(size, data.len()) else {
            self.count_unhandled(ExitReason::PioOther);
            return BusAction::Continue;
        };
        for access in data.chunks_exact(size) {
            if let BusAction::GuestExit(code) = self.pio_write(port, access) {
                return BusAction::GuestExit(code);
            }
        }
        BusAction::Continue
    }

    /// One port read of `data.len()` bytes (string I/O goes through [`Bus::pio_in`]).
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        match port {
            p if (SERIAL_PORT_BASE..SERIAL_PORT_BASE + SERIAL_PORT_COUNT).contains(&p) => {
                self.stats.count(ExitReason::PioSerial);
                let mut serial = lock(&self.serial);
                for (i, b) in data.iter_mut().enumerate() {
                    let Some(reg) = Self::serial_reg(p, i) else {
                        break;
                    };
                    *b = serial.read(reg);
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

    /// One port write of `data.len()` bytes (string I/O goes through [`Bus::pio_out`]).
    fn pio_write(&self, port: u16, data: &[u8]) -> BusAction {
        match port {
            p if (SERIAL_PORT_BASE..SERIAL_PORT_BASE + SERIAL_PORT_COUNT).contains(&p) => {
                self.stats.count(ExitReason::PioSerial);
                let mut serial = lock(&self.serial);
                for (i, b) in data.iter().enumerate() {
                    let Some(reg) = Self::serial_reg(p, i) else {
                        break;
                    };
                    serial.write(reg, *b);
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
        self.count_unhandled(ExitReason::PioOther);
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
        self.count_unhandled(ExitReason::MmioOther);
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::atomic::Ordering;

    use vm_memory::GuestAddress;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::*;
    use crate::lance::{IrqLine, Lance};
    use crate::vmm::serial::IrqFdTrigger;
    use crate::vmm::{NIC_IO_BAR, NIC_MMIO_BAR};

    const RDP: u16 = 0x10;
    const RAP: u16 = 0x12;
    const RESET: u16 = 0x14;
    /// CSR1 (IADR low): freely writable while the chip is stopped, as it is after reset.
    const CSR_IADR_LO: u16 = 1;
    const PCI_BAR1: usize = 0x14;

    struct NoIrq;
    impl IrqLine for NoIrq {
        fn set_level(&mut self, _: bool) {}
    }

    /// Console output shared with the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A bus with COM1 and a Lance at the firmware-assigned BARs, and the console's output.
    fn bus() -> (Bus, Arc<NetShared>, Captured) {
        let mut nic = Lance::new([0x52, 0x54, 0, 1, 2, 3], NoIrq);
        crate::vmm::assign_nic_resources(&mut nic);
        let net = Arc::new(NetShared::new(Box::new(nic), None, true).unwrap());
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 16)]).unwrap();
        let out = Captured::default();
        let serial = SerialConsole::new(
            IrqFdTrigger(EventFd::new(EFD_NONBLOCK).unwrap()),
            Box::new(out.clone()),
        );
        let bus = Bus::new(
            serial,
            Some(Arc::clone(&net)),
            mem,
            Arc::new(ExitStats::default()),
        );
        (bus, net, out)
    }

    fn nic_port(offset: u16) -> u16 {
        NIC_IO_BAR as u16 + offset
    }

    fn read_rap(bus: &Bus) -> u16 {
        let mut rap = [0u8; 2];
        bus.pio_in(nic_port(RAP), 2, &mut rap);
        u16::from_le_bytes(rap)
    }

    #[test]
    fn rep_insb_twice_at_reset_is_two_byte_reads_not_a_reset() {
        let (bus, _, _) = bus();
        assert_eq!(
            bus.pio_out(nic_port(RAP), 2, &5u16.to_le_bytes()),
            BusAction::Continue
        );
        assert_eq!(read_rap(&bus), 5);
        // `rep insb` with count 2: two byte reads of RESET, which the chip ignores (a reset needs
        // a 16-bit read in WIO mode); one 16-bit read would reset it (RAP back to 0).
        let mut data = [0u8; 2];
        bus.pio_in(nic_port(RESET), 1, &mut data);
        assert_eq!(data, [0xff, 0xff]);
        assert_eq!(read_rap(&bus), 5, "the chip was reset");
    }

    #[test]
    fn rep_outsw_and_insw_twice_at_rdp_are_two_16_bit_accesses() {
        let (bus, _, _) = bus();
        bus.pio_out(nic_port(RAP), 2, &CSR_IADR_LO.to_le_bytes());
        // Two 16-bit writes of CSR1 (the last one stays); one 32-bit write would switch the chip
        // to DWIO mode instead.
        bus.pio_out(nic_port(RDP), 2, &[0x34, 0x12, 0x78, 0x56]);
        let mut data = [0u8; 4];
        bus.pio_in(nic_port(RDP), 2, &mut data);
        assert_eq!(data, [0x78, 0x56, 0x78, 0x56]);
        assert_eq!(read_rap(&bus), CSR_IADR_LO, "still in WIO mode");
    }

    #[test]
    fn rep_outsb_to_the_console_writes_every_byte() {
        let (bus, _, out) = bus();
        // 300 bytes to THR in one `rep outsb`: more than a u8 register offset can count.
        let text: Vec<u8> = (0..300).map(|i| b'a' + (i % 26) as u8).collect();
        bus.pio_out(SERIAL_PORT_BASE, 1, &text);
        bus.flush_serial();
        assert_eq!(*out.0.lock().unwrap(), text);
    }

    #[test]
    fn accesses_past_the_end_of_a_window_do_not_reach_the_device() {
        let (bus, net, _) = bus();
        let unhandled = |bus: &Bus| bus.stats().unhandled_accesses.load(Ordering::Relaxed);
        // A dword straddling the end of BAR0.
        let mut data = [0u8; 4];
        bus.pio_in(nic_port(0x1e), 4, &mut data);
        assert_eq!(data, [0xff; 4]);
        assert_eq!(unhandled(&bus), 1);
        // The guest moves BAR1 to 0; an 8-byte access at the top of the address space must not
        // wrap around into the window.
        net.lock()
            .nic
            .pci_config_write(PCI_BAR1, &0u32.to_le_bytes());
        let mut data = [0u8; 8];
        bus.mmio_read(u64::MAX - 3, &mut data);
        bus.mmio_write(u64::MAX - 3, &[0; 8]);
        assert_eq!(bus.stats().get(ExitReason::MmioNic), 0);
        assert_eq!(unhandled(&bus), 3);
        net.lock()
            .nic
            .pci_config_write(PCI_BAR1, &NIC_MMIO_BAR.to_le_bytes());
        // A dword at the last COM1 port, and malformed sizes.
        let mut data = [0u8; 4];
        bus.pio_in(SERIAL_PORT_BASE + SERIAL_PORT_COUNT - 1, 4, &mut data);
        assert_eq!(&data[1..], [0xff; 3]);
        let mut data = [0u8; 6];
        bus.pio_in(nic_port(RDP), 4, &mut data);
        assert_eq!(data, [0xff; 6]);
        bus.pio_in(nic_port(RDP), 0, &mut data);
        assert_eq!(
            bus.pio_out(DEBUG_EXIT_PORT, 3, &[1, 2, 3]),
            BusAction::Continue
        );
        assert_eq!(unhandled(&bus), 6);
    }
}
