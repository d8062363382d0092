//! Raw-frame load on AF_PACKET: a generator that sends 64-byte UDP frames with `sendmmsg` batches
//! (bounded by count and time, optional pacing) and a counter that receives with `recvmmsg` and
//! counts frames matching a filter. Both work in the calling thread's network namespace.

use std::io;
use std::mem;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use super::netns::{enter_netns, join};
use super::packet::{build_udp_frame, parse_udp, Mac, UdpFlow};
use super::BenchError;

/// Frames handed to the kernel per `sendmmsg`/`recvmmsg` call.
pub const DEFAULT_BATCH: usize = 64;
/// Receive buffer per frame (anything larger is truncated; we only look at headers).
const RX_SLOT_LEN: usize = 2048;
/// Socket buffer asked for on both sides, so bursts are not dropped in the socket.
const SOCKET_BUFFER_BYTES: libc::c_int = 8 << 20;
/// How long one `recvmmsg` may block before the counter re-checks its limits.
const RX_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// `sll_pkttype` of frames this host sent (seen by ETH_P_ALL sockets; never counted).
const PACKET_OUTGOING: u8 = 4;

/// Open an AF_PACKET raw socket bound to `ifname` receiving `protocol` (network order; 0: none).
fn packet_socket(ifname: &str, protocol: u16) -> Result<OwnedFd, BenchError> {
    let index = crate::net::nic::ifindex(ifname).map_err(|e| BenchError::Setup(e.to_string()))?;
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, libc::c_int::from(protocol)) };
    if raw < 0 {
        return Err(BenchError::Setup(format!(
            "AF_PACKET socket: {} (needs root / CAP_NET_RAW)",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: `raw` is a freshly created descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid starting value.
    let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol;
    addr.sll_ifindex = index as i32;
    // SAFETY: `addr` is a valid sockaddr_ll and the length passed matches it.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(BenchError::Setup(format!(
            "binding AF_PACKET socket to {ifname}: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(fd)
}

fn set_int_opt(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> bool {
    // SAFETY: `value` is a live c_int and its size is passed.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// What the generator sends.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Interface (in the caller's namespace) the frames leave by.
    pub ifname: String,
    /// Addresses of the frames (destination MAC decides who takes them).
    pub flow: UdpFlow,
    /// UDP payload bytes; [`super::packet::MIN_FRAME_UDP_PAYLOAD`] makes 64-byte frames.
    pub payload_len: usize,
    /// Stop after this many frames were handed to the kernel...
    pub count: u64,
    /// ...or after this long, whichever comes first.
    pub max_duration: Duration,
    /// Pace to this rate (frames per second); `None`: as fast as possible.
    pub rate_pps: Option<u64>,
    /// Frames per `sendmmsg`.
    pub batch: usize,
}

/// What the generator achieved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenOutcome {
    /// Frames the kernel accepted.
    pub sent: u64,
    /// Frames the kernel refused (ENOBUFS/EAGAIN from a full device queue): dropped at the sender.
    pub refused: u64,
    pub elapsed: Duration,
    /// `sent / elapsed`.
    pub offered_pps: f64,
}

/// Send `config.count` frames (or as many as fit in `config.max_duration`) from the calling
/// thread's namespace.
pub fn run_generator(config: &GenConfig) -> Result<GenOutcome, BenchError> {
    let fd = packet_socket(&config.ifname, 0)?;
    // Best effort: bypassing the qdisc makes the sender cheaper; it still works without.
    let _ = set_int_opt(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1);
    let _ = set_int_opt(
        &fd,
        libc::SOL_SOCKET,
        libc::SO_SNDBUFFORCE,
        SOCKET_BUFFER_BYTES,
    );
    let frame = build_udp_frame(&config.flow, &vec![0u8; config.payload_len]);
    let batch = config.batch.clamp(1, 1024);
    let mut iov = libc::iovec {
        iov_base: frame.as_ptr() as *mut libc::c_void,
        iov_len: frame.len(),
    };
    // SAFETY: mmsghdr is plain data; zero is a valid value (no name, no control).
    let mut msgs: Vec<libc::mmsghdr> = (0..batch).map(|_| unsafe { mem::zeroed() }).collect();
    for msg in &mut msgs {
        msg.msg_hdr.msg_iov = &mut iov;
        msg.msg_hdr.msg_iovlen = 1;
    }
    let started = Instant::now();
    let deadline = started + config.max_duration;
    let mut outcome = GenOutcome {
        sent: 0,
        refused: 0,
        elapsed: Duration::ZERO,
        offered_pps: 0.0,
    };
    while outcome.sent < config.count {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if let Some(rate) = config.rate_pps.filter(|r| *r > 0) {
            let due = started + Duration::from_secs_f64(outcome.sent as f64 / rate as f64);
            if due > now {
                thread::sleep((due - now).min(deadline - now));
                continue;
            }
        }
        let want = (config.count - outcome.sent).min(batch as u64) as usize;
        let want = if config.rate_pps.is_some() { 1 } else { want };
        // SAFETY: `msgs[..want]` are initialised headers pointing at `iov`, which points at
        // `frame`; all outlive the call.
        let rc = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), want as u32, 0) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ENOBUFS) | Some(libc::EAGAIN) => {
                    outcome.refused += 1;
                    thread::yield_now();
                }
                Some(libc::EINTR) => {}
                _ => {
                    return Err(BenchError::Io(format!(
                        "sendmmsg on {}: {err}",
                        config.ifname
                    )))
                }
            }
        } else {
            outcome.sent += rc as u64;
        }
    }
    outcome.elapsed = started.elapsed();
    outcome.offered_pps = rate(outcome.sent, outcome.elapsed);
    Ok(outcome)
}

