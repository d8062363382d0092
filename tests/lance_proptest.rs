//! Property test: random register accesses, random ring memory and random frames never panic the
//! model; every guest-memory access goes through the checked vm-memory API (a counting wrapper
//! sees each one; the memory has a guard gap between its two regions and ends early, so stray
//! addresses fail instead of being served); no access is larger than a 512-entry ring; the work
//! per call is bounded by the ring length; the IRQ line is only told about level changes. The
//! images are mostly plausible (init block + rings in SWSTYLE 0/2/3 with mixed sane and hostile
//! descriptors) so running states are explored. Case count: PROPTEST_CASES (default 256).

mod support;

use lancet::lance::Lance;
use proptest::prelude::*;
use support::guarded::{guarded_memory, CountingMem, Irq, Sink};
use vm_memory::{Bytes, GuestAddress};

#[derive(Debug, Clone)]
enum Op {
    Io {
        offset: u8,
        width: u8,
        value: u32,
        write: bool,
    },
    Csr {
        index: u8,
        value: u16,
    },
    Bcr {
        index: u8,
        value: u16,
    },
    Start,
    Init,
    Transmit {
        credits: u32,
        link: bool,
    },
    Receive {
        len: usize,
        dst: u8,
    },
    RxRoom,
    Pci {
        offset: u8,
        value: u32,
    },
    Poke {
        addr: u32,
        bytes: Vec<u8>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            0u8..0x24,
            prop::sample::select(vec![1u8, 2, 4]),
            any::<u32>(),
            any::<bool>()
        )
            .prop_map(|(offset, width, value, write)| Op::Io {
                offset,
                width,
                value,
                write
            }),
        (
            prop::sample::select(vec![
                0u8, 1, 2, 3, 4, 5, 8, 12, 15, 58, 72, 74, 76, 78, 112, 124
            ]),
            any::<u16>()
        )
            .prop_map(|(index, value)| Op::Csr { index, value }),
        (
            prop::sample::select(vec![2u8, 4, 9, 18, 20, 32]),
            any::<u16>()
        )
            .prop_map(|(index, value)| Op::Bcr { index, value }),
        Just(Op::Start),
        Just(Op::Init),
        (0u32..4, any::<bool>()).prop_map(|(credits, link)| Op::Transmit { credits, link }),
        (0usize..2000, any::<u8>()).prop_map(|(len, dst)| Op::Receive { len, dst }),
        Just(Op::RxRoom),
        (prop::sample::select(vec![4u8, 0x10, 0x14]), any::<u32>())
            .prop_map(|(offset, value)| Op::Pci { offset, value }),
        (0u32..0x3_0000, prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(addr, bytes)| Op::Poke { addr, bytes }),
    ]
}

/// One descriptor as the random guest writes it.
#[derive(Debug, Clone)]
struct DescSpec {
    base: u32,
    bcnt: u16,
    status: u16,
}

fn desc_spec() -> impl Strategy<Value = DescSpec> {
    (
        prop_oneof![0x2_0000u32..0x3_0000, 0u32..0x1_0000, any::<u32>()],
        prop_oneof![
            Just(1544u16.wrapping_neg()),
            Just(64u16.wrapping_neg()),
            Just(100u16.wrapping_neg() & 0x0fff),
            any::<u16>()
        ],
        prop_oneof![
            Just(0x8300u16),
            Just(0x8200),
            Just(0x8100),
            Just(0x8000),
            Just(0),
            any::<u16>()
        ],
    )
        .prop_map(|(base, bcnt, status)| DescSpec { base, bcnt, status })
}

/// A guest memory image: random bytes, overwritten (usually) with a plausible init block and
/// rings in the chosen style, whose descriptors mix sane and hostile values.
#[derive(Debug, Clone)]
struct Image {
    bytes: Vec<u8>,
    style: u16,
    plausible: bool,
    rx_log2: u8,
    tx_log2: u8,
    rdra: u32,
    tdra: u32,
    descs: Vec<DescSpec>,
}

const INIT: usize = 0x100;
const RX_RING: u32 = 0x1000;
const TX_RING: u32 = 0x1800;
/// Limits the bounded RX room count is checked with (below, at and beyond a batch).
const RX_ROOM_LIMITS: [usize; 4] = [0, 1, 7, 64];

