//! Hostile-guest tests: each QEMU pcnet CVE class, rings/init block/buffers outside guest memory,
//! bad BCNT nibbles, SWSTYLE and WIO/DWIO switches mid-stream, INIT while running, bus mastering
//! off, and malformed register-window accesses. The model must stay bounded and never panic.

mod support;

use lancet::lance::RxOutcome;
use support::pcnet32::*;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const PEER: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];

fn up(cfg: Config) -> (Machine, Pcnet32) {
    let mut m = Machine::new(MAC);
    let mut d = Pcnet32::probe(&mut m, cfg).unwrap();
    d.open(&mut m);
    d.service_interrupts(&mut m);
    (m, d)
}

/// Fill all 16 TX descriptors as one chain of 4096-byte buffers (STP first, ENP on `enp`).
fn long_chain(m: &Machine, d: &Pcnet32, enp: Option<usize>) {
    let style = d.cfg.style;
    for i in (0..d.tx_ring_size).rev() {
        let mut status = 0x8000;
        if i == 0 {
            status |= 0x0200;
        }
        if Some(i) == enp {
            status |= 0x0100;
        }
        style.write_head(
            m,
            d.tx_desc(i),
            Head {
                base: d.tx_buf(0) as u32,
                length: 0xf000,
                status,
                misc: 0,
            },
        );
    }
}

#[test]
fn cve_2015_7504_oversized_tx_chain_is_dropped() {
    let (mut m, d) = up(Config::default());
    long_chain(&m, &d, Some(15));
    let r = m.lance.transmit(&m.mem, &mut m.tx);
    assert_eq!((r.frames, r.errors), (0, 1));
    assert!(m.tx.frames.is_empty());
    assert_eq!(m.lance.stats().tx_dropped_oversize, 1);
    for i in 0..16 {
        let h = d.cfg.style.read_head(&m, d.tx_desc(i));
        assert_eq!(h.status & 0x8000, 0, "descriptor {i} handed back");
    }
    let last = d.cfg.style.read_head(&m, d.tx_desc(15));
    assert_eq!(last.status & 0x4000, 0x4000, "ERR on the last descriptor");
    assert_eq!(last.misc & 0x8000_0000, 0x8000_0000, "BUFF");
}

#[test]
fn cve_2015_7504_oversized_chain_in_loopback_reaches_nothing() {
    let (mut m, d) = up(Config::default());
    let a = d.a;
    a.write_csr(&mut m, 0, CSR0_STOP);
    a.write_csr(&mut m, 15, 0x0044);
    a.write_csr(&mut m, 0, CSR0_START);
    long_chain(&m, &d, Some(15));
    let r = m.lance.transmit(&m.mem, &mut m.tx);
    assert_eq!((r.frames, r.errors), (0, 1));
    assert_eq!(m.lance.stats().rx_frames, 0);
    assert_eq!(m.lance.stats().loopback_frames, 0);
}

#[test]
fn tx_chain_without_enp_is_bounded_by_ring_length() {
    let (mut m, mut d) = up(Config::default());
    long_chain(&m, &d, None);
    let r = m.lance.transmit(&m.mem, &mut m.tx);
    assert_eq!((r.frames, r.errors), (0, 1));
    let last = d.cfg.style.read_head(&m, d.tx_desc(15));
    assert_eq!(last.misc & 0xc000_0000, 0xc000_0000, "BUFF and UFLO");
    assert_eq!(
        a_csr0(&mut m, &d) & 0x0010,
        0,
        "TXON off after underflow (DXSUFLO clear)"
    );
    assert!(!m.lance.tx_polling());
    // The driver sees the FIFO error and would restart the chip.
    d.cur_tx = 16;
    d.service_interrupts(&mut m);
    assert!(d.must_restart);
    assert_eq!(d.stats.tx_fifo_errors, 1);
}

