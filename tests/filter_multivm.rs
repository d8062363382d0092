//! Several VMs on one NIC: the first VM's socket holds the NIC's queue 0, a second VM on the same
//! NIC is served through its own veth port (src/net/port.rs). Each gets only its own frames (MAC,
//! ARP, rules), the host keeps its traffic, both transmit to the wire, and the port is removed.

mod common;
mod filter_support;

use lancet::frame::FrameTx;
use std::{net::Ipv4Addr, time::Duration};

use common::vm::VmProcess;
use filter_support::{
    arp_targets, bed, neighbour, pin_lock, sock_receive, vm_receive, Frame, QUIET, VM, WAIT,
};
use lancet::net::{nic, port::PORT_QUEUE, rules::Rule, Backend, XdpBackend, XdpConfig, XdpMode};
use lancet::tools::testbed::{Side, Testbed};

/// The second VM.
const VM_B: &str = "b";
const MAC_B: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x57];
const IP_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 11);

fn open_b(bed: &Testbed) -> XdpBackend {
    open_b_in(bed, XdpMode::Native)
}

fn open_b_in(bed: &Testbed, mode: XdpMode) -> XdpBackend {
    let _in_host = bed.enter_host().unwrap();
    let mut cfg = XdpConfig::new(Testbed::NIC, MAC_B);
    cfg.vm_ip = Some(IP_B);
    cfg.mode = mode;
    cfg.vm_name = Some(VM_B.into());
    cfg.pin = true;
    XdpBackend::open(&cfg).unwrap()
}

fn send(tx: &mut XdpBackend, frame: &[u8]) {
    let buf = tx.tx_buffer().expect("a TX buffer");
    buf[..frame.len()].copy_from_slice(frame);
    tx.tx_commit(frame.len());
    tx.tx_flush();
}

fn port_exists(bed: &Testbed, name: &str) -> bool {
    let _in_host = bed.enter_host().unwrap();
    nic::ifindex(name).is_ok()
}

