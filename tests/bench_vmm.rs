//! The xdp/tap runners around `lancet run`: reading its --stats-json, and precise reasons when
//! they cannot run. (The end-to-end run needs the VMM and the backends; `lancet bench` does it.)

use std::path::PathBuf;
use std::time::Duration;

use lancet::net::BackendKind as VmmBackend;
use lancet::tools::bench::vmm_path::{stats_from_vmm_report, VmmRunner, VmmSettings};
use lancet::tools::bench::{GuestMode, PathRunner, Role};
use lancet::vmm::RunStats;

fn stats_doc() -> RunStats {
    serde_json::from_value(serde_json::json!({
        "outcome": "guest exited with status 0",
        "exits": {
            "pio_nic": 0, "pio_serial": 900, "pio_pci_config": 40, "pio_debug_exit": 1,
            "mmio_nic": 5000, "hlt": 0, "interrupted": 3, "shutdown": 0, "total": 5944
        },
        "frames_moved": 9000,
        "nic": { "rx_frames": 4500, "tx_frames": 4400, "rx_missed": 7, "rx_overflow": 0, "rx_filtered": 2 },
        "backend": { "rx_frames": 4507, "drops": { "rx_ring_full": 0, "rx_fill_ring_empty": 11 } }
    }))
    .expect("a --stats-json document")
}

#[test]
fn vmm_stats_give_packet_path_exits_frames_and_drops() {
    let doc = stats_doc();
    let sink = stats_from_vmm_report(&doc, &Role::Sink { max_frames: 10 }, "xdp");
    // Boot and shutdown exits (console, PCI probing, exit port, totals) are left out.
    let reasons: Vec<&str> = sink.kvm_exits.keys().map(String::as_str).collect();
    assert_eq!(reasons, ["interrupted", "mmio_nic"]);
    assert_eq!(sink.kvm_exits["mmio_nic"], 5000);
    assert_eq!(sink.frames_received, Some(4500));
    assert_eq!(sink.frames_sent, None);
    let drops: Vec<(&str, u64)> = sink
        .drops
        .iter()
        .map(|d| (d.counted_at.as_str(), d.frames))
        .collect();
    assert_eq!(
        drops,
        [
            ("xdp: Lance model rx_missed", 7),
            ("xdp: backend rx_fill_ring_empty", 11)
        ]
    );
    let blast = stats_from_vmm_report(
        &doc,
        &Role::Blast {
            count: 1,
            frame_len: 60,
        },
        "tap",
    );
    assert_eq!(blast.frames_sent, Some(4400));
    assert_eq!(blast.frames_received, None);
}

#[test]
fn vmm_stats_without_the_expected_keys_give_no_figures() {
    let doc: RunStats = serde_json::from_value(serde_json::json!({"outcome": "x"})).unwrap();
    let stats = stats_from_vmm_report(&doc, &Role::Sink { max_frames: 1 }, "xdp");
    assert!(stats.kvm_exits.is_empty() && stats.drops.is_empty());
    assert_eq!(stats.frames_received, None);
}

#[test]
fn missing_lancet_or_guest_makes_the_path_unavailable_with_the_file_named() {
    let settings = VmmSettings {
        lancet: PathBuf::from("/nonexistent/lancet"),
        guest_image: PathBuf::from("/nonexistent/guest"),
        boot_timeout: Duration::from_secs(1),
        pin_vcpu: None,
        pin_io: None,
        poll_kick: lancet::tools::bench::vmm_path::PollKick::Always,
        busy_poll_us: None,
    };
    let mut runner = VmmRunner::new(VmmBackend::Xdp, settings.clone());
    assert_eq!(runner.name(), "xdp");
    let reason = runner.unavailable(GuestMode::Poll).unwrap();
    assert!(reason.contains("/nonexistent/lancet"), "{reason}");
    let mut runner = VmmRunner::new(
        VmmBackend::Tap,
        VmmSettings {
            lancet: std::env::current_exe().unwrap(),
            ..settings
        },
    );
    assert_eq!(runner.name(), "tap");
    let reason = runner.unavailable(GuestMode::Irq).unwrap();
    assert!(
        reason.contains("/nonexistent/guest") || reason.contains("kvm"),
        "{reason}"
    );
}