#[test]
fn chain_without_enp_on_a_one_entry_ring_terminates() {
    let mut m = Machine::new(MAC);
    let cfg = Config {
        log_tx: 0,
        log_rx: 0,
        ..Config::default()
    };
    let mut d = Pcnet32::probe(&mut m, cfg).unwrap();
    d.open(&mut m);
    d.cfg.style.write_head(
        &m,
        d.tx_desc(0),
        Head {
            base: d.tx_buf(0) as u32,
            length: 0xff00,
            status: 0x8200,
            misc: 0,
        },
    );
    let r = m.lance.transmit(&m.mem, &mut m.tx);
    assert_eq!((r.frames, r.errors), (0, 1));
    assert_eq!(d.cfg.style.read_head(&m, d.tx_desc(0)).status & 0x8000, 0);
}

fn a_csr0(m: &mut Machine, d: &Pcnet32) -> u16 {
    d.a.read_csr(m, 0)
}

#[test]
fn cve_2015_7512_oversized_rx_frame_touches_nothing() {
    let (mut m, d) = up(Config::default());
    let guard = vec![0x5a; 2048];
    m.write_bytes(d.rx_buf(0), &guard);
    let huge = support::pcnet32::make_frame(MAC, PEER, 1, 9000);
    assert_eq!(m.wire_rx(&huge), RxOutcome::Overflow);
    assert_eq!(m.read_bytes(d.rx_buf(0), 2048), guard);
    assert_eq!(
        d.cfg.style.read_head(&m, d.rx_desc(0)).status & 0x8000,
        0x8000
    );
    assert_eq!(m.lance.stats().rx_overflow, 1);
}

#[test]
fn rx_frame_longer_than_owned_buffers_gets_oflo_buff() {
    let (mut m, mut d) = up(Config::default());
    let style = d.cfg.style;
    // 4 owned 64-byte buffers, then a descriptor the guest still owns.
    for i in 0..d.rx_ring_size {
        let status = if i < 4 { 0x8000 } else { 0 };
        style.write_head(
            &m,
            d.rx_desc(i),
            Head {
                base: d.rx_buf(i) as u32,
                length: 64u16.wrapping_neg(),
                status,
                misc: 0,
            },
        );
        m.write_bytes(d.rx_buf(i), &[0x5a; 128]);
    }
    let frame = support::pcnet32::make_frame(MAC, PEER, 1, 1000);
    assert_eq!(m.wire_rx(&frame), RxOutcome::Overflow);
    let heads: Vec<Head> = (0..5).map(|i| style.read_head(&m, d.rx_desc(i))).collect();
    assert_eq!(heads[0].status, 0x0200, "STP, handed back");
    assert_eq!(heads[1].status, 0x0000);
    assert_eq!(heads[2].status, 0x0000);
    assert_eq!(heads[3].status & 0xff00, 0x5400, "ERR|OFLO|BUFF, no ENP");
    assert_eq!(
        heads[4].status, 0,
        "the next (not owned) descriptor untouched"
    );
    for i in 0..4 {
        let b = m.read_bytes(d.rx_buf(i), 128);
        assert_eq!(&b[..64], &frame[64 * i..64 * (i + 1)]);
        assert!(
            b[64..].iter().all(|&x| x == 0x5a),
            "nothing written past BCNT in buffer {i}"
        );
    }
    assert!(m.read_bytes(d.rx_buf(4), 128).iter().all(|&x| x == 0x5a));
    // The driver counts the errors and recycles the descriptors.
    d.service_interrupts(&mut m);
    assert_eq!(d.stats.rx_over_errors, 1);
    assert_eq!(m.lance.stats().rx_overflow, 1);
}

#[test]
fn cve_2016_7909_ring_length_zero_is_never_used() {
    let (mut m, d) = up(Config::default());
    let a = d.a;
    a.write_csr(&mut m, 0, CSR0_STOP);
    a.write_csr(&mut m, 76, 0);
    a.write_csr(&mut m, 78, 0);
    assert_eq!(a.read_csr(&mut m, 76), 512);
    assert_eq!(a.read_csr(&mut m, 78), 512);
    a.write_csr(&mut m, 72, 0);
    a.write_csr(&mut m, 74, 0xffff);
    assert!(a.read_csr(&mut m, 72) >= 1);
    assert!(a.read_csr(&mut m, 74) >= 1);
    a.write_csr(&mut m, 0, CSR0_START);
    // Whatever the ring holds, a call terminates.
    for seq in 0..600 {
        let _ = m.wire_rx(&support::pcnet32::make_frame(MAC, PEER, seq, 100));
    }
    let _ = m.lance.transmit(&m.mem, &mut m.tx);
}

