//! `lancet demo` (what `make run` shows): the test guest boots bridged over AF_XDP in its own
//! namespaces and answers ping and UDP echo from the peer; nothing is left behind.

use std::process::{Command, Stdio};

/// Namespaces whose name starts with `prefix` (the testbed names them `lt-<tag><pid hex><n>`).
fn namespaces_starting_with(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn demo_guest_answers_ping_and_udp_echo_over_af_xdp() {
    let child = Command::new(env!("CARGO_BIN_EXE_lancet"))
        .args(["demo", "--echoes", "300"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lancet demo");
    // The demo's namespaces carry its pid (VmmRunner's testbed, tag "vx").
    let own_prefix = format!("lt-vx{:x}", child.id());
    let out = child.wait_with_output().expect("wait for lancet demo");
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
    // The demo's own namespaces are gone once it exits.
    let left = namespaces_starting_with(&own_prefix);
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}
