//! kill -9 of a process holding the AF_XDP backend leaves the NIC clean: no XDP program attached
//! and the promiscuity as before. The child is this test binary re-run with an environment
//! variable naming the namespace; it opens the backend, reports ready and waits to be killed.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use lancet::net::{nic, steer, MacFilter, XdpBackend, XdpConfig, XdpMode};
use lancet::tools::testbed::{Side, Testbed, TestbedConfig};

const CHILD_NS_VAR: &str = "LANCET_TEST_CHILD_NS";
const CHILD_FILTER_VAR: &str = "LANCET_TEST_CHILD_FILTER";
const READY: &str = "LANCET-CHILD-READY";

/// Kills (SIGKILL, by PID) and reaps the child if the test ends early.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child side: runs only when re-executed by the tests below.
#[test]
#[ignore = "helper process for the kill -9 tests"]
fn child_holds_an_xdp_backend() {
    let Ok(ns) = std::env::var(CHILD_NS_VAR) else {
        return;
    };
    let filter = match std::env::var(CHILD_FILTER_VAR).as_deref() {
        Ok("promisc") => MacFilter::Promiscuous,
        _ => MacFilter::Unicast,
    };
    let _in_ns = lancet::tools::testbed::NsGuard::enter(&ns).unwrap();
    let mut cfg = XdpConfig::new(Testbed::NIC, Testbed::VM_MAC);
    cfg.mode = XdpMode::Native;
    cfg.mac_filter = filter;
    let _backend = XdpBackend::open(&cfg).unwrap();
    println!("{READY}");
    std::thread::sleep(Duration::from_secs(120));
}

/// (id of the attached XDP program, promiscuity count) of the NIC.
fn nic_state(bed: &Testbed) -> (u32, u64) {
    let prog = {
        let _in_host = bed.enter_host().unwrap();
        steer::attached_program_id(nic::ifindex(Testbed::NIC).unwrap()).unwrap()
    };
    (prog, bed.promiscuity(Side::Host, Testbed::NIC).unwrap())
}

fn kill_leaves_the_nic_clean(filter: &str, prefix: &str) {
    let bed = Testbed::new(TestbedConfig {
        name_prefix: prefix.into(),
        ..Default::default()
    })
    .unwrap();
    let before = nic_state(&bed);
    assert_eq!(before, (0, 0), "fresh NIC: no program, not promiscuous");

    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_holds_an_xdp_backend",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_NS_VAR, bed.ns_name(Side::Host))
        .env(CHILD_FILTER_VAR, filter)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().unwrap();
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains(READY));
    assert!(ready, "the child never opened its backend");

    let (prog, promisc) = nic_state(&bed);
    assert_ne!(prog, 0, "the child's program is attached");
    assert!(
        promisc > 0,
        "the child made the NIC accept the VM MAC (veth has no unicast filter: promiscuous)"
    );

    child.0.kill().unwrap(); // SIGKILL to our own child, by PID
    child.0.wait().unwrap();

    // The kernel releases the link and the membership as the process's files close; allow it a
    // moment (this is a correctness check with a generous deadline, not a timing assertion).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = nic_state(&bed);
    while after != before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        after = nic_state(&bed);
    }
    assert_eq!(
        after, before,
        "after kill -9: (XDP program id, promiscuous)"
    );
}

#[test]
fn kill_9_with_unicast_filter_leaves_no_program_and_promiscuity_as_before() {
    kill_leaves_the_nic_clean("unicast", "ku");
}

#[test]
fn kill_9_in_promiscuous_mode_leaves_no_program_and_promiscuity_as_before() {
    kill_leaves_the_nic_clean("promisc", "kp");
}