#[test]
fn one_entry_rings_from_the_init_block_work() {
    let mut m = Machine::new(MAC);
    let mut d = Pcnet32::probe(
        &mut m,
        Config {
            log_tx: 0,
            log_rx: 0,
            ..Config::default()
        },
    )
    .unwrap();
    d.open(&mut m);
    d.service_interrupts(&mut m);
    for seq in 0..10 {
        assert_eq!(
            m.wire_rx(&support::pcnet32::make_frame(MAC, PEER, seq, 100)),
            RxOutcome::Delivered
        );
        assert_eq!(
            m.wire_rx(&support::pcnet32::make_frame(MAC, PEER, seq, 100)),
            RxOutcome::Missed
        );
        d.service_interrupts(&mut m);
    }
    assert_eq!(d.received.iter().filter(|f| !f.data.is_empty()).count(), 10);
}

#[test]
fn init_block_outside_memory_sets_merr() {
    let mut m = Machine::new(MAC);
    let a = Access::Wio;
    a.reset(&mut m);
    a.write_csr(&mut m, 1, 0xfff0);
    a.write_csr(&mut m, 2, 0x7fff);
    a.write_csr(&mut m, 0, CSR0_INIT | CSR0_INTEN);
    let csr0 = a.read_csr(&mut m, 0);
    assert_eq!(csr0 & 0x8900, 0x8800, "MERR and ERR, no IDON: {csr0:#06x}");
    assert!(m.irq(), "MERR interrupts");
    assert_eq!(m.lance.stats().dma_errors, 1);
    // Straddling the end of memory fails the same way.
    a.write_csr(&mut m, 0, CSR0_STOP);
    a.write_csr(&mut m, 1, ((MEM_SIZE - 8) & 0xffff) as u16);
    a.write_csr(&mut m, 2, ((MEM_SIZE - 8) >> 16) as u16);
    a.write_csr(&mut m, 0, CSR0_INIT);
    assert_eq!(a.read_csr(&mut m, 0) & 0x0100, 0);
}

#[test]
fn rings_and_buffers_outside_memory_are_memory_errors() {
    let (mut m, d) = up(Config::default());
    let a = d.a;
    let style = d.cfg.style;
    // Buffers outside memory.
    style.write_head(
        &m,
        d.tx_desc(0),
        Head {
            base: 0xffff_f000,
            length: 100u16.wrapping_neg(),
            status: 0x8300,
            misc: 0,
        },
    );
    let r = m.lance.transmit(&m.mem, &mut m.tx);
    assert_eq!((r.frames, r.errors), (0, 1));
    let h = style.read_head(&m, d.tx_desc(0));
    assert_eq!(h.status & 0xc000, 0x4000, "handed back with ERR");
    style.write_head(
        &m,
        d.rx_desc(0),
        Head {
            base: 0xffff_f000,
            length: NEG_BUF_SIZE,
            status: 0x8000,
            misc: 0,
        },
    );
    assert_eq!(
        m.wire_rx(&support::pcnet32::make_frame(MAC, PEER, 1, 100)),
        RxOutcome::DmaError
    );
    assert_eq!(a.read_csr(&mut m, 0) & 0x0800, 0x0800, "MERR");
    // Rings outside memory: re-init with ring addresses past the end, and straddling it.
    for ring in [0xff00_0000u32, (MEM_SIZE - 64) as u32] {
        a.write_csr(&mut m, 0, CSR0_STOP);
        m.w32(INIT_BLOCK + 20, ring);
        m.w32(INIT_BLOCK + 24, ring);
        a.write_csr(&mut m, 0, CSR0_INIT);
        a.write_csr(&mut m, 0, CSR0_START);
        for seq in 0..40 {
            let out = m.wire_rx(&support::pcnet32::make_frame(MAC, PEER, seq, 100));
            assert!(
                matches!(out, RxOutcome::DmaError | RxOutcome::Missed),
                "{out:?}"
            );
        }
        let _ = m.lance.transmit(&m.mem, &mut m.tx);
    }
    assert!(m.lance.stats().dma_errors >= 3);
}