#[test]
fn two_vms_on_one_nic_each_get_only_their_own_frames() {
    let _pins = pin_lock();
    let mut a = bed("mv", |c| c.pin = true);
    let mut b = open_b(&a.bed);
    assert!(
        a.backend.port().is_none(),
        "the first VM holds the NIC queue"
    );
    let port = b
        .port()
        .expect("the second VM gets a veth port")
        .port_ifname()
        .to_string();
    assert!(port_exists(&a.bed, &port));
    let names = a.backend.steering().rules().vms();
    let reg_b = names.iter().find(|v| v.name == VM_B).unwrap();
    assert_eq!(reg_b.queue, PORT_QUEUE);

    // Unicast: to A, to B, to the host.
    let to_a = Frame::udp(Testbed::VM_MAC, a.peer_mac);
    let to_b = Frame::udp(MAC_B, a.peer_mac);
    let to_host = Frame::udp(a.nic_mac, a.peer_mac);
    for seq in 0..4 {
        a.peer.send(&to_a.build(seq)).unwrap();
        a.peer.send(&to_b.build(100 + seq)).unwrap();
        a.peer.send(&to_host.build(200 + seq)).unwrap();
    }
    let mut got_a = vm_receive(&mut a.backend, 8, WAIT);
    let mut got_b = vm_receive(&mut b, 8, WAIT);
    got_a.sort_unstable();
    got_b.sort_unstable();
    assert_eq!(got_a, vec![0, 1, 2, 3], "A gets only frames to its MAC");
    assert_eq!(
        got_b,
        vec![100, 101, 102, 103],
        "B gets only frames to its MAC"
    );
    let mut host = sock_receive(&a.host, 12, QUIET);
    host.sort_unstable();
    assert_eq!(
        host,
        vec![200, 201, 202, 203],
        "the host keeps its own frames"
    );

    // ARP requests for each VM's address reach only that VM.
    a.peer_asks_arp(Testbed::VM_IP);
    a.peer_asks_arp(IP_B);
    assert_eq!(arp_targets(&mut a.backend, QUIET), vec![Testbed::VM_IP]);
    assert_eq!(arp_targets(&mut b, QUIET), vec![IP_B]);

    // Both transmit to the wire.
    send(
        &mut a.backend,
        &Frame::udp(a.peer_mac, Testbed::VM_MAC).build(300),
    );
    send(&mut b, &Frame::udp(a.peer_mac, MAC_B).build(301));
    let mut wire = sock_receive(&a.peer, 2, WAIT);
    wire.sort_unstable();
    assert_eq!(wire, vec![300, 301], "both VMs' frames reach the peer");
    assert_eq!(b.stats().tx_frames, 1);

    // A rule steers a flow (here: to the host's MAC) to B.
    a.backend
        .steering()
        .rules()
        .add(Rule::parse_str(&format!("udp dport 6081 to vm {VM_B}")).unwrap())
        .unwrap();
    let mut geneve = Frame::udp(a.nic_mac, a.peer_mac);
    geneve.dport = 6081;
    for seq in 400..403 {
        a.peer.send(&geneve.build(seq)).unwrap();
    }
    assert_eq!(vm_receive(&mut b, 3, WAIT), vec![400, 401, 402]);
    assert!(vm_receive(&mut a.backend, 1, QUIET).is_empty());
    assert!(sock_receive(&a.host, 1, QUIET).is_empty());
    assert_eq!(a.backend.stats().steer.rule_to_vm, 3);
    let drops = b.port().unwrap().drops();
    assert_eq!((drops.rx_no_socket, drops.tx_no_nic), (0, 0));

    // The host stack still answers: ping from the peer to the host address.
    let ping = a.bed.ping(Side::Peer, Testbed::HOST_IP, 1).unwrap();
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // B leaves: its port is deleted, A keeps receiving.
    drop(b);
    assert!(!port_exists(&a.bed, &port), "the veth port is removed");
    a.peer.send(&to_a.build(500)).unwrap();
    assert_eq!(vm_receive(&mut a.backend, 1, WAIT), vec![500]);
    let names = a.backend.steering().rules().vms();
    assert_eq!(
        names.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        vec![VM]
    );
}

#[test]
fn two_vms_share_a_nic_whose_program_runs_in_generic_mode() {
    let _pins = pin_lock();
    let mut a = bed("mg", |c| {
        c.pin = true;
        c.mode = XdpMode::Generic;
    });
    let mut b = open_b_in(&a.bed, XdpMode::Generic);
    assert_eq!(a.backend.xdp_mode(), XdpMode::Generic);
    assert!(b.port().is_some());
    let to_a = Frame::udp(Testbed::VM_MAC, a.peer_mac);
    let to_b = Frame::udp(MAC_B, a.peer_mac);
    let to_host = Frame::udp(a.nic_mac, a.peer_mac);
    for seq in 0..3 {
        a.peer.send(&to_a.build(seq)).unwrap();
        a.peer.send(&to_b.build(100 + seq)).unwrap();
        a.peer.send(&to_host.build(200 + seq)).unwrap();
    }
    assert_eq!(vm_receive(&mut a.backend, 6, WAIT), vec![0, 1, 2]);
    assert_eq!(vm_receive(&mut b, 6, WAIT), vec![100, 101, 102]);
    assert_eq!(sock_receive(&a.host, 6, QUIET), vec![200, 201, 202]);
    send(&mut b, &Frame::udp(a.peer_mac, MAC_B).build(301));
    assert_eq!(sock_receive(&a.peer, 1, WAIT), vec![301]);
}

