//! The I/O thread: moves frames between the backend and the NIC model without waiting for a guest
//! exit. It sleeps in epoll on the backend's fd, the NIC kick eventfd (register writes that ask for
//! TX or RX work) and a stop eventfd. RX takes only as many frames as the guest ring has free
//! descriptors (`rx_room`); the rest stay queued in the backend, and with a full ring the backend fd
//! is parked until the guest returns descriptors (kick) or a short retry timeout.
//!
//! TX ring polling (the chip polls its ring when TXON and not DPOLL): after any activity the thread
//! spins for `busy_poll`, then sleeps until TDMD (kick) or backend traffic, with a slow safety poll
//! every [`TX_POLL_IDLE_MS`] like the real chip's own poll timer. A guest that does not write TDMD
//! (the test guest's `kick=0|lazy`) is served by this poll alone: no exit per frame.
//!
//! Spinning costs no system call per pass when the backend can see its RX rings itself
//! (`rx_pending`: AF_XDP reads the XSK RX ring's producer index): a pass walks the TX ring, reads
//! the RX rings and takes the NIC lock once; epoll (stop, kicks, the local bridge's TAP) is checked
//! every [`SPIN_EPOLL_EVERY`] passes, the backend reaped every [`REAP_EVERY`], the clock read every
//! [`SPIN_CLOCK_EVERY`] idle passes. A backend that cannot tell (TAP) is polled through epoll with a
//! zero timeout on every spinning pass. A spinning pass that sent frames yields the core
//! (`sched_yield`): a receiver those frames woke on the same core would otherwise wait until the
//! spinning thread's time slice or busy budget ends.
//!
//! A backend whose fd reports an error or hang-up (its TAP device was deleted) is dropped from the
//! poll set at once (epoll would report it forever: a 100% CPU spin), the model's link goes down
//! (TX frames come back with LCAR, counted by the model) and `backend_lost` is counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::error::IoThreadError;
use super::nic::NetShared;
use super::stats::ExitStats;

/// Epoll tokens.
const TOKEN_KICK: u64 = 1;
const TOKEN_BACKEND: u64 = 2;
const TOKEN_STOP: u64 = 3;
/// Events on the backend fd that mean it is gone (a deleted TAP device reports EPOLLERR forever).
const BACKEND_FAILED: EventSet = EventSet::ERROR.union(EventSet::HANG_UP);
/// Idle TX poll period while the chip has TX polling on (the real chip polls about every 1.6 ms).
pub const TX_POLL_IDLE_MS: i32 = 2;
/// Retry period for pending RX frames while the guest ring is full, and for TX frames the backend
/// had no buffer for.
const RETRY_MS: i32 = 1;
/// Frames one pass moves into the guest ring at most (so `rx_room` scans no more descriptors than
/// that, not the whole ring: the test guest's has 512).
const RX_PASS_MAX: usize = 64;
/// While spinning: passes between two epoll checks (stop, kicks, descriptors the backend cannot
/// report through `rx_pending`, e.g. the local bridge's TAP).
const SPIN_EPOLL_EVERY: u32 = 16;
/// While spinning: idle passes between two reads of the clock for the busy budget.
const SPIN_CLOCK_EVERY: u32 = 8;
/// While spinning: passes between two backend reaps.
const REAP_EVERY: u32 = 32;
/// While spinning: how long (spin-loop hints) a pass waits for a thread blocked on the NIC lock
/// to take it first.
const HANDOFF_SPINS: u32 = 20_000;

/// Tuning of the I/O thread.
#[derive(Clone, Copy, Debug)]
pub struct IoTuning {
    /// How long to busy-poll the TX ring after the last frame moved.
    pub busy_poll: Duration,
}

impl Default for IoTuning {
    fn default() -> Self {
        Self {
            busy_poll: Duration::from_micros(50),
        }
    }
}

