//! The device model and a backend together, with an in-process null guest as the driver: frames
//! from the peer reach the guest's RX ring byte for byte, frames the guest queues reach the peer
//! byte for byte (maximum size included), and when the guest stops taking frames they wait in the
//! backend (the model misses none) and what overflows is counted.

mod support;

use std::{
    thread,
    time::{Duration, Instant},
};

use lancet::net::{Backend, TapBackend, TapConfig, XdpBackend, XdpConfig};
use lancet::tools::null_guest::NullGuest;
use lancet::tools::testbed::{frames, RawSocket, Side, Testbed, TestbedConfig};
use support::peer::assert_peer_receives;

const WAIT: Duration = Duration::from_secs(30);
const MAX_WIRE_FRAME: usize = 1514;
/// Linux pcnet32's ring sizes: 32 RX, 16 TX.
const RX_LOG2: u8 = 5;
const TX_LOG2: u8 = 4;

struct Setup {
    backend: Box<dyn Backend>,
    guest: NullGuest,
    peer: RawSocket,
    peer_mac: [u8; 6],
    _bed: Testbed,
}

fn setup(kind: &str, prefix: &str) -> Setup {
    let with_bridge = kind == "tap";
    let bed = Testbed::new(TestbedConfig {
        name_prefix: prefix.into(),
        with_bridge,
        ..Default::default()
    })
    .unwrap();
    let backend: Box<dyn Backend> = {
        let _in_host = bed.enter_host().unwrap();
        if with_bridge {
            Box::new(
                TapBackend::open(&TapConfig::new(Testbed::TAP, Some(Testbed::BRIDGE))).unwrap(),
            )
        } else {
            Box::new(XdpBackend::open(&XdpConfig::new(Testbed::NIC, Testbed::VM_MAC)).unwrap())
        }
    };
    let peer = bed.raw_socket(Side::Peer, Testbed::PEER_NIC).unwrap();
    let peer_mac = bed.mac_of(Side::Peer, Testbed::PEER_NIC).unwrap();
    let mut s = Setup {
        backend,
        guest: NullGuest::new(Testbed::VM_MAC, RX_LOG2, TX_LOG2),
        peer,
        peer_mac,
        _bed: bed,
    };
    // The guest's first frame (the bridge learns where the VM is).
    let hello = frames::test_frame(s.peer_mac, Testbed::VM_MAC, u64::MAX, 60);
    assert!(s.guest.queue_tx(&hello));
    assert_eq!(s.guest.kick_tx(s.backend.as_mut()).frames, 1);
    assert!(s
        .peer
        .recv_matching(WAIT, |f| frames::test_seq(f) == Some(u64::MAX))
        .unwrap()
        .is_some());
    s
}

fn inbound_frames(s: &mut Setup, count: u64) {
    let sizes = [60usize, 61, 128, 577, 1000, MAX_WIRE_FRAME];
    let frame = |seq: u64| {
        frames::test_frame(
            Testbed::VM_MAC,
            [2, 0, 0, 0, 0, 1],
            seq,
            sizes[seq as usize % sizes.len()],
        )
    };
    let deadline = Instant::now() + WAIT;
    let (mut sent, mut next) = (0u64, 0u64);
    while next < count && Instant::now() < deadline {
        // Keep at most 16 frames in flight: the receiver keeps up by construction.
        while sent < count && sent - next < 16 {
            s.peer.send(&frame(sent)).unwrap();
            sent += 1;
        }
        s.guest.pump_rx(s.backend.as_mut());
        s.guest.poll_rx(|f| {
            if let Some(seq) = frames::test_seq(f) {
                assert_eq!(seq, next, "frames arrive in order");
                assert_eq!(f, &frame(seq)[..], "frame {seq} arrives unchanged");
                next += 1;
            }
        });
        s.backend.reap();
    }
    assert_eq!(next, count);
    let model = s.guest.lance.stats();
    assert_eq!(
        (model.rx_missed, model.rx_overflow, model.dma_errors),
        (0, 0, 0),
        "{model:?}"
    );
    assert_eq!(s.backend.stats().drops.rx_total(), 0);
}

fn outbound_frames(s: &mut Setup, count: u64) {
    let sizes = [60usize, 99, 1000, MAX_WIRE_FRAME];
    let deadline = Instant::now() + WAIT;
    for seq in 0..count {
        let frame = frames::test_frame(
            s.peer_mac,
            Testbed::VM_MAC,
            seq,
            sizes[seq as usize % sizes.len()],
        );
        while !s.guest.queue_tx(&frame) {
            s.guest.kick_tx(s.backend.as_mut());
            s.backend.reap();
            assert!(Instant::now() < deadline, "TX ring never drained");
        }
        s.guest.kick_tx(s.backend.as_mut());
        assert_peer_receives(&s.peer, WAIT, &frame, &format!("frame {seq}"));
    }
    assert_eq!(s.guest.lance.stats().tx_errors, 0);
}

/// The guest stops taking frames: the model's ring fills (32 frames), the backend keeps the rest
/// queued up to its own limit, the model misses nothing, and the backend counts what overflowed.
fn guest_stops_draining(s: &mut Setup) {
    const FLOOD: u64 = 3000;
    let before = s.backend.stats().drops.rx_total();
    for seq in 0..FLOOD {
        s.peer
            .send(&frames::test_frame(Testbed::VM_MAC, s.peer_mac, seq, 60))
            .unwrap();
        if seq % 32 == 31 {
            s.guest.pump_rx(s.backend.as_mut()); // the VMM keeps pumping; the guest does not poll
            thread::sleep(Duration::from_millis(1));
        }
    }
    thread::sleep(Duration::from_millis(100));
    let mut delivered = 0u64;
    loop {
        s.guest.pump_rx(s.backend.as_mut());
        let n = s.guest.poll_rx(|f| {
            if frames::test_seq(f) == Some(delivered) {
                delivered += 1;
            }
        });
        if n == 0 {
            break;
        }
    }
    let dropped = s.backend.stats().drops.rx_total() - before;
    let model = s.guest.lance.stats();
    assert_eq!(
        model.rx_missed, 0,
        "the model never missed a frame: the backend held them"
    );
    assert!(dropped > 0, "the overflow was counted");
    assert_eq!(
        delivered + dropped,
        FLOOD,
        "every frame reached the guest (in order) or was counted"
    );
}

#[test]
fn xdp_model_inbound_frames_reach_the_guest_ring_unchanged() {
    inbound_frames(&mut setup("xdp", "mi"), 2000);
}

#[test]
fn xdp_model_outbound_frames_reach_the_peer_unchanged() {
    outbound_frames(&mut setup("xdp", "mo"), 200);
}

#[test]
fn xdp_model_guest_that_stops_draining_loses_nothing_silently() {
    guest_stops_draining(&mut setup("xdp", "md"));
}

#[test]
fn tap_model_inbound_frames_reach_the_guest_ring_unchanged() {
    inbound_frames(&mut setup("tap", "ni"), 2000);
}

#[test]
fn tap_model_outbound_frames_reach_the_peer_unchanged() {
    outbound_frames(&mut setup("tap", "no"), 200);
}

#[test]
fn tap_model_guest_that_stops_draining_loses_nothing_silently() {
    guest_stops_draining(&mut setup("tap", "nd"));
}
