//! The VM's I/O around the rules: mirror delivers to the VM and to the host, anti-spoofing drops
//! and counts foreign source MACs on TX, and the pcap capture opens with `tcpdump -r`.

mod filter_support;

use std::{process::Command, time::Duration};

use filter_support::{bed, seq_of, sock_receive, vm_receive, Frame, QUIET, VM, WAIT};
use lancet::net::{
    pcap::{Direction, PcapWriter},
    rules::Rule,
    spoof::SpoofGuard,
    Backend,
};
use lancet::tools::testbed::{Side, Testbed};

const MIRROR_TAP: &str = "lt-mir0";

#[test]
fn mirror_delivers_to_the_vm_and_to_the_host() {
    let mut b = bed("mi", |c| c.mirror_tap = Some(MIRROR_TAP.into()));
    let host_copy = b.bed.raw_socket(Side::Host, MIRROR_TAP).unwrap();
    b.backend
        .steering()
        .rules()
        .add(Rule::parse_str(&format!("udp dport 4789 mirror vm {VM}")).unwrap())
        .unwrap();
    let mirrored = Frame::udp(b.nic_mac, b.peer_mac);
    let mut plain = Frame::udp(Testbed::VM_MAC, b.peer_mac);
    plain.dport = 5000;
    for seq in 0..4 {
        b.peer.send(&mirrored.build(seq)).unwrap();
        b.peer.send(&plain.build(100 + seq)).unwrap();
    }
    let mut got = vm_receive(&mut b.backend, 8, WAIT);
    got.sort_unstable();
    assert_eq!(
        got,
        vec![0, 1, 2, 3, 100, 101, 102, 103],
        "the VM gets both kinds"
    );
    let mut copies = sock_receive(&host_copy, 8, QUIET);
    copies.sort_unstable();
    assert_eq!(
        copies,
        vec![0, 1, 2, 3],
        "the host gets a copy of the mirrored ones only"
    );
    let m = b.backend.mirror_stats();
    assert_eq!((m.frames, m.host_copies, m.host_copy_drops), (4, 4, 0));
    assert_eq!(b.backend.stats().steer.rule_mirror, 4);
}

#[test]
fn mirror_without_a_host_device_counts_the_lost_copy() {
    let mut b = bed("mn", |_| {});
    b.backend
        .steering()
        .rules()
        .add(Rule::parse_str(&format!("udp mirror vm {VM}")).unwrap())
        .unwrap();
    b.peer
        .send(&Frame::udp(Testbed::VM_MAC, b.peer_mac).build(1))
        .unwrap();
    assert_eq!(vm_receive(&mut b.backend, 1, WAIT), vec![1]);
    assert_eq!(b.backend.mirror_stats().host_copy_drops, 1);
}

fn send<B: Backend>(tx: &mut B, frame: &[u8]) {
    let buf = tx.tx_buffer().expect("a TX buffer");
    buf[..frame.len()].copy_from_slice(frame);
    tx.tx_commit(frame.len());
    tx.tx_flush();
}

#[test]
fn anti_spoof_drops_and_counts_foreign_source_macs() {
    let b = bed("sp", |_| {});
    let peer = b.peer;
    let mut guarded = SpoofGuard::new(b.backend, Testbed::VM_MAC, false);
    let own = Frame::udp(b.peer_mac, Testbed::VM_MAC);
    let forged = Frame::udp(b.peer_mac, [0x02, 0xba, 0xd0, 0, 0, 1]);
    send(&mut guarded, &forged.build(1));
    send(&mut guarded, &own.build(2));
    send(&mut guarded, &forged.build(3));
    send(&mut guarded, &own.build(4));
    let mut seen = sock_receive(&peer, 4, QUIET);
    seen.sort_unstable();
    assert_eq!(seen, vec![2, 4], "only the VM's own MAC leaves");
    assert_eq!(guarded.spoofed(), 2);
    let stats = guarded.stats();
    assert_eq!(stats.drops.tx_spoofed, 2);
    assert_eq!(stats.tx_frames, 2);
    // --allow-spoof lets it through.
    let mut open = SpoofGuard::new(guarded.into_inner(), Testbed::VM_MAC, true);
    send(&mut open, &forged.build(5));
    assert_eq!(sock_receive(&peer, 1, Duration::from_secs(1)), vec![5]);
    assert_eq!(open.spoofed(), 0);
}

#[test]
fn pcap_capture_opens_with_tcpdump_and_holds_the_frames() {
    let mut b = bed("pc", |_| {});
    let dir = std::env::temp_dir().join(format!("lancet-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vm.pcap");
    let mut pcap = PcapWriter::create(&path).unwrap();
    let mut inbound = Frame::udp(Testbed::VM_MAC, b.peer_mac);
    inbound.dport = 4000; // not 4789: tcpdump would decode VXLAN
    for seq in 0..3 {
        b.peer.send(&inbound.build(seq)).unwrap();
    }
    let mut received = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while received.len() < 3 && std::time::Instant::now() < deadline {
        b.backend
            .recv_batch(64, &mut |f| {
                if seq_of(f).is_some() {
                    pcap.record(Direction::Rx, f);
                    received.push(f.to_vec());
                }
            })
            .unwrap();
    }
    assert_eq!(received.len(), 3);
    let mut outbound = Frame::udp(b.peer_mac, Testbed::VM_MAC);
    outbound.ip = Some((
        std::net::IpAddr::V4(Testbed::VM_IP),
        std::net::IpAddr::V4(Testbed::PEER_IP),
    ));
    outbound.sport = 4000;
    outbound.dport = 7777;
    let out_frame = outbound.build(10);
    send(&mut b.backend, &out_frame);
    pcap.record(Direction::Tx, &out_frame);
    assert_eq!(
        (pcap.rx_frames(), pcap.tx_frames(), pcap.errors()),
        (3, 1, 0)
    );
    drop(pcap);
    let out = Command::new("tcpdump")
        .args(["-nn", "-e", "-r"])
        .arg(&path)
        .output()
        .expect("tcpdump is installed (APT_PKGS)");
    let text = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("10.77.0.2.1000 > 10.77.0.10.4000: UDP"))
            .count(),
        3,
        "{text}"
    );
    assert!(
        lines[3].contains("52:54:00:12:34:56 >")
            && lines[3].contains("10.77.0.10.4000 > 10.77.0.2.7777"),
        "{text}"
    );
}
