//! `lancet run`'s network wrapper: an AF_XDP backend with pinned maps and a VM name, anti-spoofing,
//! a pcap capture of both directions and counters published for `lancet stats`.

mod filter_support;

use std::process::Command;

use filter_support::{pin_lock, seq_of, sock_receive, Frame, QUIET, WAIT};
use lancet::net::{
    stats, vmnet::VmNet, vmnet::VmNetOptions, Backend, BackendKind, BackendSpec, FrameTx, XdpMode,
};
use lancet::testbed::{Side, Testbed, TestbedConfig};

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
    assert_eq!(counters["counters"]["rx_frames"], 3);
    assert_eq!(counters["counters"]["drops"]["tx_spoofed"], 1);
    assert_eq!(counters["pcap"][0], 3);
    assert!(stats::render(&report).contains("db1"));
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
