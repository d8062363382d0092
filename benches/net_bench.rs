//! Backend throughput and echo latency on a testbed (prints numbers; asserts nothing).
//!
//! `cargo bench --bench net_bench -- [xdp|tap|both] [frames] [direct|model|all]` (root: it builds a
//! testbed of network namespaces)
//!
//! - inbound: a peer AF_PACKET sender floods 64-byte frames at the VM MAC; the backend is drained
//!   by a spinning loop (frames/s delivered, drops by reason);
//! - outbound: the backend transmits 64-byte frames in batches of 32; the peer counts them;
//! - echo: a peer UDP socket (kernel stack, spinning receive) sends to the VM IP; an echo loop on
//!   the backend swaps addresses and sends back; RTT p50/p99.
//!
//! Path `direct`: the loop talks to the backend itself (the backend's own cost). Path `model`: the
//! frames go through the Lance model and its descriptor rings in guest memory, driven by the
//! in-process null guest of `lancet::tools::null_guest` (the VMM's RX pump and TX demand included).

use std::{
    net::UdpSocket,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use lancet::net::{Backend, TapBackend, TapConfig, XdpBackend, XdpConfig};
use lancet::tools::null_guest::NullGuest;
use lancet::tools::testbed::{frames, RawSocket, Side, Testbed, TestbedConfig};

const FRAME_LEN: usize = 64;
const ECHO_PORT: u16 = 7;
const ECHO_ROUNDS: u32 = 20_000;
/// A reply later than this counts as lost.
const ECHO_TIMEOUT: Duration = Duration::from_millis(20);
/// With NET_BENCH_PIN set, the peer side runs on this core and the backend side on the other (as
/// the measurements in machine.md were taken). Off by default: pinned, the echo RTT on this
/// machine often becomes one scheduler tick (4 ms), the softirq work of a reply apparently waiting
/// behind a spinning thread on its core.
const PEER_CORE: usize = 0;
const BACKEND_CORE: usize = 1;

fn pin(core: usize) {
    if std::env::var_os("NET_BENCH_PIN").is_some() && affinity::get_core_num() > core {
        let _ = affinity::set_thread_affinity([core]);
    }
}

/// What the measuring loop drives: the backend alone, or the model + null guest in front of it.
struct Path {
    backend: Box<dyn Backend>,
    guest: Option<NullGuest>,
}

impl Path {
    /// Receive what is pending; `f` sees each frame the "guest" gets.
    fn poll(&mut self, f: &mut dyn FnMut(&[u8])) -> usize {
        match &mut self.guest {
            None => self.backend.recv_batch(64, f).unwrap_or(0),
            Some(g) => {
                g.pump_rx(self.backend.as_mut());
                g.poll_rx(f)
            }
        }
    }

    /// Queue one frame for transmission (false: no room now).
    fn send(&mut self, frame: &[u8]) -> bool {
        match &mut self.guest {
            None => match self.backend.tx_buffer() {
                Some(buf) => {
                    buf[..frame.len()].copy_from_slice(frame);
                    self.backend.tx_commit(frame.len());
                    true
                }
                None => false,
            },
            Some(g) => g.queue_tx(frame),
        }
    }

    /// End of a batch: flush (direct) or TDMD + transmit (model).
    fn flush(&mut self) {
        match &mut self.guest {
            None => self.backend.tx_flush(),
            Some(g) => {
                g.kick_tx(self.backend.as_mut());
            }
        }
        self.backend.reap();
    }

    fn name(&self) -> String {
        format!(
            "{}/{}",
            self.backend.kind(),
            if self.guest.is_some() {
                "model"
            } else {
                "direct"
            }
        )
    }
}

struct Setup {
    bed: Testbed,
    path: Path,
    peer: Arc<RawSocket>,
    peer_mac: [u8; 6],
}

fn setup(kind: &str, model: bool) -> Setup {
    let with_bridge = kind == "tap";
    let bed = Testbed::new(TestbedConfig {
        name_prefix: "bn".into(),
        with_bridge,
        ..Default::default()
    })
    .unwrap();
    let mut backend: Box<dyn Backend> = {
        let _in_host = bed.enter_host().unwrap();
        if with_bridge {
            Box::new(
                TapBackend::open(&TapConfig::new(Testbed::TAP, Some(Testbed::BRIDGE))).unwrap(),
            )
        } else {
            let mut cfg = XdpConfig::new(Testbed::NIC, Testbed::VM_MAC);
            cfg.vm_ip = Some(Testbed::VM_IP);
            Box::new(XdpBackend::open(&cfg).unwrap())
        }
    };
    let peer = Arc::new(bed.raw_socket(Side::Peer, Testbed::PEER_NIC).unwrap());
    let peer_mac = bed.mac_of(Side::Peer, Testbed::PEER_NIC).unwrap();
    // Teach the bridge where the VM is; give the peer a static neighbour entry for the VM.
    let hello = frames::test_frame(peer_mac, Testbed::VM_MAC, u64::MAX, 60);
    if let Some(buf) = backend.tx_buffer() {
        buf[..hello.len()].copy_from_slice(&hello);
        backend.tx_commit(hello.len());
        backend.tx_flush();
    }
    let mac = lancet::frame::MacAddr(Testbed::VM_MAC).to_string();
    let vm_ip = Testbed::VM_IP.to_string();
    bed.run_in(
        Side::Peer,
        &[
            "ip",
            "neigh",
            "replace",
            &vm_ip,
            "lladdr",
            &mac,
            "dev",
            Testbed::PEER_NIC,
        ],
    )
    .unwrap();
    thread::sleep(Duration::from_millis(100));
    let guest = model.then(|| NullGuest::new(Testbed::VM_MAC, 7, 6));
    Setup {
        bed,
        path: Path { backend, guest },
        peer,
        peer_mac,
    }
}

fn inbound(s: &mut Setup, n: u64) {
    let before = s.path.backend.stats();
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let (peer, mac, done) = (s.peer.clone(), s.peer_mac, done.clone());
        thread::spawn(move || {
            pin(PEER_CORE);
            let frame = frames::test_frame(Testbed::VM_MAC, mac, 1, FRAME_LEN);
            for _ in 0..n {
                let _ = peer.send(&frame);
            }
            done.store(true, Ordering::Release);
        })
    };
    let mut got = 0u64;
    let mut first = None;
    let mut last = Instant::now();
    let mut idle_since = Instant::now();
    loop {
        let k = s.path.poll(&mut |_| {}) as u64;
        if k > 0 {
            first.get_or_insert_with(Instant::now);
            last = Instant::now();
            idle_since = last;
            got += k;
            s.path.backend.reap();
        } else if done.load(Ordering::Acquire) && idle_since.elapsed() > Duration::from_millis(300)
        {
            break;
        }
    }
    sender.join().unwrap();
    let secs = first
        .map(|f| (last - f).as_secs_f64())
        .unwrap_or(0.0)
        .max(1e-9);
    let after = s.path.backend.stats();
    println!(
        "{:>10} inbound : {got}/{n} frames delivered, {:.0} kpps, backend drops {}",
        s.path.name(),
        got as f64 / secs / 1e3,
        after.drops.rx_total() - before.drops.rx_total()
    );
}

