//! `net::open_backend`, what `lancet run --nic` uses: the TAP joins the NIC's bridge (or the
//! bridge given), AF_XDP refuses a bridge, TAP refuses a NIC in no bridge.

use lancet::net::{
    nic, open_backend, BackendKind, BackendSpec, NetError, XdpMode, DEFAULT_TAP_NAME,
};
use lancet::tools::testbed::{Testbed, TestbedConfig};

fn spec(kind: BackendKind, nic: &str) -> BackendSpec {
    BackendSpec {
        kind,
        nic: nic.into(),
        vm_mac: Testbed::VM_MAC,
        vm_ip: Some(Testbed::VM_IP),
        tap_name: None,
        xdp_mode: XdpMode::Auto,
    }
}

fn bed(prefix: &str, with_bridge: bool) -> Testbed {
    Testbed::new(TestbedConfig {
        name_prefix: prefix.into(),
        with_bridge,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn tap_joins_the_bridge_of_the_nic_or_the_bridge_given() {
    let bed = bed("ob", true);
    let _in_host = bed.enter_host().unwrap();
    for nic_name in [Testbed::NIC, Testbed::BRIDGE] {
        let backend = open_backend(&spec(BackendKind::Tap, nic_name)).unwrap();
        assert_eq!(backend.kind(), "tap");
        let info = nic::link_info(DEFAULT_TAP_NAME).unwrap();
        assert_eq!(
            info.master.as_deref(),
            Some(Testbed::BRIDGE),
            "given {nic_name}"
        );
        drop(backend);
        // The kernel unregisters the device as the last descriptor closes (possibly deferred).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while nic::ifindex(DEFAULT_TAP_NAME).is_ok() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            nic::ifindex(DEFAULT_TAP_NAME).is_err(),
            "the TAP device goes with the backend"
        );
    }
}

#[test]
fn xdp_refuses_a_bridge_and_opens_on_the_nic() {
    let bed = bed("ox", true);
    let _in_host = bed.enter_host().unwrap();
    match open_backend(&spec(BackendKind::Xdp, Testbed::BRIDGE)) {
        Err(NetError::InvalidConfig(msg)) => assert!(msg.contains("bridge"), "{msg}"),
        Err(other) => panic!("expected InvalidConfig, got {other}"),
        Ok(_) => panic!("AF_XDP opened on a bridge"),
    }
    let backend = open_backend(&spec(BackendKind::Xdp, Testbed::NIC)).unwrap();
    assert_eq!(backend.kind(), "xdp");
}

#[test]
fn tap_refuses_a_nic_in_no_bridge() {
    let bed = bed("on", false);
    let _in_host = bed.enter_host().unwrap();
    match open_backend(&spec(BackendKind::Tap, Testbed::NIC)) {
        Err(NetError::InvalidConfig(msg)) => assert!(msg.contains("no bridge"), "{msg}"),
        Err(other) => panic!("expected InvalidConfig, got {other}"),
        Ok(_) => panic!("a TAP opened without a bridge"),
    }
}
