//! The I/O thread: moves frames between the backend and the NIC model without waiting for a guest
//! exit. It sleeps in epoll on the backend's fd, the NIC kick eventfd (register writes that ask for
//! TX or RX work) and a stop eventfd. RX takes only as many frames as the guest ring has free
//! descriptors (`rx_room`); the rest stay queued in the backend, and with a full ring the backend fd
//! is parked until the guest returns descriptors (kick) or a short retry timeout.
//!
//! TX ring polling (the chip polls its ring when TXON and not DPOLL): after any activity the thread
//! busy-polls the ring for `busy_poll` (epoll timeout 0), then sleeps until TDMD (kick) with a slow
//! safety poll every [`TX_POLL_IDLE_MS`] like the real chip's own poll timer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::nic::NetShared;
use super::stats::ExitStats;

/// Epoll tokens.
const TOKEN_KICK: u64 = 1;
const TOKEN_BACKEND: u64 = 2;
const TOKEN_STOP: u64 = 3;
/// Idle TX poll period while the chip has TX polling on (the real chip polls about every 1.6 ms).
pub const TX_POLL_IDLE_MS: i32 = 2;
/// Retry period for pending RX frames while the guest ring is full.
const RX_FULL_RETRY_MS: i32 = 1;

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

/// Runs until `stop` is signalled. Errors from epoll end the thread with a message.
pub fn run_io_thread(
    net: Arc<NetShared>,
    mem: GuestMemoryMmap,
    stop: EventFd,
    stats: Arc<ExitStats>,
    tuning: IoTuning,
) -> Result<(), String> {
    let epoll = Epoll::new().map_err(|e| format!("epoll_create: {e}"))?;
    let add = |fd, token| {
        epoll
            .ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
            .map_err(|e| format!("epoll_ctl: {e}"))
    };
    use std::os::fd::AsRawFd;
    add(net.kick.as_raw_fd(), TOKEN_KICK)?;
    add(stop.as_raw_fd(), TOKEN_STOP)?;
    let backend_fd = net.lock().backend.as_ref().map(|b| b.poll_fd());
    if let Some(fd) = backend_fd {
        add(fd, TOKEN_BACKEND)?;
    }
    let mut backend_parked = false;
    let mut last_activity: Option<Instant> = None;
    let mut events = vec![EpollEvent::default(); 8];
    loop {
        let (tx_polling, tx_inline) = (net.lock().nic.tx_polling(), net.tx_inline);
        let busy = tx_polling && last_activity.is_some_and(|t| t.elapsed() < tuning.busy_poll);
        let timeout = if busy {
            0
        } else if backend_parked {
            RX_FULL_RETRY_MS
        } else if tx_polling {
            TX_POLL_IDLE_MS
        } else {
            -1
        };
        let n = match epoll.wait(timeout, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(format!("epoll_wait: {e}")),
        };
        let (mut kicked, mut rx_ready) = (false, false);
        for ev in &events[..n] {
            match ev.data() {
                TOKEN_STOP => return Ok(()),
                TOKEN_KICK => {
                    let _ = net.kick.read();
                    kicked = true;
                }
                TOKEN_BACKEND => rx_ready = true,
                _ => {}
            }
        }
        if n > 0 {
            stats
                .io_wakeups
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut state = net.lock();
        let mut moved = 0;
        if (kicked && !tx_inline) || tx_polling {
            moved += state.transmit(&mem);
        }
        let Some(backend) = state.backend.as_mut() else {
            continue;
        };
        backend.reap();
        if rx_ready || backend_parked || kicked {
            let room = state.nic.rx_room(&mem);
            let super::nic::NetState { nic, backend } = &mut *state;
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