/// Frames per second, 0 for an empty interval.
pub fn rate(frames: u64, over: Duration) -> f64 {
    let secs = over.as_secs_f64();
    if secs > 0.0 {
        frames as f64 / secs
    } else {
        0.0
    }
}

/// Which received frames count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameFilter {
    /// IPv4/UDP to this destination port only.
    pub udp_dst_port: Option<u16>,
    /// To this destination MAC only.
    pub dst_mac: Option<Mac>,
    /// From this source IPv4 address only.
    pub src_ip: Option<Ipv4Addr>,
}

impl FrameFilter {
    /// Whether `frame` passes. A filter with no fields set passes every frame.
    pub fn matches(&self, frame: &[u8]) -> bool {
        if let Some(mac) = self.dst_mac {
            if frame.len() < 6 || frame[..6] != mac {
                return false;
            }
        }
        if self.udp_dst_port.is_none() && self.src_ip.is_none() {
            return true;
        }
        match parse_udp(frame) {
            Some(view) => {
                self.udp_dst_port.map_or(true, |p| p == view.flow.dst_port)
                    && self.src_ip.map_or(true, |ip| ip == view.flow.src_ip)
            }
            None => false,
        }
    }
}

/// When the counter stops.
#[derive(Debug, Clone)]
pub struct CountConfig {
    pub filter: FrameFilter,
    /// Stop once this many frames matched.
    pub expected: Option<u64>,
    /// Stop after this long in any case.
    pub max_duration: Duration,
    /// Stop when nothing matched for this long after the first match.
    pub idle_timeout: Duration,
    /// Stop once traffic has flowed this long (first match to now): a rate phase of fixed length
    /// that starts whenever the sender does.
    pub max_active: Option<Duration>,
}

/// What the counter saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CountOutcome {
    /// Frames that passed the filter.
    pub matched: u64,
    /// Incoming frames that did not.
    pub other: u64,
    /// Frames the kernel dropped at this socket (PACKET_STATISTICS tp_drops): receiver overload.
    pub socket_drops: u64,
    /// From the first to the last matched frame.
    pub active: Duration,
    /// `matched / active`: the delivered rate while traffic flowed.
    pub pps: f64,
}

/// A bound AF_PACKET receive socket that counts frames.
pub struct FrameCounter {
    fd: OwnedFd,
}