fn outbound(s: &mut Setup, n: u64) {
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let (peer, received, stop) = (s.peer.clone(), received.clone(), stop.clone());
        thread::spawn(move || {
            pin(PEER_CORE);
            let mut buf = vec![0u8; 2048];
            while !stop.load(Ordering::Acquire) {
                if let Ok(Some(len)) = peer.recv(&mut buf, Duration::from_millis(50)) {
                    if frames::test_seq(&buf[..len]).is_some() {
                        received.fetch_add(1, Ordering::Release);
                    }
                }
            }
        })
    };
    let frame = frames::test_frame(s.peer_mac, Testbed::VM_MAC, 2, FRAME_LEN);
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        if s.path.send(&frame) {
            sent += 1;
            if sent % 16 == 0 {
                s.path.flush();
            }
        } else {
            s.path.flush();
        }
    }
    s.path.flush();
    let secs = start.elapsed().as_secs_f64();
    thread::sleep(Duration::from_millis(300));
    s.path.flush();
    stop.store(true, Ordering::Release);
    receiver.join().unwrap();
    println!(
        "{:>10} outbound: {n} frames sent at {:.0} kpps, peer received {}",
        s.path.name(),
        n as f64 / secs / 1e3,
        received.load(Ordering::Acquire)
    );
}

