//! Fuzzing the guest-facing surface: random register accesses, random ring memory and random
//! frames against (1) the Lance model alone, every guest-memory access counted, and (2) the VMM's
//! bus dispatch with the Lance behind it, driven the way vCPU exits drive it: port I/O including
//! string I/O (`rep ins/outs`: `count` accesses of `size` bytes in one exit), MMIO of any length at
//! any address, PCI config cycles that move or disable the BARs, TX inline on TDMD and RX frames.
//!
//! Checked for every case: no panic; guest memory is two regions with a gap and ends early, and is
//! only reached through vm-memory's checked API (stray addresses fail instead of being served);
//! bounded work per call (guest-memory accesses per model call bounded by a 512-entry ring, no
//! single access larger than a ring; frames per bus access bounded likewise); the IRQ line only
//! told about level changes.
//!
//! `FUZZ_CASES` inputs per test (default 20 000, what `make test` runs; `make fuzz` runs 10
//! million), seeded by `FUZZ_SEED` (default fixed): a failure names its case and seed, and
//! `FUZZ_SEED=<seed> FUZZ_CASES=1` replays it.

mod support;

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use lancet::frame::{FrameTx, MAX_FRAME_LEN};
use lancet::lance::regs::{
    BCR_SWS, CSR0_INIT, CSR0_STRT, CSR0_TDMD, CSR_IADR_HI, CSR_IADR_LO, CSR_STATUS, RDP, WIO_BDP,
    WIO_RAP,
};
use lancet::lance::Lance;
use lancet::net::{Backend, BackendStats, NetError};
use lancet::vmm::bus::Bus;
use lancet::vmm::nic::NetShared;
use lancet::vmm::serial::{IrqFdTrigger, SerialConsole};
use lancet::vmm::stats::ExitStats;
use lancet::vmm::{NIC_IO_BAR, NIC_MMIO_BAR};
use support::guarded::{guarded_memory, CountingMem, Irq, Sink};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Cases per test when `FUZZ_CASES` is not set (a quick run for `make test`).
const DEFAULT_CASES: u64 = 20_000;
const DEFAULT_SEED: u64 = 0x1a4c_e7f0_2d11_0b5e;
/// Where the random guest puts its init block and rings (both in low RAM).
const INIT: u64 = 0x100;
const RX_RING: u32 = 0x1000;
const TX_RING: u32 = 0x3000;
/// Largest ring (log2 9 = 512 entries) and the largest descriptor (SWSTYLE 2/3: 16 bytes).
const MAX_RING: u64 = 512;
const MAX_DESC: usize = 16;
const MAC: [u8; 6] = [0x52, 0x54, 0, 1, 2, 3];
/// PCI config mechanism #1 ports and the NIC's slot (device 1 on bus 0).
const PCI_ADDRESS_PORT: u16 = 0xcf8;
const PCI_DATA_PORT: u16 = 0xcfc;
const PCI_NIC_DEVICE: u32 = 1;
const PCI_ENABLE: u32 = 0x8000_0000;
const PCI_COMMAND: usize = 0x04;
const COM1: u16 = 0x3f8;
const DEBUG_EXIT_PORT: u16 = 0x501;
/// Ops per case (at most).
const MAX_OPS: u64 = 24;

/// splitmix64: fast, seedable, good enough to explore (a Cell, so a draw can sit inside the
/// arguments of another).
struct Rng(Cell<u64>);

