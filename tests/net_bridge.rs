//! The local bridge of the AF_XDP backend (src/net/bridge.rs, src/net/local.rs, bpf/bridge.bpf.c):
//! the host that owns the NIC, the VMs on it and broadcast/multicast copies. Topology: the
//! testbed's NIC `lt-nic` in the host namespace with the host's own address 10.77.0.1, its peer in
//! the LAN namespace. VM A holds the NIC queue, VM B is served through a veth port.

mod common;
mod filter_support;

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use common::vm::VmProcess;
use filter_support::{backend_collect, neighbour, pin_lock, sock_collect};
use lancet::frame::FrameTx;
use lancet::net::{local::LocalLink, Backend, XdpBackend, XdpConfig, XdpMode};
use lancet::tools::testbed::{frames, Side, Testbed, TestbedConfig};

const MAC_B: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x57];
const IP_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 11);
/// An IPv4 multicast MAC (224.0.0.251).
const MCAST: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb];
const WAIT: Duration = Duration::from_secs(2);
const QUIET: Duration = Duration::from_millis(400);

fn open_vm(bed: &Testbed, mac: [u8; 6], ip: Ipv4Addr, name: &str) -> LocalLink {
    let _in_host = bed.enter_host().unwrap();
    let mut cfg = XdpConfig::new(Testbed::NIC, mac);
    cfg.vm_ip = Some(ip);
    cfg.mode = XdpMode::Native;
    cfg.vm_name = Some(name.into());
    cfg.pin = true;
    let xdp = XdpBackend::open(&cfg).unwrap();
    LocalLink::open(xdp, Testbed::NIC, mac).unwrap()
}

