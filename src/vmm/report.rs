//! What a finished VM reports: [`RunReport`] in memory, and [`RunStats`], the `--stats-json`
//! document (serialized by `lancet run`, deserialized by the bench and anyone reading the file).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::control::VmOutcome;
use super::error::IoThreadError;
use super::stats::{ExitCounts, ExitStats};
use crate::lance::LanceStats;
use crate::net::{local::LocalStats, Backend, BackendStats};

/// What a finished VM reports.
#[derive(Debug)]
pub struct RunReport {
    pub outcome: VmOutcome,
    pub exits: Arc<ExitStats>,
    /// The NIC model's counters (None: no NIC).
    pub nic: Option<LanceStats>,
    /// The backend's counters (None: no backend).
    pub backend: Option<BackendReport>,
    pub frames_moved: u64,
    /// Why the I/O thread ended early, if it did.
    pub io_thread_error: Option<IoThreadError>,
}

impl RunReport {
    /// The `--stats-json` document.
    pub fn stats(&self) -> RunStats {
        let nic_exits = self.exits.nic_exits();
        RunStats {
            outcome: self.outcome.to_string(),
            exit_status: self.outcome.exit_status(),
            exits: self.exits.snapshot(),
            unhandled_accesses: self.exits.unhandled_accesses.load(Ordering::Relaxed),
            io_thread_wakeups: self.exits.io_wakeups.load(Ordering::Relaxed),
            backend_lost: self.exits.backend_lost.load(Ordering::Relaxed),
            frames_moved: self.frames_moved,
            nic_exits_per_frame: (self.frames_moved > 0)
                .then(|| nic_exits as f64 / self.frames_moved as f64),
            nic: self.nic.clone(),
            backend: self.backend,
            io_thread_error: self.io_thread_error.as_ref().map(ToString::to_string),
            serial: None,
        }
    }
}

/// The backend's counters in the report: frames, bytes, drops by reason (anti-spoofing included),
/// and the local bridge's counters for an AF_XDP VM on one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackendReport {
    #[serde(flatten)]
    pub counters: BackendStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalStats>,
}

impl BackendReport {
    /// The counters of `backend` now.
    pub fn of(backend: &dyn Backend) -> Self {
        Self {
            counters: backend.stats(),
            local: backend.local_stats(),
        }
    }
}

/// The `--stats-json` document. Missing fields read as zero / absent, so a reader accepts the
/// documents of older and newer VMMs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunStats {
    /// How the VM ended, in words.
    pub outcome: String,
    /// The process exit status for that outcome.
    pub exit_status: i32,
    /// vCPU exits by reason.
    pub exits: ExitCounts,
    /// Port/MMIO accesses no device decoded.
    pub unhandled_accesses: u64,
    /// I/O thread loop iterations that found work.
    pub io_thread_wakeups: u64,
    /// Times the backend failed (device removed) and the link went down.
    pub backend_lost: u64,
    /// Frames the NIC moved (TX + RX).
    pub frames_moved: u64,
    /// NIC register exits per frame moved (None: no frame moved).
    pub nic_exits_per_frame: Option<f64>,
    /// The NIC model's counters.
    pub nic: Option<LanceStats>,
    /// The backend's counters.
    pub backend: Option<BackendReport>,
    /// Why the I/O thread ended early.
    pub io_thread_error: Option<String>,
    /// The serial log's counters (`lancet run --serial FILE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<SerialStats>,
}

/// Counters of the serial log file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SerialStats {
    /// Guest output dropped at `--serial-max-mb`.
    pub dropped_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys of a JSON object, sorted.
    fn keys(v: &serde_json::Value) -> Vec<&str> {
        let mut k: Vec<&str> = v
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn stats_json_keeps_the_documented_shape_and_reads_back() {
        let exits = Arc::new(ExitStats::default());
        exits.count(super::super::stats::ExitReason::MmioNic);
        let report = RunReport {
            outcome: VmOutcome::GuestExit(0),
            exits,
            nic: Some(LanceStats {
                rx_frames: 1,
                ..LanceStats::default()
            }),
            backend: Some(BackendReport {
                counters: BackendStats {
                    tx_frames: 2,
                    ..BackendStats::default()
                },
                local: None,
            }),
            frames_moved: 4,
            io_thread_error: Some(IoThreadError::NoResult),
        };
        let stats = report.stats();
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(
            keys(&json),
            [
                "backend",
                "backend_lost",
                "exit_status",
                "exits",
                "frames_moved",
                "io_thread_error",
                "io_thread_wakeups",
                "nic",
                "nic_exits_per_frame",
                "outcome",
                "unhandled_accesses",
            ]
        );
        assert_eq!(json["exits"]["mmio_nic"], 1);
        assert_eq!(json["exits"]["total"], 1);
        assert_eq!(json["nic_exits_per_frame"], 0.25);
        assert_eq!(json["nic"]["rx_frames"], 1);
        // The backend's counters sit directly under "backend"; "local" only for a local link.
        assert_eq!(json["backend"]["tx_frames"], 2);
        assert!(json["backend"]["drops"].is_object());
        assert!(json["backend"]["steer"].is_object());
        assert!(json["backend"].get("local").is_none());
        assert_eq!(
            json["io_thread_error"],
            "the I/O thread ended without a result"
        );
        let back: RunStats = serde_json::from_value(json).unwrap();
        assert_eq!(back, stats);

        let mut with_serial = stats;
        with_serial.serial = Some(SerialStats { dropped_bytes: 9 });
        with_serial.backend = Some(BackendReport {
            local: Some(LocalStats::default()),
            ..BackendReport::default()
        });
        let json = serde_json::to_value(&with_serial).unwrap();
        assert_eq!(json["serial"]["dropped_bytes"], 9);
        assert!(json["backend"]["local"]["bridge"].is_object());
    }
}
