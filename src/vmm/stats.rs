//! Counters of the machine: vCPU exits by reason and by device, I/O thread wake-ups; written as JSON
//! with the NIC's and backend's counters by `--stats-json`.

use std::sync::atomic::{AtomicU64, Ordering};

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

const EXIT_REASON_NAMES: [&str; EXIT_REASON_COUNT] = [
    "pio_nic",
    "pio_serial",
    "pio_pci_config",
    "pio_debug_exit",
    "pio_other",
    "mmio_nic",
    "mmio_other",
    "hlt",
    "interrupted",
    "shutdown",
    "system_event",
    "other",
];

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

    /// `{"pio_nic": n, ...}` with every reason.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (name, counter) in EXIT_REASON_NAMES.iter().zip(&self.exits) {
            map.insert((*name).into(), counter.load(Ordering::Relaxed).into());
        }
        map.insert("total".into(), self.total().into());
        serde_json::Value::Object(map)
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
        assert_eq!(s.to_json()["mmio_nic"], 2);
        assert_eq!(s.to_json()["other"], 0);
    }
}
