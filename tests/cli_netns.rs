//! `lancet run` started under `ip netns exec NS` (which gives it a private /sys, so its pins would
//! be invisible to `lancet filter|stats|nic` and vanish with it) refuses before it pins anything and
//! names `--netns NS` as the fix; the "not pinned" error of the other commands names that cause.

use std::process::{Command, Output};

use lancet::net::pin;
use lancet::tools::testbed::{Side, Testbed, TestbedConfig};

fn lancet_under_ip_netns_exec(ns: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_lancet")])
        .args(args)
        .output()
        .expect("run ip netns exec (iproute2)")
}

#[test]
fn run_under_ip_netns_exec_refuses_and_names_netns() {
    let bed = Testbed::new(TestbedConfig {
        name_prefix: "ne".into(),
        ..Default::default()
    })
    .expect("testbed (needs root and iproute2)");
    let ns = bed.ns_name(Side::Host);
    let out = lancet_under_ip_netns_exec(
        ns,
        &[
            "run",
            "--nic",
            Testbed::NIC,
            "--backend",
            "xdp",
            "--guest",
            "echo",
            "--timeout",
            "10",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("private mount namespace"), "{stderr}");
    assert!(
        stderr.contains(&format!("lancet run --netns {ns}")),
        "the fix names the namespace: {stderr}"
    );
    // Nothing was pinned for the NIC, in the system's bpffs or anywhere else.
    let _in_host = bed.enter_host().unwrap();
    assert!(!pin::pin_dir_here(Testbed::NIC).exists());
}

#[test]
fn not_pinned_error_names_ip_netns_exec() {
    let out = Command::new(env!("CARGO_BIN_EXE_lancet"))
        .args(["filter", "list", "lt-nopin0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no lancet steering program is pinned"),
        "{stderr}"
    );
    assert!(stderr.contains("ip netns exec"), "{stderr}");
    assert!(stderr.contains("--netns"), "{stderr}");
}

#[test]
fn nic_attach_under_ip_netns_exec_refuses() {
    let bed = Testbed::new(TestbedConfig {
        name_prefix: "na".into(),
        ..Default::default()
    })
    .expect("testbed (needs root and iproute2)");
    let ns = bed.ns_name(Side::Host);
    let out = lancet_under_ip_netns_exec(ns, &["nic", "attach", Testbed::NIC]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("lancet nic attach --netns {ns}")),
        "{stderr}"
    );
    let _in_host = bed.enter_host().unwrap();
    assert_eq!(
        lancet::net::steer::attached_program_id(lancet::net::nic::ifindex(Testbed::NIC).unwrap())
            .unwrap(),
        0,
        "nothing attached"
    );
}

/// TAP pins nothing: `ip netns exec` is fine for it, and the VM runs.
#[test]
fn tap_run_under_ip_netns_exec_is_not_refused() {
    let bed = Testbed::new(TestbedConfig {
        name_prefix: "nt".into(),
        with_bridge: true,
        ..Default::default()
    })
    .expect("testbed (needs root and iproute2)");
    let ns = bed.ns_name(Side::Host);
    let Some(elf) = std::env::var_os("LANCET_GUEST_ELF") else {
        eprintln!("skipped: set LANCET_GUEST_ELF to the test guest image");
        return;
    };
    let out = lancet_under_ip_netns_exec(
        ns,
        &[
            "run",
            "--nic",
            Testbed::BRIDGE,
            "--backend",
            "tap",
            "--guest",
            "echo",
            "--guest-elf",
            elf.to_str().unwrap(),
            "--mem",
            "64M",
            "--timeout",
            "3",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("private mount namespace"), "{stderr}");
    assert!(stderr.contains("vCPU exits"), "the VM ran: {stderr}");
}