fn image() -> impl Strategy<Value = Image> {
    (
        prop::collection::vec(any::<u8>(), 0x2000),
        prop::sample::select(vec![0u16, 2, 3]),
        prop::bool::weighted(0.8),
        0u8..6,
        0u8..6,
        prop_oneof![Just(RX_RING), any::<u32>()],
        prop_oneof![Just(TX_RING), any::<u32>()],
        prop::collection::vec(desc_spec(), 64),
    )
        .prop_map(
            |(bytes, style, plausible, rx_log2, tx_log2, rdra, tdra, descs)| Image {
                bytes,
                style,
                plausible,
                rx_log2,
                tx_log2,
                rdra,
                tdra,
                descs,
            },
        )
}

impl Image {
    fn build(&self) -> Vec<u8> {
        let mut b = self.bytes.clone();
        if !self.plausible {
            return b;
        }
        let mac = [0x52, 0x54, 0, 1, 2, 3];
        let put16 =
            |b: &mut Vec<u8>, at: usize, v: u16| b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        let put32 =
            |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        if self.style == 0 {
            put16(&mut b, INIT, 0);
            b[INIT + 2..INIT + 8].copy_from_slice(&mac);
            put32(
                &mut b,
                INIT + 16,
                (self.rdra & 0xff_ffff) | (u32::from(self.rx_log2.min(7)) << 29),
            );
            put32(
                &mut b,
                INIT + 20,
                (self.tdra & 0xff_ffff) | (u32::from(self.tx_log2.min(7)) << 29),
            );
        } else {
            put16(&mut b, INIT, 0);
            b[INIT + 2] = self.rx_log2 << 4;
            b[INIT + 3] = self.tx_log2 << 4;
            b[INIT + 4..INIT + 10].copy_from_slice(&mac);
            put32(&mut b, INIT + 20, self.rdra);
            put32(&mut b, INIT + 24, self.tdra);
        }
        for (i, d) in self.descs.iter().enumerate() {
            let ring = if i < 32 { RX_RING } else { TX_RING } as usize;
            let idx = i % 32;
            match self.style {
                0 => {
                    let at = ring + 8 * idx;
                    put32(
                        &mut b,
                        at,
                        (d.base & 0xff_ffff) | (u32::from(d.status & 0xff00) << 16),
                    );
                    put16(&mut b, at + 4, d.bcnt);
                    put16(&mut b, at + 6, 0);
                }
                _ => {
                    let at = ring + 16 * idx;
                    let (w0, w2) = if self.style == 2 { (0, 8) } else { (8, 0) };
                    put32(&mut b, at + w0, d.base);
                    put16(&mut b, at + 4, d.bcnt);
                    put16(&mut b, at + 6, d.status);
                    put32(&mut b, at + w2, 0);
                }
            }
        }
        b
    }

    /// The start-up a driver does: style, INIT, STRT (for plausible images).
    fn prefix(&self) -> Vec<Op> {
        if self.plausible {
            vec![
                Op::Bcr {
                    index: 20,
                    value: self.style,
                },
                Op::Init,
                Op::Start,
            ]
        } else {
            Vec::new()
        }
    }
}

/// Run `ops` against a raw image whose 32-bit init block at 0x100 gets the given ring addresses.
fn run(image: &[u8], rdra: u32, tdra: u32, ops: &[Op]) -> lancet::lance::LanceStats {
    let mut image = image.to_vec();
    image[INIT + 20..INIT + 24].copy_from_slice(&rdra.to_le_bytes());
    image[INIT + 24..INIT + 28].copy_from_slice(&tdra.to_le_bytes());
    run_image(&image, ops)
}

