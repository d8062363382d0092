//! TCP end to end over the real backends, in network namespaces from `src/tools/testbed.rs`: the test
//! guest's smoltcp stack (`--guest tcp-sink` / `tcp-source`) against the peer namespace's kernel.
//! - tcp-sink: a real client (`nc -N`, netcat-openbsd) in the peer namespace sends 4 MiB; the guest
//!   reports exactly that many bytes and exits 0 when the client closes; with `--count 2` it serves
//!   two connections one after the other.
//! - tcp-source: the guest connects to a kernel TCP listener in the peer namespace and sends N
//!   bytes; the listener counts exactly N, and the guest exits 0 once all were acknowledged.
//! - tcp-source to a port nobody listens on: the guest reports the refusal and exits non-zero.
//!
//! Throughput is printed (eprintln), not asserted. The test guest must have been built
//! (`make guest`); a missing image fails the test with that instruction.

mod common;

use std::io::{ErrorKind, Read};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::vm::{guest_args, testbed, VmProcess};
use lancet::tools::testbed::{Side, Testbed};

/// What the client sends to tcp-sink, and tcp-source to the kernel sink.
const TRANSFER_BYTES: u64 = 4 * 1024 * 1024;
/// Bound on any one transfer (the test fails, it does not hang).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);

/// The value of `key=` in the first console line containing `marker` (from `marker` on).
fn field(text: &str, marker: &str, key: &str) -> Option<u64> {
    let line = text
        .lines()
        .find_map(|l| l.find(marker).map(|at| &l[at..]))?;
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        .and_then(|value| value.parse().ok())
}

/// The testbed with the peer's checksum offload off. The peer's kernel leaves TCP checksums of
/// the frames it sends to the "hardware" (CHECKSUM_PARTIAL); over veth nothing fills them in, and an
/// XDP program (AF_XDP backend) sees the frame before any software fallback would, so the guest
/// would get (and drop) every segment with a wrong checksum. A physical NIC computes them on the
/// wire; `ethtool -K tx off` makes the peer's kernel do it.
fn tcp_testbed(backend: &str, tag: &str) -> Testbed {
    let bed = testbed(backend, tag);
    let out = bed
        .run_in(
            Side::Peer,
            &["ethtool", "-K", Testbed::PEER_NIC, "tx", "off"],
        )
        .expect("ethtool");
    assert!(
        out.status.success(),
        "ethtool -K {} tx off: {}",
        Testbed::PEER_NIC,
        String::from_utf8_lossy(&out.stderr)
    );
    bed
}

fn mbps(bytes: u64, ms: u64) -> f64 {
    bytes as f64 * 8.0 / (ms.max(1) as f64 * 1000.0)
}

/// `nc -N` from the peer namespace sends TRANSFER_BYTES of zeros to the guest's tcp-sink.
fn tcp_sink_over(backend: &str, tag: &str) {
    let bed = tcp_testbed(backend, tag);
    let args = guest_args("tcp-sink", true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut vm = VmProcess::start(&bed, backend, &args, tag);
    vm.wait_for("lancet-guest: ready prog=tcp-sink", Duration::from_secs(60));
    let client = format!(
        "head -c {TRANSFER_BYTES} /dev/zero | timeout {} nc -N {} 9",
        TRANSFER_TIMEOUT.as_secs(),
        Testbed::VM_IP
    );
    let start = Instant::now();
    let out = bed
        .run_in(Side::Peer, &["sh", "-c", &client])
        .expect("nc (netcat-openbsd)");
    let wall = start.elapsed();
    assert!(
        out.status.success(),
        "nc over {backend}: {}; serial:\n{}",
        String::from_utf8_lossy(&out.stderr),
        vm.serial_text()
    );
    let (code, stats, text) = vm.wait_exit(Duration::from_secs(30));
    assert_eq!(code, 0, "tcp-sink over {backend}: {stats}\n{text}");
    check_and_print(
        backend,
        "peer -> guest",
        "tcp-sink bytes=",
        "nc",
        &text,
        wall,
    );
}

/// Asserts the guest's console line `prefix` reports every byte, and prints the guest's and the
/// peer's view of the transfer's speed (not asserted).
fn check_and_print(
    backend: &str,
    what: &str,
    prefix: &str,
    peer: &str,
    text: &str,
    wall: Duration,
) {
    assert_eq!(field(text, prefix, "bytes"), Some(TRANSFER_BYTES), "{text}");
    let ms = field(text, prefix, "ms");
    eprintln!(
        "{backend}: {what} TCP {} bytes: guest {} ms ({}), {peer} wall {:?} ({:.0} Mb/s)",
        TRANSFER_BYTES,
        ms.map_or("-".into(), |m| m.to_string()),
        ms.map_or("-".into(), |m| format!(
            "{:.0} Mb/s",
            mbps(TRANSFER_BYTES, m)
        )),
        wall,
        mbps(TRANSFER_BYTES, wall.as_millis() as u64)
    );
}

/// A kernel TCP listener in the peer namespace: accepts one connection, counts its bytes until
/// EOF. Sends the listening port through `port`, returns the count and the time from accept.
fn kernel_sink(bed: &Testbed, port: mpsc::Sender<u16>) -> (u64, Duration) {
    let _in_peer = bed.enter_peer().expect("enter the peer namespace");
    let listener = TcpListener::bind((Testbed::PEER_IP, 0)).expect("bind in the peer namespace");
    port.send(listener.local_addr().unwrap().port()).unwrap();
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + TRANSFER_TIMEOUT;
    let mut stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("no connection from the guest: {e}"),
        }
    };
    let start = Instant::now();
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(TRANSFER_TIMEOUT)).unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading the guest's stream after {total} bytes: {e}"),
        }
    }
    (total, start.elapsed())
}

