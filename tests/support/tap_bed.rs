//! A bridged testbed with the TAP backend on its bridge, a raw socket on the peer, and the
//! bridge already knowing the VM's MAC on the TAP port.

use std::time::Duration;

use lancet::frame::FrameTx;
use lancet::net::TapBackend;
use lancet::tools::testbed::{frames, RawSocket, Side, Testbed, TestbedConfig};

/// How long the learning frame may take to reach the peer.
const LEARN_WAIT: Duration = Duration::from_secs(3);

/// See the module docs.
pub struct TapBed {
    pub backend: TapBackend,
    pub peer: RawSocket,
    pub peer_mac: [u8; 6],
    pub bed: Testbed,
}

/// Build a [`TapBed`]; `prefix` goes into the namespace names.
pub fn tap_bed(prefix: &str) -> TapBed {
    let bed = Testbed::new(TestbedConfig {
        name_prefix: prefix.into(),
        with_bridge: true,
        ..Default::default()
    })
    .unwrap();
    let mut backend = bed.open_tap().unwrap();
    let peer = bed.raw_socket(Side::Peer, Testbed::PEER_NIC).unwrap();
    let peer_mac = bed.mac_of(Side::Peer, Testbed::PEER_NIC).unwrap();
    // Let the bridge learn the VM's MAC on the TAP port, as a guest's first frame would.
    let frame = frames::test_frame(peer_mac, Testbed::VM_MAC, u64::MAX, 60);
    let buf = backend.tx_buffer().expect("a TX buffer");
    buf[..frame.len()].copy_from_slice(&frame);
    backend.tx_commit(frame.len());
    backend.tx_flush();
    assert!(peer
        .recv_matching(LEARN_WAIT, |f| frames::test_seq(f) == Some(u64::MAX))
        .unwrap()
        .is_some());
    TapBed {
        backend,
        peer,
        peer_mac,
        bed,
    }
}
