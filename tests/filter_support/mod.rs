//! Shared helpers of the filter tests: a testbed with an AF_XDP backend registered as a named VM,
//! frame builders for every field a rule matches, and receive helpers.

#![allow(dead_code)]

use std::{
    net::IpAddr,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use lancet::net::{Backend, XdpBackend, XdpConfig};
use lancet::tools::testbed::{frames, RawSocket, Side, Testbed, TestbedConfig};

/// The VM name the tests register.
pub const VM: &str = "web1";
/// How long a frame may take to arrive.
pub const WAIT: Duration = Duration::from_secs(2);
/// How long to watch for a frame that must not arrive.
pub const QUIET: Duration = Duration::from_millis(300);
/// Marker in front of the sequence number in every test payload.
const MARKER: &[u8; 4] = b"LTFR";

/// Pinned state lives in the global bpffs under the NIC's name (the same `lt-nic` in every
/// testbed), so tests that pin take this lock.
static PIN_LOCK: Mutex<()> = Mutex::new(());

/// Serialize the tests that pin maps for `lt-nic`.
pub fn pin_lock() -> MutexGuard<'static, ()> {
    PIN_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A testbed, the backend on its NIC, and raw sockets on both sides.
pub struct Bed {
    pub backend: XdpBackend,
    pub peer: RawSocket,
    pub host: RawSocket,
    pub peer_mac: [u8; 6],
    pub nic_mac: [u8; 6],
    pub bed: Testbed,
}

impl Bed {
    /// The peer sends an ARP request for `ip` onto the wire.
    pub fn peer_asks_arp(&self, ip: std::net::Ipv4Addr) {
        self.peer
            .send(&frames::arp_request(self.peer_mac, Testbed::PEER_IP, ip))
            .unwrap();
    }
}

/// Build a testbed whose VM is named [`VM`]; `edit` adjusts the backend config.
pub fn bed(prefix: &str, edit: impl FnOnce(&mut XdpConfig)) -> Bed {
    let bed = Testbed::new(TestbedConfig {
        name_prefix: prefix.into(),
        ..Default::default()
    })
    .unwrap();
    let backend = bed
        .open_xdp(|cfg| {
            cfg.vm_ip = Some(Testbed::VM_IP);
            cfg.vm_name = Some(VM.into());
            edit(cfg);
        })
        .unwrap();
    let peer = bed.raw_socket(Side::Peer, Testbed::PEER_NIC).unwrap();
    let host = bed.raw_socket(Side::Host, Testbed::NIC).unwrap();
    let peer_mac = bed.mac_of(Side::Peer, Testbed::PEER_NIC).unwrap();
    let nic_mac = bed.mac_of(Side::Host, Testbed::NIC).unwrap();
    Bed {
        backend,
        peer,
        host,
        peer_mac,
        nic_mac,
        bed,
    }
}

/// What a test frame carries.
#[derive(Debug, Clone)]
pub struct Frame {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub vlan: Option<u16>,
    /// Raw ethertype for non-IP frames (ignored when `ip` is set).
    pub ethertype: u16,
    /// (source, destination) addresses; IPv4 or IPv6.
    pub ip: Option<(IpAddr, IpAddr)>,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

impl Frame {
    /// UDP from the peer to the VM, IPv4 10.77.0.2:1000 -> 10.77.0.10:4789.
    pub fn udp(dst: [u8; 6], src: [u8; 6]) -> Self {
        Self {
            dst,
            src,
            vlan: None,
            ethertype: 0x0800,
            ip: Some((IpAddr::V4(Testbed::PEER_IP), IpAddr::V4(Testbed::VM_IP))),
            proto: 17,
            sport: 1000,
            dport: 4789,
        }
    }

    /// The frame's bytes carrying `seq`.
    pub fn build(&self, seq: u64) -> Vec<u8> {
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&self.dst);
        f.extend_from_slice(&self.src);
        if let Some(vid) = self.vlan {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        let mut payload = Vec::new();
        payload.extend_from_slice(MARKER);
        payload.extend_from_slice(&seq.to_be_bytes());
        payload.resize(32, 0xa5);
        let l4: Vec<u8> = if self.proto == 6 || self.proto == 17 {
            let mut h = Vec::new();
            h.extend_from_slice(&self.sport.to_be_bytes());
            h.extend_from_slice(&self.dport.to_be_bytes());
            if self.proto == 17 {
                h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
                h.extend_from_slice(&[0, 0]);
            } else {
                h.extend_from_slice(&[0; 8]); // seq, ack
                h.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]); // SYN, no checksum
            }
            h.extend_from_slice(&payload);
            h
        } else {
            payload
        };
        match self.ip {
            Some((IpAddr::V4(s), IpAddr::V4(d))) => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let total = (20 + l4.len()) as u16;
                f.extend_from_slice(&[0x45, 0]);
                f.extend_from_slice(&total.to_be_bytes());
                f.extend_from_slice(&[0, 0, 0x40, 0, 64, self.proto, 0, 0]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
            }
            Some((IpAddr::V6(s), IpAddr::V6(d))) => {
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                f.extend_from_slice(&[self.proto, 64]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
            }
            Some(_) => panic!("mixed IP versions"),
            None => f.extend_from_slice(&self.ethertype.to_be_bytes()),
        }
        f.extend_from_slice(&l4);
        if f.len() < 60 {
            f.resize(60, 0);
        }
        f
    }
}

/// The sequence number of a test frame.
pub fn seq_of(frame: &[u8]) -> Option<u64> {
    let at = frame.windows(4).position(|w| w == MARKER)?;
    Some(u64::from_be_bytes(
        frame.get(at + 4..at + 12)?.try_into().ok()?,
    ))
}

/// What `pick` finds in the frames `backend` receives within `wait` (stops early at `n`); TX
/// completions are reaped meanwhile, as the VMM's I/O loop does.
pub fn backend_collect<T>(
    backend: &mut dyn Backend,
    n: usize,
    wait: Duration,
    pick: impl Fn(&[u8]) -> Option<T>,
) -> Vec<T> {
    collect_until(n, wait, |_, got| {
        backend.reap();
        backend
            .recv_batch(64, &mut |f| got.extend(pick(f)))
            .unwrap();
        if got.len() < n {
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    })
}

/// What `pick` finds in the frames a raw socket sees within `wait` (stops early at `n`).
pub fn sock_collect<T>(
    sock: &RawSocket,
    n: usize,
    wait: Duration,
    pick: impl Fn(&[u8]) -> Option<T>,
) -> Vec<T> {
    let mut buf = vec![0u8; 4096];
    collect_until(n, wait, |left, got| {
        match sock.recv(&mut buf, left).unwrap() {
            Some(len) => {
                got.extend(pick(&buf[..len]));
                true
            }
            None => false,
        }
    })
}

/// Runs `step` (given the time left and what was collected so far) until `n` items are collected,
/// `wait` has passed or `step` says there is nothing more to wait for (returns false).
fn collect_until<T>(
    n: usize,
    wait: Duration,
    mut step: impl FnMut(Duration, &mut Vec<T>) -> bool,
) -> Vec<T> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !step(left, &mut got) {
            break;
        }
    }
    got
}

