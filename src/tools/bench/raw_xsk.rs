//! The "physical limit" baseline: a raw AF_XDP socket (xsk-rs, copy mode on veth, no VM) doing
//! rxdrop, txonly or echo on one queue. libxdp loads its own default redirect program on bind
//! (no XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD) and detaches it when the socket is dropped.

use std::net::Ipv4Addr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig, XdpFlags,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, TxQueue, Umem};

use super::gen::rate;
use super::packet::{arp_reply_in_place, udp_echo_in_place, Mac};
use super::BenchError;
use crate::net::XdpMode;

/// UMEM frames (2 KiB each, enough for a 1514-byte frame after the headroom: 32 MiB in all,
/// fine for root with CAP_IPC_LOCK).
const UMEM_FRAMES: u32 = 16384;
/// UMEM frame size.
const UMEM_FRAME_SIZE: u32 = 2048;
/// Size of every ring (fill, completion, RX, TX): deep enough to ride out the socket thread
/// being descheduled for a few milliseconds at 500 kpps on a shared machine.
const RING_SIZE: u32 = 8192;
/// Descriptors moved per ring operation.
const BATCH: usize = 64;
/// How long one poll(2) waits in [`XskWait::Poll`] before limits are re-checked (ms).
const POLL_TIMEOUT_MS: i32 = 10;
/// How long a bind keeps retrying while the queue is still held by a just-closed socket.
const BIND_BUSY_RETRY: Duration = Duration::from_secs(3);

/// How the socket waits for work: the raw analogue of the guest's poll and irq modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XskWait {
    /// Spin on the rings (guest mode `poll`).
    Spin,
    /// Sleep in poll(2) until the RX ring has frames (guest mode `irq`).
    Poll,
}

/// Where and how to open the socket.
#[derive(Debug, Clone)]
pub struct RawXskConfig {
    pub ifname: String,
    pub queue: u32,
    /// Where libxdp attaches its redirect program (auto: native if the driver has it).
    pub attach: XdpMode,
    pub wait: XskWait,
}

/// When a run stops: whichever limit is reached first.
#[derive(Debug, Clone, Copy)]
pub struct XskLimits {
    pub max_frames: u64,
    pub max_duration: Duration,
    /// Stop when nothing arrived for this long after the first frame (rxdrop, echo).
    pub idle_timeout: Option<Duration>,
}

/// Kernel-side socket counters (XDP_STATISTICS): frames lost before user space saw them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct XskKernelDrops {
    /// Dropped for lack of memory / other reasons (rx_dropped).
    pub rx_dropped: u64,
    /// Dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a frame arrived (each drops a frame).
    pub fill_ring_empty: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
}

/// What one run did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct XskOutcome {
    /// rxdrop: frames received; txonly: frames completed (sent); echo: frames echoed.
    pub frames: u64,
    /// Frames received that were not echoed (not UDP/IPv4 nor an ARP request for us).
    pub ignored: u64,
    /// ARP requests answered (echo).
    pub arp_replies: u64,
    /// Frames to send that did not fit in the TX ring (dropped by us, counted here).
    pub tx_ring_full: u64,
    pub kernel: XskKernelDrops,
    /// First to last counted frame.
    pub active: Duration,
    pub elapsed: Duration,
    /// `frames / active` (rxdrop, echo) or `frames / elapsed` (txonly).
    pub pps: f64,
}

/// An open AF_XDP socket with its UMEM and all four rings.
pub struct RawXsk {
    umem: Umem,
    fill: FillQueue,
    comp: CompQueue,
    tx: TxQueue,
    rx: RxQueue,
    free: Vec<FrameDesc>,
    wait: XskWait,
    ifname: String,
}

fn xsk_err(what: &str, ifname: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(format!("AF_XDP on {ifname}: {what}: {e}"))
}