fn run_image(image: &[u8], ops: &[Op]) -> lancet::lance::LanceStats {
    let inner = guarded_memory();
    inner.write_slice(image, GuestAddress(0)).unwrap();
    let mem = CountingMem::new(inner);
    let mut lance = Lance::new([0x52, 0x54, 0, 1, 2, 3], Irq::default());
    lance.pci_config_write(4, &5u16.to_le_bytes());
    let mut sink = Sink::new(0, true);
    let csr = |l: &mut Lance<Irq>, index: u16, value: u16| {
        l.write(&mem, 0x12, &index.to_le_bytes());
        l.write(&mem, 0x10, &value.to_le_bytes());
    };
    for op in ops {
        // Ring lengths never exceed 512, so per-call work is bounded by a constant.
        let before = mem.accesses.get();
        let bound: u64 = match op {
            Op::Io {
                offset,
                width,
                value,
                write,
            } => {
                let off = u64::from(*offset);
                let bytes = value.to_le_bytes();
                if *write {
                    lance.write(&mem, off, &bytes[..usize::from(*width)]);
                } else {
                    let mut b = [0u8; 4];
                    lance.read(&mem, off, &mut b[..usize::from(*width)]);
                }
                1
            }
            Op::Csr { index, value } => {
                csr(&mut lance, u16::from(*index), *value);
                1
            }
            Op::Bcr { index, value } => {
                lance.write(&mem, 0x12, &u16::from(*index).to_le_bytes());
                lance.write(&mem, 0x16, &value.to_le_bytes());
                0
            }
            Op::Start => {
                csr(&mut lance, 0, 0x0042);
                0
            }
            Op::Init => {
                csr(&mut lance, 0, 0x0004);
                csr(&mut lance, 1, 0x100);
                csr(&mut lance, 2, 0);
                csr(&mut lance, 0, 0x0041);
                1
            }
            Op::Transmit { credits, link } => {
                sink.credits = *credits;
                sink.link = *link;
                let r = lance.transmit(&mem, &mut sink);
                assert!(r.frames <= 512);
                // per descriptor: read, buffer read, error word, status; plus the ring view.
                4 * 512 + 2
            }
            Op::Receive { len, dst } => {
                let mut frame = vec![0u8; *len];
                if *len >= 6 {
                    frame[..6].copy_from_slice(match dst % 3 {
                        0 => &[0x52, 0x54, 0, 1, 2, 3],
                        1 => &[0xff; 6],
                        _ => &[0x01, 0, 0x5e, 0, 0, 1],
                    });
                }
                lance.receive(&mem, &frame);
                // per descriptor: read, up to three buffer writes, status; plus view and MCNT.
                5 * 512 + 4
            }
            Op::RxRoom => {
                let room = lance.rx_room(&mem);
                assert!(room <= 512);
                // The bounded count agrees and reads no more descriptors than its limit (plus the
                // ring view).
                for limit in RX_ROOM_LIMITS {
                    let reads = mem.accesses.get();
                    assert_eq!(lance.rx_room_up_to(&mem, limit), room.min(limit));
                    assert!(mem.accesses.get() - reads <= 1 + limit as u64);
                }
                1 + 512 + RX_ROOM_LIMITS.iter().map(|l| 1 + l).sum::<usize>() as u64
            }
            Op::Pci { offset, value } => {
                lance.pci_config_write(usize::from(*offset), &value.to_le_bytes());
                0
            }
            Op::Poke { addr, bytes } => {
                let _ = mem.inner.write_slice(bytes, GuestAddress(u64::from(*addr)));
                0
            }
        };
        let used = mem.accesses.get() - before;
        assert!(
            used <= bound,
            "{op:?} made {used} guest-memory accesses (bound {bound})"
        );
        assert_eq!(lance.irq_level(), lance.irq_line().level());
    }
    // No single access asks for more than a whole 512-entry ring of 16-byte descriptors.
    assert!(
        mem.largest.get() <= 512 * 16,
        "an access of {} bytes",
        mem.largest.get()
    );
    lance.stats().clone()
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_guest_never_breaks_the_model(img in image(), ops in prop::collection::vec(op(), 1..128)) {
        let mut all = img.prefix();
        all.extend(ops);
        run_image(&img.build(), &all);
    }
}

#[test]
fn a_typical_start_sequence_is_in_the_search_space() {
    // Sanity: INIT + STRT + receive on a plausible ring delivers something, so the property test
    // explores running states and not only a stopped chip.
    let mut image = vec![0u8; 0x2000];
    // 32-bit init block at 0x100: rlen/tlen log2 = 2 (4 entries), rings at 0x1000/0x1800.
    image[0x102] = 0x20;
    image[0x103] = 0x20;
    image[0x104..0x10a].copy_from_slice(&[0x52, 0x54, 0, 1, 2, 3]);
    for i in 0..4 {
        let d = 0x1000 + 16 * i;
        image[d..d + 4].copy_from_slice(&(0x2_0000u32 + 0x800 * i as u32).to_le_bytes());
        image[d + 4..d + 6].copy_from_slice(&1544u16.wrapping_neg().to_le_bytes());
        image[d + 6..d + 8].copy_from_slice(&0x8000u16.to_le_bytes());
    }
    let stats = run(
        &image,
        0x1000,
        0x1800,
        &[
            Op::Bcr {
                index: 20,
                value: 2,
            },
            Op::Init,
            Op::Start,
            Op::Receive { len: 100, dst: 0 },
            Op::RxRoom,
        ],
    );
    assert_eq!(stats.rx_frames, 1);
}
