//! Anti-spoofing through [`SpoofGuard`] on a fake backend: what reaches the backend is exactly
//! what the policy allows, and every drop is counted by reason in the backend's drop counters.

use std::{net::IpAddr, os::fd::RawFd};

use lancet::frame::{FrameTx, MAX_FRAME_LEN};
use lancet::net::{
    learn::{AddressEvent, Limits},
    spoof::{GuardPolicy, SpoofGuard},
    Backend, BackendStats, NetError,
};

const VM_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const VM_IP: [u8; 4] = [10, 77, 0, 10];
const OTHER_IP: [u8; 4] = [10, 77, 0, 1];

/// Lends one buffer (kept between frames, like the real backends) and records what is committed.
#[derive(Default)]
struct Fake {
    buf: Vec<u8>,
    sent: Vec<Vec<u8>>,
}

impl FrameTx for Fake {
    fn tx_buffer(&mut self) -> Option<&mut [u8]> {
        self.buf.resize(MAX_FRAME_LEN, 0);
        Some(&mut self.buf)
    }
    fn tx_commit(&mut self, len: usize) {
        self.sent.push(self.buf[..len].to_vec());
    }
}

impl Backend for Fake {
    fn kind(&self) -> &'static str {
        "fake"
    }
    fn poll_fd(&self) -> RawFd {
        -1
    }
    fn recv_batch(&mut self, _: usize, _: &mut dyn FnMut(&[u8])) -> Result<usize, NetError> {
        Ok(0)
    }
    fn reap(&mut self) {}
    fn stats(&self) -> BackendStats {
        BackendStats {
            tx_frames: self.sent.len() as u64,
            ..BackendStats::default()
        }
    }
}

/// Copy `frame` into the lent buffer and commit `len` bytes of it; true when it reached the
/// backend.
fn send_len(g: &mut SpoofGuard<Fake>, frame: &[u8], len: usize) -> bool {
    let before = g.inner().sent.len();
    let buf = g.tx_buffer().expect("a buffer");
    buf[..frame.len()].copy_from_slice(frame);
    g.tx_commit(len);
    g.inner().sent.len() > before
}

fn send(g: &mut SpoofGuard<Fake>, frame: &[u8]) -> bool {
    send_len(g, frame, frame.len())
}

fn eth(dst: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&VM_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn ipv4_udp(src: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut f = eth(PEER_MAC, 0x0800);
    let mut ip = vec![0x45, 0, 0, 36, 0, 0, 0, 0, 64, 17, 0, 0];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&[10, 77, 0, 2]);
    ip.extend_from_slice(&sport.to_be_bytes());
    ip.extend_from_slice(&dport.to_be_bytes());
    ip.extend_from_slice(&[0, 16, 0, 0]);
    ip.extend_from_slice(&[0xa5; 8]);
    f.extend_from_slice(&ip);
    f
}

fn arp_reply(sha: [u8; 6], spa: [u8; 4]) -> Vec<u8> {
    let mut f = eth([0xff; 6], 0x0806);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&OTHER_IP);
    f
}

fn guard(policy: GuardPolicy) -> SpoofGuard<Fake> {
    SpoofGuard::with_policy(Fake::default(), VM_MAC, &policy)
}

#[test]
fn a_short_commit_is_checked_on_its_own_bytes_not_the_previous_frame() {
    let mut g = SpoofGuard::new(Fake::default(), VM_MAC, false);
    let good = ipv4_udp(VM_IP, 1000, 2000);
    assert!(send(&mut g, &good));
    // 6..11 bytes: the source MAC of the previous frame is still in the buffer after them.
    for len in [0, 6, 11, 13] {
        assert!(!send_len(&mut g, &[0xff; 6], len), "{len}-byte frame sent");
    }
    let s = g.stats();
    assert_eq!(s.drops.tx_bad_length, 4);
    assert_eq!(s.drops.tx_spoofed, 0);
    assert_eq!(s.tx_frames, 1);
}

