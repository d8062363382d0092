//! The 16550 UART on COM1 (0x3f8..0x3ff, IRQ 4) from vm-superio, its output to stdout or a file.
//! Input is not wired (guests here never read the console).
//!
//! A serial log file grows with whatever the guest prints, so [`CappedWriter`] caps it
//! (`--serial-max-mb`, default [`DEFAULT_SERIAL_MAX_BYTES`]): output past the cap is dropped and
//! counted ([`SerialDrops`]).

use std::{
    io::Write,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

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

/// Default cap on a serial log file (`--serial-max-mb`).
pub const DEFAULT_SERIAL_MAX_BYTES: u64 = 16 << 20;

/// Bytes a [`CappedWriter`] dropped past its cap; shared with whoever reports it.
#[derive(Debug, Clone, Default)]
pub struct SerialDrops(Arc<AtomicU64>);

impl SerialDrops {
    /// Bytes dropped so far.
    pub fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A writer that passes at most `max_bytes` to `inner` and drops (and counts) the rest.
#[derive(Debug)]
pub struct CappedWriter<W> {
    inner: W,
    left: u64,
    dropped: SerialDrops,
}

impl<W: Write> CappedWriter<W> {
    /// Wrap `inner`, letting `max_bytes` through.
    pub fn new(inner: W, max_bytes: u64) -> Self {
        Self {
            inner,
            left: max_bytes,
            dropped: SerialDrops::default(),
        }
    }

    /// The counter of dropped bytes (stays valid after the writer moved into the VM).
    pub fn drops(&self) -> SerialDrops {
        self.dropped.clone()
    }
}

impl<W: Write> Write for CappedWriter<W> {
    /// Always reports the whole buffer written: the guest's console never blocks or fails on the
    /// cap, the dropped part is counted.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let take = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if take > 0 {
            self.inner.write_all(&buf[..take])?;
            self.left -= take as u64;
        }
        let dropped = (buf.len() - take) as u64;
        if dropped > 0 {
            self.dropped.0.fetch_add(dropped, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_writer_stops_at_the_cap_and_counts_the_rest() {
        let mut w = CappedWriter::new(Vec::new(), 10);
        let drops = w.drops();
        w.write_all(b"0123456").unwrap();
        w.write_all(b"789abcdef").unwrap();
        w.write_all(b"more").unwrap();
        assert_eq!(w.inner, b"0123456789");
        assert_eq!(drops.bytes(), 10);
    }
}