impl FrameCounter {
    /// Bind to `ifname` in the calling thread's namespace. Frames arriving after this returns
    /// are seen by [`FrameCounter::count`].
    pub fn open(ifname: &str) -> Result<Self, BenchError> {
        let fd = packet_socket(ifname, (libc::ETH_P_ALL as u16).to_be())?;
        let _ = set_int_opt(
            &fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            SOCKET_BUFFER_BYTES,
        );
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: RX_POLL_INTERVAL.as_micros() as libc::suseconds_t,
        };
        // SAFETY: `timeout` is a live timeval and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(BenchError::Setup(format!(
                "SO_RCVTIMEO on the counter socket: {}",
                io::Error::last_os_error()
            )));
        }
        let counter = FrameCounter { fd };
        counter.take_socket_drops(); // reset the kernel's counters
        Ok(counter)
    }

    fn take_socket_drops(&self) -> u64 {
        // SAFETY: tpacket_stats is plain data.
        let mut stats: libc::tpacket_stats = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `stats` and `len` are live and `len` is its size.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut stats as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            u64::from(stats.tp_drops)
        } else {
            0
        }
    }

    /// Count until a limit in `config` is reached or `stop` is set.
    pub fn count(
        &mut self,
        config: &CountConfig,
        stop: &AtomicBool,
    ) -> Result<CountOutcome, BenchError> {
        let mut bufs = vec![[0u8; RX_SLOT_LEN]; DEFAULT_BATCH];
        // SAFETY: sockaddr_ll is plain data; zero is valid.
        let mut names: Vec<libc::sockaddr_ll> = (0..DEFAULT_BATCH)
            .map(|_| unsafe { mem::zeroed() })
            .collect();
        let mut iovs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: RX_SLOT_LEN,
            })
            .collect();
        // SAFETY: mmsghdr is plain data; zero is valid.
        let mut msgs: Vec<libc::mmsghdr> = (0..DEFAULT_BATCH)
            .map(|_| unsafe { mem::zeroed() })
            .collect();
        let started = Instant::now();
        let mut outcome = CountOutcome {
            matched: 0,
            other: 0,
            socket_drops: 0,
            active: Duration::ZERO,
            pps: 0.0,
        };
        let mut first: Option<Instant> = None;
        let mut last = started;
        loop {
            let now = Instant::now();
            let done = config.expected.is_some_and(|n| outcome.matched >= n)
                || now.duration_since(started) >= config.max_duration
                || first.is_some() && now.duration_since(last) >= config.idle_timeout
                || first
                    .zip(config.max_active)
                    .is_some_and(|(f, a)| now.duration_since(f) >= a)
                || stop.load(Ordering::Relaxed);
            if done {
                break;
            }
            for i in 0..DEFAULT_BATCH {
                msgs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_ll).cast();
                msgs[i].msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_ll>() as u32;
                msgs[i].msg_hdr.msg_iov = &mut iovs[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: every header points at its own live name and iovec, each iovec at its own
            // live buffer of RX_SLOT_LEN bytes; a null timeout means "use SO_RCVTIMEO".
            let rc = unsafe {
                libc::recvmmsg(
                    self.fd.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    DEFAULT_BATCH as u32,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if rc < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                    _ => return Err(BenchError::Io(format!("recvmmsg on the counter: {err}"))),
                }
            }
            let received_at = Instant::now();
            for i in 0..rc as usize {
                if names[i].sll_pkttype == PACKET_OUTGOING {
                    continue;
                }
                let len = (msgs[i].msg_len as usize).min(RX_SLOT_LEN);
                if config.filter.matches(&bufs[i][..len]) {
                    outcome.matched += 1;
                    first.get_or_insert(received_at);
                    last = received_at;
                } else {
                    outcome.other += 1;
                }
            }
        }
        outcome.socket_drops = self.take_socket_drops();
        outcome.active = first.map_or(Duration::ZERO, |f| last.duration_since(f));
        outcome.pps = rate(outcome.matched.saturating_sub(1), outcome.active);
        Ok(outcome)
    }
}

/// A counter running on its own thread in a namespace.
pub struct CounterHandle {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Result<CountOutcome, BenchError>>,
}

impl CounterHandle {
    /// Ask the counter to stop now (it also stops by itself at its limits).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Wait for the counter to stop by itself and return what it counted.
    pub fn finish(self) -> Result<CountOutcome, BenchError> {
        join(self.thread)
    }

    /// Stop the counter and return what it counted.
    pub fn stop_and_finish(self) -> Result<CountOutcome, BenchError> {
        self.stop();
        self.finish()
    }
}

/// Start a counter on `ifname` inside `netns`, pinned to `cpu` if given; returns once the socket
/// is bound, so frames sent afterwards are counted.
pub fn spawn_counter(
    netns: &str,
    ifname: &str,
    cpu: Option<usize>,
    config: CountConfig,
) -> Result<CounterHandle, BenchError> {
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), BenchError>>();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    let netns = netns.to_string();
    let ifname = ifname.to_string();
    let thread = thread::Builder::new()
        .name("bench-counter".into())
        .spawn(move || {
            let opened = enter_netns(&netns).and_then(|()| {
                if let Some(cpu) = cpu {
                    super::pin_current_thread(cpu);
                }
                FrameCounter::open(&ifname)
            });
            let mut counter = match opened {
                Ok(c) => {
                    let _ = ready_tx.send(Ok(()));
                    c
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.clone()));
                    return Err(e);
                }
            };
            counter.count(&config, &stop_flag)
        })
        .map_err(|e| BenchError::Setup(format!("cannot spawn the counter thread: {e}")))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(CounterHandle { stop, thread }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(join(thread).err().unwrap_or_else(|| {
            BenchError::Setup("the counter thread ended before binding".into())
        })),
    }
}
