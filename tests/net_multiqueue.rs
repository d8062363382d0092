//! Multi-queue NICs: on a 4-queue veth the VM that holds the NIC binds one AF_XDP socket per RX
//! queue (one shared UMEM) and receives its frames whatever queue RSS put them on: `lancet run`
//! with the echo guest answers 64 UDP flows and ping (ARP requests land on any queue), a second VM
//! on the NIC gets a veth port and also every frame, and the steering program never drops a VM's
//! frame for arriving on the "wrong" queue (`drop_wrong_queue` stays 0).

mod common;
mod filter_support;

use std::net::UdpSocket;
use std::time::Duration;

use common::vm::{guest_args, VmProcess};
use filter_support::{pin_lock, vm_receive, Frame, WAIT};
use lancet::net::{
    nic, port::ALL_QUEUES, port::PORT_QUEUE, Backend, XdpBackend, XdpConfig, XdpMode,
};
use lancet::tools::testbed::{Side, Testbed, TestbedConfig};

/// RX (and TX) queues of both veth ends.
const QUEUES: u32 = 4;
/// UDP flows (distinct source ports) the peer sends.
const FLOWS: u16 = 64;
/// The echo guest's UDP port.
const ECHO_PORT: u16 = 7;
/// First source port of the flows.
const FIRST_PORT: u16 = 40000;

fn testbed(tag: &str, queues: Option<u32>) -> Testbed {
    Testbed::new(TestbedConfig {
        name_prefix: tag.into(),
        queues,
        ..Default::default()
    })
    .expect("testbed (needs root and iproute2)")
}

/// Per-queue XDP packet counts of the NIC (`ethtool -S`: veth's `rx_queue_N_xdp_packets`).
fn xdp_packets_per_queue(bed: &Testbed) -> Vec<u64> {
    let out = bed
        .run_in(Side::Host, &["ethtool", "-S", Testbed::NIC])
        .expect("ethtool -S");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut per_queue = vec![0; QUEUES as usize];
    for line in text.lines() {
        let Some((name, value)) = line.trim().split_once(':') else {
            continue;
        };
        let Some(rest) = name.strip_prefix("rx_queue_") else {
            continue;
        };
        let Some((queue, "xdp_packets")) = rest.split_once('_') else {
            continue;
        };
        if let (Ok(q), Ok(v)) = (queue.parse::<usize>(), value.trim().parse::<u64>()) {
            if q < per_queue.len() {
                per_queue[q] = v;
            }
        }
    }
    per_queue
}

/// The first value of `key` anywhere in a JSON document.
fn find_u64(v: &serde_json::Value, key: &str) -> Option<u64> {
    match v {
        serde_json::Value::Object(map) => map
            .get(key)
            .and_then(serde_json::Value::as_u64)
            .or_else(|| map.values().find_map(|x| find_u64(x, key))),
        serde_json::Value::Array(items) => items.iter().find_map(|x| find_u64(x, key)),
        _ => None,
    }
}

#[test]
fn rx_queue_count_reads_the_nic_channels() {
    let four = testbed("q4", Some(QUEUES));
    let one = testbed("q1", None);
    {
        let _in_host = four.enter_host().unwrap();
        assert_eq!(nic::rx_queue_count(Testbed::NIC).unwrap(), QUEUES);
    }
    let _in_host = one.enter_host().unwrap();
    assert_eq!(nic::rx_queue_count(Testbed::NIC).unwrap(), 1);
    assert!(matches!(
        nic::rx_queue_count("lt-missing0"),
        Err(lancet::net::NetError::InterfaceNotFound { .. })
    ));
}

