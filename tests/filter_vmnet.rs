//! `lancet run`'s network wrapper: an AF_XDP backend with pinned maps and a VM name, anti-spoofing,
//! a pcap capture of both directions and counters published for `lancet stats`.

mod filter_support;

use lancet::frame::FrameTx;
use std::process::Command;

use filter_support::{pin_lock, seq_of, sock_receive, Frame, QUIET, WAIT};
use lancet::net::{
    stats, vmnet::VmNet, vmnet::VmNetOptions, Backend, BackendKind, BackendSpec, XdpMode,
};
use lancet::tools::testbed::{Side, Testbed, TestbedConfig};

#[test]
fn run_wrapper_captures_guards_and_publishes() {
    let _pins = pin_lock();
    let bed = Testbed::new(TestbedConfig {
        name_prefix: "vn".into(),
        ..Default::default()
    })
    .unwrap();
    let dir = std::env::temp_dir().join(format!("lancet-vmnet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("run.pcap");
    let mut net = {
        let _in_host = bed.enter_host().unwrap();
        VmNet::open(
            &BackendSpec {
                kind: BackendKind::Xdp,
                nic: Testbed::NIC.into(),
                vm_mac: Testbed::VM_MAC,
                vm_ip: Some(Testbed::VM_IP),
                tap_name: None,
                xdp_mode: XdpMode::Native,
            },
            &VmNetOptions {
                vm_name: Some("db1".into()),
                pcap: Some(pcap.clone()),
                ..Default::default()
            },
        )
        .unwrap()
    };
    let peer = bed.raw_socket(Side::Peer, Testbed::PEER_NIC).unwrap();
    let peer_mac = bed.mac_of(Side::Peer, Testbed::PEER_NIC).unwrap();
    let mut inbound = Frame::udp(Testbed::VM_MAC, peer_mac);
    inbound.dport = 4000;
    for seq in 0..3 {
        peer.send(&inbound.build(seq)).unwrap();
    }
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while got.len() < 3 && std::time::Instant::now() < deadline {
        net.recv_batch(64, &mut |f| got.extend(seq_of(f))).unwrap();
    }
    assert_eq!(got, vec![0, 1, 2]);
    let mut own = Frame::udp(peer_mac, Testbed::VM_MAC);
    own.dport = 4000;
    let mut forged = Frame::udp(peer_mac, [0x02, 0, 0, 0, 0, 0x66]);
    forged.dport = 4000;
    for (seq, frame) in [(10, &own), (11, &forged)] {
        let bytes = frame.build(seq);
        let buf = net.tx_buffer().unwrap();
        buf[..bytes.len()].copy_from_slice(&bytes);
        net.tx_commit(bytes.len());
    }
    net.tx_flush();
    assert_eq!(
        sock_receive(&peer, 2, QUIET),
        vec![10],
        "the forged frame is dropped"
    );
    net.reap(); // publishes the counters
    let report = stats::collect(&filter_support::pinned_nic_name(&bed)).unwrap();
    let vm = report.vms.iter().find(|v| v.vm.name == "db1").unwrap();
    let counters = vm.counters.as_ref().expect("published");
    assert_eq!(counters.counters.rx_frames, 3);
    assert_eq!(counters.counters.drops.tx_spoofed, 1);
    assert_eq!(counters.pcap.map(|p| p.0), Some(3));
    let text = stats::render(&report);
    assert!(text.contains("db1"));
    // `lancet stats` shows the VM's counters as a table, not as a JSON dump.
    assert!(!text.contains(['{', '"']), "{text}");
    let row = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row in:\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(row("rx_frames"), ["rx_frames", "3"], "{text}");
    assert_eq!(row("tx_spoofed"), ["tx_spoofed", "1"], "{text}");
    drop(net);
    let out = Command::new("tcpdump")
        .args(["-nn", "-r"])
        .arg(&pcap)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    // The capture shows what the guest did: 3 received, 2 sent (the forged one included, although
    // anti-spoofing kept it off the wire).
    assert_eq!(text.lines().count(), 5, "{text}");
    assert_eq!(text.matches("UDP, length 32").count(), 5, "{text}");
}

/// A VM told no address learns the one its guest uses (gratuitous ARP): ARP requests for it are
/// then steered to the VM's socket by XDP (not the local link's broadcast copy). A second VM whose
/// guest claims the same address is refused it (counted), and its frames from it never leave.
#[test]
fn learned_addresses_are_steered_and_another_vms_address_is_refused() {
    use lancet::tools::testbed::frames;
    let _pins = pin_lock();
    let bed = Testbed::new(TestbedConfig {
        name_prefix: "vl".into(),
        ..Default::default()
    })
    .unwrap();
    let open = |name: &str, mac: [u8; 6]| {
        let _in_host = bed.enter_host().unwrap();
        VmNet::open(
            &BackendSpec {
                kind: BackendKind::Xdp,
                nic: Testbed::NIC.into(),
                vm_mac: mac,
                vm_ip: None,
                tap_name: None,
                xdp_mode: XdpMode::Native,
            },
            &VmNetOptions {
                vm_name: Some(name.into()),
                ..Default::default()
            },
        )
        .unwrap()
    };
    let send = |net: &mut VmNet, bytes: &[u8]| {
        let buf = net.tx_buffer().unwrap();
        buf[..bytes.len()].copy_from_slice(bytes);
        net.tx_commit(bytes.len());
        net.tx_flush();
        net.reap();
    };
    let ip = Testbed::VM_IP;
    let mut first = open("la1", Testbed::VM_MAC);
    assert!(first.published().learning.unwrap().addresses.is_empty());
    send(&mut first, &frames::arp_request(Testbed::VM_MAC, ip, ip));
    let learning = first.published().learning.unwrap();
    assert_eq!(learning.steered, 1, "{learning:?}");
    assert_eq!(learning.addresses[0].addr, std::net::IpAddr::V4(ip));

    // The LAN asks for the learned address: XDP hands the request to the VM's socket.
    let peer = bed.raw_socket(Side::Peer, Testbed::PEER_NIC).unwrap();
    let peer_mac = bed.mac_of(Side::Peer, Testbed::PEER_NIC).unwrap();
    let rx_local_before = first.local_stats().unwrap().rx_local;
    peer.send(&frames::arp_request(peer_mac, Testbed::PEER_IP, ip))
        .unwrap();
    let mut asked = false;
    let deadline = std::time::Instant::now() + WAIT;
    while !asked && std::time::Instant::now() < deadline {
        first
            .recv_batch(64, &mut |f| {
                asked |= frames::arp_target(f) == Some(ip) && f[6..12] == peer_mac
            })
            .unwrap();
    }
    assert!(
        asked,
        "the ARP request for the learned address reached the VM"
    );
    assert_eq!(
        first.local_stats().unwrap().rx_local,
        rx_local_before,
        "it came through XDP steering, not the broadcast copy of the local link"
    );

    // A neighbour claims the same address: refused, counted, its frames from it stay home.
    let other_mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x99];
    let mut second = open("lb2", other_mac);
    send(&mut second, &frames::arp_request(other_mac, ip, ip));
    let learning = second.published().learning.unwrap();
    assert_eq!(learning.refused_owned_by_other_vm, 1, "{learning:?}");
    assert!(learning.addresses.is_empty(), "{learning:?}");
    let dropped_before = second.stats().drops.tx_ipv4_source;
    let mut spoofed = Frame::udp(peer_mac, other_mac);
    spoofed.ip = Some((ip.into(), Testbed::PEER_IP.into()));
    spoofed.dport = 4000;
    send(&mut second, &spoofed.build(77));
    assert_eq!(second.stats().drops.tx_ipv4_source, dropped_before + 1);
    assert!(sock_receive(&peer, 1, QUIET).is_empty());
    // The first VM keeps its address.
    assert_eq!(first.published().learning.unwrap().addresses.len(), 1);
}

/// Stats left by a VMM killed with -9 in a namespace that is gone are swept by the next VMM.
#[test]
fn stats_of_dead_namespaces_are_swept() {
    // Inode 1 is never a network namespace's.
    let dead = std::path::Path::new(stats::STATS_ROOT).join("lt-gone@1");
    std::fs::create_dir_all(&dead).unwrap();
    std::fs::write(dead.join("vm.json"), "{}").unwrap();
    let publisher = stats::StatsPublisher::new("lt-sweep-test", "t").unwrap();
    assert!(!dead.exists(), "{} was not swept", dead.display());
    drop(publisher);
}