#[test]
fn bcnt_with_bad_top_nibble_uses_the_low_12_bits() {
    let (mut m, mut d) = up(Config::default());
    let style = d.cfg.style;
    // RX: top nibble 0 instead of 0xF; the low 12 bits still say 1544 bytes.
    m.write_bytes(d.rx_buf(0), &[0x5a; 2048]);
    style.write_head(
        &m,
        d.rx_desc(0),
        Head {
            base: d.rx_buf(0) as u32,
            length: NEG_BUF_SIZE & 0x0fff,
            status: 0x8000,
            misc: 0,
        },
    );
    let frame = support::pcnet32::make_frame(MAC, PEER, 1, 1514);
    assert_eq!(m.wire_rx(&frame), RxOutcome::Delivered);
    let b = m.read_bytes(d.rx_buf(0), 2048);
    assert_eq!(&b[..1514], &frame[..]);
    assert!(
        b[1518..].iter().all(|&x| x == 0x5a),
        "nothing written past 1518 bytes"
    );
    // TX: top nibble 0x3, low bits say 100 bytes.
    let out = support::pcnet32::make_frame(PEER, MAC, 2, 100);
    m.write_bytes(d.tx_buf(0), &out);
    style.write_head(
        &m,
        d.tx_desc(0),
        Head {
            base: d.tx_buf(0) as u32,
            length: (100u16.wrapping_neg() & 0x0fff) | 0x3000,
            status: 0x8300,
            misc: 0,
        },
    );
    d.cur_tx = 1;
    m.lance.transmit(&m.mem, &mut m.tx);
    assert_eq!(m.tx.frames, vec![out]);
    // BCNT 0 means a 4096-byte buffer: an oversize frame, dropped.
    style.write_head(
        &m,
        d.tx_desc(1),
        Head {
            base: d.tx_buf(1) as u32,
            length: 0,
            status: 0x8300,
            misc: 0,
        },
    );
    let r = m.lance.transmit(&m.mem, &mut m.tx);
    assert_eq!((r.frames, r.errors), (0, 1));
}

#[test]
fn swstyle_switch_mid_stream() {
    let (mut m, mut d) = up(Config::default());
    let a = d.a;
    a.write_bcr(&mut m, 20, 0);
    assert_eq!(
        a.read_bcr(&mut m, 20),
        0x0302,
        "BCR20 is not writable while running"
    );
    a.write_csr(&mut m, 58, 3);
    assert_eq!(
        a.read_csr(&mut m, 58),
        0x0302,
        "nor through its CSR58 alias"
    );
    for style in [3u16, 0, 1, 7, 2] {
        let csr5 = a.read_csr(&mut m, 5);
        a.write_csr(&mut m, 5, csr5 | 1);
        a.write_bcr(&mut m, 20, style);
        a.write_csr(&mut m, 5, csr5 & !1);
        for seq in 0..40 {
            let _ = m.wire_rx(&support::pcnet32::make_frame(MAC, PEER, seq, 300));
            let _ = d.start_xmit(&mut m, &support::pcnet32::make_frame(PEER, MAC, seq, 300));
        }
        let _ = m.lance.transmit(&m.mem, &mut m.tx);
    }
    assert_eq!(a.read_bcr(&mut m, 20), 0x0302);
}

#[test]
fn wio_to_dwio_switch_mid_stream() {
    let (mut m, mut d) = up(Config::default());
    m.outl(0x10, 0x1234_5678);
    assert_eq!(m.inw(0x12), 0xffff, "16-bit accesses are ignored in DWIO");
    d.a = Access::Dwio;
    assert_eq!(d.a.read_csr(&mut m, 88), 0x1003);
    // The chip kept running through the switch.
    let f = support::pcnet32::make_frame(PEER, MAC, 1, 100);
    assert!(d.start_xmit(&mut m, &f));
    assert_eq!(m.tx.frames, vec![f]);
    assert_eq!(
        m.wire_rx(&support::pcnet32::make_frame(MAC, PEER, 2, 100)),
        RxOutcome::Delivered
    );
    d.service_interrupts(&mut m);
    assert_eq!(d.stats.rx_packets, 1);
    // S_RESET keeps DWIO (only H_RESET returns to WIO).
    d.a.reset(&mut m);
    assert_eq!(d.a.read_csr(&mut m, 0), 0x0004);
    m.lance.hard_reset();
    assert_eq!(Access::Wio.read_csr(&mut m, 0), 0x0004);
}

