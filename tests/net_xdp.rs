//! AF_XDP backend against a veth testbed: steering (VM unicast, ARP, NS, host traffic), TX byte for
//! byte, maximum-size frames both ways, and the refusals (second program, MTU too large).

use lancet::frame::FrameTx;
use std::time::{Duration, Instant};

use lancet::net::{steer::link_local_from_mac, Backend, NetError, XdpBackend, XdpConfig, XdpMode};
use lancet::tools::testbed::{frames, Side, Testbed, TestbedConfig};

const WAIT: Duration = Duration::from_secs(3);
const MAX_WIRE_FRAME: usize = 1514; // 1518 with the FCS the chip adds

fn testbed(prefix: &str) -> Testbed {
    Testbed::new(TestbedConfig {
        name_prefix: prefix.into(),
        ..Default::default()
    })
    .unwrap()
}

fn open_backend(bed: &Testbed, mode: XdpMode) -> XdpBackend {
    let _in_host = bed.enter_host().unwrap();
    let mut cfg = XdpConfig::new(Testbed::NIC, Testbed::VM_MAC);
    cfg.vm_ip = Some(Testbed::VM_IP);
    cfg.mode = mode;
    XdpBackend::open(&cfg).unwrap()
}

/// Poll the backend until `n` frames arrived or the deadline passes.
fn receive(backend: &mut XdpBackend, n: usize, wait: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        backend
            .recv_batch(64, &mut |f| got.push(f.to_vec()))
            .unwrap();
        if got.len() < n {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    got
}

fn transmit(backend: &mut XdpBackend, frame: &[u8]) {
    let buf = backend.tx_buffer().expect("a free TX frame");
    assert!(buf.len() >= lancet::frame::MAX_FRAME_LEN);
    buf[..frame.len()].copy_from_slice(frame);
    backend.tx_commit(frame.len());
    backend.tx_flush();
}

fn unicast_reaches_vm_not_host(mode: XdpMode, prefix: &str) {
    let bed = testbed(prefix);
    let mut backend = open_backend(&bed, mode);
    let host_tap = bed.raw_socket(Side::Host, Testbed::NIC).unwrap();
    let peer = bed.raw_socket(Side::Peer, Testbed::PEER_NIC).unwrap();
    let peer_mac = bed.mac_of(Side::Peer, Testbed::PEER_NIC).unwrap();
    let sent: Vec<Vec<u8>> = (0..16)
        .map(|i| frames::test_frame(Testbed::VM_MAC, peer_mac, i, 60 + i as usize * 50))
        .collect();
    for f in &sent {
        peer.send(f).unwrap();
    }
    let got = receive(&mut backend, sent.len(), WAIT);
    assert_eq!(
        got, sent,
        "every frame to the VM MAC reaches the backend, in order, unchanged"
    );
    let leaked = host_tap
        .recv_matching(Duration::from_millis(300), |f| {
            frames::test_seq(f).is_some()
        })
        .unwrap();
    assert!(
        leaked.is_none(),
        "a frame for the VM reached the host stack: {leaked:?}"
    );
    let stats = backend.stats();
    assert_eq!(stats.steer.to_vm, sent.len() as u64);
    assert_eq!(stats.rx_frames, sent.len() as u64);
    assert_eq!(stats.drops.rx_total(), 0, "{stats:?}");
}

#[test]
fn native_unicast_to_vm_mac_reaches_backend_and_not_host() {
    unicast_reaches_vm_not_host(XdpMode::Native, "un");
}

#[test]
fn generic_unicast_to_vm_mac_reaches_backend_and_not_host() {
    unicast_reaches_vm_not_host(XdpMode::Generic, "ug");
}

#[test]
fn host_address_still_answers_ping_while_attached() {
    let bed = testbed("pi");
    let backend = open_backend(&bed, XdpMode::Auto);
    let ping = bed.ping(Side::Peer, Testbed::HOST_IP, 3).unwrap();
    assert!(
        ping.status.success(),
        "ping to the host failed: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let stats = backend.stats();
    assert!(
        stats.steer.to_host >= 3,
        "host traffic passed by the program: {:?}",
        stats.steer
    );
    assert_eq!(stats.steer.to_vm, 0);
}

#[test]
fn transmitted_frames_appear_on_the_peer_byte_for_byte() {
    let bed = testbed("tx");
    let mut backend = open_backend(&bed, XdpMode::Auto);
    let peer = bed.raw_socket(Side::Peer, Testbed::PEER_NIC).unwrap();
    let peer_mac = bed.mac_of(Side::Peer, Testbed::PEER_NIC).unwrap();
    for (seq, len) in [(1u64, 60usize), (2, 333), (3, MAX_WIRE_FRAME)] {
        let frame = frames::test_frame(peer_mac, Testbed::VM_MAC, seq, len);
        transmit(&mut backend, &frame);
        let got = peer
            .recv_matching(WAIT, |f| frames::test_seq(f) == Some(seq))
            .unwrap();
        assert_eq!(
            got.as_deref(),
            Some(&frame[..]),
            "frame {seq} ({len} bytes) arrives unchanged"
        );
    }
    backend.reap();
    assert_eq!(backend.stats().tx_frames, 3);
}

#[test]
fn maximum_size_frames_pass_both_ways() {
    let bed = testbed("mx");
    let mut backend = open_backend(&bed, XdpMode::Auto);
    let peer = bed.raw_socket(Side::Peer, Testbed::PEER_NIC).unwrap();
    let peer_mac = bed.mac_of(Side::Peer, Testbed::PEER_NIC).unwrap();
    let inbound = frames::test_frame(Testbed::VM_MAC, peer_mac, 7, MAX_WIRE_FRAME);
    peer.send(&inbound).unwrap();
    assert_eq!(receive(&mut backend, 1, WAIT), vec![inbound]);
    let outbound = frames::test_frame(peer_mac, Testbed::VM_MAC, 8, MAX_WIRE_FRAME);
    transmit(&mut backend, &outbound);
    let got = peer
        .recv_matching(WAIT, |f| frames::test_seq(f) == Some(8))
        .unwrap();
    assert_eq!(got.map(|f| f.len()), Some(MAX_WIRE_FRAME));
}

#[test]
fn arp_for_the_vm_ip_reaches_the_vm_and_not_the_host() {
    let bed = testbed("ar");
    let mut backend = open_backend(&bed, XdpMode::Auto);
    let host_tap = bed.raw_socket(Side::Host, Testbed::NIC).unwrap();
    let peer = bed.raw_socket(Side::Peer, Testbed::PEER_NIC).unwrap();
    let peer_mac = bed.mac_of(Side::Peer, Testbed::PEER_NIC).unwrap();

    let for_vm = frames::arp_request(peer_mac, Testbed::PEER_IP, Testbed::VM_IP);
    peer.send(&for_vm).unwrap();
    assert_eq!(receive(&mut backend, 1, WAIT), vec![for_vm]);
    let leaked = host_tap
        .recv_matching(Duration::from_millis(300), |f| {
            frames::arp_target(f) == Some(Testbed::VM_IP)
        })
        .unwrap();
    assert!(
        leaked.is_none(),
        "the ARP request for the VM reached the host"
    );

    // An ARP request for the host's own address still goes to the host, not the VM.
    let for_host = frames::arp_request(peer_mac, Testbed::PEER_IP, Testbed::HOST_IP);
    peer.send(&for_host).unwrap();
    let seen = host_tap
        .recv_matching(WAIT, |f| frames::arp_target(f) == Some(Testbed::HOST_IP))
        .unwrap();
    assert!(
        seen.is_some(),
        "the ARP request for the host did not reach the host"
    );
    assert!(receive(&mut backend, 1, Duration::from_millis(300)).is_empty());
    let steer = backend.stats().steer;
    assert_eq!(steer.to_vm_arp, 1);
}

#[test]
fn neighbour_solicitation_for_the_vm_reaches_the_vm() {
    let bed = testbed("ns");
    let mut backend = open_backend(&bed, XdpMode::Auto);
    let host_tap = bed.raw_socket(Side::Host, Testbed::NIC).unwrap();
    let peer = bed.raw_socket(Side::Peer, Testbed::PEER_NIC).unwrap();
    let peer_mac = bed.mac_of(Side::Peer, Testbed::PEER_NIC).unwrap();
    let ns = frames::neighbour_solicitation(
        peer_mac,
        link_local_from_mac(peer_mac),
        link_local_from_mac(Testbed::VM_MAC),
    );
    peer.send(&ns).unwrap();
    assert_eq!(receive(&mut backend, 1, WAIT), vec![ns.clone()]);
    let leaked = host_tap
        .recv_matching(Duration::from_millis(300), |f| f == &ns[..])
        .unwrap();
    assert!(leaked.is_none());
    assert_eq!(backend.stats().steer.to_vm_ns, 1);
}

#[test]
fn a_second_program_on_the_nic_is_refused() {
    let bed = testbed("2p");
    let _first = open_backend(&bed, XdpMode::Auto);
    let _in_host = bed.enter_host().unwrap();
    let mut cfg = XdpConfig::new(Testbed::NIC, [0x52, 0x54, 0, 0, 0, 0x99]);
    cfg.mode = XdpMode::Auto;
    match XdpBackend::open(&cfg) {
        Err(NetError::XdpProgramPresent { prog_id, .. }) => assert_ne!(prog_id, 0),
        other => panic!("expected XdpProgramPresent, got {other:?}"),
    }
}

#[test]
fn an_mtu_too_large_for_a_umem_frame_is_refused() {
    let bed = Testbed::new(TestbedConfig {
        name_prefix: "mt".into(),
        mtu: Some(4000),
        ..Default::default()
    })
    .unwrap();
    let _in_host = bed.enter_host().unwrap();
    match XdpBackend::open(&XdpConfig::new(Testbed::NIC, Testbed::VM_MAC)) {
        Err(e @ NetError::MtuTooLarge { .. }) => assert!(e.to_string().contains("mtu")),
        other => panic!("expected MtuTooLarge, got {other:?}"),
    }
}

#[test]
fn an_unknown_interface_is_reported_by_name() {
    let bed = testbed("nf");
    let _in_host = bed.enter_host().unwrap();
    match XdpBackend::open(&XdpConfig::new("lt-nosuch", Testbed::VM_MAC)) {
        Err(e @ NetError::InterfaceNotFound { .. }) => assert!(e.to_string().contains("lt-nosuch")),
        other => panic!("expected InterfaceNotFound, got {other:?}"),
    }
}

#[test]
fn link_state_follows_the_nic_carrier() {
    let bed = testbed("ln");
    let mut backend = open_backend(&bed, XdpMode::Auto);
    assert!(backend.link_up());
    let set_peer = |state: &str| {
        let out = bed
            .run_in(Side::Peer, &["ip", "link", "set", Testbed::PEER_NIC, state])
            .unwrap();
        assert!(out.status.success());
    };
    let wait_for = |backend: &mut XdpBackend, want: bool| {
        let deadline = Instant::now() + WAIT;
        while backend.link_up() != want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            backend.reap();
        }
        backend.link_up()
    };
    set_peer("down"); // the veth loses its carrier
    assert!(!wait_for(&mut backend, false), "carrier loss seen");
    set_peer("up");
    assert!(wait_for(&mut backend, true), "carrier back");
}
