//! The qemu_tap runner: a precise reason when it cannot run, and a real echo through QEMU's pcnet +
//! TAP with the test guest (`make guest` builds it; or LANCET_GUEST_ELF=FILE).

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::Duration;

use lancet::tools::bench::netns::{join, spawn_in_netns};
use lancet::tools::bench::qemu_path::{default_guest_image, QemuSettings, QemuTapRunner};
use lancet::tools::bench::rtt::{run_rtt, RttConfig, WaitMode};
use lancet::tools::bench::{GuestMode, PathRunner, Role};

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
    let args = lancet::tools::bench::BenchArgs {
        quick: true,
        paths: vec!["qemu_tap".into()],
        modes: vec!["poll".into()],
        samples: Some(200),
        rate_seconds: Some(0.3),
        ..lancet::tools::bench::BenchArgs::default()
    };
    let report = lancet::tools::bench::run_bench(&args).unwrap();
    lancet::tools::bench::report::check_report(&report).unwrap();
    let Some(lancet::tools::bench::report::PathResult::Measured(m)) =
        report.get("qemu_tap", "poll")
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

/// A private directory holding fake `qemu-system-x86_64` scripts, removed on drop.
struct FakeQemuDir(PathBuf);

impl FakeQemuDir {
    fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("lancet-fake-qemu-{}-{n}", std::process::id()));
        // create_dir (not _all): fails rather than reusing a directory someone else made.
        std::fs::create_dir(&dir).unwrap();
        FakeQemuDir(dir)
    }

    /// Writes an executable script `name` with `body` (a bash script reading "$@").
    fn script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.join(name);
        // Run with no arguments (see `wait_until_executable`) the fake does nothing.
        std::fs::write(
            &path,
            format!("#!/bin/bash\n[ $# -eq 0 ] && exit 0\n{body}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        wait_until_executable(&path);
        path
    }
}

/// A child forked by another test thread while `script` held the file open for writing keeps a
/// write descriptor until it execs, and exec of the script fails with ETXTBSY meanwhile. Wait that
/// window out (run with no arguments, a fake exits 0 at once).
fn wait_until_executable(path: &std::path::Path) {
    for _ in 0..200 {
        match std::process::Command::new(path)
            .stdin(std::process::Stdio::null())
            .status()
        {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            _ => return,
        }
    }
    panic!("{} stayed busy (ETXTBSY) for 2 s", path.display());
}

impl Drop for FakeQemuDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Like the current hosts' KVM: any `-cpu host...` that keeps IA32_ARCH_CAPABILITIES aborts.
const REFUSES_ARCH_CAPABILITIES: &str = r#"
cpu=""; while [ $# -gt 0 ]; do [ "$1" = -cpu ] && cpu=$2; shift; done
case "$cpu" in
  host,-arch-capabilities*|qemu64*) read -r cmd; [ "$cmd" = quit ] && exit 0; exit 3 ;;
  host*) echo "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69" >&2; exit 134 ;;
esac
exit 9"#;

#[test]
fn cpu_probe_falls_back_when_kvm_refuses_an_msr_and_keeps_the_feature_hiding() {
    use lancet::tools::bench::qemu_cpu::{default_cpu_candidates, probe_cpu_model};
    let dir = FakeQemuDir::new();
    let qemu = dir.script("qemu-refuses-msr", REFUSES_ARCH_CAPABILITIES);
    let candidates = default_cpu_candidates();
    let chosen = probe_cpu_model(&qemu, &candidates).unwrap();
    assert_eq!(chosen, candidates[1]);
    assert!(chosen.starts_with("host,-arch-capabilities,-"), "{chosen}");
    // The same feature hiding as lancet's own VM.
    assert!(
        chosen.contains("-xsave") && chosen.contains("-cx16"),
        "{chosen}"
    );
}

#[test]
fn cpu_probe_reports_other_failures_without_trying_further_models() {
    use lancet::tools::bench::qemu_cpu::{default_cpu_candidates, probe_cpu_model, CpuProbeError};
    let dir = FakeQemuDir::new();
    let log = dir.0.join("calls");
    let qemu = dir.script(
        "qemu-no-kvm",
        &format!(
            "echo call >> {}\necho 'Could not access KVM kernel module: No such file or directory' >&2\nexit 1",
            log.display()
        ),
    );
    let err = probe_cpu_model(&qemu, &default_cpu_candidates()).unwrap_err();
    assert!(
        matches!(&err, CpuProbeError::Failed { output, .. } if output.contains("KVM kernel module")),
        "{err:?}"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1);

    let all_refuse = dir.script(
        "qemu-always-refuses",
        "echo 'error: failed to set MSR 0x10a to 0x69' >&2; exit 134",
    );
    let err = probe_cpu_model(&all_refuse, &default_cpu_candidates()).unwrap_err();
    assert!(matches!(err, CpuProbeError::AllRefused { .. }), "{err:?}");
}

#[test]
fn cpu_probe_finds_a_model_the_real_qemu_starts_with() {
    // Where QEMU and KVM exist (make test installs QEMU; CI has /dev/kvm), a model must be found:
    // the bench's qemu_tap path depends on it.
    let model = lancet::tools::bench::qemu_cpu::qemu_cpu_model()
        .unwrap_or_else(|e| panic!("no QEMU CPU model starts on this host: {e}"));
    assert!(
        lancet::tools::bench::qemu_cpu::BASE_MODELS
            .iter()
            .any(|base| model.starts_with(base)),
        "{model}"
    );
}

#[test]
fn smoke_scripts_hide_the_same_cpu_features_as_lancet() {
    let script = include_str!("qemu-cpu.sh");
    let line = script
        .lines()
        .find_map(|l| l.strip_prefix("LANCET_HIDDEN_CPU_FEATURES="))
        .expect("tests/qemu-cpu.sh names LANCET_HIDDEN_CPU_FEATURES");
    assert_eq!(line, lancet::vmm::DEFAULT_HIDDEN);
}