/// Turn a UDP/IPv4 request into its reply in place: swap MACs, IPs, ports; UDP checksum 0 (none),
/// since a peer's kernel sends it partial. Returns false for anything else.
fn make_echo_reply(frame: &mut [u8]) -> bool {
    const IP: usize = 14;
    if frame.len() < IP + 28 || frame[12..14] != [0x08, 0x00] || frame[IP + 9] != 17 {
        return false;
    }
    let ihl = usize::from(frame[IP] & 0x0f) * 4;
    let udp = IP + ihl;
    if frame.len() < udp + 8 {
        return false;
    }
    let (dst, src) = frame.split_at_mut(6);
    dst.swap_with_slice(&mut src[..6]);
    let (a, b) = frame[IP + 12..IP + 20].split_at_mut(4);
    a.swap_with_slice(b);
    let (a, b) = frame[udp..udp + 4].split_at_mut(2);
    a.swap_with_slice(b);
    frame[udp + 6] = 0;
    frame[udp + 7] = 0;
    true
}

fn echo(s: Setup) -> Setup {
    let Setup {
        bed,
        mut path,
        peer,
        peer_mac,
    } = s;
    let stop = Arc::new(AtomicBool::new(false));
    let responder = {
        let stop = stop.clone();
        thread::spawn(move || {
            pin(BACKEND_CORE);
            let mut pending: Vec<Vec<u8>> = Vec::new();
            while !stop.load(Ordering::Acquire) {
                path.poll(&mut |f| pending.push(f.to_vec()));
                if pending.is_empty() {
                    // Spin, but let ksoftirqd on this core run: the kernel may defer the
                    // network softirq of our own transmit to it.
                    thread::yield_now();
                    continue;
                }
                for mut frame in pending.drain(..) {
                    if make_echo_reply(&mut frame) {
                        path.send(&frame);
                    }
                }
                path.flush();
            }
            path
        })
    };
    pin(PEER_CORE);
    let sock = {
        let _in_peer = bed.enter_peer().unwrap();
        UdpSocket::bind((Testbed::PEER_IP, 0)).unwrap()
    };
    sock.connect((Testbed::VM_IP, ECHO_PORT)).unwrap();
    sock.set_nonblocking(true).unwrap();
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let mut lost = 0u32;
    let mut buf = [0u8; 64];
    for i in 0..ECHO_ROUNDS {
        let t0 = Instant::now();
        sock.send(&i.to_be_bytes()).unwrap();
        loop {
            match sock.recv(&mut buf) {
                Ok(4) if buf[..4] == i.to_be_bytes() => {
                    hist.record(t0.elapsed().as_nanos() as u64).unwrap();
                    break;
                }
                Ok(_) => {}
                Err(_) if t0.elapsed() > ECHO_TIMEOUT => {
                    lost += 1;
                    break;
                }
                Err(_) => {}
            }
        }
    }
    stop.store(true, Ordering::Release);
    let path = responder.join().unwrap();
    println!(
        "{:>10} echo    : {} rounds, RTT p50 {:.1} us, p99 {:.1} us, lost {lost}",
        path.name(),
        hist.len(),
        hist.value_at_quantile(0.5) as f64 / 1e3,
        hist.value_at_quantile(0.99) as f64 / 1e3
    );
    Setup {
        bed,
        path,
        peer,
        peer_mac,
    }
}