#[test]
fn init_while_running() {
    let (mut m, mut d) = up(Config::default());
    let a = d.a;
    // INIT is still set from open: writing it again is ignored, traffic goes on.
    a.write_csr(&mut m, 0, CSR0_INIT | CSR0_INTEN);
    assert_eq!(
        m.wire_rx(&support::pcnet32::make_frame(MAC, PEER, 1, 100)),
        RxOutcome::Delivered
    );
    // Reset and start without INIT: the chip runs on 1-entry rings at address 0.
    a.reset(&mut m);
    a.write_bcr(&mut m, 20, 2);
    a.write_csr(&mut m, 0, CSR0_START);
    for seq in 0..5 {
        let _ = m.wire_rx(&support::pcnet32::make_frame(MAC, PEER, seq, 100));
    }
    // INIT while running picks up the init block; the driver's rings work again.
    d.write_rings_for_test(&mut m);
    a.write_csr(&mut m, 1, INIT_BLOCK as u16);
    a.write_csr(&mut m, 2, 0);
    a.write_csr(&mut m, 0, CSR0_INIT | CSR0_INTEN);
    assert_eq!(
        a.read_csr(&mut m, 0) & 0x0123,
        0x0123,
        "IDON, INIT, running"
    );
    assert_eq!(
        m.wire_rx(&support::pcnet32::make_frame(MAC, PEER, 9, 100)),
        RxOutcome::Delivered
    );
    d.service_interrupts(&mut m);
    assert_eq!(
        d.received.last().unwrap().data,
        support::pcnet32::make_frame(MAC, PEER, 9, 100)
    );
}

#[test]
fn bus_master_off_means_no_dma() {
    let (mut m, mut d) = up(Config::default());
    m.lance.pci_config_write(4, &0x0001u16.to_le_bytes());
    let before = m.read_bytes(0, 0x60_0000);
    let f = support::pcnet32::make_frame(PEER, MAC, 1, 100);
    assert!(d.start_xmit(&mut m, &f));
    assert_eq!(
        m.wire_rx(&support::pcnet32::make_frame(MAC, PEER, 2, 100)),
        RxOutcome::NotRunning
    );
    assert_eq!(m.lance.rx_room(&m.mem), 0);
    assert!(m.tx.frames.is_empty());
    // Only the driver's own writes (TX buffer 0 and descriptor 0) changed memory.
    let after = m.read_bytes(0, 0x60_0000);
    let changed: Vec<usize> = (0..before.len())
        .filter(|&i| before[i] != after[i])
        .collect();
    let txd = d.tx_desc(0) as usize;
    let txb = d.tx_buf(0) as usize;
    assert!(changed
        .iter()
        .all(|&i| (txd..txd + 16).contains(&i) || (txb..txb + 100).contains(&i)));
    // Bus mastering back on: the pending frame goes out.
    m.lance.pci_config_write(4, &0x0005u16.to_le_bytes());
    m.lance.transmit(&m.mem, &mut m.tx);
    assert_eq!(m.tx.frames, vec![f]);
}

#[test]
fn malformed_register_accesses_are_ignored() {
    let (mut m, d) = up(Config::default());
    let mut buf = [0u8; 8];
    for off in [0x0e, 0x0f, 0x11, 0x13, 0x1f, 0x20, 0x40, u64::MAX - 1] {
        for len in [1usize, 2, 3, 4, 8] {
            m.lance.read(&m.mem, off, &mut buf[..len]);
            m.lance.write(&m.mem, off, &[0xff; 8][..len]);
        }
    }
    let mut one = [0u8; 1];
    m.lance.read(&m.mem, 0x10, &mut one);
    assert_eq!(one[0], 0xff, "byte access to RDP reads all ones");
    // RAP only keeps 7 bits; register numbers beyond the files read 0.
    m.outw(0x12, 0xffff);
    assert_eq!(m.inw(0x12), 0x7f);
    assert_eq!(m.inw(0x16), 0, "BCR127 does not exist");
    assert_eq!(d.a.read_csr(&mut m, 88), 0x1003, "chip still answers");
}