/// The guest's tcp-source sends TRANSFER_BYTES to a kernel listener in the peer namespace.
fn tcp_source_over(backend: &str, tag: &str) {
    let bed = tcp_testbed(backend, tag);
    std::thread::scope(|scope| {
        let (port_tx, port_rx) = mpsc::channel();
        let sink = scope.spawn(|| kernel_sink(&bed, port_tx));
        let port = port_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the kernel sink's port");
        let mut args = guest_args("tcp-source", true);
        args.extend([
            "--peer".to_string(),
            format!("{}:{port}", Testbed::PEER_IP),
            "--bytes".into(),
            TRANSFER_BYTES.to_string(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let vm = VmProcess::start(&bed, backend, &args, tag);
        let (code, stats, text) = vm.wait_exit(TRANSFER_TIMEOUT + Duration::from_secs(60));
        assert_eq!(code, 0, "tcp-source over {backend}: {stats}\n{text}");
        let (received, wall) = sink.join().expect("kernel sink thread");
        assert_eq!(
            received, TRANSFER_BYTES,
            "bytes the kernel sink counted:\n{text}"
        );
        check_and_print(
            backend,
            "guest -> peer",
            "tcp-source bytes=",
            "sink",
            &text,
            wall,
        );
    });
}

#[test]
fn tcp_sink_counts_a_real_clients_bytes_over_xdp() {
    tcp_sink_over("xdp", "tkx");
}

#[test]
fn tcp_sink_counts_a_real_clients_bytes_over_tap() {
    tcp_sink_over("tap", "tkt");
}

#[test]
fn tcp_source_delivers_every_byte_over_xdp() {
    tcp_source_over("xdp", "tsx");
}

#[test]
fn tcp_source_delivers_every_byte_over_tap() {
    tcp_source_over("tap", "tst");
}

/// `--count 2`: tcp-sink reports each connection on its own line, listens again after the first,
/// and exits 0 after the second.
#[test]
fn tcp_sink_serves_count_connections_one_after_another() {
    let bed = tcp_testbed("xdp", "tkc");
    let mut args = guest_args("tcp-sink", true);
    args.extend(["--count".to_string(), "2".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut vm = VmProcess::start(&bed, "xdp", &args, "tkc");
    vm.wait_for("lancet-guest: ready prog=tcp-sink", Duration::from_secs(60));
    let sizes = [1_048_576u64, 65_537];
    for (i, size) in sizes.iter().enumerate() {
        let client = format!(
            "head -c {size} /dev/zero | timeout {} nc -N {} 9",
            TRANSFER_TIMEOUT.as_secs(),
            Testbed::VM_IP
        );
        let out = bed.run_in(Side::Peer, &["sh", "-c", &client]).unwrap();
        assert!(
            out.status.success(),
            "connection {i}:\n{}",
            vm.serial_text()
        );
        vm.wait_for(
            &format!("lancet-guest: tcp-sink bytes={size} "),
            Duration::from_secs(30),
        );
    }
    let (code, _, text) = vm.wait_exit(Duration::from_secs(30));
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        text.matches("lancet-guest: tcp-sink bytes=").count(),
        2,
        "{text}"
    );
    assert_eq!(
        text.matches("tcp-sink connected from=").count(),
        2,
        "{text}"
    );
}

/// Nobody listens on the port: the peer's kernel answers the SYN with a reset, and the guest says
/// so and exits non-zero.
#[test]
fn tcp_source_reports_a_refused_connection() {
    let bed = tcp_testbed("xdp", "tsr");
    let mut args = guest_args("tcp-source", true);
    args.extend([
        "--peer".to_string(),
        format!("{}:{}", Testbed::PEER_IP, 9),
        "--bytes".into(),
        "1000".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vm = VmProcess::start(&bed, "xdp", &args, "tsr");
    let (code, _, text) = vm.wait_exit(Duration::from_secs(120));
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("lancet-guest: error tcp-source: connection refused"),
        "{text}"
    );
}