/// What the one copy of the model path costs: a frame from guest memory into a page-sized buffer
/// (TX: guest -> UMEM frame) and back (RX: UMEM frame -> guest), per frame size.
fn copy_cost() {
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    const ROUNDS: u32 = 1_000_000;
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let mut page = vec![0u8; 4096];
    for len in [64usize, 1514] {
        let start = Instant::now();
        for i in 0..ROUNDS {
            let addr = GuestAddress(u64::from(i % 256) * 2048);
            mem.read_slice(&mut page[..len], addr).unwrap();
            std::hint::black_box(&page);
        }
        let to_umem = start.elapsed().as_nanos() as f64 / f64::from(ROUNDS);
        let start = Instant::now();
        for i in 0..ROUNDS {
            let addr = GuestAddress(u64::from(i % 256) * 2048);
            mem.write_slice(std::hint::black_box(&page[..len]), addr)
                .unwrap();
        }
        let to_guest = start.elapsed().as_nanos() as f64 / f64::from(ROUNDS);
        println!("copy {len:>4} B: guest->buffer {to_umem:.0} ns, buffer->guest {to_guest:.0} ns per frame");
    }
}

/// A backend that drops everything: isolates the model + null guest cost from the host network.
struct NullBackend {
    buf: Vec<u8>,
}

impl lancet::frame::FrameTx for NullBackend {
    fn tx_buffer(&mut self) -> Option<&mut [u8]> {
        Some(&mut self.buf)
    }
    fn tx_commit(&mut self, len: usize) {
        std::hint::black_box(&self.buf[..len]);
    }
}

impl Backend for NullBackend {
    fn kind(&self) -> &'static str {
        "null"
    }
    fn poll_fd(&self) -> std::os::fd::RawFd {
        -1
    }
    fn recv_batch(
        &mut self,
        _max: usize,
        _deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, lancet::net::NetError> {
        Ok(0)
    }
    fn reap(&mut self) {}
    fn stats(&self) -> lancet::net::BackendStats {
        lancet::net::BackendStats::default()
    }
}

/// The model + null guest alone (no network): frames per second each way.
fn model_only(n: u64) {
    let mut g = NullGuest::new(Testbed::VM_MAC, 7, 6);
    let mut null = NullBackend { buf: vec![0; 2048] };
    let frame = frames::test_frame(Testbed::VM_MAC, [2, 0, 0, 0, 0, 1], 1, FRAME_LEN);
    let start = Instant::now();
    let mut got = 0u64;
    while got < n {
        while g.lance.receive(&g.mem, &frame) == lancet::lance::RxOutcome::Delivered {}
        got += g.poll_rx(|f| {
            std::hint::black_box(f);
        }) as u64;
    }
    let rx = n as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        while g.queue_tx(&frame) {
            sent += 1;
        }
        g.kick_tx(&mut null);
    }
    let tx = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "model only (null guest, null backend): RX {:.0} kpps, TX {:.0} kpps",
        rx / 1e3,
        tx / 1e3
    );
}

fn main() {
    // `cargo bench` passes `--bench` (and libtest-style flags) to harness-less benches: skip flags.
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let which = args.get(1).map(String::as_str).unwrap_or("both");
    let n: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(500_000);
    let kinds: &[&str] = match which {
        "xdp" => &["xdp"],
        "tap" => &["tap"],
        _ => &["xdp", "tap"],
    };
    let models: &[bool] = match args.get(3).map(String::as_str) {
        Some("direct") => &[false],
        Some("model") => &[true],
        _ => &[false, true],
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average: {}", load.trim());
    pin(BACKEND_CORE);
    copy_cost();
    model_only(n.max(100_000));
    for kind in kinds {
        for &model in models {
            pin(BACKEND_CORE);
            let mut s = setup(kind, model);
            inbound(&mut s, n);
            outbound(&mut s, n);
            let s = echo(s);
            let stats = serde_json::to_string(&s.path.backend.stats()).unwrap_or_default();
            println!("{:>10} stats   : {stats}", s.path.name());
            if let Some(g) = &s.path.guest {
                let model_stats = serde_json::to_string(g.lance.stats()).unwrap_or_default();
                println!("{:>10} model   : {model_stats}", s.path.name());
            }
        }
    }
}
