//! Volume: 100 000 frames each way with no loss when the receiver keeps up (the sender is paced by
//! the receiver's progress, so loss would be the backend's fault), and drops counted, not silent,
//! when the guest side stops draining: every frame sent is either delivered later or in a counter.

mod support;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use lancet::net::Backend;
use lancet::tools::testbed::{frames, RawSocket, Side, Testbed, TestbedConfig};
use support::tap_bed::{tap_bed, TapBed};

const FRAMES: u64 = 100_000;
const FRAME_LEN: usize = 64;
/// Frames in flight between sender and receiver at most (well below every ring size).
const WINDOW: u64 = 128;
/// Generous bound so a broken backend fails instead of hanging (not a performance threshold).
const DEADLINE: Duration = Duration::from_secs(120);
/// Frames sent at a receiver that does not drain.
const FLOOD: u64 = 4096;

struct Setup {
    backend: Box<dyn Backend>,
    peer: Arc<RawSocket>,
    peer_mac: [u8; 6],
    _bed: Testbed,
}

fn xdp(prefix: &str) -> Setup {
    let bed = Testbed::new(TestbedConfig {
        name_prefix: prefix.into(),
        ..Default::default()
    })
    .unwrap();
    let backend = bed.open_xdp(|_| {}).unwrap();
    let peer = Arc::new(bed.raw_socket(Side::Peer, Testbed::PEER_NIC).unwrap());
    let peer_mac = bed.mac_of(Side::Peer, Testbed::PEER_NIC).unwrap();
    Setup {
        backend: Box::new(backend),
        peer,
        peer_mac,
        _bed: bed,
    }
}

fn tap(prefix: &str) -> Setup {
    let TapBed {
        backend,
        peer,
        peer_mac,
        bed,
    } = tap_bed(prefix);
    Setup {
        backend: Box::new(backend),
        peer: Arc::new(peer),
        peer_mac,
        _bed: bed,
    }
}

/// Peer -> backend, paced by the backend's progress.
fn inbound_without_loss(mut s: Setup) {
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (peer, received, stop, peer_mac) =
            (s.peer.clone(), received.clone(), stop.clone(), s.peer_mac);
        thread::spawn(move || {
            for seq in 0..FRAMES {
                while seq - received.load(Ordering::Acquire) >= WINDOW {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    thread::yield_now();
                }
                peer.send(&frames::test_frame(
                    Testbed::VM_MAC,
                    peer_mac,
                    seq,
                    FRAME_LEN,
                ))
                .unwrap();
            }
        })
    };
    let deadline = Instant::now() + DEADLINE;
    let mut next = 0u64;
    let mut out_of_order = 0u64;
    while next < FRAMES && Instant::now() < deadline {
        s.backend
            .recv_batch(64, &mut |f| match frames::test_seq(f) {
                Some(seq) if seq == next => next += 1,
                Some(_) => out_of_order += 1,
                None => {}
            })
            .unwrap();
        received.store(next, Ordering::Release);
        s.backend.reap();
    }
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    let stats = s.backend.stats();
    assert_eq!(
        (next, out_of_order),
        (FRAMES, 0),
        "all frames, in order: {stats:?}"
    );
    assert_eq!(stats.drops.rx_total(), 0, "{stats:?}");
}

