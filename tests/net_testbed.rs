//! The testbed guard: namespaces exist while it lives, vanish on drop (also when the test panics),
//! and namespaces left behind by a killed test process are swept by the next testbed.

use std::process::Command;

use lancet::tools::testbed::{Side, Testbed, TestbedConfig};

fn netns_exists(name: &str) -> bool {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn namespaces_are_removed_on_drop_and_after_a_panic() {
    let bed = Testbed::new(TestbedConfig {
        name_prefix: "dr".into(),
        with_bridge: true,
        ..Default::default()
    })
    .unwrap();
    let names = [
        bed.ns_name(Side::Host).to_string(),
        bed.ns_name(Side::Peer).to_string(),
    ];
    assert!(
        names
            .iter()
            .all(|n| netns_exists(n) && n.starts_with("lt-") && n.len() <= 15),
        "{names:?}"
    );
    let ping = bed.ping(Side::Peer, Testbed::HOST_IP, 1).unwrap();
    assert!(
        ping.status.success(),
        "the peer reaches the host across the bridge"
    );
    drop(bed);
    assert!(names.iter().all(|n| !netns_exists(n)));

    let mut names = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let bed = Testbed::new(TestbedConfig {
            name_prefix: "pa".into(),
            ..Default::default()
        })
        .unwrap();
        names.push(bed.ns_name(Side::Host).to_string());
        names.push(bed.ns_name(Side::Peer).to_string());
        panic!("a failing test");
    }));
    assert!(result.is_err());
    assert!(
        names.iter().all(|n| !netns_exists(n)),
        "{names:?} left behind after a panic"
    );
}

#[test]
fn namespaces_of_a_dead_process_are_swept() {
    // A marker as a killed test process leaves it (a pid above pid_max: never alive).
    let (host, peer) = ("lt-swdeadh", "lt-swdeadp");
    for ns in [host, peer] {
        assert!(Command::new("ip")
            .args(["netns", "add", ns])
            .status()
            .unwrap()
            .success());
    }
    std::fs::create_dir_all("/run/lancet-testbed").unwrap();
    std::fs::write(
        format!("/run/lancet-testbed/{host}"),
        format!("{} {peer}", 1u64 << 23),
    )
    .unwrap();
    let _bed = Testbed::new(TestbedConfig {
        name_prefix: "sw".into(),
        ..Default::default()
    })
    .unwrap();
    assert!(!netns_exists(host) && !netns_exists(peer));
}

#[test]
fn a_thread_enters_and_leaves_a_namespace() {
    let bed = Testbed::new(TestbedConfig {
        name_prefix: "en".into(),
        ..Default::default()
    })
    .unwrap();
    let own = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    {
        let _in_host = bed.enter_host().unwrap();
        assert_ne!(std::fs::read_link("/proc/thread-self/ns/net").unwrap(), own);
        assert!(
            lancet::net::nic::ifindex(Testbed::NIC).is_ok(),
            "the NIC is visible inside"
        );
    }
    assert_eq!(std::fs::read_link("/proc/thread-self/ns/net").unwrap(), own);
    assert!(
        lancet::net::nic::ifindex(Testbed::NIC).is_err(),
        "and not outside"
    );
}
