//! The qemu_tap runner: a precise reason when it cannot run, and a real echo through QEMU's pcnet +
//! TAP with the test guest (`make guest` builds it; or LANCET_GUEST_ELF=FILE).

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::Duration;

use lancet::bench::netns::{join, spawn_in_netns};
use lancet::bench::qemu_path::{default_guest_image, QemuSettings, QemuTapRunner};
use lancet::bench::rtt::{run_rtt, RttConfig, WaitMode};
use lancet::bench::{GuestMode, PathRunner, Role};

#[test]
fn missing_guest_image_makes_the_path_unavailable_with_the_file_named() {
    let mut runner = QemuTapRunner::new(QemuSettings {
        guest_image: PathBuf::from("/nonexistent/lancet-guest"),
        boot_timeout: Duration::from_secs(1),
        cpu: None,
    });
    let reason = runner.unavailable(GuestMode::Poll).unwrap();
    // Either QEMU/KVM is missing (named) or the image is (named with the fix).
    assert!(
        reason.contains("/nonexistent/lancet-guest")
            || reason.contains("qemu")
            || reason.contains("kvm"),
        "{reason}"
    );
}

#[test]
fn qemu_guest_echo_answers_the_rtt_client() {
    let image = default_guest_image();
    let mut runner = QemuTapRunner::new(QemuSettings {
        guest_image: image.clone(),
        boot_timeout: Duration::from_secs(120),
        cpu: None,
    });
    // Like the VMM's guest tests: a missing guest or QEMU fails with what to run, never passes.
    if let Some(reason) = runner.unavailable(GuestMode::Poll) {
        panic!("qemu_tap cannot run: {reason} (run `make guest`; QEMU: apt-get install qemu-system-x86)");
    }
    let running = runner.start(GuestMode::Poll, &Role::Echo).unwrap();
    let ep = running.endpoint().clone();
    let cfg = RttConfig {
        target: SocketAddrV4::new(ep.dut_ip, ep.echo_port),
        payload_len: 18,
        samples: 100,
        warmup: 5,
        timeout: Duration::from_secs(1),
        max_losses: 10,
        max_duration: Duration::from_secs(60),
        wait: WaitMode::Block,
    };
    let out = join(spawn_in_netns(&ep.peer_netns, "rtt", move || run_rtt(&cfg)).unwrap()).unwrap();
    running.finish().unwrap();
    assert!(out.received > 0, "{out:?}");
    let h = &out.histogram;
    assert!(
        h.value_at_quantile(0.5) <= h.value_at_quantile(0.99)
            && h.value_at_quantile(0.99) <= h.max()
    );
}

#[test]
fn qemu_path_measures_echo_receive_and_transmit() {
    let args = lancet::bench::BenchArgs {
        quick: true,
        paths: vec!["qemu_tap".into()],
        modes: vec!["poll".into()],
        samples: Some(200),
        rate_seconds: Some(0.3),
        ..lancet::bench::BenchArgs::default()
    };
    let report = lancet::bench::run_bench(&args).unwrap();
    lancet::bench::report::check_report(&report).unwrap();
    let Some(lancet::bench::report::PathResult::Measured(m)) = report.get("qemu_tap", "poll")
    else {
        panic!(
            "qemu_tap/poll not measured (run `make guest`): {:?}",
            report.get("qemu_tap", "poll")
        );
    };
    assert!(m.rtt_us.unwrap().samples > 0);
    assert!(m.rx_pps.unwrap() > 0.0 && m.tx_pps.unwrap() > 0.0, "{m:?}");
    assert!(m.unavailable_metrics["exits_per_packet"].contains("QEMU"));
}