/// `lancet run --guest echo` on a 4-queue NIC: ping (ARP first) and 64 UDP flows from the peer,
/// spread over the queues by RSS, are all answered; no frame is dropped for its queue.
#[test]
fn vm_on_a_four_queue_nic_answers_every_flow() {
    let _pins = pin_lock();
    let bed = testbed("mq", Some(QUEUES));
    let args = guest_args("echo", false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut vm = VmProcess::start(&bed, "xdp", &args, "mq");
    vm.wait_for("lancet-guest: ready prog=echo", Duration::from_secs(60));

    let before = xdp_packets_per_queue(&bed);
    let ping = bed
        .ping(Side::Peer, Testbed::VM_IP, 5)
        .expect("ping (iputils-ping)");
    assert!(
        ping.status.success(),
        "ping over a 4-queue NIC:\n{}",
        String::from_utf8_lossy(&ping.stdout)
    );

    {
        let _in_peer = bed.enter_peer().unwrap();
        let socks: Vec<UdpSocket> = (0..FLOWS)
            .map(|i| {
                let s = UdpSocket::bind((Testbed::PEER_IP, FIRST_PORT + i)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                s.connect((Testbed::VM_IP, ECHO_PORT)).unwrap();
                s
            })
            .collect();
        let mut buf = [0u8; 2048];
        for round in 0..2 {
            for (i, sock) in socks.iter().enumerate() {
                let payload = format!("lancet-mq-{round}-{i:04}");
                sock.send(payload.as_bytes()).unwrap();
                loop {
                    let n = sock.recv(&mut buf).unwrap_or_else(|e| {
                        panic!(
                            "flow {i} (source port {}) not answered: {e}",
                            FIRST_PORT + i as u16
                        )
                    });
                    if &buf[..n] == payload.as_bytes() {
                        break;
                    }
                }
            }
        }
    }
    let after = xdp_packets_per_queue(&bed);
    let used: Vec<usize> = (0..QUEUES as usize)
        .filter(|&q| after[q] > before[q])
        .collect();
    assert!(
        used.len() >= 2,
        "the flows arrived on several queues (per-queue XDP packets before {before:?} after {after:?})"
    );

    let (code, stats) = vm.stop();
    assert_eq!(code, 0, "clean stop");
    assert_eq!(
        find_u64(&stats, "drop_wrong_queue"),
        Some(0),
        "no frame dropped for its queue: {stats}"
    );
    assert_eq!(find_u64(&stats, "drop_no_socket"), Some(0), "{stats}");
    eprintln!("queues used {used:?}; per-queue XDP packets {after:?}");
}

/// Two VMs on a 4-queue NIC: the first holds every queue (ALL_QUEUES), the second gets a veth
/// port; frames of 64 flows to each (spread over the queues) all reach the right VM.
#[test]
fn two_vms_on_a_four_queue_nic_get_every_frame() {
    let _pins = pin_lock();
    let bed = testbed("m2", Some(QUEUES));
    const MAC_B: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x57];
    let open = |mac: [u8; 6], name: &str| {
        let _in_host = bed.enter_host().unwrap();
        let mut cfg = XdpConfig::new(Testbed::NIC, mac);
        cfg.mode = XdpMode::Native;
        cfg.vm_name = Some(name.into());
        cfg.pin = true;
        XdpBackend::open(&cfg).unwrap()
    };
    let mut a = open(Testbed::VM_MAC, "mqa");
    let mut b = open(MAC_B, "mqb");
    assert!(a.port().is_none(), "the first VM holds the NIC's queues");
    assert!(b.port().is_some(), "the second VM gets a veth port");
    let names = a.steering().rules().vms();
    let queue_of = |n: &str| names.iter().find(|v| v.name == n).map(|v| v.queue);
    assert_eq!(queue_of("mqa"), Some(ALL_QUEUES));
    assert_eq!(queue_of("mqb"), Some(PORT_QUEUE));

    let peer = bed.raw_socket(Side::Peer, Testbed::PEER_NIC).unwrap();
    let peer_mac = bed.mac_of(Side::Peer, Testbed::PEER_NIC).unwrap();
    let before = xdp_packets_per_queue(&bed);
    for (dst, base) in [(Testbed::VM_MAC, 0u64), (MAC_B, 1000)] {
        let mut frame = Frame::udp(dst, peer_mac);
        for i in 0..FLOWS {
            frame.sport = FIRST_PORT + i;
            peer.send(&frame.build(base + u64::from(i))).unwrap();
        }
    }
    let mut got_a = vm_receive(&mut a, FLOWS.into(), WAIT);
    let mut got_b = vm_receive(&mut b, FLOWS.into(), WAIT);
    got_a.sort_unstable();
    got_b.sort_unstable();
    assert_eq!(got_a, (0..u64::from(FLOWS)).collect::<Vec<_>>(), "A");
    assert_eq!(
        got_b,
        (1000..1000 + u64::from(FLOWS)).collect::<Vec<_>>(),
        "B"
    );
    let after = xdp_packets_per_queue(&bed);
    let used = (0..QUEUES as usize)
        .filter(|&q| after[q] > before[q])
        .count();
    assert!(
        used >= 2,
        "the frames arrived on several queues ({before:?} -> {after:?})"
    );
    let steer = a.stats().steer;
    assert_eq!(steer.drop_wrong_queue, 0, "{steer:?}");
    assert_eq!(steer.drop_no_socket, 0, "{steer:?}");
    assert_eq!(a.stats().drops.rx_total(), 0, "{:?}", a.stats());
}
