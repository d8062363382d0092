//! TCP bulk transfer with the kernel's stack (std sockets), for the tcp phase: a sender that
//! connects, writes N bytes, half-closes and waits for the other side's close, and a receiver that
//! accepts one connection and counts bytes to EOF. Each runs on a thread that entered a network
//! namespace (the peer side; the `native` path's host side) and times itself.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::netns::{enter_netns, spawn_in_netns};
use super::BenchError;

/// Port the guest's tcp-sink listens on (its default).
pub const TCP_SINK_PORT: u16 = 9;
/// Port of the peer's listener the guest's tcp-source connects to.
pub const TCP_SOURCE_PORT: u16 = 5001;
/// Bytes per write/read call.
const CHUNK: usize = 64 * 1024;
/// How long a connect is retried while refused (the sink may still be arming its socket).
const CONNECT_RETRY: Duration = Duration::from_secs(5);
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(20);
/// How long a socket may make no progress before the transfer counts as failed.
const STALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a waiting accept re-checks its deadline.
const ACCEPT_POLL: Duration = Duration::from_millis(1);

/// One finished transfer, timed by the side that ran it.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    pub bytes: u64,
    /// Sender: from the connect to the other side's close. Receiver: from the first byte to EOF.
    pub elapsed: Duration,
    /// When that timing began.
    pub started_at: Instant,
}

fn io_err(what: &str, e: std::io::Error) -> BenchError {
    BenchError::Io(format!("TCP {what}: {e}"))
}

/// Connect to `target` (retrying while refused), send `bytes` zeros, half-close, and wait for
/// the other side to close: then every byte was received.
pub fn bulk_send(target: SocketAddrV4, bytes: u64) -> Result<Transfer, BenchError> {
    let deadline = Instant::now() + CONNECT_RETRY;
    let (mut stream, started) = loop {
        let started = Instant::now();
        match TcpStream::connect_timeout(&target.into(), STALL_TIMEOUT) {
            Ok(s) => break (s, started),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused && Instant::now() < deadline => {
                std::thread::sleep(CONNECT_RETRY_PAUSE)
            }
            Err(e) => return Err(io_err(&format!("connect to {target}"), e)),
        }
    };
    stream
        .set_write_timeout(Some(STALL_TIMEOUT))
        .and_then(|()| stream.set_read_timeout(Some(STALL_TIMEOUT)))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(|e| io_err("socket options", e))?;
    let buf = vec![0u8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        stream
            .write_all(&buf[..n])
            .map_err(|e| io_err(&format!("send to {target} ({} bytes left)", left), e))?;
        left -= n as u64;
    }
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| io_err("half-close", e))?;
    let mut sink = [0u8; 512];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(&format!("waiting for {target} to close"), e)),
        }
    }
    Ok(Transfer {
        bytes,
        elapsed: started.elapsed(),
        started_at: started,
    })
}

/// Accept one connection on `listener` within `accept_within` and count bytes until EOF, call
/// `at_eof` (the connection still open: a sender waiting for the close is still running), then
/// close.
pub fn bulk_receive(
    listener: &TcpListener,
    accept_within: Duration,
    at_eof: impl FnOnce(),
) -> Result<Transfer, BenchError> {
    listener
        .set_nonblocking(true)
        .map_err(|e| io_err("listener options", e))?;
    let deadline = Instant::now() + accept_within;
    let mut stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(ACCEPT_POLL)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                return Err(BenchError::Io(format!(
                    "TCP: no connection within {accept_within:?}"
                )))
            }
            Err(e) => return Err(io_err("accept", e)),
        }
    };
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(STALL_TIMEOUT)))
        .map_err(|e| io_err("socket options", e))?;
    let mut buf = vec![0u8; CHUNK];
    let mut bytes = 0u64;
    let mut first: Option<Instant> = None;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                first.get_or_insert_with(Instant::now);
                bytes += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(&format!("receive ({bytes} bytes so far)"), e)),
        }
    }
    let started_at = first.unwrap_or_else(Instant::now);
    let elapsed = started_at.elapsed();
    at_eof();
    Ok(Transfer {
        bytes,
        elapsed,
        started_at,
    })
}

/// [`bulk_send`] on a thread inside `netns`.
pub fn spawn_sender(
    netns: &str,
    target: SocketAddrV4,
    bytes: u64,
    cpu: Option<usize>,
) -> Result<JoinHandle<Result<Transfer, BenchError>>, BenchError> {
    spawn_in_netns(netns, "bench-tcp-send", move || {
        if let Some(cpu) = cpu {
            super::pin_current_thread(cpu);
        }
        bulk_send(target, bytes)
    })
}

/// Bind `addr` inside `netns` on a new thread and run [`bulk_receive`] there (with `at_eof`);
/// returns once the listener is bound (so a connection made afterwards is accepted).
pub fn spawn_receiver(
    netns: &str,
    addr: SocketAddrV4,
    accept_within: Duration,
    cpu: Option<usize>,
    at_eof: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<Result<Transfer, BenchError>>, BenchError> {
    let (bound_tx, bound_rx) = mpsc::channel();
    let netns = netns.to_string();
    let thread = std::thread::Builder::new()
        .name("bench-tcp-recv".into())
        .spawn(move || {
            let bound = enter_netns(&netns).and_then(|()| {
                if let Some(cpu) = cpu {
                    super::pin_current_thread(cpu);
                }
                TcpListener::bind(addr).map_err(|e| io_err(&format!("listen on {addr}"), e))
            });
            let listener = match bound {
                Ok(l) => {
                    let _ = bound_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = bound_tx.send(Err(e.clone()));
                    return Err(e);
                }
            };
            bulk_receive(&listener, accept_within, at_eof)
        })
        .map_err(|e| BenchError::Setup(format!("cannot spawn the TCP receiver: {e}")))?;
    match bound_rx.recv() {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(super::netns::join(thread)
            .err()
            .unwrap_or_else(|| BenchError::Setup("the TCP receiver ended before binding".into()))),
    }
}