/// Backend -> peer, paced by the peer's progress.
fn outbound_without_loss(mut s: Setup) {
    let received = Arc::new(AtomicU64::new(0));
    let receiver = {
        let (peer, received) = (s.peer.clone(), received.clone());
        thread::spawn(move || {
            let mut buf = vec![0u8; 2048];
            let deadline = Instant::now() + DEADLINE;
            let mut next = 0u64;
            while next < FRAMES && Instant::now() < deadline {
                if let Some(n) = peer.recv(&mut buf, Duration::from_millis(100)).unwrap() {
                    match frames::test_seq(&buf[..n]) {
                        Some(seq) if seq == next => next += 1,
                        Some(seq) => panic!("frame {seq} arrived while waiting for {next}"),
                        None => {}
                    }
                    received.store(next, Ordering::Release);
                }
            }
            next
        })
    };
    let deadline = Instant::now() + DEADLINE;
    let mut seq = 0u64;
    while seq < FRAMES && Instant::now() < deadline {
        while seq < FRAMES && seq - received.load(Ordering::Acquire) < WINDOW {
            let frame = frames::test_frame(s.peer_mac, Testbed::VM_MAC, seq, FRAME_LEN);
            let Some(buf) = s.backend.tx_buffer() else {
                break;
            };
            buf[..frame.len()].copy_from_slice(&frame);
            s.backend.tx_commit(frame.len());
            seq += 1;
            if seq % 32 == 0 {
                s.backend.tx_flush();
            }
        }
        s.backend.tx_flush();
        s.backend.reap();
        thread::yield_now();
    }
    let got = receiver.join().unwrap();
    let stats = s.backend.stats();
    assert_eq!(
        got, FRAMES,
        "the peer received every frame in order: {stats:?}"
    );
    assert_eq!(
        stats.tx_frames,
        FRAMES + u64::from(s.backend.kind() == "tap")
    );
    assert_eq!(stats.drops.tx_total(), 0, "{stats:?}");
}

/// Peer floods a backend nobody drains: what does not fit stays queued, the rest is counted.
fn flood_is_counted(mut s: Setup) -> (u64, u64) {
    let before = s.backend.stats().drops;
    for seq in 0..FLOOD {
        s.peer
            .send(&frames::test_frame(
                Testbed::VM_MAC,
                s.peer_mac,
                seq,
                FRAME_LEN,
            ))
            .unwrap();
        if seq % 32 == 31 {
            thread::sleep(Duration::from_millis(1)); // pace so no queue before the backend's overflows
        }
    }
    thread::sleep(Duration::from_millis(200));
    let mut delivered = 0u64;
    let mut seqs_in_order = true;
    loop {
        let n = s
            .backend
            .recv_batch(256, &mut |f| {
                if let Some(seq) = frames::test_seq(f) {
                    seqs_in_order &= seq == delivered;
                    delivered += 1;
                }
            })
            .unwrap();
        if n == 0 {
            break;
        }
    }
    let stats = s.backend.stats();
    let ring_full = stats.drops.rx_ring_full - before.rx_ring_full;
    let dropped = stats.drops.rx_total() - before.rx_total();
    assert!(seqs_in_order, "the frames kept are the oldest, in order");
    assert!(
        delivered > 0 && delivered < FLOOD,
        "some frames stay queued, not all: {delivered}"
    );
    assert!(ring_full > 0, "overflow counted as ring full: {stats:?}");
    assert_eq!(
        delivered + dropped,
        FLOOD,
        "every frame delivered or counted: {stats:?} before {before:?}"
    );
    (delivered, ring_full)
}

#[test]
fn xdp_100k_frames_inbound_without_loss() {
    inbound_without_loss(xdp("vi"));
}

#[test]
fn xdp_100k_frames_outbound_without_loss() {
    outbound_without_loss(xdp("vo"));
}

#[test]
fn tap_100k_frames_inbound_without_loss() {
    inbound_without_loss(tap("ti"));
}

#[test]
fn tap_100k_frames_outbound_without_loss() {
    outbound_without_loss(tap("to"));
}

#[test]
fn xdp_overflow_when_the_guest_stops_draining_is_counted() {
    let (delivered, _) = flood_is_counted(xdp("vf"));
    assert!(
        delivered <= 1024,
        "at most the XSK RX ring (1024) stays queued, got {delivered}"
    );
}

#[test]
fn tap_overflow_when_the_guest_stops_draining_is_counted() {
    flood_is_counted(tap("tf"));
}