/// Runs until `stop` is signalled. Errors from epoll end the thread.
pub fn run_io_thread(
    net: Arc<NetShared>,
    mem: GuestMemoryMmap,
    stop: EventFd,
    stats: Arc<ExitStats>,
    tuning: IoTuning,
) -> Result<(), IoThreadError> {
    let epoll = Epoll::new().map_err(IoThreadError::epoll("epoll_create"))?;
    let add = |fd, token| {
        epoll
            .ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
            .map_err(IoThreadError::epoll("epoll_ctl"))
    };
    use std::os::fd::AsRawFd;
    add(net.kick.as_raw_fd(), TOKEN_KICK)?;
    add(stop.as_raw_fd(), TOKEN_STOP)?;
    let backend_fd = net.lock().backend.as_ref().map(|b| b.poll_fd());
    if let Some(fd) = backend_fd {
        add(fd, TOKEN_BACKEND)?;
    }
    let mut backend_parked = false;
    let mut backend_lost = false;
    let mut events = vec![EpollEvent::default(); 8];
    // What the previous pass saw under the lock (the next pass decides its wait from it).
    let (mut tx_polling, mut tx_blocked) = {
        let state = net.lock();
        (state.nic.tx_polling(), state.tx_blocked)
    };
    // The backend answers `rx_pending` (no system call needed to see RX frames while spinning).
    let mut rx_hint = false;
    let mut spin = SpinState::default();
    loop {
        let tx_inline = net.tx_inline;
        let busy = spin.busy(tuning.busy_poll) && tx_polling;
        // While busy, a pass reads no descriptor but the rings: epoll only every
        // SPIN_EPOLL_EVERY passes (stop, kicks, the local bridge's TAP), or every pass when the
        // backend cannot report RX itself.
        let skip_epoll = busy && rx_hint && !spin.epoll_due();
        let n = if skip_epoll {
            0
        } else {
            let timeout = if busy {
                0
            } else if backend_parked || tx_blocked {
                RETRY_MS
            } else if tx_polling {
                TX_POLL_IDLE_MS
            } else {
                -1
            };
            match epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                Err(e) => return Err(IoThreadError::epoll("epoll_wait")(e)),
            }
        };
        let (mut kicked, mut rx_ready, mut lost) = (false, false, false);
        for ev in &events[..n] {
            match ev.data() {
                TOKEN_STOP => return Ok(()),
                TOKEN_KICK => {
                    let _ = net.kick.read();
                    kicked = true;
                }
                TOKEN_BACKEND if ev.event_set().intersects(BACKEND_FAILED) => lost = true,
                TOKEN_BACKEND => rx_ready = true,
                _ => {}
            }
        }
        if n > 0 {
            stats
                .io_wakeups
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if skip_epoll {
            // Back to back passes re-take the lock within nanoseconds, before a vCPU woken from
            // its futex can: let a waiting register access in first.
            let mut waited = 0;
            while net.contended() && waited < HANDOFF_SPINS {
                std::hint::spin_loop();
                waited += 1;
            }
        }
        let mut state = net.lock();
        if lost && !backend_lost {
            // Error and hang-up are reported whatever the interest set, so only removing the fd
            // stops the wake-ups.
            if let Some(fd) = backend_fd {
                let _ = epoll.ctl(ControlOperation::Delete, fd, EpollEvent::default());
            }
            backend_lost = true;
            backend_parked = false;
            rx_ready = false;
            state.lose_backend();
            stats
                .backend_lost
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                "the network backend failed (device removed?): link down, polling stopped"
            );
        }
        let mut moved = 0;
        let mut sent = 0;
        let walk_tx = (kicked && !tx_inline) || tx_polling || tx_blocked;
        if walk_tx {
            sent = state.walk_tx(&mem);
            moved += sent;
        }
        let super::nic::NetState { nic, backend, .. } = &mut *state;
        if let Some(backend) = backend.as_mut().filter(|_| !backend_lost) {
            // Reaping (TX completions, link state, stats publication) is bookkeeping: every
            // pass that slept in epoll, every REAP_EVERY passes while spinning.
            if !busy || spin.reap_due() {
                backend.reap();
            }
            let hint = backend.rx_pending();
            rx_hint = hint.is_some();
            if rx_ready || backend_parked || kicked || hint == Some(true) {
                let room = nic.rx_room_up_to(&mem, RX_PASS_MAX);
                if room > 0 {
                    match backend.recv_batch(room, &mut |frame| nic.receive(&mem, frame)) {
                        Ok(got) => moved += got,
                        Err(e) => tracing::warn!("backend receive failed: {e}"),
                    }
                }
                let park = room == 0 && (rx_ready || backend_parked || hint == Some(true));
                if park != backend_parked {
                    if let Some(fd) = backend_fd {
                        let events = if park {
                            EventSet::empty()
                        } else {
                            EventSet::IN
                        };
                        let _ = epoll.ctl(
                            ControlOperation::Modify,
                            fd,
                            EpollEvent::new(events, TOKEN_BACKEND),
                        );
                    }
                    backend_parked = park;
                }
            }
        }
        tx_polling = state.nic.tx_polling();
        tx_blocked = state.tx_blocked;
        drop(state);
        if moved > 0 {
            spin.active();
        }
        if sent > 0 && busy {
            // A frame just sent may have woken its receiver on this core (the peer's client, the
            // host's stack). A wake-up does not preempt a spinning thread before its time slice
            // ends, so the receiver would wait out the whole busy budget (an echo of 13 us took
            // 63 us one time in ten); let it run now. Alone on its core this returns at once.
            std::thread::yield_now();
        }
    }
}