fn is_busy(e: &xsk_rs::socket::SocketCreateError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .and_then(std::io::Error::raw_os_error)
        == Some(libc::EBUSY)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl RawXsk {
    /// Create the UMEM, bind the socket to `config.ifname` queue `config.queue` in the calling
    /// thread's network namespace (libxdp loads its default program), prime the fill ring.
    pub fn open(config: &RawXskConfig) -> Result<Self, BenchError> {
        let name = config.ifname.as_str();
        let ring = QueueSize::new(RING_SIZE).map_err(|e| xsk_err("ring size", name, e))?;
        let frame_size =
            FrameSize::new(UMEM_FRAME_SIZE).map_err(|e| xsk_err("frame size", name, e))?;
        let umem_config = UmemConfig::builder()
            .frame_size(frame_size)
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .build()
            .map_err(|e| xsk_err("UMEM config", name, e))?;
        let frames = NonZeroU32::new(UMEM_FRAMES).unwrap_or(NonZeroU32::MIN);
        let (umem, descs) = Umem::new(umem_config, frames, false)
            .map_err(|e| xsk_err("creating the UMEM (memlock limit?)", name, error_chain(&e)))?;
        let xdp_flags = match config.attach {
            XdpMode::Auto => XdpFlags::empty(),
            XdpMode::Native => XdpFlags::XDP_FLAGS_DRV_MODE,
            XdpMode::Generic => XdpFlags::XDP_FLAGS_SKB_MODE,
        };
        let socket_config = SocketConfig::builder()
            .rx_queue_size(ring)
            .tx_queue_size(ring)
            .libxdp_flags(LibxdpFlags::empty())
            .xdp_flags(xdp_flags)
            .bind_flags(BindFlags::XDP_COPY)
            .build();
        let ifname: Interface = name
            .parse()
            .map_err(|e| xsk_err("interface name", name, e))?;
        // A socket closed just before leaves the queue busy until the kernel's deferred pool
        // release has run: retry EBUSY for a short while.
        let busy_until = Instant::now() + BIND_BUSY_RETRY;
        let (tx, rx, rings) = loop {
            // SAFETY: the UMEM is fresh and not shared with any other socket, so the shared-UMEM
            // precondition of Socket::new does not apply.
            let bound = unsafe { xsk_rs::Socket::new(socket_config, &umem, &ifname, config.queue) };
            match bound {
                Ok(parts) => break parts,
                Err(e) if is_busy(&e) && Instant::now() < busy_until => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    return Err(xsk_err(
                        "binding the socket with libxdp's default program (needs root, a kernel \
                         with XDP sockets, and libxdp able to load its program)",
                        name,
                        error_chain(&e),
                    ))
                }
            }
        };
        let (fill, comp) = rings.ok_or_else(|| {
            xsk_err(
                "binding",
                name,
                "libxdp returned no fill/completion ring for a fresh UMEM",
            )
        })?;
        let mut xsk = RawXsk {
            umem,
            fill,
            comp,
            tx,
            rx,
            free: descs,
            wait: config.wait,
            ifname: name.to_string(),
        };
        xsk.refill();
        Ok(xsk)
    }

    /// Give free frames to the fill ring, keeping `BATCH * 2` back for TX.
    fn refill(&mut self) {
        let keep = BATCH * 2;
        if self.free.len() <= keep {
            return;
        }
        // libxdp's reserve is all-or-nothing: offer BATCH-sized chunks until the ring is full.
        while self.free.len() >= keep + BATCH {
            let start = self.free.len() - BATCH;
            // SAFETY: every descriptor in `free` belongs to this socket's UMEM and is owned by us
            // (not in any ring).
            let given = unsafe { self.fill.produce(&self.free[start..]) };
            if given == 0 {
                return;
            }
            // The descriptors handed over are the kernel's now.
            self.free.truncate(start);
        }
    }

    /// Frames handed back by the kernel after transmission return to the free pool.
    fn reclaim_completions(&mut self) -> u64 {
        let mut done = [FrameDesc::default(); BATCH];
        let mut total = 0u64;
        loop {
            // SAFETY: the completion ring only holds frames of this UMEM.
            let n = unsafe { self.comp.consume(&mut done) };
            self.free.extend_from_slice(&done[..n]);
            total += n as u64;
            if n < BATCH {
                return total;
            }
        }
    }

    fn wait_for_rx(&mut self) -> Result<(), BenchError> {
        if self.wait == XskWait::Poll {
            self.rx
                .poll(POLL_TIMEOUT_MS)
                .map_err(|e| xsk_err("poll", &self.ifname, e))?;
        }
        Ok(())
    }

    /// Kernel drop counters since the socket was opened.
    pub fn kernel_drops(&self) -> XskKernelDrops {
        match self.rx.fd().xdp_statistics() {
            Ok(s) => XskKernelDrops {
                rx_dropped: s.rx_dropped(),
                rx_ring_full: s.rx_ring_full(),
                fill_ring_empty: s.rx_fill_ring_empty_descs(),
                rx_invalid_descs: s.rx_invalid_descs(),
                tx_invalid_descs: s.tx_invalid_descs(),
            },
            Err(_) => XskKernelDrops::default(),
        }
    }

    /// Send `descs` (frames of this UMEM, owned by us) and kick the kernel: in copy mode the
    /// transmission happens inside this sendto(). Frames that do not fit return to the pool.
    fn transmit(
        &mut self,
        descs: &[FrameDesc],
        outcome: &mut XskOutcome,
    ) -> Result<usize, BenchError> {
        // SAFETY: the descriptors are frames of this UMEM that no ring holds.
        let queued = unsafe { self.tx.produce(descs) };
        if queued < descs.len() {
            outcome.tx_ring_full += (descs.len() - queued) as u64;
            self.free.extend_from_slice(&descs[queued..]);
        }
        self.tx
            .wakeup()
            .map_err(|e| xsk_err("TX kick (sendto)", &self.ifname, e))?;
        Ok(queued)
    }

    /// Receive and drop (count) frames.
    pub fn rxdrop(
        &mut self,
        limits: &XskLimits,
        stop: &AtomicBool,
    ) -> Result<XskOutcome, BenchError> {
        self.serve(limits, stop, None)
    }

    /// Echo UDP/IPv4 frames back (MACs, IPs and ports swapped, UDP checksum zeroed) and answer ARP
    /// requests for `ip` with `mac`, so a peer kernel can reach it.
    pub fn echo(
        &mut self,
        mac: Mac,
        ip: Ipv4Addr,
        limits: &XskLimits,
        stop: &AtomicBool,
    ) -> Result<XskOutcome, BenchError> {
        self.serve(limits, stop, Some((mac, ip)))
    }

    fn serve(
        &mut self,
        limits: &XskLimits,
        stop: &AtomicBool,
        echo_as: Option<(Mac, Ipv4Addr)>,
    ) -> Result<XskOutcome, BenchError> {
        let started = Instant::now();
        let mut outcome = empty_outcome();
        let mut first: Option<Instant> = None;
        let mut last = started;
        let mut received = [FrameDesc::default(); BATCH];
        let mut to_send: Vec<FrameDesc> = Vec::with_capacity(BATCH);
        let mut spins = 0u32;
        while outcome.frames < limits.max_frames {
            spins = spins.wrapping_add(1);
            if spins % 1024 == 0 || self.wait == XskWait::Poll {
                let now = Instant::now();
                if now.duration_since(started) >= limits.max_duration
                    || stop.load(Ordering::Relaxed)
                    || limits
                        .idle_timeout
                        .is_some_and(|idle| first.is_some() && now.duration_since(last) >= idle)
                {
                    break;
                }
            }
            self.reclaim_completions();
            self.refill();
            self.wait_for_rx()?;
            let want = ((limits.max_frames - outcome.frames) as usize).clamp(1, BATCH);
            // SAFETY: `received` are scratch descriptors the RX ring fills with frames of this UMEM.
            let n = unsafe { self.rx.consume(&mut received[..want]) };
            if n == 0 {
                std::hint::spin_loop();
                continue;
            }
            let now = Instant::now();
            first.get_or_insert(now);
            last = now;
            let Some((mac, ip)) = echo_as else {
                outcome.frames += n as u64;
                self.free.extend_from_slice(&received[..n]);
                continue;
            };
            to_send.clear();
            for desc in received.iter_mut().take(n) {
                // SAFETY: the frame came off our RX ring, so we own it until we pass it on.
                let mut data = unsafe { self.umem.data_mut(desc) };
                let bytes = data.contents_mut();
                if udp_echo_in_place(bytes) {
                    to_send.push(*desc);
                } else if arp_reply_in_place(bytes, &mac, ip) {
                    outcome.arp_replies += 1;
                    to_send.push(*desc);
                } else {
                    outcome.ignored += 1;
                    self.free.push(*desc);
                }
            }
            let sent = self.transmit(&to_send.clone(), &mut outcome)?;
            outcome.frames += sent as u64;
        }
        outcome.elapsed = started.elapsed();
        outcome.active = first.map_or(Duration::ZERO, |f| last.duration_since(f));
        outcome.pps = rate(outcome.frames.saturating_sub(1), outcome.active);
        outcome.kernel = self.kernel_drops();
        Ok(outcome)
    }

    /// Transmit copies of `frame` (a complete Ethernet frame without FCS) as fast as the TX ring
    /// and the kick allow; `frames` in the outcome counts completed transmissions.
    pub fn txonly(
        &mut self,
        frame: &[u8],
        limits: &XskLimits,
        stop: &AtomicBool,
    ) -> Result<XskOutcome, BenchError> {
        let started = Instant::now();
        let mut outcome = empty_outcome();
        let mut submitted = 0u64;
        let mut batch: Vec<FrameDesc> = Vec::with_capacity(BATCH);
        loop {
            outcome.frames += self.reclaim_completions();
            let now = Instant::now();
            if outcome.frames >= limits.max_frames
                || now.duration_since(started) >= limits.max_duration
                || stop.load(Ordering::Relaxed)
            {
                break;
            }
            let want = (limits.max_frames - submitted).min(BATCH as u64) as usize;
            batch.clear();
            while batch.len() < want {
                let Some(mut desc) = self.free.pop() else {
                    break;
                };
                // SAFETY: the frame is in the free pool, so no ring holds it.
                let mut data = unsafe { self.umem.data_mut(&mut desc) };
                let mut cursor = data.cursor();
                cursor.set_pos(0);
                if std::io::Write::write_all(&mut cursor, frame).is_err() {
                    return Err(BenchError::Config(format!(
                        "a {}-byte frame does not fit a UMEM frame",
                        frame.len()
                    )));
                }
                batch.push(desc);
            }
            if batch.is_empty() {
                // Everything is in flight: kick so copy mode completes some.
                self.tx
                    .wakeup()
                    .map_err(|e| xsk_err("TX kick (sendto)", &self.ifname, e))?;
                continue;
            }
            submitted += self.transmit(&batch.clone(), &mut outcome)? as u64;
        }
        // Let what is in flight complete so the next user starts with a full pool.
        let drain_until = Instant::now() + Duration::from_millis(100);
        while submitted > outcome.frames && Instant::now() < drain_until {
            let _ = self.tx.wakeup();
            outcome.frames += self.reclaim_completions();
        }
        outcome.elapsed = started.elapsed();
        outcome.active = outcome.elapsed;
        outcome.pps = rate(outcome.frames, outcome.elapsed);
        outcome.kernel = self.kernel_drops();
        Ok(outcome)
    }
}