/// Receive from the backend until `n` test frames with sequence numbers arrived or `wait` passed.
pub fn vm_receive(backend: &mut XdpBackend, n: usize, wait: Duration) -> Vec<u64> {
    backend_collect(backend, n, wait, seq_of)
}

/// Test frames a raw socket sees within `wait`.
pub fn sock_receive(sock: &RawSocket, n: usize, wait: Duration) -> Vec<u64> {
    sock_collect(sock, n, wait, seq_of)
}

/// Targets of the ARP requests a backend receives within `wait`.
pub fn arp_targets(backend: &mut dyn Backend, wait: Duration) -> Vec<std::net::Ipv4Addr> {
    backend_collect(
        backend,
        usize::MAX,
        wait,
        lancet::tools::testbed::frames::arp_target,
    )
}

/// What `ip neigh show IP` prints in one namespace of `bed` (the kernel's neighbour entry, as a
/// user would look it up).
pub fn neighbour(bed: &Testbed, side: Side, ip: std::net::Ipv4Addr) -> String {
    let out = bed
        .run_in(side, &["ip", "neigh", "show", &ip.to_string()])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Drain whatever is queued on a raw socket.
pub fn drain(sock: &RawSocket) {
    let mut buf = vec![0u8; 4096];
    while let Ok(Some(_)) = sock.recv(&mut buf, Duration::from_millis(20)) {}
}

/// The full pin name (`<ifname>@<netns inode>`) of the testbed NIC's pinned maps: a bare
/// `lt-nic` is ambiguous while other lancet processes on the machine pin an `lt-nic` of their own.
pub fn pinned_nic_name(bed: &Testbed) -> String {
    let _in_host = bed.enter_host().unwrap();
    let dir = lancet::net::pin::pin_dir_here(Testbed::NIC);
    dir.file_name().unwrap().to_string_lossy().into_owned()
}
