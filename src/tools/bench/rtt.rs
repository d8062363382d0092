//! The echo RTT client: one outstanding UDP request at a time to an echo server, every RTT recorded
//! in microseconds into an hdrhistogram; timeouts counted as losses; warm-up excluded.

use std::io::ErrorKind;
use std::net::{SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::BenchError;

/// Bytes of the request header in the payload: sequence number (u64) and send time (u64 ns).
pub const RTT_HEADER_LEN: usize = 16;
/// Histogram range and precision: 1 us .. 10 s, 3 significant digits.
pub const HIST_LOWEST_US: u64 = 1;
pub const HIST_HIGHEST_US: u64 = 10_000_000;
pub const HIST_SIGFIG: u8 = 3;

/// A fresh RTT histogram with the bench's bounds and precision.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(HIST_LOWEST_US, HIST_HIGHEST_US, HIST_SIGFIG)
        .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
}

/// How the client waits for each reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitMode {
    /// Non-blocking socket, spinning on recv: lowest client-side latency, burns a core.
    Spin,
    /// Blocking recv with a timeout: adds the wake-up latency of the client thread.
    Block,
}

/// What one RTT run does.
#[derive(Debug, Clone)]
pub struct RttConfig {
    /// The echo server (IPv4 address and UDP port).
    pub target: SocketAddrV4,
    /// UDP payload bytes per request (at least [`RTT_HEADER_LEN`]); 18 makes a 64-byte frame.
    pub payload_len: usize,
    /// Requests whose RTT is recorded.
    pub samples: u64,
    /// Requests sent first and not recorded (caches, ARP, the server's first wake-ups).
    pub warmup: u64,
    /// How long to wait for each reply before counting the request lost.
    pub timeout: Duration,
    /// Stop early once this many requests were lost (the path is broken; don't spin for hours).
    pub max_losses: u64,
    /// Stop early at this total time even if not all samples were taken.
    pub max_duration: Duration,
    pub wait: WaitMode,
}

/// What one RTT run saw.
#[derive(Debug, Clone)]
pub struct RttOutcome {
    /// Recorded RTTs, microseconds.
    pub histogram: Histogram<u64>,
    /// Measured requests sent (warm-up excluded).
    pub sent: u64,
    /// Measured requests answered in time.
    pub received: u64,
    /// Measured requests not answered within the timeout.
    pub lost: u64,
    /// Warm-up requests lost.
    pub warmup_lost: u64,
    /// Replies discarded: late (an earlier sequence number), malformed, or ICMP errors.
    pub discarded: u64,
    /// Why the run stopped before taking every sample, if it did.
    pub stopped_early: Option<String>,
}

struct Probe {
    socket: UdpSocket,
    epoch: Instant,
    request: Vec<u8>,
    reply: Vec<u8>,
    wait: WaitMode,
    timeout: Duration,
}

enum ProbeResult {
    Answered(Duration),
    Lost,
}

impl Probe {
    fn exchange(&mut self, seq: u64, discarded: &mut u64) -> Result<ProbeResult, BenchError> {
        let sent_at = Instant::now();
        let stamp = sent_at.duration_since(self.epoch).as_nanos() as u64;
        self.request[..8].copy_from_slice(&seq.to_le_bytes());
        self.request[8..16].copy_from_slice(&stamp.to_le_bytes());
        self.socket.send(&self.request).map_err(|e| {
            BenchError::Io(format!(
                "sending the RTT request failed: {e} (is there a route to the echo server?)"
            ))
        })?;
        let give_up = sent_at + self.timeout;
        loop {
            let now = Instant::now();
            if now >= give_up {
                return Ok(ProbeResult::Lost);
            }
            if self.wait == WaitMode::Block {
                self.socket
                    .set_read_timeout(Some(give_up - now))
                    .map_err(|e| BenchError::Io(format!("setting the reply timeout: {e}")))?;
            }
            match self.socket.recv(&mut self.reply) {
                Ok(len) => {
                    let received_at = Instant::now();
                    if len >= RTT_HEADER_LEN && self.reply[..8] == seq.to_le_bytes() {
                        let mut echoed = [0u8; 8];
                        echoed.copy_from_slice(&self.reply[8..16]);
                        if u64::from_le_bytes(echoed) == stamp {
                            return Ok(ProbeResult::Answered(received_at - sent_at));
                        }
                    }
                    *discarded += 1;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if self.wait == WaitMode::Spin {
                        std::hint::spin_loop();
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionRefused | ErrorKind::Interrupted
                    ) =>
                {
                    // ICMP port unreachable (no server yet) or a signal: wait on for this request.
                    *discarded += 1;
                }
                Err(e) => return Err(BenchError::Io(format!("receiving the RTT reply: {e}"))),
            }
        }
    }
}

/// Run the client in the calling thread's network namespace (callers `setns()` first).
pub fn run_rtt(config: &RttConfig) -> Result<RttOutcome, BenchError> {
    if config.payload_len < RTT_HEADER_LEN || config.payload_len > u16::MAX as usize {
        return Err(BenchError::Config(format!(
            "RTT payload of {} bytes: must be {RTT_HEADER_LEN}..=65535",
            config.payload_len
        )));
    }
    let socket = UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect(config.target).map(|()| s))
        .map_err(|e| BenchError::Io(format!("UDP socket to {}: {e}", config.target)))?;
    socket
        .set_nonblocking(config.wait == WaitMode::Spin)
        .map_err(|e| BenchError::Io(format!("configuring the UDP socket: {e}")))?;
    let mut probe = Probe {
        socket,
        epoch: Instant::now(),
        request: vec![0u8; config.payload_len],
        reply: vec![0u8; config.payload_len.max(RTT_HEADER_LEN) + 64],
        wait: config.wait,
        timeout: config.timeout,
    };
    let mut outcome = RttOutcome {
        histogram: new_histogram(),
        sent: 0,
        received: 0,
        lost: 0,
        warmup_lost: 0,
        discarded: 0,
        stopped_early: None,
    };
    let started = Instant::now();
    let total = config.warmup + config.samples;
    for seq in 0..total {
        if started.elapsed() >= config.max_duration {
            outcome.stopped_early = Some(format!(
                "time limit of {:?} reached after {seq} of {total} requests",
                config.max_duration
            ));
            break;
        }
        let measured = seq >= config.warmup;
        let result = probe.exchange(seq, &mut outcome.discarded)?;
        match (measured, result) {
            (true, ProbeResult::Answered(rtt)) => {
                outcome.sent += 1;
                outcome.received += 1;
                let us = (rtt.as_nanos() as u64 / 1000).clamp(HIST_LOWEST_US, HIST_HIGHEST_US);
                outcome.histogram.saturating_record(us);
            }
            (true, ProbeResult::Lost) => {
                outcome.sent += 1;
                outcome.lost += 1;
            }
            (false, ProbeResult::Lost) => outcome.warmup_lost += 1,
            (false, ProbeResult::Answered(_)) => {}
        }
        if outcome.lost + outcome.warmup_lost > config.max_losses {
            outcome.stopped_early = Some(format!(
                "more than {} requests lost (timeout {:?}): the echo path is not answering",
                config.max_losses, config.timeout
            ));
            break;
        }
    }
    Ok(outcome)
}