/// Pass counters of the busy (spinning) phase: what a spinning pass skips, and how often it reads
/// the clock, so that a pass with nothing to move costs a few ring reads and no system call.
#[derive(Debug, Default)]
struct SpinState {
    /// Every pass (the cadence of epoll checks and reaps while spinning).
    passes: u32,
    /// Within the busy budget: a frame moved and the budget has not run out since.
    spinning: bool,
    /// Passes since the last frame moved.
    idle_passes: u32,
    /// When the first idle pass after the last frame started (the budget runs from there).
    idle_since: Option<Instant>,
}

impl SpinState {
    /// A frame moved: a new busy budget starts with the next idle pass.
    fn active(&mut self) {
        self.spinning = true;
        self.idle_passes = 0;
    }

    /// Counts a pass and says whether it spins (the thread is within `budget` of its last frame).
    /// Reads the clock on the first idle pass and every SPIN_CLOCK_EVERY-th one after it.
    fn busy(&mut self, budget: Duration) -> bool {
        self.passes = self.passes.wrapping_add(1);
        if !self.spinning {
            return false;
        }
        if self.idle_passes == 0 {
            self.idle_since = Some(Instant::now());
        } else if self.idle_passes % SPIN_CLOCK_EVERY == 0
            && !self.idle_since.is_some_and(|t| t.elapsed() < budget)
        {
            self.spinning = false;
            return false;
        }
        self.idle_passes = self.idle_passes.saturating_add(1);
        true
    }

    /// Whether this spinning pass checks epoll.
    fn epoll_due(&self) -> bool {
        self.passes % SPIN_EPOLL_EVERY == 0
    }

    /// Whether this spinning pass reaps the backend.
    fn reap_due(&self) -> bool {
        self.passes % REAP_EVERY == 0
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, RawFd};
    use std::os::unix::net::UnixDatagram;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use vm_memory::GuestAddress;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    use super::*;
    use crate::frame::FrameTx;
    use crate::lance::{LanceStats, RegEffect, TxReport};
    use crate::net::{Backend, BackendStats, NetError};
    use crate::vmm::nic::NicModel;

    /// A NIC whose RX room the test sets, recording delivered frames; its TX sends one frame per
    /// pending request.
    struct FakeNic {
        room: Arc<AtomicUsize>,
        received: Arc<Mutex<Vec<Vec<u8>>>>,
        tx_pending: Arc<AtomicUsize>,
        /// What `tx_polling` reports (a poll-mode guest's chip polls its TX ring).
        polling: bool,
    }

    impl NicModel for FakeNic {
        fn pci_config_read(&self, _: usize, _: &mut [u8]) {}
        fn pci_config_write(&mut self, _: usize, _: &[u8]) {}
        fn io_bar(&self) -> Option<u16> {
            None
        }
        fn mmio_bar(&self) -> Option<u64> {
            None
        }
        fn read_reg(&mut self, _: &GuestMemoryMmap, _: u64, _: &mut [u8]) {}
        fn write_reg(&mut self, _: &GuestMemoryMmap, _: u64, _: &[u8]) -> RegEffect {
            RegEffect::default()
        }
        fn transmit(&mut self, _: &GuestMemoryMmap, tx: &mut dyn FrameTx) -> TxReport {
            let mut sent = 0;
            let mut blocked = false;
            while self.tx_pending.load(Ordering::SeqCst) > 0 {
                let Some(buf) = tx.tx_buffer() else {
                    blocked = true;
                    break;
                };
                buf[..4].copy_from_slice(b"txed");
                tx.tx_commit(4);
                self.tx_pending.fetch_sub(1, Ordering::SeqCst);
                sent += 1;
            }
            tx.tx_flush();
            TxReport {
                frames: sent,
                blocked,
                ..TxReport::default()
            }
        }
        fn tx_polling(&self) -> bool {
            self.polling
        }
        fn rx_room(&self, _: &GuestMemoryMmap) -> usize {
            self.room.load(Ordering::SeqCst)
        }
        fn receive(&mut self, _: &GuestMemoryMmap, frame: &[u8]) {
            self.room.fetch_sub(1, Ordering::SeqCst);
            self.received.lock().unwrap().push(frame.to_vec());
        }
        fn stats(&self) -> LanceStats {
            LanceStats::default()
        }
    }

