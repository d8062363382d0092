//! Criterion micro-benchmarks of the Lance model's per-frame paths with a null backend:
//! TX (descriptor walk + copy into the backend buffer + status write-back) and RX (filter +
//! copy into the guest buffer + MCNT/status write-back), for 64-byte and 1514-byte frames.
//! Each iteration moves a batch of frames; criterion's "thrpt" is frames per second.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use lancet::frame::{FrameTx, MAX_FRAME_LEN};
use lancet::lance::{IrqLine, Lance, RxOutcome};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const INIT_BLOCK: u64 = 0x1000;
const RX_RING: u64 = 0x2000;
const TX_RING: u64 = 0x4000;
const RX_BUFS: u64 = 0x10_0000;
const TX_BUFS: u64 = 0x20_0000;
const RING_LOG2: u8 = 5;
const RING: usize = 1 << RING_LOG2;
const BATCH: usize = RING;

struct NoIrq;
impl IrqLine for NoIrq {
    fn set_level(&mut self, _asserted: bool) {}
}

/// A backend that discards frames.
struct NullTx {
    buf: Vec<u8>,
}
impl FrameTx for NullTx {
    fn tx_buffer(&mut self) -> Option<&mut [u8]> {
        Some(&mut self.buf)
    }
    fn tx_commit(&mut self, len: usize) {
        std::hint::black_box(len);
    }
}

fn csr(l: &mut Lance<NoIrq>, mem: &GuestMemoryMmap<()>, index: u16, value: u16) {
    l.write(mem, 0x12, &index.to_le_bytes());
    l.write(mem, 0x10, &value.to_le_bytes());
}

/// A running chip (SWSTYLE 2, 32-entry rings, interrupts masked) and its guest memory.
fn setup(frame_len: usize) -> (Lance<NoIrq>, GuestMemoryMmap<()>) {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap();
    let mut l = Lance::new(MAC, NoIrq);
    l.pci_config_write(0x10, &0xc000u32.to_le_bytes());
    l.pci_config_write(0x04, &5u16.to_le_bytes());
    l.write(&mem, 0x12, &20u16.to_le_bytes());
    l.write(&mem, 0x16, &2u16.to_le_bytes());
    let w16 = |a: u64, v: u16| mem.write_obj(v, GuestAddress(a)).unwrap();
    let w32 = |a: u64, v: u32| mem.write_obj(v, GuestAddress(a)).unwrap();
    w16(INIT_BLOCK, 0);
    w16(
        INIT_BLOCK + 2,
        (u16::from(RING_LOG2) << 12) | (u16::from(RING_LOG2) << 4),
    );
    mem.write_slice(&MAC, GuestAddress(INIT_BLOCK + 4)).unwrap();
    w32(INIT_BLOCK + 20, RX_RING as u32);
    w32(INIT_BLOCK + 24, TX_RING as u32);
    for i in 0..RING as u64 {
        w32(RX_RING + 16 * i, (RX_BUFS + 2048 * i) as u32);
        w16(RX_RING + 16 * i + 4, 1544u16.wrapping_neg());
        w16(RX_RING + 16 * i + 6, 0x8000);
        w32(TX_RING + 16 * i, (TX_BUFS + 2048 * i) as u32);
        w16(TX_RING + 16 * i + 4, (frame_len as u16).wrapping_neg());
        w16(TX_RING + 16 * i + 6, 0);
    }
    csr(&mut l, &mem, 1, INIT_BLOCK as u16);
    csr(&mut l, &mem, 2, 0);
    csr(&mut l, &mem, 3, 0x5f00);
    csr(&mut l, &mem, 4, 0x0915);
    csr(&mut l, &mem, 0, 0x0001);
    csr(&mut l, &mem, 0, 0x0002);
    (l, mem)
}

fn bench_tx(c: &mut Criterion) {
    let mut group = c.benchmark_group("lance_tx");
    for len in [64usize, 1514] {
        let (mut lance, mem) = setup(len);
        let mut tx = NullTx {
            buf: vec![0; MAX_FRAME_LEN],
        };
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, _| {
            b.iter_batched(
                // The guest hands BATCH frames to the chip (status word only; not timed).
                || {
                    for i in 0..BATCH as u64 {
                        mem.write_obj(0x8300u16, GuestAddress(TX_RING + 16 * i + 6))
                            .unwrap();
                    }
                },
                |()| {
                    let r = lance.transmit(&mem, &mut tx);
                    assert_eq!(r.frames as usize, BATCH);
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn bench_tx_single(c: &mut Criterion) {
    let mut group = c.benchmark_group("lance_tx_one_per_call");
    let (mut lance, mem) = setup(64);
    let mut tx = NullTx {
        buf: vec![0; MAX_FRAME_LEN],
    };
    let mut i = 0u64;
    group.throughput(Throughput::Elements(1));
    group.bench_function("64", |b| {
        b.iter(|| {
            mem.write_obj(0x8300u16, GuestAddress(TX_RING + 16 * i + 6))
                .unwrap();
            i = (i + 1) % RING as u64;
            let r = lance.transmit(&mem, &mut tx);
            assert_eq!(r.frames, 1);
        })
    });
    group.finish();
}

fn bench_rx(c: &mut Criterion) {
    let mut group = c.benchmark_group("lance_rx");
    for len in [64usize, 1514] {
        let (mut lance, mem) = setup(len);
        let mut frame = vec![0u8; len];
        frame[..6].copy_from_slice(&MAC);
        frame[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_with_input(BenchmarkId::from_parameter(len), &len, |b, _| {
            b.iter_batched(
                // The guest gives the buffers back (not timed).
                || {
                    for i in 0..BATCH as u64 {
                        mem.write_obj(0x8000u16, GuestAddress(RX_RING + 16 * i + 6))
                            .unwrap();
                    }
                },
                |()| {
                    for _ in 0..BATCH {
                        assert_eq!(lance.receive(&mem, &frame), RxOutcome::Delivered);
                    }
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench_tx, bench_tx_single, bench_rx);
criterion_main!(benches);
