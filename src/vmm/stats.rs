//! Counters of the machine: vCPU exits by reason and by device, I/O thread wake-ups; their
//! snapshot ([`ExitCounts`]) goes into the `--stats-json` report ([`super::report::RunStats`]).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Why a vCPU left KVM_RUN, and which device the access went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum ExitReason {
    PioNic,
    PioSerial,
    PioPci,
    PioDebugExit,
    PioOther,
    MmioNic,
    MmioOther,
    Hlt,
    Interrupted,
    Shutdown,
    SystemEvent,
    Other,
}

const EXIT_REASON_COUNT: usize = ExitReason::Other as usize + 1;

/// Exit counters, shared by every vCPU thread (relaxed atomics: only totals matter).
#[derive(Debug, Default)]
pub struct ExitStats {
    exits: [AtomicU64; EXIT_REASON_COUNT],
    /// I/O thread loop iterations that found work.
    pub io_wakeups: AtomicU64,
    /// Unhandled port/MMIO accesses (reads return all ones, writes are dropped).
    pub unhandled_accesses: AtomicU64,
    /// Times the backend's fd reported an error or hang-up (e.g. its TAP device was deleted): the
    /// I/O thread stopped polling it and took the NIC's link down.
    pub backend_lost: AtomicU64,
}

impl ExitStats {
    pub fn count(&self, reason: ExitReason) {
        self.exits[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, reason: ExitReason) -> u64 {
        self.exits[reason as usize].load(Ordering::Relaxed)
    }

    /// Exits that reached the NIC (port I/O and MMIO).
    pub fn nic_exits(&self) -> u64 {
        self.get(ExitReason::PioNic) + self.get(ExitReason::MmioNic)
    }

    pub fn total(&self) -> u64 {
        self.exits.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The counters now, by reason (the `exits` section of `--stats-json`).
    pub fn snapshot(&self) -> ExitCounts {
        use ExitReason::*;
        ExitCounts {
            pio_nic: self.get(PioNic),
            pio_serial: self.get(PioSerial),
            pio_pci_config: self.get(PioPci),
            pio_debug_exit: self.get(PioDebugExit),
            pio_other: self.get(PioOther),
            mmio_nic: self.get(MmioNic),
            mmio_other: self.get(MmioOther),
            hlt: self.get(Hlt),
            interrupted: self.get(Interrupted),
            shutdown: self.get(Shutdown),
            system_event: self.get(SystemEvent),
            other: self.get(Other),
            total: self.total(),
        }
    }
}

/// vCPU exits by reason at one moment, and their total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExitCounts {
    pub pio_nic: u64,
    pub pio_serial: u64,
    pub pio_pci_config: u64,
    pub pio_debug_exit: u64,
    pub pio_other: u64,
    pub mmio_nic: u64,
    pub mmio_other: u64,
    pub hlt: u64,
    pub interrupted: u64,
    pub shutdown: u64,
    pub system_event: u64,
    pub other: u64,
    /// Every exit.
    pub total: u64,
}

impl ExitCounts {
    /// Each counter with its name in `--stats-json` (`total` last).
    pub fn by_reason(&self) -> [(&'static str, u64); 13] {
        [
            ("pio_nic", self.pio_nic),
            ("pio_serial", self.pio_serial),
            ("pio_pci_config", self.pio_pci_config),
            ("pio_debug_exit", self.pio_debug_exit),
            ("pio_other", self.pio_other),
            ("mmio_nic", self.mmio_nic),
            ("mmio_other", self.mmio_other),
            ("hlt", self.hlt),
            ("interrupted", self.interrupted),
            ("shutdown", self.shutdown),
            ("system_event", self.system_event),
            ("other", self.other),
            ("total", self.total),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason() {
        let s = ExitStats::default();
        s.count(ExitReason::MmioNic);
        s.count(ExitReason::MmioNic);
        s.count(ExitReason::PioNic);
        s.count(ExitReason::Hlt);
        assert_eq!(s.nic_exits(), 3);
        assert_eq!(s.total(), 4);
        assert_eq!(s.snapshot().mmio_nic, 2);
        assert_eq!(s.snapshot().other, 0);
        let json = serde_json::to_value(s.snapshot()).unwrap();
        assert_eq!(json["mmio_nic"], 2);
        assert_eq!(json["total"], 4);
        for (name, n) in s.snapshot().by_reason() {
            assert_eq!(json[name], n, "{name}");
        }
    }
}