    /// A backend over a datagram socket pair: one datagram = one frame.
    struct SocketPort {
        sock: UnixDatagram,
        buf: Vec<u8>,
        /// `tx_buffer` calls that find no buffer before buffers are lent again.
        busy_calls: usize,
        /// Spin-only: `poll_fd` is this eventfd that never becomes readable, and `rx_pending`
        /// (counted in the counter: one call per I/O thread pass) is the only way to find frames.
        spin_only: Option<(EventFd, Arc<AtomicUsize>)>,
    }

    impl FrameTx for SocketPort {
        fn tx_buffer(&mut self) -> Option<&mut [u8]> {
            if self.busy_calls > 0 {
                self.busy_calls -= 1;
                return None;
            }
            Some(&mut self.buf)
        }
        fn tx_commit(&mut self, len: usize) {
            self.sock.send(&self.buf[..len]).unwrap();
        }
    }

    impl Backend for SocketPort {
        fn kind(&self) -> &'static str {
            "socket"
        }
        fn poll_fd(&self) -> RawFd {
            match &self.spin_only {
                Some((never_ready, _)) => never_ready.as_raw_fd(),
                None => self.sock.as_raw_fd(),
            }
        }
        fn recv_batch(
            &mut self,
            max: usize,
            deliver: &mut dyn FnMut(&[u8]),
        ) -> Result<usize, NetError> {
            let mut got = 0;
            let mut frame = [0u8; 2048];
            while got < max {
                match self.sock.recv(&mut frame) {
                    Ok(n) => {
                        deliver(&frame[..n]);
                        got += 1;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(NetError::io("receiving from the socket pair", e)),
                }
            }
            Ok(got)
        }
        fn reap(&mut self) {}
        fn stats(&self) -> BackendStats {
            BackendStats::default()
        }
        fn rx_pending(&mut self) -> Option<bool> {
            let (_, passes) = self.spin_only.as_ref()?;
            passes.fetch_add(1, Ordering::SeqCst);
            let mut byte = 0u8;
            // SAFETY: a peek of at most one byte into a live local, on a socket this port owns.
            let peeked = unsafe {
                libc::recv(
                    self.sock.as_raw_fd(),
                    std::ptr::addr_of_mut!(byte).cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            Some(peeked >= 0)
        }
    }

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn rx_respects_ring_room_and_tx_follows_kicks() {
        let (ours, wire) = UnixDatagram::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        wire.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let room = Arc::new(AtomicUsize::new(3));
        let received = Arc::new(Mutex::new(Vec::new()));
        let tx_pending = Arc::new(AtomicUsize::new(0));
        let nic = FakeNic {
            room: Arc::clone(&room),
            received: Arc::clone(&received),
            tx_pending: Arc::clone(&tx_pending),
            polling: false,
        };
        let port = SocketPort {
            sock: ours,
            buf: vec![0; 2048],
            busy_calls: 0,
            spin_only: None,
        };
        let net = Arc::new(NetShared::new(Box::new(nic), Some(Box::new(port)), false).unwrap());
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let stop = EventFd::new(EFD_NONBLOCK).unwrap();
        let stats = Arc::new(ExitStats::default());
        let thread = {
            let (net, stop) = (Arc::clone(&net), stop.try_clone().unwrap());
            std::thread::spawn(move || run_io_thread(net, mem, stop, stats, IoTuning::default()))
        };

        for i in 0..5u8 {
            wire.send(&[i; 60]).unwrap();
        }
        wait_until("3 frames", || received.lock().unwrap().len() == 3);
        // The ring is full: the other two stay queued in the backend, nothing is lost.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(received.lock().unwrap().len(), 3);
        room.store(10, Ordering::SeqCst);
        net.kick_io();
        wait_until("5 frames", || received.lock().unwrap().len() == 5);
        let firsts: Vec<u8> = received.lock().unwrap().iter().map(|f| f[0]).collect();
        assert_eq!(firsts, [0, 1, 2, 3, 4], "in order");

        // TX handed to the I/O thread (tx_inline = false): a kick makes it walk the ring.
        tx_pending.store(2, Ordering::SeqCst);
        net.kick_io();
        let mut frame = [0u8; 64];
        for _ in 0..2 {
            let n = wire.recv(&mut frame).unwrap();
            assert_eq!(&frame[..n], b"txed");
        }

        stop.write(1).unwrap();
        thread.join().unwrap().unwrap();
    }

    #[test]
    fn tx_blocked_on_backend_buffers_is_retried_without_a_new_kick() {
        let (ours, wire) = UnixDatagram::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        wire.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let tx_pending = Arc::new(AtomicUsize::new(3));
        let nic = FakeNic {
            room: Arc::new(AtomicUsize::new(0)),
            received: Arc::new(Mutex::new(Vec::new())),
            tx_pending: Arc::clone(&tx_pending),
            polling: false,
        };
        let port = SocketPort {
            sock: ours,
            buf: vec![0; 2048],
            busy_calls: 2,
            spin_only: None,
        };
        let net = Arc::new(NetShared::new(Box::new(nic), Some(Box::new(port)), false).unwrap());
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let stop = EventFd::new(EFD_NONBLOCK).unwrap();
        let thread = {
            let (net, stop) = (Arc::clone(&net), stop.try_clone().unwrap());
            let stats = Arc::new(ExitStats::default());
            std::thread::spawn(move || run_io_thread(net, mem, stop, stats, IoTuning::default()))
        };
        net.kick_io(); // one TDMD; the backend is busy for the first two attempts
        let mut frame = [0u8; 64];
        for _ in 0..3 {
            let n = wire.recv(&mut frame).unwrap();
            assert_eq!(&frame[..n], b"txed");
        }
        assert_eq!(tx_pending.load(Ordering::SeqCst), 0);
        stop.write(1).unwrap();
        thread.join().unwrap().unwrap();
    }

    #[test]
    fn busy_thread_spins_on_the_rings_then_sleeps() {
        let (ours, wire) = UnixDatagram::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let passes = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let nic = FakeNic {
            room: Arc::new(AtomicUsize::new(1000)),
            received: Arc::clone(&received),
            tx_pending: Arc::new(AtomicUsize::new(0)),
            polling: true,
        };
        let port = SocketPort {
            sock: ours,
            buf: vec![0; 2048],
            busy_calls: 0,
            spin_only: Some((EventFd::new(EFD_NONBLOCK).unwrap(), Arc::clone(&passes))),
        };
        let net = Arc::new(NetShared::new(Box::new(nic), Some(Box::new(port)), false).unwrap());
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let stop = EventFd::new(EFD_NONBLOCK).unwrap();
        let budget = Duration::from_millis(200);
        let thread = {
            let (net, stop) = (Arc::clone(&net), stop.try_clone().unwrap());
            let stats = Arc::new(ExitStats::default());
            let tuning = IoTuning { busy_poll: budget };
            std::thread::spawn(move || run_io_thread(net, mem, stop, stats, tuning))
        };
        // The first frame comes with a kick (as a guest's RX kick would); it starts the busy phase.
        wire.send(&[0; 60]).unwrap();
        net.kick_io();
        wait_until("the kicked frame", || received.lock().unwrap().len() == 1);
        // Each later frame arrives with no readable fd and no kick: only a spinning pass that reads
        // the backend's rings finds it (and each delivery renews the busy budget).
        for i in 1..20u8 {
            wire.send(&[i; 60]).unwrap();
            wait_until("a frame found by spinning", || {
                received.lock().unwrap().len() == usize::from(i) + 1
            });
        }
        let firsts: Vec<u8> = received.lock().unwrap().iter().map(|f| f[0]).collect();
        assert_eq!(
            firsts,
            (0..20).collect::<Vec<u8>>(),
            "all delivered, in order"
        );
        // With no more traffic the thread goes back to sleep in epoll: from then on it passes only
        // at the idle TX poll timeout, not thousands of times as a spinning thread does.
        std::thread::sleep(budget * 2);
        let before = passes.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        let idle_passes = passes.load(Ordering::SeqCst) - before;
        let timeouts = 100 / TX_POLL_IDLE_MS as usize;
        assert!(
            idle_passes <= 2 * timeouts,
            "{idle_passes} passes in 100 ms while idle: the thread did not go back to sleep"
        );
        stop.write(1).unwrap();
        thread.join().unwrap().unwrap();
    }
}
