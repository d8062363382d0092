//! The Lance model + a real backend with the pcnet32 driver harness (tests/support) as the
//! in-process guest: what Linux pcnet32 transmits reaches the peer byte for byte and what the peer
//! sends reaches the driver's NAPI receive byte for byte, over AF_XDP and over TAP.
//!
//! The harness's own VMM stand-in transmits into a recording backend; it gets no credits here, so
//! every frame stays in the TX ring until this test's I/O loop runs `transmit()` into the real
//! backend, as the VMM's I/O thread does.

mod support;

use std::time::{Duration, Instant};

use lancet::net::{Backend, TapBackend, TapConfig, XdpBackend, XdpConfig};
use lancet::tools::null_guest::pump_rx;
use lancet::tools::testbed::{frames, RawSocket, Side, Testbed, TestbedConfig};
use support::pcnet32::{Config, Machine, Pcnet32};
use support::peer::assert_peer_receives;

const WAIT: Duration = Duration::from_secs(30);
const MAX_WIRE_FRAME: usize = 1514;

struct Setup {
    machine: Machine,
    driver: Pcnet32,
    backend: Box<dyn Backend>,
    peer: RawSocket,
    peer_mac: [u8; 6],
    _bed: Testbed,
}

impl Setup {
    fn new(kind: &str, prefix: &str) -> Self {
        let with_bridge = kind == "tap";
        let cfg = TestbedConfig {
            name_prefix: prefix.into(),
            with_bridge,
            ..Default::default()
        };
        let bed = Testbed::new(cfg).unwrap();
        let backend: Box<dyn Backend> = {
            let _in_host = bed.enter_host().unwrap();
            if with_bridge {
                let tap = TapConfig::new(Testbed::TAP, Some(Testbed::BRIDGE));
                Box::new(TapBackend::open(&tap).unwrap())
            } else {
                let xdp = XdpConfig::new(Testbed::NIC, Testbed::VM_MAC);
                Box::new(XdpBackend::open(&xdp).unwrap())
            }
        };
        let peer = bed.raw_socket(Side::Peer, Testbed::PEER_NIC).unwrap();
        let peer_mac = bed.mac_of(Side::Peer, Testbed::PEER_NIC).unwrap();
        let mut machine = Machine::new(Testbed::VM_MAC);
        machine.tx.credits = Some(0);
        let mut driver = Pcnet32::probe(&mut machine, Config::default()).unwrap();
        driver.open(&mut machine);
        assert!(driver.link_ok(&mut machine));
        let mut s = Setup {
            machine,
            driver,
            backend,
            peer,
            peer_mac,
            _bed: bed,
        };
        // The guest's first frame (the bridge learns where the VM is).
        s.xmit(&frames::test_frame(peer_mac, Testbed::VM_MAC, u64::MAX, 60));
        let hello = s
            .peer
            .recv_matching(WAIT, |f| frames::test_seq(f) == Some(u64::MAX));
        assert!(hello.unwrap().is_some());
        s
    }

    /// The VMM's I/O loop, once: transmit what the guest queued, move received frames into the
    /// guest ring (as many as it has room for), run the guest's interrupt handler.
    fn io_step(&mut self) {
        let m = &mut self.machine;
        m.lance.transmit(&m.mem, self.backend.as_mut());
        pump_rx(&mut m.lance, &m.mem, self.backend.as_mut()).unwrap();
        self.backend.reap();
        self.driver.interrupt(m);
    }

    fn xmit(&mut self, frame: &[u8]) {
        let deadline = Instant::now() + WAIT;
        while !self.driver.start_xmit(&mut self.machine, frame) {
            self.io_step();
            assert!(Instant::now() < deadline, "the TX ring never drained");
        }
        self.io_step();
    }
}

fn driver_transmits_to_the_peer(kind: &str, prefix: &str) {
    let mut s = Setup::new(kind, prefix);
    let sizes = [60usize, 100, 1000, MAX_WIRE_FRAME];
    for seq in 0..64u64 {
        let len = sizes[seq as usize % sizes.len()];
        let frame = frames::test_frame(s.peer_mac, Testbed::VM_MAC, seq, len);
        s.xmit(&frame);
        assert_peer_receives(&s.peer, WAIT, &frame, &format!("frame {seq} ({len} B)"));
    }
    assert!(
        s.machine.tx.frames.is_empty(),
        "every frame went through the real backend"
    );
    assert_eq!(s.driver.stats.tx_errors, 0);
}

fn peer_frames_reach_the_driver(kind: &str, prefix: &str) {
    let mut s = Setup::new(kind, prefix);
    let sizes = [60usize, 61, 200, 1000, MAX_WIRE_FRAME];
    let frame = |seq: u64| {
        frames::test_frame(
            Testbed::VM_MAC,
            [2, 0, 0, 0, 0, 9],
            seq,
            sizes[seq as usize % sizes.len()],
        )
    };
    const COUNT: u64 = 500;
    let deadline = Instant::now() + WAIT;
    let (mut sent, mut next) = (0u64, 0u64);
    while next < COUNT && Instant::now() < deadline {
        while sent < COUNT && sent - next < 16 {
            s.peer.send(&frame(sent)).unwrap();
            sent += 1;
        }
        s.io_step();
        for rx in s.driver.received.drain(..) {
            if let Some(seq) = frames::test_seq(&rx.data) {
                assert_eq!(seq, next, "in order");
                assert_eq!(
                    rx.data,
                    frame(seq),
                    "frame {seq} reaches the driver unchanged"
                );
                assert_eq!(
                    usize::from(rx.mcnt),
                    rx.data.len() + 4,
                    "MCNT counts the FCS"
                );
                next += 1;
            }
        }
    }
    assert_eq!(next, COUNT);
    assert_eq!(
        s.driver.stats.rx_missed_errors + s.driver.stats.rx_errors,
        0
    );
    assert_eq!(s.machine.lance.stats().rx_missed, 0);
}

#[test]
fn xdp_pcnet32_driver_transmits_to_the_peer_unchanged() {
    driver_transmits_to_the_peer("xdp", "pt");
}

#[test]
fn xdp_peer_frames_reach_the_pcnet32_driver_unchanged() {
    peer_frames_reach_the_driver("xdp", "pr");
}

#[test]
fn tap_pcnet32_driver_transmits_to_the_peer_unchanged() {
    driver_transmits_to_the_peer("tap", "qt");
}

#[test]
fn tap_peer_frames_reach_the_pcnet32_driver_unchanged() {
    peer_frames_reach_the_driver("tap", "qr");
}
