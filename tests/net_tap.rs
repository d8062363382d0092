//! TAP backend through the Linux bridge: frames to the VM MAC reach the backend, transmitted frames
//! appear on the peer byte for byte, ARP for the VM reaches it, maximum-size frames both ways, and
//! the host keeps answering ping.

mod support;

use std::time::{Duration, Instant};

use lancet::frame::FrameTx;
use lancet::net::{Backend, TapBackend};
use lancet::tools::testbed::{frames, Side, Testbed};
use support::tap_bed::{tap_bed, TapBed};

const WAIT: Duration = Duration::from_secs(3);
const MAX_WIRE_FRAME: usize = 1514; // 1518 with the FCS the chip adds

/// The bridged TAP testbed every test here starts from.
fn setup(prefix: &str) -> TapBed {
    tap_bed(prefix)
}

fn receive(
    backend: &mut TapBackend,
    n: usize,
    wait: Duration,
    pred: impl Fn(&[u8]) -> bool,
) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        backend
            .recv_batch(64, &mut |f| {
                if pred(f) {
                    got.push(f.to_vec())
                }
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    got
}

fn transmit(backend: &mut TapBackend, frame: &[u8]) {
    let buf = backend.tx_buffer().expect("a TX buffer");
    assert!(buf.len() >= lancet::frame::MAX_FRAME_LEN);
    buf[..frame.len()].copy_from_slice(frame);
    backend.tx_commit(frame.len());
    backend.tx_flush();
}

#[test]
fn tap_frames_to_the_vm_mac_reach_the_backend() {
    let mut s = setup("tu");
    let sent: Vec<Vec<u8>> = (0..16)
        .map(|i| frames::test_frame(Testbed::VM_MAC, s.peer_mac, i, 60 + i as usize * 50))
        .collect();
    for f in &sent {
        s.peer.send(f).unwrap();
    }
    let got = receive(&mut s.backend, sent.len(), WAIT, |f| {
        frames::test_seq(f).is_some()
    });
    assert_eq!(got, sent);
    assert_eq!(s.backend.stats().drops.rx_total(), 0);
}

#[test]
fn tap_transmitted_frames_appear_on_the_peer_byte_for_byte() {
    let mut s = setup("tt");
    for (seq, len) in [(1u64, 60usize), (2, 333), (3, MAX_WIRE_FRAME)] {
        let frame = frames::test_frame(s.peer_mac, Testbed::VM_MAC, seq, len);
        transmit(&mut s.backend, &frame);
        let got = s
            .peer
            .recv_matching(WAIT, |f| frames::test_seq(f) == Some(seq))
            .unwrap();
        assert_eq!(got.as_deref(), Some(&frame[..]));
    }
    assert_eq!(s.backend.stats().tx_frames, 4);
}

#[test]
fn tap_maximum_size_frame_reaches_the_backend() {
    let mut s = setup("tm");
    let inbound = frames::test_frame(Testbed::VM_MAC, s.peer_mac, 9, MAX_WIRE_FRAME);
    s.peer.send(&inbound).unwrap();
    assert_eq!(
        receive(&mut s.backend, 1, WAIT, |f| frames::test_seq(f) == Some(9)),
        vec![inbound]
    );
}

#[test]
fn tap_arp_for_the_vm_ip_reaches_the_vm() {
    let mut s = setup("ta");
    let arp = frames::arp_request(s.peer_mac, Testbed::PEER_IP, Testbed::VM_IP);
    s.peer.send(&arp).unwrap();
    assert_eq!(
        receive(&mut s.backend, 1, WAIT, |f| frames::arp_target(f).is_some()),
        vec![arp]
    );
}

#[test]
fn tap_host_address_still_answers_ping() {
    let s = setup("tp");
    let ping = s.bed.ping(Side::Peer, Testbed::HOST_IP, 3).unwrap();
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
}