#[test]
fn a_mirror_rule_reaches_a_vm_on_a_veth_port_with_its_host_copy() {
    let _pins = pin_lock();
    let a = bed("mm", |c| c.pin = true);
    let mut b = {
        let _in_host = a.bed.enter_host().unwrap();
        let mut cfg = XdpConfig::new(Testbed::NIC, MAC_B);
        cfg.mode = XdpMode::Native;
        cfg.vm_name = Some(VM_B.into());
        cfg.pin = true;
        cfg.mirror_tap = Some("lt-mir1".into());
        XdpBackend::open(&cfg).unwrap()
    };
    assert!(b.port().is_some());
    let host_copy = a.bed.raw_socket(Side::Host, "lt-mir1").unwrap();
    b.steering()
        .rules()
        .add(Rule::parse_str(&format!("udp dport 6082 mirror vm {VM_B}")).unwrap())
        .unwrap();
    let mut mirrored = Frame::udp(a.nic_mac, a.peer_mac);
    mirrored.dport = 6082;
    let plain = Frame::udp(MAC_B, a.peer_mac);
    for seq in 0..3 {
        a.peer.send(&mirrored.build(seq)).unwrap();
        a.peer.send(&plain.build(100 + seq)).unwrap();
    }
    let mut got = vm_receive(&mut b, 6, WAIT);
    got.sort_unstable();
    assert_eq!(got, vec![0, 1, 2, 100, 101, 102]);
    assert_eq!(sock_receive(&host_copy, 6, QUIET), vec![0, 1, 2]);
    assert_eq!(
        b.mirror_stats().frames,
        3,
        "only the mirrored frames are tagged"
    );
}

#[test]
fn a_port_the_mtu_does_not_allow_is_refused_and_leaves_nothing_behind() {
    let _pins = pin_lock();
    let bed = Testbed::new(lancet::tools::testbed::TestbedConfig {
        name_prefix: "mt".into(),
        mtu: Some(3600),
        ..Default::default()
    })
    .unwrap();
    let _in_host = bed.enter_host().unwrap();
    let mut cfg = XdpConfig::new(Testbed::NIC, Testbed::VM_MAC);
    cfg.mode = XdpMode::Generic;
    cfg.vm_name = Some(VM.into());
    cfg.pin = true;
    let a = XdpBackend::open(&cfg).unwrap();
    let mut cfg_b = XdpConfig::new(Testbed::NIC, MAC_B);
    cfg_b.mode = XdpMode::Generic;
    cfg_b.vm_name = Some(VM_B.into());
    cfg_b.pin = true;
    let err = XdpBackend::open(&cfg_b).unwrap_err();
    assert!(
        matches!(err, lancet::net::NetError::MtuTooLarge { mtu: 3600, .. }),
        "{err}"
    );
    let links = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains(": lt-p"),
        "the half-made pair is removed"
    );
    let names = a.steering().rules().vms();
    assert_eq!(names.len(), 1, "B is not registered: {names:?}");
}

#[test]
fn a_second_vm_joins_after_the_first_one_left_and_a_third_gets_another_port() {
    let _pins = pin_lock();
    let a = bed("mj", |c| c.pin = true);
    let mut b = open_b(&a.bed);
    let mut c = {
        let _in_host = a.bed.enter_host().unwrap();
        let mut cfg = XdpConfig::new(Testbed::NIC, [0x52, 0x54, 0x00, 0x12, 0x34, 0x58]);
        cfg.mode = XdpMode::Native;
        cfg.vm_name = Some("c".into());
        cfg.pin = true;
        XdpBackend::open(&cfg).unwrap()
    };
    let port_b = b.port().unwrap().port_ifname().to_string();
    let port_c = c.port().unwrap().port_ifname().to_string();
    assert_ne!(port_b, port_c);
    let (peer, peer_mac) = (a.peer, a.peer_mac);
    // The first VM (and with it the program's first link) goes away: B and C keep the program.
    drop(a.backend);
    let frame_b = Frame::udp(MAC_B, peer_mac);
    let frame_c = Frame::udp([0x52, 0x54, 0x00, 0x12, 0x34, 0x58], peer_mac);
    for seq in 0..3 {
        peer.send(&frame_b.build(seq)).unwrap();
        peer.send(&frame_c.build(10 + seq)).unwrap();
    }
    assert_eq!(vm_receive(&mut b, 3, WAIT), vec![0, 1, 2]);
    assert_eq!(vm_receive(&mut c, 3, WAIT), vec![10, 11, 12]);
    drop(b);
    drop(c);
    assert!(!port_exists(&a.bed, &port_b));
    assert!(!port_exists(&a.bed, &port_c));
}

