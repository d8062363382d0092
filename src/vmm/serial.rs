//! The 16550 UART on COM1 (0x3f8..0x3ff, IRQ 4) from vm-superio, its output to stdout or a file.
//! Input is not wired (guests here never read the console).

use std::io::Write;

use vm_superio::{serial::NoEvents, Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// First port of COM1.
pub const SERIAL_PORT_BASE: u16 = 0x3f8;
/// Ports decoded by the UART.
pub const SERIAL_PORT_COUNT: u16 = 8;
/// ISA IRQ of COM1.
pub const SERIAL_IRQ: u32 = 4;

/// Raises IRQ 4 through an eventfd registered as a KVM irqfd.
pub struct IrqFdTrigger(pub EventFd);

impl Trigger for IrqFdTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// COM1 with its output sink.
pub struct SerialConsole {
    uart: Serial<IrqFdTrigger, NoEvents, Box<dyn Write + Send>>,
}

impl SerialConsole {
    pub fn new(irq: IrqFdTrigger, out: Box<dyn Write + Send>) -> Self {
        Self {
            uart: Serial::new(irq, out),
        }
    }

    /// Read of the register at `offset` (0..8).
    pub fn read(&mut self, offset: u8) -> u8 {
        self.uart.read(offset)
    }

    /// Write of the register at `offset` (0..8). Output errors (a closed stdout) are ignored: the
    /// console must never stop the guest.
    pub fn write(&mut self, offset: u8, value: u8) {
        let _ = self.uart.write(offset, value);
    }

    /// Flushes buffered output (at exit).
    pub fn flush(&mut self) {
        let _ = self.uart.writer_mut().flush();
    }
}