fn empty_outcome() -> XskOutcome {
    XskOutcome {
        frames: 0,
        ignored: 0,
        arp_replies: 0,
        tx_ring_full: 0,
        kernel: XskKernelDrops::default(),
        active: Duration::ZERO,
        elapsed: Duration::ZERO,
        pps: 0.0,
    }
}

/// What a raw socket thread does.
#[derive(Debug, Clone)]
pub enum XskJob {
    RxDrop,
    Echo { mac: Mac, ip: Ipv4Addr },
    TxOnly { frame: Vec<u8> },
}

/// A raw AF_XDP socket working on its own thread inside a namespace.
pub struct RawXskHandle {
    /// The socket thread's id (its CPU time: [`super::cpu::thread_cpu`] with this process's pid).
    pub tid: u32,
    stop: std::sync::Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<XskOutcome, BenchError>>,
}

impl RawXskHandle {
    /// Ask the job to stop now (it also stops at its limits).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Wait for the job to end by itself.
    pub fn finish(self) -> Result<XskOutcome, BenchError> {
        super::netns::join(self.thread)
    }

    /// Stop the job and return its outcome; the socket (and libxdp's program) are gone after this.
    pub fn stop_and_finish(self) -> Result<XskOutcome, BenchError> {
        self.stop();
        self.finish()
    }
}