/// UDP echoes from the peer namespace to `ip`: how many of `count` came back.
fn udp_echoes(bed: &Testbed, ip: Ipv4Addr, count: usize) -> usize {
    let _in_peer = bed.enter_peer().unwrap();
    let sock = std::net::UdpSocket::bind((Testbed::PEER_IP, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.connect((ip, 7)).unwrap();
    let mut buf = [0u8; 2048];
    (0..count)
        .filter(|i| {
            let payload = format!("multivm-{ip}-{i}");
            sock.send(payload.as_bytes()).unwrap();
            matches!(sock.recv(&mut buf), Ok(n) if &buf[..n] == payload.as_bytes())
        })
        .count()
}

fn ping_ok(bed: &Testbed, ip: Ipv4Addr) -> bool {
    bed.ping(Side::Peer, ip, 2).unwrap().status.success()
}

#[test]
fn two_lancet_runs_on_one_nic_each_answer_for_themselves() {
    let bed = Testbed::new(lancet::tools::testbed::TestbedConfig {
        name_prefix: "mr".into(),
        ..Default::default()
    })
    .unwrap();
    let a = VmProcess::start_echo(&bed, "multivm", "a", Testbed::VM_MAC, Testbed::VM_IP);
    let b = VmProcess::start_echo(&bed, "multivm", "b", MAC_B, IP_B);
    assert!(ping_ok(&bed, Testbed::VM_IP), "ping VM a");
    assert!(ping_ok(&bed, IP_B), "ping VM b");
    assert!(ping_ok(&bed, Testbed::HOST_IP), "ping the host");
    assert!(neighbour(&bed, Side::Peer, Testbed::VM_IP).contains("52:54:00:12:34:56"));
    assert!(neighbour(&bed, Side::Peer, IP_B).contains("52:54:00:12:34:57"));
    assert_eq!(udp_echoes(&bed, Testbed::VM_IP, 50), 50);
    assert_eq!(udp_echoes(&bed, IP_B, 50), 50);
    let ports = |pid: u32| {
        let out = bed.run_in(Side::Host, &["ip", "-o", "link"]).unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&format!(": lt-p{pid}n")))
            .count()
    };
    let b_pid = b.pid();
    assert_eq!(ports(b_pid), 2, "b's veth pair exists while it runs");
    assert_eq!(b.stop().0, 0);
    assert_eq!(ports(b_pid), 0, "b's veth pair is removed when it stops");
    assert_eq!(udp_echoes(&bed, Testbed::VM_IP, 10), 10, "a keeps running");

    // A VM killed with SIGKILL leaves its pair; the next VM on the NIC removes it.
    let c = VmProcess::start_echo(&bed, "multivm", "c", MAC_B, IP_B);
    let c_pid = c.pid();
    drop(c); // SIGKILL and reap (what a crash leaves behind)
    assert_eq!(ports(c_pid), 2, "a killed VM cannot remove its pair");
    let d = VmProcess::start_echo(&bed, "multivm", "d", MAC_B, IP_B);
    assert_eq!(ports(c_pid), 0, "the next VM removed the stale pair");
    assert_eq!(ports(d.pid()), 2);
    assert_eq!(udp_echoes(&bed, IP_B, 10), 10, "the new VM answers");
    assert_eq!(d.stop().0, 0);
    assert_eq!(a.stop().0, 0);
}