/// A kernel UDP echo server on its own thread in a namespace: the reference the RTT client is
/// checked against, and the "kernel stack" baseline row. Stops on [`KernelUdpEcho::stop`] or drop.
pub struct KernelUdpEcho {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<u64, BenchError>>>,
}

/// How often the echo thread re-checks its stop flag while idle.
const ECHO_IDLE_CHECK: Duration = Duration::from_millis(20);

impl KernelUdpEcho {
    /// Bind `0.0.0.0:port` inside `netns` and echo every datagram back to its sender.
    /// `spin`: non-blocking busy loop instead of blocking receive.
    pub fn spawn(
        netns: &str,
        port: u16,
        spin: bool,
        cpu: Option<usize>,
    ) -> Result<Self, BenchError> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), BenchError>>();
        let netns = netns.to_string();
        let thread = std::thread::Builder::new()
            .name("bench-udp-echo".into())
            .spawn(move || {
                let bound = super::netns::enter_netns(&netns).and_then(|()| {
                    if let Some(cpu) = cpu {
                        super::pin_current_thread(cpu);
                    }
                    let socket = UdpSocket::bind(("0.0.0.0", port)).map_err(|e| {
                        BenchError::Setup(format!("echo server on UDP port {port}: {e}"))
                    })?;
                    socket
                        .set_nonblocking(spin)
                        .and_then(|()| socket.set_read_timeout(Some(ECHO_IDLE_CHECK)))
                        .map_err(|e| {
                            BenchError::Setup(format!("echo server socket options: {e}"))
                        })?;
                    Ok(socket)
                });
                let socket = match bound {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.clone()));
                        return Err(e);
                    }
                };
                let mut buf = vec![0u8; 65536];
                let mut echoed = 0u64;
                while !stop_flag.load(Ordering::Relaxed) {
                    match socket.recv_from(&mut buf) {
                        Ok((len, from)) => {
                            if socket.send_to(&buf[..len], from).is_ok() {
                                echoed += 1;
                            }
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                ErrorKind::WouldBlock
                                    | ErrorKind::TimedOut
                                    | ErrorKind::Interrupted
                            ) => {}
                        Err(e) => return Err(BenchError::Io(format!("echo server receive: {e}"))),
                    }
                }
                Ok(echoed)
            })
            .map_err(|e| BenchError::Setup(format!("cannot spawn the echo thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(KernelUdpEcho {
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(BenchError::Setup(
                "the echo thread ended before binding".into(),
            )),
        }
    }

    /// Stop the server; returns how many datagrams it echoed.
    pub fn stop(mut self) -> Result<u64, BenchError> {
        self.stop_thread().unwrap_or(Ok(0))
    }

    fn stop_thread(&mut self) -> Option<Result<u64, BenchError>> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let thread = self.thread.take()?;
        Some(super::netns::join(thread))
    }
}

impl Drop for KernelUdpEcho {
    fn drop(&mut self) {
        let _ = self.stop_thread();
    }
}
