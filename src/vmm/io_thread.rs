//! The I/O thread: moves frames between the backend and the NIC model without waiting for a guest
//! exit. It sleeps in epoll on the backend's fd, the NIC kick eventfd (register writes that ask for
//! TX or RX work) and a stop eventfd. RX takes only as many frames as the guest ring has free
//! descriptors (`rx_room`); the rest stay queued in the backend, and with a full ring the backend fd
//! is parked until the guest returns descriptors (kick) or a short retry timeout.
//!
//! TX ring polling (the chip polls its ring when TXON and not DPOLL): after any activity the thread
//! busy-polls the ring and the backend fd for `busy_poll` (epoll timeout 0), then sleeps until TDMD
//! (kick) or backend traffic, with a slow safety poll every [`TX_POLL_IDLE_MS`] like the real chip's
//! own poll timer. A guest that does not write TDMD (the test guest's `kick=0|lazy`) is served by
//! this poll alone: no exit per frame.
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
    let mut last_activity: Option<Instant> = None;
    let mut events = vec![EpollEvent::default(); 8];
    loop {
        let (tx_polling, tx_blocked) = {
            let state = net.lock();
            (state.nic.tx_polling(), state.tx_blocked)
        };
        let tx_inline = net.tx_inline;
        let busy = tx_polling && last_activity.is_some_and(|t| t.elapsed() < tuning.busy_poll);
        let timeout = if busy {
            0
        } else if backend_parked || tx_blocked {
            RETRY_MS
        } else if tx_polling {
            TX_POLL_IDLE_MS
        } else {
            -1
        };
        let n = match epoll.wait(timeout, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(IoThreadError::epoll("epoll_wait")(e)),
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
        if lost && !backend_lost {
            // Error and hang-up are reported whatever the interest set, so only removing the fd
            // stops the wake-ups.
            if let Some(fd) = backend_fd {
                let _ = epoll.ctl(ControlOperation::Delete, fd, EpollEvent::default());
            }
            backend_lost = true;
            backend_parked = false;
            rx_ready = false;
            net.lock().lose_backend();
            stats
                .backend_lost
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                "the network backend failed (device removed?): link down, polling stopped"
            );
        }
        if n > 0 {
            stats
                .io_wakeups
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut state = net.lock();
        let mut moved = 0;
        if (kicked && !tx_inline) || tx_polling || tx_blocked {
            moved += state.transmit(&mem);
        }
        let Some(backend) = state.backend.as_mut().filter(|_| !backend_lost) else {
            continue;
        };
        backend.reap();
        if rx_ready || backend_parked || kicked {
            let room = state.nic.rx_room(&mem);
            let super::nic::NetState { nic, backend, .. } = &mut *state;
            let Some(backend) = backend.as_mut() else {
                continue;
            };
            if room > 0 {
                match backend.recv_batch(room, &mut |frame| nic.receive(&mem, frame)) {
                    Ok(got) => moved += got,
                    Err(e) => tracing::warn!("backend receive failed: {e}"),
                }
            }
            let park = room == 0 && (rx_ready || backend_parked);
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
        drop(state);
        if moved > 0 {
            last_activity = Some(Instant::now());
        }
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
            false
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
            self.sock.as_raw_fd()
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
        };
        let port = SocketPort {
            sock: ours,
            buf: vec![0; 2048],
            busy_calls: 0,
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
        };
        let port = SocketPort {
            sock: ours,
            buf: vec![0; 2048],
            busy_calls: 2,
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
}
