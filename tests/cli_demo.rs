//! `lancet demo` (what `make run` shows): the test guest boots bridged over AF_XDP in its own
//! namespaces and answers ping and UDP echo from the peer; nothing is left behind.

use std::process::Command;

fn lt_namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("lt-vx"))
        .map(str::to_string)
        .collect()
}

#[test]
fn demo_guest_answers_ping_and_udp_echo_over_af_xdp() {
    let out = Command::new(env!("CARGO_BIN_EXE_lancet"))
        .args(["demo", "--echoes", "300"])
        .output()
        .expect("run lancet demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("bytes from 10.77.0.10"),
        "no ping reply from the guest:\n{stdout}"
    );
    let answered = stdout
        .lines()
        .find_map(|l| l.strip_prefix("answered "))
        .and_then(|rest| rest.split('/').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no UDP echo summary:\n{stdout}"));
    assert!(answered > 0, "no UDP echo answered:\n{stdout}");
    assert!(
        stdout.contains("kvm exits mmio_nic"),
        "no exit counters:\n{stdout}"
    );
    // The demo's namespaces (lt-vx<pid>...) are gone once it exits; test binaries run one at a
    // time, so no other process owns such a namespace now.
    let left = lt_namespaces();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}