impl Rng {
    fn next(&self) -> u64 {
        let state = self.0.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.0.set(state);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
    fn fill(&self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Runs `case(rng)` for FUZZ_CASES seeds; a panic names the case and its seed.
fn fuzz(name: &str, mut case: impl FnMut(&mut Rng)) {
    let cases = env_u64("FUZZ_CASES", DEFAULT_CASES);
    let seed = env_u64("FUZZ_SEED", DEFAULT_SEED);
    let start = Instant::now();
    for i in 0..cases {
        let case_seed = seed.wrapping_add(i.wrapping_mul(0xd1b5_4a32_d192_ed03));
        let mut rng = Rng(Cell::new(case_seed));
        if std::panic::catch_unwind(AssertUnwindSafe(|| case(&mut rng))).is_err() {
            panic!("{name}: case {i} failed: replay with FUZZ_SEED={case_seed} FUZZ_CASES=1");
        }
    }
    eprintln!(
        "{name}: {cases} cases in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

/// A ring address: usually the plausible one, sometimes in the gap, past the end or anywhere.
fn ring_addr(rng: &mut Rng, plausible: u32) -> u32 {
    match rng.below(8) {
        0 => rng.next() as u32,
        1 => 0x1_0000 - rng.below(64) as u32,
        2 => 0x3_0000 - rng.below(64) as u32,
        _ => plausible,
    }
}

/// Writes a random guest image: usually a plausible init block (random style and ring sizes up to
/// 512) and descriptors mixing sane and hostile values, plus random bytes anywhere.
fn randomize_memory(rng: &mut Rng, mem: &GuestMemoryMmap<()>) -> u16 {
    let style = rng.pick(&[0u16, 2, 3]);
    let (rx_log2, tx_log2) = (rng.below(10) as u8, rng.below(10) as u8);
    let (rdra, tdra) = (ring_addr(rng, RX_RING), ring_addr(rng, TX_RING));
    let mut init = [0u8; 28];
    rng.fill(&mut init);
    if rng.chance(85) {
        if style == 0 {
            init[0..2].fill(0);
            init[2..8].copy_from_slice(&MAC);
            let rx = (rdra & 0xff_ffff) | (u32::from(rx_log2.min(7)) << 29);
            let tx = (tdra & 0xff_ffff) | (u32::from(tx_log2.min(7)) << 29);
            init[16..20].copy_from_slice(&rx.to_le_bytes());
            init[20..24].copy_from_slice(&tx.to_le_bytes());
        } else {
            init[0..2].fill(0);
            init[2] = rx_log2 << 4;
            init[3] = tx_log2 << 4;
            init[4..10].copy_from_slice(&MAC);
            init[20..24].copy_from_slice(&rdra.to_le_bytes());
            init[24..28].copy_from_slice(&tdra.to_le_bytes());
        }
    }
    let _ = mem.write_slice(&init, GuestAddress(INIT));
    let desc_size: u64 = if style == 0 { 8 } else { 16 };
    for _ in 0..rng.below(48) {
        let ring = if rng.chance(50) { RX_RING } else { TX_RING };
        let at = u64::from(ring) + desc_size * rng.below(MAX_RING);
        let base = match rng.below(4) {
            0 => rng.next() as u32,
            1 => rng.below(0x1_0000) as u32,
            _ => 0x2_0000 + rng.below(0x1_0000) as u32,
        };
        let bcnt = rng.pick(&[
            1544u16.wrapping_neg(),
            64u16.wrapping_neg(),
            100u16.wrapping_neg() & 0x0fff,
            rng.next() as u16,
        ]);
        let status = rng.pick(&[0x8300u16, 0x8200, 0x8100, 0x8000, 0, rng.next() as u16]);
        let mut d = [0u8; 16];
        if style == 0 {
            let w0 = (base & 0xff_ffff) | (u32::from(status & 0xff00) << 16);
            d[0..4].copy_from_slice(&w0.to_le_bytes());
            d[4..6].copy_from_slice(&bcnt.to_le_bytes());
        } else {
            let (w0, w2) = if style == 2 { (0, 8) } else { (8, 0) };
            d[w0..w0 + 4].copy_from_slice(&base.to_le_bytes());
            d[4..6].copy_from_slice(&bcnt.to_le_bytes());
            d[6..8].copy_from_slice(&status.to_le_bytes());
            d[w2..w2 + 4].fill(0);
        }
        let _ = mem.write_slice(&d[..desc_size as usize], GuestAddress(at));
    }
    for _ in 0..rng.below(4) {
        let mut bytes = vec![0u8; 1 + rng.below(64) as usize];
        rng.fill(&mut bytes);
        let _ = mem.write_slice(&bytes, GuestAddress(rng.below(0x3_0000)));
    }
    style
}

/// A random received frame: usually addressed to the chip, broadcast or multicast.
fn random_frame(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(4) {
        0 => rng.below(64) as usize,
        1 => rng.below(4000) as usize,
        _ => 60 + rng.below((MAX_FRAME_LEN - 60) as u64) as usize,
    };
    let mut frame = vec![0u8; len];
    rng.fill(&mut frame);
    if len >= 6 {
        let dst: [u8; 6] = match rng.below(4) {
            0 => MAC,
            1 => [0xff; 6],
            2 => [0x01, 0, 0x5e, 0, 0, 1],
            _ => frame[..6].try_into().unwrap(),
        };
        frame[..6].copy_from_slice(&dst);
    }
    frame
}

fn csr(lance: &mut Lance<Irq>, mem: &CountingMem, index: usize, value: u16) {
    lance.write(mem, WIO_RAP, &(index as u16).to_le_bytes());
    lance.write(mem, RDP, &value.to_le_bytes());
}

/// The model alone: one case = a random image, then up to MAX_OPS random calls, each within its
/// bound of guest-memory accesses.
#[test]
fn fuzz_lance_model() {
    let mem = CountingMem::new(guarded_memory());
    let mut sink = Sink::new(0, true);
    fuzz("fuzz_lance_model", |rng| {
        let style = randomize_memory(rng, &mem.inner);
        let mut lance = Lance::new(MAC, Irq::default());
        lance.pci_config_write(PCI_COMMAND, &5u16.to_le_bytes());
        if rng.chance(80) {
            lance.write(&mem, WIO_RAP, &(BCR_SWS as u16).to_le_bytes());
            lance.write(&mem, WIO_BDP, &style.to_le_bytes());
            csr(&mut lance, &mem, CSR_IADR_LO, INIT as u16);
            csr(&mut lance, &mem, CSR_IADR_HI, 0);
            csr(&mut lance, &mem, CSR_STATUS, CSR0_INIT);
            csr(&mut lance, &mem, CSR_STATUS, CSR0_STRT);
        }
        mem.largest.set(0);
        for _ in 0..1 + rng.below(MAX_OPS) {
            let before = mem.accesses.get();
            let bound = match rng.below(10) {
                0 | 1 => {
                    let offset = rng.below(0x24);
                    let mut data = [0u8; 4];
                    let width = rng.pick(&[1usize, 2, 4, 1 + rng.below(4) as usize]);
                    if rng.chance(50) {
                        rng.fill(&mut data);
                        lance.write(&mem, offset, &data[..width]);
                    } else {
                        lance.read(&mem, offset, &mut data[..width]);
                    }
                    1
                }
                2 => {
                    let index = rng.pick(&[0usize, 0, 1, 2, 3, 4, 5, 8, 12, 15, 58, 72, 76, 112]);
                    let value = rng.next() as u16;
                    let value = if index == 0 && rng.chance(50) {
                        rng.pick(&[CSR0_STRT, CSR0_TDMD, CSR0_INIT, 0x0042, 0x7f00])
                    } else {
                        value
                    };
                    csr(&mut lance, &mem, index, value);
                    // A CSR0 write may run INIT (init block reads) and is otherwise O(1).
                    2
                }
                3 => {
                    let index = rng.pick(&[2u16, 4, 9, 18, 20, 32]);
                    lance.write(&mem, WIO_RAP, &index.to_le_bytes());
                    lance.write(&mem, WIO_BDP, &(rng.next() as u16).to_le_bytes());
                    0
                }
                4 | 5 => {
                    sink.credits = rng.below(6) as u32;
                    sink.link = rng.chance(85);
                    let report = lance.transmit(&mem, &mut sink);
                    assert!(u64::from(report.frames) <= MAX_RING);
                    // Per descriptor: read, buffer read, error word, status; plus the ring view.
                    4 * MAX_RING + 2
                }
                6 | 7 => {
                    let _ = lance.receive(&mem, &random_frame(rng));
                    // Per descriptor: read, up to three buffer writes, status; plus view and MCNT.
                    5 * MAX_RING + 4
                }
                8 => {
                    assert!(lance.rx_room(&mem) as u64 <= MAX_RING);
                    1 + MAX_RING
                }
                _ => {
                    let offset = rng.pick(&[PCI_COMMAND, 0x10, 0x14, rng.below(256) as usize]);
                    let value = (rng.next() as u32).to_le_bytes();
                    let width = rng.pick(&[1usize, 2, 4]);
                    lance.pci_config_write(offset, &value[..width.min(256 - offset)]);
                    0
                }
            };
            let used = mem.accesses.get() - before;
            assert!(
                used <= bound,
                "{used} guest-memory accesses (bound {bound})"
            );
            assert_eq!(lance.irq_level(), lance.irq_line().level());
        }
        assert!(
            mem.largest.get() <= MAX_RING as usize * MAX_DESC,
            "an access of {} bytes",
            mem.largest.get()
        );
    });
}

/// The backend behind the bus: lends buffers while it has credits, counts frames per bus call.
struct SinkPort {
    sink: Sink,
    ready: EventFd,
    frames: Arc<AtomicU64>,
}

impl FrameTx for SinkPort {
    fn link_up(&self) -> bool {
        self.sink.link
    }
    fn tx_buffer(&mut self) -> Option<&mut [u8]> {
        self.sink.tx_buffer()
    }
    fn tx_commit(&mut self, len: usize) {
        self.sink.tx_commit(len);
        self.frames.fetch_add(1, Ordering::Relaxed);
    }
}

impl Backend for SinkPort {
    fn kind(&self) -> &'static str {
        "fuzz-sink"
    }
    fn poll_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.ready.as_raw_fd()
    }
    fn recv_batch(&mut self, _: usize, _: &mut dyn FnMut(&[u8])) -> Result<usize, NetError> {
        Ok(0)
    }
    fn reap(&mut self) {
        self.sink.credits = self.sink.credits.saturating_add(1).min(8);
    }
    fn stats(&self) -> BackendStats {
        BackendStats::default()
    }
}

/// A port the random guest touches: mostly the NIC's BAR0 (wherever it is now), else COM1, PCI
/// config, debug exit or anything.
fn random_port(rng: &mut Rng, io_bar: Option<u16>) -> u16 {
    let bar = io_bar.unwrap_or(NIC_IO_BAR as u16);
    match rng.below(10) {
        0..=5 => bar.wrapping_add(rng.below(0x24) as u16),
        6 => COM1 + rng.below(9) as u16,
        7 => rng.pick(&[PCI_ADDRESS_PORT, PCI_DATA_PORT, PCI_DATA_PORT + 2, 0xcfb]),
        8 => rng.pick(&[DEBUG_EXIT_PORT, 0x70, 0x71, 0xffff]),
        _ => rng.next() as u16,
    }
}

/// The bus with the Lance behind it: one case = a random image, a fresh machine, then up to
/// MAX_OPS random exits (string I/O included), config cycles and received frames.
#[test]
fn fuzz_bus_dispatch() {
    let mem: GuestMemoryMmap = guarded_memory();
    let frames = Arc::new(AtomicU64::new(0));
    fuzz("fuzz_bus_dispatch", |rng| {
        randomize_memory(rng, &mem);
        let mut lance = Lance::new(MAC, Irq::default());
        // As firmware leaves it: BARs assigned, I/O + memory decoding and bus mastering on.
        lance.pci_config_write(0x10, &(NIC_IO_BAR | 1).to_le_bytes());
        lance.pci_config_write(0x14, &NIC_MMIO_BAR.to_le_bytes());
        lance.pci_config_write(PCI_COMMAND, &7u16.to_le_bytes());
        let port = SinkPort {
            sink: Sink::new(rng.below(8) as u32, rng.chance(90)),
            ready: EventFd::new(EFD_NONBLOCK).unwrap(),
            frames: Arc::clone(&frames),
        };
        let net = Arc::new(
            NetShared::new(Box::new(lance), Some(Box::new(port)), rng.chance(80)).unwrap(),
        );
        let serial = SerialConsole::new(
            IrqFdTrigger(EventFd::new(EFD_NONBLOCK).unwrap()),
            Box::new(std::io::sink()),
        );
        let bus = Bus::new(
            serial,
            Some(Arc::clone(&net)),
            mem.clone(),
            Arc::new(ExitStats::default()),
        );
        for _ in 0..1 + rng.below(MAX_OPS) {
            let before = frames.load(Ordering::Relaxed);
            let (io_bar, mmio_bar) = {
                let state = net.lock();
                (state.nic.io_bar(), state.nic.mmio_bar())
            };
            match rng.below(12) {
                0..=5 => {
                    // One KVM_EXIT_IO: `count` accesses of `size` (sometimes a malformed size).
                    let size = rng.pick(&[1usize, 2, 4, 2, 4, rng.below(9) as usize]);
                    // Now and then a long `rep` (past 256: u8 offset sums would overflow).
                    let count = match rng.below(32) {
                        0 => 1 + rng.below(600) as usize,
                        1..=12 => 1 + rng.below(4) as usize,
                        _ => 1,
                    };
                    let mut data = vec![0u8; (size * count).min(4096)];
                    let port = random_port(rng, io_bar);
                    if rng.chance(50) {
                        rng.fill(&mut data);
                        if (1..=4).contains(&data.len()) && rng.chance(30) {
                            // Mostly-sane values for RAP (a CSR/BCR index) and CSR0 commands.
                            data.fill(0);
                            data[0] = rng.pick(&[0u8, 1, 2, 3, 4, 15, 20, 0x42, 0x08, 0x01]);
                        }
                        let _ = bus.pio_out(port, size, &data);
                    } else {
                        bus.pio_in(port, size, &mut data);
                    }
                }
                6..=7 => {
                    let base = mmio_bar.unwrap_or(u64::from(NIC_MMIO_BAR));
                    let addr = match rng.below(4) {
                        0 => rng.next(),
                        1 => u64::MAX - rng.below(8),
                        _ => base.wrapping_add(rng.below(0x28)),
                    };
                    let mut data = vec![0u8; 1 + rng.below(8) as usize];
                    if rng.chance(50) {
                        rng.fill(&mut data);
                        bus.mmio_write(addr, &data);
                    } else {
                        bus.mmio_read(addr, &mut data);
                    }
                }
                8 => {
                    // A config cycle to the NIC (or a neighbour): may move or disable the BARs.
                    let device = if rng.chance(80) {
                        PCI_NIC_DEVICE
                    } else {
                        rng.below(32) as u32
                    };
                    let register =
                        rng.pick(&[PCI_COMMAND as u32, 0x10, 0x14, rng.below(64) as u32 * 4]);
                    let address = PCI_ENABLE | (device << 11) | register;
                    bus.pio_out(PCI_ADDRESS_PORT, 4, &address.to_le_bytes());
                    let value = match register {
                        0x10 => rng.pick(&[NIC_IO_BAR | 1, 0xffff_ffff, 0xffe1, rng.next() as u32]),
                        0x14 => rng.pick(&[NIC_MMIO_BAR, 0, 0xffff_ffff, rng.next() as u32]),
                        _ => rng.next() as u32,
                    };
                    let size = rng.pick(&[1usize, 2, 4]);
                    let offset = rng.below(4) as u16;
                    bus.pio_out(PCI_DATA_PORT + offset, size, &value.to_le_bytes()[..size]);
                }
                9..=10 => {
                    // The I/O thread's side: a received frame, as much as the ring takes.
                    let mut state = net.lock();
                    if state.nic.rx_room(&mem) > 0 {
                        state.nic.receive(&mem, &random_frame(rng));
                    }
                }
                _ => {
                    net.lock().transmit(&mem);
                }
            }
            let sent = frames.load(Ordering::Relaxed) - before;
            assert!(sent <= MAX_RING, "{sent} frames in one call");
        }
    });
}