/// Open a raw socket on `config.ifname` inside `netns` (thread pinned to `cpu` if given) and start
/// `job` with `limits`. Returns once the socket is bound and the fill ring primed (for `TxOnly`:
/// once it started sending), so traffic sent afterwards is seen.
pub fn spawn_raw_xsk(
    netns: &str,
    config: RawXskConfig,
    cpu: Option<usize>,
    job: XskJob,
    limits: XskLimits,
) -> Result<RawXskHandle, BenchError> {
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<u32, BenchError>>();
    let netns = netns.to_string();
    let thread = std::thread::Builder::new()
        .name("bench-raw-xsk".into())
        .spawn(move || {
            let opened = super::netns::enter_netns(&netns).and_then(|()| {
                if let Some(cpu) = cpu {
                    super::pin_current_thread(cpu);
                }
                RawXsk::open(&config)
            });
            let mut xsk = match opened {
                Ok(x) => {
                    let _ = ready_tx.send(Ok(super::cpu::current_tid()));
                    x
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.clone()));
                    return Err(e);
                }
            };
            match job {
                XskJob::RxDrop => xsk.rxdrop(&limits, &stop_flag),
                XskJob::Echo { mac, ip } => xsk.echo(mac, ip, &limits, &stop_flag),
                XskJob::TxOnly { frame } => xsk.txonly(&frame, &limits, &stop_flag),
            }
        })
        .map_err(|e| BenchError::Setup(format!("cannot spawn the raw XSK thread: {e}")))?;
    match ready_rx.recv() {
        Ok(Ok(tid)) => Ok(RawXskHandle { tid, stop, thread }),

        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(super::netns::join(thread).err().unwrap_or_else(|| {
            BenchError::Setup("the raw XSK thread ended before binding".into())
        })),
    }
}