#[test]
fn each_forbidden_frame_is_dropped_and_counted_by_reason() {
    let mut g = SpoofGuard::new(Fake::default(), VM_MAC, false);
    assert!(send(&mut g, &ipv4_udp(VM_IP, 1000, 2000)), "own frame");
    // Foreign source MAC.
    let mut f = ipv4_udp(VM_IP, 1000, 2000);
    f[6..12].copy_from_slice(&PEER_MAC);
    assert!(!send(&mut g, &f));
    // 802.1Q and 802.1ad tags (VLAN hopping).
    for tpid in [0x8100u16, 0x88a8] {
        let mut f = eth(PEER_MAC, tpid);
        f.extend_from_slice(&[0, 42, 0x08, 0x00]);
        f.extend_from_slice(&ipv4_udp(VM_IP, 1, 2)[14..]);
        assert!(!send(&mut g, &f), "tpid {tpid:#x}");
    }
    // PAUSE, STP, LLDP.
    for last in [0x01, 0x00, 0x0e] {
        let f = eth([0x01, 0x80, 0xc2, 0, 0, last], 0x8808);
        assert!(!send(&mut g, &[f, vec![0; 46]].concat()), "{last:#x}");
    }
    // ARP naming another host's MAC as the sender (neighbour cache poisoning).
    assert!(!send(&mut g, &arp_reply(PEER_MAC, OTHER_IP)));
    let d = g.stats().drops;
    assert_eq!(
        (d.tx_spoofed, d.tx_vlan, d.tx_link_local, d.tx_arp_sender),
        (1, 2, 3, 1)
    );
    assert_eq!(d.tx_total(), 7);
    assert_eq!(g.inner().sent.len(), 1);
}

#[test]
fn configured_address_limits_arp_and_ip_sources_but_dhcp_passes() {
    let mut g = guard(GuardPolicy {
        addresses: vec![IpAddr::from(VM_IP)],
        ..GuardPolicy::default()
    });
    assert!(send(&mut g, &arp_reply(VM_MAC, VM_IP)));
    assert!(
        !send(&mut g, &arp_reply(VM_MAC, OTHER_IP)),
        "ARP claiming the gateway"
    );
    assert!(send(&mut g, &ipv4_udp(VM_IP, 1, 2)));
    assert!(!send(&mut g, &ipv4_udp(OTHER_IP, 1, 2)));
    assert!(send(&mut g, &ipv4_udp([0; 4], 68, 67)), "DHCP discover");
    assert!(!send(&mut g, &ipv4_udp([0; 4], 1, 2)));
    let d = g.stats().drops;
    assert_eq!((d.tx_arp_sender, d.tx_ipv4_source), (1, 2));
}

#[test]
fn learned_addresses_are_capped_and_reported() {
    let mut g = guard(GuardPolicy {
        limits: Limits {
            max_v4: 2,
            ..Limits::default()
        },
        ..GuardPolicy::default()
    });
    assert!(send(&mut g, &arp_reply(VM_MAC, VM_IP)), "learned");
    assert!(send(&mut g, &ipv4_udp([10, 77, 0, 11], 1, 2)), "learned");
    assert!(send(&mut g, &ipv4_udp(VM_IP, 1, 2)), "held");
    assert!(
        !send(&mut g, &ipv4_udp([10, 77, 0, 12], 1, 2)),
        "beyond the cap"
    );
    assert_eq!(g.stats().drops.tx_address_cap, 1);
    assert_eq!(
        g.take_address_events(),
        vec![
            AddressEvent::Learned(IpAddr::from(VM_IP)),
            AddressEvent::Learned(IpAddr::from([10, 77, 0, 11])),
        ]
    );
}

#[test]
fn vlan_option_passes_only_its_vid() {
    let mut g = guard(GuardPolicy {
        vlan: Some(42),
        ..GuardPolicy::default()
    });
    let tagged = |tpid: u16, vid: u16| {
        let mut f = eth(PEER_MAC, tpid);
        f.extend_from_slice(&vid.to_be_bytes());
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&ipv4_udp(VM_IP, 1, 2)[14..]);
        f
    };
    assert!(send(&mut g, &tagged(0x8100, 42)));
    assert!(!send(&mut g, &tagged(0x8100, 43)));
    assert!(!send(&mut g, &tagged(0x88a8, 42)));
    assert!(!send(&mut g, &ipv4_udp(VM_IP, 1, 2)), "untagged");
    assert_eq!(g.stats().drops.tx_vlan, 3);
}

#[test]
fn allow_spoof_checks_nothing() {
    let mut g = SpoofGuard::new(Fake::default(), VM_MAC, true);
    let mut f = ipv4_udp(OTHER_IP, 1, 2);
    f[6..12].copy_from_slice(&PEER_MAC);
    assert!(send(&mut g, &f));
    assert!(send(&mut g, &eth([0x01, 0x80, 0xc2, 0, 0, 1], 0x8808)));
    assert_eq!(g.stats().drops.tx_total(), 0);
}