fn send(vm: &mut LocalLink, frame: &[u8]) {
    let buf = vm.tx_buffer().expect("a TX buffer");
    buf[..frame.len()].copy_from_slice(frame);
    vm.tx_commit(frame.len());
    vm.tx_flush();
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

#[test]
fn vms_host_and_lan_exchange_unicast_broadcast_and_multicast_each_once() {
    let _pins = pin_lock();
    let bed = Testbed::new(TestbedConfig {
        name_prefix: "bl".into(),
        ..Default::default()
    })
    .unwrap();
    let mut a = open_vm(&bed, Testbed::VM_MAC, Testbed::VM_IP, "a");
    let mut b = open_vm(&bed, MAC_B, IP_B, "b");
    assert!(b.xdp().port().is_some(), "B is served through a veth port");
    assert!(a.xdp().port().is_none(), "A holds the NIC queue");
    // A's view of the local MACs was taken before B registered.
    a.refresh();
    let peer = bed.raw_socket(Side::Peer, Testbed::PEER_NIC).unwrap();
    let host = bed.raw_socket(Side::Host, Testbed::NIC).unwrap();
    let nic_mac = bed.mac_of(Side::Host, Testbed::NIC).unwrap();
    let peer_mac = bed.mac_of(Side::Peer, Testbed::PEER_NIC).unwrap();
    let tf = |dst, src, seq| frames::test_frame(dst, src, seq, 64);

    // VM <-> VM unicast, both directions: delivered locally, never on the wire.
    send(&mut a, &tf(MAC_B, Testbed::VM_MAC, 1));
    send(&mut b, &tf(Testbed::VM_MAC, MAC_B, 2));
    assert_eq!(
        backend_collect(&mut b, 1, WAIT, frames::test_seq),
        vec![1],
        "A -> B"
    );
    assert_eq!(
        backend_collect(&mut a, 1, WAIT, frames::test_seq),
        vec![2],
        "B -> A"
    );

    // VM -> host unicast (the NIC's MAC): the host receives it on the NIC, not the wire.
    send(&mut a, &tf(nic_mac, Testbed::VM_MAC, 3));
    send(&mut b, &tf(nic_mac, MAC_B, 4));
    assert_eq!(
        sorted(sock_collect(&host, 2, WAIT, frames::test_seq)),
        vec![3, 4],
        "VMs -> host"
    );

    // Host -> VM unicast: each VM gets its own, the wire none of them.
    host.send(&tf(Testbed::VM_MAC, nic_mac, 5)).unwrap();
    host.send(&tf(MAC_B, nic_mac, 6)).unwrap();
    assert_eq!(
        backend_collect(&mut a, 1, WAIT, frames::test_seq),
        vec![5],
        "host -> A"
    );
    assert_eq!(
        backend_collect(&mut b, 1, WAIT, frames::test_seq),
        vec![6],
        "host -> B"
    );
    assert_eq!(
        sock_collect(&peer, 10, QUIET, frames::test_seq),
        Vec::<u64>::new(),
        "no local unicast on the wire"
    );

    // Group frames: every receiver exactly once, never the sender.
    for (i, group) in [frames::BROADCAST, MCAST].into_iter().enumerate() {
        let base = 100 * (i as u64 + 1);
        // From VM A: B, the host and the wire each once; A not at all.
        send(&mut a, &tf(group, Testbed::VM_MAC, base + 1));
        assert_eq!(
            backend_collect(&mut b, 2, QUIET, frames::test_seq),
            vec![base + 1],
            "A's group -> B"
        );
        assert_eq!(
            sock_collect(&host, 2, QUIET, frames::test_seq),
            vec![base + 1],
            "A's group -> host"
        );
        assert_eq!(
            sock_collect(&peer, 2, QUIET, frames::test_seq),
            vec![base + 1],
            "A's group -> wire"
        );
        assert_eq!(
            backend_collect(&mut a, 1, QUIET, frames::test_seq),
            Vec::<u64>::new(),
            "not back to A"
        );
        // From the host: A, B and the wire once each.
        host.send(&tf(group, nic_mac, base + 2)).unwrap();
        assert_eq!(
            backend_collect(&mut a, 2, QUIET, frames::test_seq),
            vec![base + 2],
            "host group -> A"
        );
        assert_eq!(
            backend_collect(&mut b, 2, QUIET, frames::test_seq),
            vec![base + 2],
            "host group -> B"
        );
        assert_eq!(
            sock_collect(&peer, 2, QUIET, frames::test_seq),
            vec![base + 2],
            "host group -> wire"
        );
        // From the LAN: A, B and the host once each.
        peer.send(&tf(group, peer_mac, base + 3)).unwrap();
        assert_eq!(
            backend_collect(&mut a, 2, QUIET, frames::test_seq),
            vec![base + 3],
            "LAN group -> A"
        );
        assert_eq!(
            backend_collect(&mut b, 2, QUIET, frames::test_seq),
            vec![base + 3],
            "LAN group -> B"
        );
        assert_eq!(
            sock_collect(&host, 2, QUIET, frames::test_seq),
            vec![base + 3],
            "LAN group -> host"
        );
    }

    // The unicast fast path is unchanged: LAN <-> A over the XSK, not the local link.
    let before = a.counters();
    peer.send(&tf(Testbed::VM_MAC, peer_mac, 900)).unwrap();
    assert_eq!(
        backend_collect(&mut a, 1, WAIT, frames::test_seq),
        vec![900]
    );
    send(&mut a, &tf(peer_mac, Testbed::VM_MAC, 901));
    assert_eq!(sock_collect(&peer, 1, WAIT, frames::test_seq), vec![901]);
    let after = a.counters();
    assert_eq!(after.rx_local, before.rx_local);
    assert_eq!(after.tx_local, before.tx_local);

    let sa = a.counters();
    assert_eq!(sa.tx_local, 2, "A: to B and to the host");
    assert_eq!(sa.tx_group_copies, 2);
    assert_eq!(sa.tap_drops, 0);
    assert!(sa.bridge.vm_to_vm >= 2 && sa.bridge.vm_to_host >= 2 && sa.bridge.host_to_vm >= 2);
    assert_eq!(sa.bridge.drop_no_dest, 0);
    assert_eq!(sa.bridge.drop_redirect, 0);
    assert_eq!(a.stats().steer.drop_wrong_queue, 0);
}

fn arping_ok(bed: &Testbed, ip: Ipv4Addr) -> bool {
    let out = bed
        .run_in(
            Side::Host,
            &["arping", "-c", "2", "-I", Testbed::NIC, &ip.to_string()],
        )
        .unwrap();
    out.status.success()
}

#[test]
fn the_host_that_owns_the_nic_pings_and_arps_its_vms() {
    let bed = Testbed::new(TestbedConfig {
        name_prefix: "bh".into(),
        ..Default::default()
    })
    .unwrap();
    let a = VmProcess::start_echo(&bed, "bridge", "a", Testbed::VM_MAC, Testbed::VM_IP);
    let b = VmProcess::start_echo(&bed, "bridge", "b", MAC_B, IP_B);
    let peer = bed.raw_socket(Side::Peer, Testbed::PEER_NIC).unwrap();
    for (ip, mac) in [
        (Testbed::VM_IP, "52:54:00:12:34:56"),
        (IP_B, "52:54:00:12:34:57"),
    ] {
        assert!(
            bed.ping(Side::Host, ip, 3).unwrap().status.success(),
            "the host pings {ip}"
        );
        assert!(
            neighbour(&bed, Side::Host, ip).contains(mac),
            "host ARP for {ip}"
        );
        assert!(arping_ok(&bed, ip), "arping {ip} from the host");
    }
    // The host's unicast to a VM does not leave on the wire (ICMP echo requests to the VMs).
    let mut buf = vec![0u8; 4096];
    let mut on_wire = 0;
    let _ = bed.ping(Side::Host, Testbed::VM_IP, 2);
    while let Ok(Some(len)) = peer.recv(&mut buf, QUIET) {
        if buf[..len].starts_with(&Testbed::VM_MAC) {
            on_wire += 1;
        }
    }
    assert_eq!(on_wire, 0, "host -> VM unicast stays off the wire");
    // The LAN still reaches both.
    assert!(bed
        .ping(Side::Peer, Testbed::VM_IP, 2)
        .unwrap()
        .status
        .success());
    assert!(bed.ping(Side::Peer, IP_B, 2).unwrap().status.success());
    for vm in [b, a] {
        let (code, stats) = vm.stop();
        assert_eq!(code, 0);
        let local = &stats["backend"]["local"];
        let n = |k: &str| {
            local[k]
                .as_u64()
                .unwrap_or_else(|| panic!("local.{k} in {stats}"))
        };
        assert!(
            n("tx_local") >= 3,
            "echo replies to the host went local: {local}"
        );
        assert!(
            n("rx_local") >= 3,
            "pings and ARP from the host came local: {local}"
        );
        assert_eq!(n("tap_drops"), 0);
    }
}

/// The first frame a VM receives within `wait` that `pick` accepts.
fn vm_first<T>(vm: &mut LocalLink, wait: Duration, pick: impl Fn(&[u8]) -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + wait;
    let mut found = None;
    while found.is_none() && Instant::now() < deadline {
        vm.reap();
        vm.recv_batch(64, &mut |f| {
            if found.is_none() {
                found = pick(f);
            }
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    found
}

#[test]
fn vms_arp_for_and_ping_the_host_on_their_nic() {
    use common::frames as pkt;
    let _pins = pin_lock();
    let bed = Testbed::new(TestbedConfig {
        name_prefix: "bv".into(),
        ..Default::default()
    })
    .unwrap();
    let mut a = open_vm(&bed, Testbed::VM_MAC, Testbed::VM_IP, "a");
    let mut b = open_vm(&bed, MAC_B, IP_B, "b");
    a.refresh();
    let nic_mac = bed.mac_of(Side::Host, Testbed::NIC).unwrap();
    for (vm, mac, ip) in [
        (&mut a, Testbed::VM_MAC, Testbed::VM_IP),
        (&mut b, MAC_B, IP_B),
    ] {
        // ARP: the host answers with the NIC's MAC.
        send(vm, &pkt::arp_request(mac, ip, Testbed::HOST_IP));
        let reply = vm_first(vm, WAIT, |f| {
            pkt::arp_fields(f).filter(|a| a.0 == 2 && a.2 == Testbed::HOST_IP)
        });
        assert_eq!(
            reply.map(|r| (r.1, r.3, r.4)),
            Some((nic_mac, mac, ip)),
            "ARP reply from the host to {ip}"
        );
        // Ping: the host's stack answers the echo request.
        for seq in 1..=3u16 {
            send(
                vm,
                &pkt::icmp_echo(nic_mac, mac, ip, Testbed::HOST_IP, seq, b"bridge-ping"),
            );
            let answered = vm_first(vm, WAIT, |f| {
                let (src, dst, proto, body) = pkt::ipv4_fields(f)?;
                (src == Testbed::HOST_IP && dst == ip && proto == 1 && body.first() == Some(&0))
                    .then(|| u16::from_be_bytes([body[6], body[7]]))
            });
            assert_eq!(
                answered,
                Some(seq),
                "echo reply {seq} from the host to {ip}"
            );
        }
        let s = vm.counters();
        assert_eq!(s.tx_local, 3, "the echo requests went local ({ip})");
        assert_eq!(
            s.tx_group_copies, 1,
            "the ARP request was copied to the local link"
        );
        assert!(s.rx_local >= 4, "ARP and echo replies came local ({ip})");
    }
}
