//! `lancet run` as a user meets it: the help text documents every option, and wrong input gives an
//! error that says what to do (missing kernel, not a kernel, missing test guest image, bad values).

use std::process::Command;

fn lancet(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lancet"))
        .args(args)
        .env_remove("LANCET_GUEST_ELF")
        .output()
        .expect("run lancet");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_help_documents_every_option() {
    let (code, stdout, _) = lancet(&["run", "--help"]);
    assert_eq!(code, 0);
    for option in [
        "--nic",
        "--backend",
        "--mac",
        "--mem",
        "--cpus",
        "--kernel",
        "--initrd",
        "--cmdline",
        "--guest",
        "--guest-ip",
        "--poll",
        "--peer",
        "--count",
        "--bytes",
        "--size",
        "--serial",
        "--pin-vcpu",
        "--pin-io",
        "--stats-json",
        "--netns",
        "--guest-elf",
        "--cpuid-hide",
    ] {
        assert!(stdout.contains(option), "--help lacks {option}:\n{stdout}");
    }
    assert!(stdout.contains("xdp") && stdout.contains("tap"));
}

#[test]
fn missing_kernel_is_reported() {
    let (code, _, stderr) = lancet(&["run", "--kernel", "/nonexistent/bzImage"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("/nonexistent/bzImage") && stderr.contains("not found"),
        "{stderr}"
    );
}

#[test]
fn a_file_that_is_not_a_kernel_is_reported() {
    let path = std::env::temp_dir().join(format!("lancet-cli-junk-{}", std::process::id()));
    std::fs::write(&path, vec![0x90u8; 8192]).unwrap();
    let (code, _, stderr) = lancet(&["run", "--kernel", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(code, 1);
    assert!(
        stderr.contains("neither a bzImage") && stderr.contains("ELF"),
        "{stderr}"
    );
}

#[test]
fn missing_test_guest_image_says_make_guest() {
    let (code, _, stderr) = lancet(&[
        "run",
        "--guest",
        "echo",
        "--guest-elf",
        "/nonexistent/lancet-guest",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("make guest"), "{stderr}");
}

#[test]
fn bad_values_are_rejected_with_examples() {
    let (code, _, stderr) = lancet(&["run", "--kernel", "x", "--mac", "zz"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("52:54:00:12:34:56"), "{stderr}");
    let (code, _, stderr) = lancet(&["run", "--kernel", "x", "--mem", "12Q"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("size"), "{stderr}");
    let (code, _, stderr) = lancet(&["run", "--guest", "blast", "--guest-elf", "/bin/true"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--peer"), "{stderr}");
}

#[test]
fn a_missing_network_namespace_is_reported() {
    let (code, _, stderr) = lancet(&["run", "--kernel", "x", "--netns", "lt-nonexistent"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("lt-nonexistent") && stderr.contains("ip netns"),
        "{stderr}"
    );
}

/// A minimal valid PVH image (its contents never run: these tests fail before boot).
fn tiny_kernel(name: &str) -> std::path::PathBuf {
    let mut elf = vec![0u8; 4096];
    elf[0..4].copy_from_slice(b"\x7fELF");
    let path = std::env::temp_dir().join(format!("lancet-cli-{name}-{}", std::process::id()));
    std::fs::write(&path, elf).unwrap();
    path
}

#[test]
fn no_dev_kvm_is_reported_with_what_to_do() {
    let kernel = tiny_kernel("nokvm");
    // A private mount namespace with an empty /dev: /dev/kvm does not exist there.
    let script = format!(
        "mount -t tmpfs lancet-test /dev && exec {} run --kernel {}",
        env!("CARGO_BIN_EXE_lancet"),
        kernel.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux) is installed");
    std::fs::remove_file(&kernel).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("/dev/kvm does not exist") && stderr.contains("virtualization"),
        "{stderr}"
    );
}

#[test]
fn not_root_is_reported_with_what_to_do() {
    let kernel = tiny_kernel("noroot");
    // A copy outside the (possibly private) checkout so the unprivileged user can execute it.
    let binary = std::env::temp_dir().join(format!("lancet-cli-bin-{}", std::process::id()));
    std::fs::copy(env!("CARGO_BIN_EXE_lancet"), &binary).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&binary)
        .args(["run", "--kernel", kernel.to_str().unwrap()])
        .output()
        .expect("setpriv (util-linux) is installed");
    std::fs::remove_file(&kernel).unwrap();
    std::fs::remove_file(&binary).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("run as root") && stderr.contains("kvm"),
        "{stderr}"
    );
}

#[test]
fn a_missing_nic_is_reported() {
    let elf = std::env::temp_dir().join(format!("lancet-cli-nicguest-{}", std::process::id()));
    std::fs::write(&elf, b"placeholder").unwrap();
    for backend in ["xdp", "tap"] {
        let (code, _, stderr) = lancet(&[
            "run",
            "--nic",
            "lt-no-such-nic",
            "--backend",
            backend,
            "--guest",
            "echo",
            "--guest-elf",
            elf.to_str().unwrap(),
        ]);
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains("lt-no-such-nic") && stderr.contains("not found"),
            "{backend}: {stderr}"
        );
    }
    std::fs::remove_file(&elf).unwrap();
}

#[test]
fn tcp_source_needs_a_peer_port_and_a_byte_count() {
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--guest", "tcp-source", "--guest-elf", "/bin/true"];
        args.extend_from_slice(extra);
        lancet(&args)
    };
    let (code, _, stderr) = run(&["--peer", "10.77.0.2", "--bytes", "5"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--peer IP:PORT"), "{stderr}");
    let (code, _, stderr) = run(&["--peer", "10.77.0.2:5001"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--bytes N"), "{stderr}");
    let (code, _, stderr) = run(&["--peer", "10.77.0.2:port", "--bytes", "5"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("IP:PORT"), "{stderr}");
    // blast keeps taking a bare address.
    let (code, _, stderr) = lancet(&["run", "--guest", "blast", "--peer", "10.77.0.2:x"]);
    assert_eq!(code, 2, "{stderr}");
}

/// `lancet run` with `args`, its address space capped at 4 GiB so that a regression that reads an
/// endless initrd into memory fails the test instead of exhausting the machine.
fn lancet_capped(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 4194304 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_lancet"))
        .args(args)
        .env_remove("LANCET_GUEST_ELF")
        .output()
        .expect("run lancet under sh");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_initrd_that_is_a_device_or_too_big_is_refused_before_it_is_read() {
    let kernel = tiny_kernel("initrd");
    let kernel = kernel.to_str().unwrap();
    let (code, stderr) = lancet_capped(&["run", "--kernel", kernel, "--initrd", "/dev/zero"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("/dev/zero") && stderr.contains("not a regular file"),
        "{stderr}"
    );
    // A sparse 1 TiB file: its size alone says it cannot fit in 64 MiB of guest RAM.
    let huge = std::env::temp_dir().join(format!("lancet-cli-huge-{}", std::process::id()));
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let (code, stderr) = lancet_capped(&[
        "run",
        "--kernel",
        kernel,
        "--mem",
        "64M",
        "--initrd",
        huge.to_str().unwrap(),
    ]);
    std::fs::remove_file(&huge).unwrap();
    std::fs::remove_file(kernel).unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("1099511627776 bytes") && stderr.contains("raise --mem"),
        "{stderr}"
    );
}
