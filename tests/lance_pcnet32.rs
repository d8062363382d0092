//! The Lance model driven by a re-enactment of the Linux pcnet32 driver (tests/support/pcnet32.rs):
//! probe, open, transmit, receive, interrupts, ring wrap-around, filters, MISS, LCAR, loopback,
//! close; for SWSTYLE 2 (Linux), 0 and 3, and for WIO and DWIO register access.

mod support;

use lancet::lance::RxOutcome;
use support::pcnet32::*;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const PEER: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
const BROADCAST: [u8; 6] = [0xff; 6];

fn up(cfg: Config) -> (Machine, Pcnet32) {
    let mut m = Machine::new(MAC);
    if cfg.access == Access::Dwio {
        // A previous user left the chip in DWIO mode: a 32-bit write to RDP switches it.
        m.outl(0x10, 0);
    }
    let mut d = Pcnet32::probe(&mut m, cfg).expect("probe");
    assert_eq!(d.a, cfg.access, "probe picked the wrong access method");
    d.open(&mut m);
    // IDON is pending with IENA set: the line is up until the handler runs.
    assert!(m.irq(), "IDON interrupt after open");
    d.service_interrupts(&mut m);
    assert!(!m.irq());
    (m, d)
}

#[test]
fn pci_identity_is_a_79c970a() {
    let m = Machine::new(MAC);
    let mut id = [0u8; 4];
    m.lance.pci_config_read(0, &mut id);
    assert_eq!(u32::from_le_bytes(id), 0x2000_1022);
    m.lance.pci_config_read(8, &mut id);
    assert_eq!(
        u32::from_le_bytes(id),
        0x0200_0010,
        "class 020000, revision 0x10"
    );
    let mut pin = [0u8; 1];
    m.lance.pci_config_read(0x3d, &mut pin);
    assert_eq!(pin[0], 1, "INTA");
    assert_eq!(m.lance.io_bar(), Some(IO_BASE));
    assert_eq!(m.lance.mmio_bar(), None, "memory decoding was not enabled");
}

#[test]
fn probe_finds_wio_chip_id_and_mac() {
    let mut m = Machine::new(MAC);
    let d = Pcnet32::probe(&mut m, Config::default()).unwrap();
    assert_eq!(d.a, Access::Wio);
    assert_eq!(d.chip_version, 0x0262_1003);
    assert_eq!(d.mac, MAC);
    // APROM: checksum and 'WW'.
    let prom: Vec<u8> = (0..16).map(|i| m.inb(i)).collect();
    assert_eq!(&prom[14..16], b"WW");
    assert_eq!(prom[9], 0x11);
    let sum: u16 = prom[..12]
        .iter()
        .chain(&prom[14..])
        .map(|&b| u16::from(b))
        .sum();
    assert_eq!(u16::from_le_bytes([prom[12], prom[13]]), sum);
    // BCR20 = 2 derived SSIZE32|CSRPCNET.
    assert_eq!(Access::Wio.read_bcr(&mut m, 20), 0x0302);
    assert_eq!(
        Access::Wio.read_bcr(&mut m, 2) & 0x1000,
        0x1000,
        "LED program enable"
    );
    assert!(!m.irq());
}

#[test]
fn open_sets_rings_from_init_block_and_runs() {
    let (mut m, d) = up(Config::default());
    let a = d.a;
    let csr0 = a.read_csr(&mut m, 0);
    assert_eq!(
        csr0 & 0x0073,
        0x0073,
        "INIT, STRT, TXON, RXON, IENA: {csr0:#06x}"
    );
    assert_eq!(csr0 & 0x0004, 0, "not stopped");
    assert_eq!(a.read_csr(&mut m, 76), 32, "RX ring length");
    assert_eq!(a.read_csr(&mut m, 78), 16, "TX ring length");
    assert_eq!(
        a.read_csr(&mut m, 6),
        0x4500,
        "log2 lengths TLEN<<12 | RLEN<<8"
    );
    assert_eq!(a.read_csr(&mut m, 4), 0x0915);
    assert_eq!(m.lance.mac(), MAC);
    assert!(d.link_ok(&mut m), "link LED reports link up");
    assert!(m.lance.tx_polling());
    assert_eq!(m.lance.rx_room(&m.mem), 32);
}

fn xmit_and_check(m: &mut Machine, d: &mut Pcnet32, count: u32) {
    for seq in 0..count {
        let len = 60 + (seq as usize * 37) % (1514 - 60);
        let frame = make_frame(PEER, MAC, seq, len);
        let before = m.tx.frames.len();
        assert!(d.start_xmit(m, &frame));
        assert_eq!(
            m.tx.frames.len(),
            before + 1,
            "TDMD transmitted the frame at once"
        );
        assert_eq!(
            m.tx.frames.last().unwrap(),
            &frame,
            "frame {seq} byte for byte"
        );
        assert!(m.irq(), "TINT raises the line");
        assert_eq!(d.service_interrupts(m), 1);
        assert!(!m.irq(), "handler lowered the line");
    }
}

#[test]
fn xmit_sends_frames_byte_for_byte_with_tint() {
    let (mut m, mut d) = up(Config::default());
    xmit_and_check(&mut m, &mut d, 40);
    assert_eq!(d.stats.tx_packets, 40);
    assert_eq!(d.stats.tx_errors, 0);
    assert_eq!(m.lance.stats().tx_frames, 40);
    assert!(
        m.tx.flushes >= 40,
        "one flush per transmit() that committed frames"
    );
}

#[test]
fn short_frames_are_padded_to_60_by_apad_xmt() {
    let (mut m, mut d) = up(Config::default());
    let frame = make_frame(PEER, MAC, 1, 42);
    d.start_xmit(&mut m, &frame);
    let sent = m.tx.frames.last().unwrap();
    assert_eq!(sent.len(), 60);
    assert_eq!(&sent[..42], &frame[..]);
    assert!(sent[42..].iter().all(|&b| b == 0));
}

#[test]
fn receive_writes_frame_mcnt_and_match_bits() {
    let (mut m, mut d) = up(Config::default());
    let cases: [([u8; 6], usize, u16); 4] = [
        (MAC, 1514, 0x0040),      // PAM
        (MAC, 42, 0x0040),        // short: padded to 60
        (BROADCAST, 100, 0x0010), // BAM
        (MAC, 1518, 0x0040),      // VLAN-sized
    ];
    for (i, (dst, len, match_bit)) in cases.iter().enumerate() {
        let frame = make_frame(*dst, PEER, i as u32, *len);
        assert_eq!(m.wire_rx(&frame), RxOutcome::Delivered);
        assert!(m.irq(), "RINT raises the line");
        d.service_interrupts(&mut m);
        assert!(!m.irq());
        let got = d.received.last().unwrap().clone();
        let padded = (*len).max(60);
        assert_eq!(got.mcnt as usize, padded + 4, "MCNT counts padding and FCS");
        assert_eq!(
            got.status & 0x7fff,
            0x0300 | match_bit,
            "status {:#06x}",
            got.status
        );
        assert_eq!(&got.data[..*len], &frame[..]);
        assert!(got.data[*len..].iter().all(|&b| b == 0), "padding is zeros");
    }
    assert_eq!(d.stats.rx_packets, 4);
    assert_eq!(m.lance.stats().rx_frames, 4);
}

fn traffic_with_wraparound(cfg: Config, frames: u32) {
    let (mut m, mut d) = up(cfg);
    let mut next_rx = 0;
    for seq in 0..frames {
        let len = 60 + (seq as usize * 131) % (1514 - 60);
        let out = make_frame(PEER, MAC, seq, len);
        assert!(d.start_xmit(&mut m, &out), "TX ring full at {seq}");
        let inbound = make_frame(MAC, PEER, seq, 1514 - len + 60);
        assert_eq!(m.wire_rx(&inbound), RxOutcome::Delivered, "frame {seq}");
        // Let a few events pile up before servicing, like a busy guest.
        if seq % 5 == 4 {
            d.service_interrupts(&mut m);
            assert!(!m.irq());
            for f in &d.received[next_rx..] {
                let s = u32::from_be_bytes(f.data[14..18].try_into().unwrap());
                assert_eq!(s as usize, next_rx, "RX order");
                next_rx += 1;
            }
        }
        assert_eq!(m.tx.frames.last().unwrap(), &out);
    }
    d.service_interrupts(&mut m);
    assert_eq!(m.tx.frames.len(), frames as usize);
    assert_eq!(d.received.len(), frames as usize);
    assert_eq!(d.stats.tx_packets, u64::from(frames));
    assert_eq!(d.stats.rx_packets, u64::from(frames));
    for (i, f) in d.received.iter().enumerate() {
        let len = 1514 - (60 + (i * 131) % (1514 - 60)) + 60;
        assert_eq!(f.data, make_frame(MAC, PEER, i as u32, len), "RX frame {i}");
    }
    // The rings went around many times and the counters agree with the driver.
    assert!(d.cur_rx > 50 * d.rx_ring_size && d.cur_tx > 50 * d.tx_ring_size);
    let a = d.a;
    assert_eq!(
        usize::from(a.read_csr(&mut m, 72)),
        d.rx_ring_size - (d.cur_rx % d.rx_ring_size)
    );
    assert_eq!(
        usize::from(a.read_csr(&mut m, 74)),
        d.tx_ring_size - (d.cur_tx % d.tx_ring_size)
    );
    let s = m.lance.stats();
    assert_eq!(
        (s.rx_missed, s.rx_overflow, s.tx_errors, s.dma_errors),
        (0, 0, 0, 0)
    );
    let missed = d.close(&mut m);
    assert_eq!(missed, 0);
}

#[test]
fn wraparound_swstyle2_wio() {
    traffic_with_wraparound(Config::default(), 3000);
}

#[test]
fn wraparound_swstyle0_16bit_structures() {
    traffic_with_wraparound(
        Config {
            style: SwStyle::Lance16,
            ..Config::default()
        },
        3000,
    );
}

#[test]
fn wraparound_swstyle3() {
    traffic_with_wraparound(
        Config {
            style: SwStyle::Swapped,
            ..Config::default()
        },
        3000,
    );
}

#[test]
fn wraparound_dwio() {
    traffic_with_wraparound(
        Config {
            access: Access::Dwio,
            ..Config::default()
        },
        3000,
    );
}

#[test]
fn dwio_mode_ignores_16_bit_accesses() {
    let (mut m, _d) = up(Config {
        access: Access::Dwio,
        ..Config::default()
    });
    assert_eq!(m.inw(0x12), 0xffff, "16-bit RAP read in DWIO");
    assert_eq!(Access::Dwio.read_csr(&mut m, 88), 0x1003);
    assert_eq!(
        Access::Dwio.read_bcr(&mut m, 18) & 0x0080,
        0x0080,
        "BCR18 DWIO"
    );
    // APROM byte reads work in DWIO too (Linux probe uses inb).
    assert_eq!(m.inb(0), MAC[0]);
}

#[test]
fn multicast_filter_accepts_only_hashed_groups() {
    let (mut m, mut d) = up(Config::default());
    let group_a = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
    let bit = |g: &[u8; 6]| lancet::lance::filter::ether_crc_le(g) >> 26;
    // Find a group whose hash bit differs from group_a's.
    let group_b = (2u8..255)
        .map(|x| [0x01, 0x00, 0x5e, 0x00, 0x00, x])
        .find(|g| bit(g) != bit(&group_a))
        .unwrap();
    let f_b = make_frame(group_b, PEER, 1, 100);
    assert_eq!(
        m.wire_rx(&f_b),
        RxOutcome::Filtered,
        "no multicast configured"
    );
    d.set_multicast_list(&mut m, false, &[group_a]);
    assert!(m.lance.rx_room(&m.mem) > 0, "resumed after SPND");
    let f_a = make_frame(group_a, PEER, 2, 100);
    assert_eq!(m.wire_rx(&f_a), RxOutcome::Delivered);
    assert_eq!(m.wire_rx(&f_b), RxOutcome::Filtered);
    d.service_interrupts(&mut m);
    assert_eq!(d.received.len(), 1);
    assert_eq!(d.received[0].status & 0x00f0, 0x0020, "LAFM");
    assert_eq!(d.received[0].data, f_a);
    assert_eq!(m.lance.stats().rx_filtered, 2);
}

#[test]
fn promiscuous_mode_accepts_other_unicast() {
    let (mut m, mut d) = up(Config::default());
    let other = make_frame([0x02, 0, 0, 0, 0, 9], PEER, 7, 200);
    assert_eq!(m.wire_rx(&other), RxOutcome::Filtered);
    d.set_multicast_list(&mut m, true, &[]);
    assert_eq!(m.wire_rx(&other), RxOutcome::Delivered);
    d.service_interrupts(&mut m);
    assert_eq!(d.received.len(), 1);
    assert_eq!(d.received[0].data, other);
    assert_eq!(
        d.received[0].status & 0x00f0,
        0,
        "no match bits in promiscuous mode"
    );
    d.set_multicast_list(&mut m, false, &[]);
    assert_eq!(m.wire_rx(&other), RxOutcome::Filtered);
}

#[test]
fn miss_and_csr112_when_guest_stops_refilling() {
    let (mut m, mut d) = up(Config::default());
    // The guest stops servicing RX: the 32 owned descriptors fill up, then frames are missed.
    for seq in 0..32 {
        assert_eq!(
            m.wire_rx(&make_frame(MAC, PEER, seq, 200)),
            RxOutcome::Delivered
        );
    }
    assert_eq!(m.lance.rx_room(&m.mem), 0);
    for seq in 32..37 {
        assert_eq!(
            m.wire_rx(&make_frame(MAC, PEER, seq, 200)),
            RxOutcome::Missed
        );
    }
    let a = d.a;
    let csr0 = a.read_csr(&mut m, 0);
    assert_eq!(csr0 & 0x9000, 0x9000, "MISS and ERR: {csr0:#06x}");
    assert_eq!(m.lance.stats().rx_missed, 5);
    // The guest comes back: handler sees MISS, NAPI drains all 32, ring works again.
    d.service_interrupts(&mut m);
    assert_eq!(
        d.stats.rx_errors, 1,
        "MISS counted by the interrupt handler"
    );
    assert_eq!(d.received.len(), 32);
    assert_eq!(
        m.wire_rx(&make_frame(MAC, PEER, 99, 200)),
        RxOutcome::Delivered
    );
    assert_eq!(d.close(&mut m), 5, "CSR112 read at close");
    assert_eq!(
        m.wire_rx(&make_frame(MAC, PEER, 100, 200)),
        RxOutcome::NotRunning
    );
}

#[test]
fn lcar_when_backend_link_is_down() {
    let (mut m, mut d) = up(Config::default());
    m.tx.link = false;
    m.lance.set_link(false);
    assert!(!d.link_ok(&mut m), "BCR4 reads 0x00c0 without link");
    let frame = make_frame(PEER, MAC, 1, 100);
    d.start_xmit(&mut m, &frame);
    assert!(
        m.tx.frames.is_empty(),
        "nothing reaches the wire without carrier"
    );
    d.service_interrupts(&mut m);
    assert_eq!(d.stats.tx_carrier_errors, 1);
    assert_eq!(d.stats.tx_errors, 1);
    assert_eq!(m.lance.stats().tx_lcar, 1);
    m.tx.link = true;
    m.lance.set_link(true);
    assert!(d.link_ok(&mut m));
    d.start_xmit(&mut m, &frame);
    assert_eq!(m.tx.frames, vec![frame]);
}

#[test]
fn backend_without_buffers_leaves_descriptor_owned() {
    let (mut m, mut d) = up(Config::default());
    m.tx.credits = Some(0);
    let frame = make_frame(PEER, MAC, 1, 100);
    d.start_xmit(&mut m, &frame);
    assert!(m.tx.frames.is_empty());
    let head = d.cfg.style.read_head(&m, d.tx_desc(0));
    assert_eq!(head.status & 0x8000, 0x8000, "still owned by the chip");
    assert_eq!(m.lance.stats().tx_blocked, 1);
    m.tx.credits = None;
    let r = m.lance.transmit(&m.mem, &mut m.tx);
    assert_eq!((r.frames, r.blocked), (1, false));
    assert_eq!(m.tx.frames, vec![frame]);
}

#[test]
fn loopback_returns_frames_to_own_rx_ring() {
    // What pcnet32_loopback_test does: CSR15 LOOP|INTL, frames addressed to ourselves.
    let (mut m, mut d) = up(Config::default());
    let a = d.a;
    a.write_csr(&mut m, 0, CSR0_STOP);
    let x = a.read_csr(&mut m, 15) & 0xfffc;
    a.write_csr(&mut m, 15, x | 0x0044);
    a.write_csr(&mut m, 0, CSR0_START | CSR0_INTEN);
    assert_eq!(
        m.wire_rx(&make_frame(MAC, PEER, 0, 100)),
        RxOutcome::NotRunning,
        "wire ignored in loopback"
    );
    for seq in 0..4 {
        let frame = make_frame(MAC, MAC, seq, 75);
        d.start_xmit(&mut m, &frame);
    }
    assert!(
        m.tx.frames.is_empty(),
        "loopback frames do not reach the backend"
    );
    d.service_interrupts(&mut m);
    assert_eq!(d.received.len(), 4);
    for (seq, f) in d.received.iter().enumerate() {
        assert_eq!(f.data, make_frame(MAC, MAC, seq as u32, 75));
        assert_eq!(f.mcnt, 75 + 4);
    }
    assert_eq!(m.lance.stats().loopback_frames, 4);
}

#[test]
fn interrupt_masks_hold_the_line_until_unmasked() {
    let (mut m, d) = up(Config::default());
    let a = d.a;
    // Mask RINT, receive: status set but no interrupt.
    a.write_csr(&mut m, 3, 0x0400);
    m.wire_rx(&make_frame(MAC, PEER, 1, 64));
    assert!(!m.irq());
    assert_eq!(a.read_csr(&mut m, 0) & 0x0480, 0x0400, "RINT without INTR");
    // Unmask: the pending source raises the line.
    a.write_csr(&mut m, 3, 0);
    assert!(m.irq());
    // IENA off lowers it; back on raises it again; W1C clears it for good.
    a.write_csr(&mut m, 0, 0);
    assert!(!m.irq());
    a.write_csr(&mut m, 0, CSR0_INTEN);
    assert!(m.irq());
    a.write_csr(&mut m, 0, CSR0_INTEN | 0x0400);
    assert!(!m.irq());
    let t = &m.lance.irq_line().transitions;
    assert!(
        t.windows(2).all(|w| w[0] != w[1]),
        "the line is only told about changes"
    );
}

#[test]
fn close_stops_and_selects_16_bit_style() {
    let (mut m, mut d) = up(Config::default());
    d.close(&mut m);
    let a = d.a;
    assert_eq!(a.read_csr(&mut m, 0), 0x0004);
    assert_eq!(
        a.read_bcr(&mut m, 20),
        0x0200,
        "invalid style 4 reads back as style 0"
    );
    assert!(!m.lance.tx_polling());
    assert_eq!(m.lance.rx_room(&m.mem), 0);
    assert!(!m.irq());
}

#[test]
fn drx_dtx_and_dpoll_are_respected() {
    let (mut m, mut d) = up(Config::default());
    let a = d.a;
    a.write_csr(&mut m, 0, CSR0_STOP);
    a.write_csr(&mut m, 15, 0x0003); // DRX | DTX
    a.write_csr(&mut m, 0, CSR0_START | CSR0_INTEN);
    assert_eq!(a.read_csr(&mut m, 0) & 0x0030, 0, "neither TXON nor RXON");
    assert_eq!(
        m.wire_rx(&make_frame(MAC, PEER, 1, 64)),
        RxOutcome::NotRunning
    );
    d.start_xmit(&mut m, &make_frame(PEER, MAC, 1, 64));
    assert!(m.tx.frames.is_empty());
    assert!(!m.lance.tx_polling());
    a.write_csr(&mut m, 0, CSR0_STOP);
    a.write_csr(&mut m, 15, 0);
    a.write_csr(&mut m, 4, 0x0915 | 0x1000); // DPOLL
    a.write_csr(&mut m, 0, CSR0_START | CSR0_INTEN);
    assert!(!m.lance.tx_polling(), "DPOLL: the VMM must not poll");
    a.write_csr(&mut m, 4, 0x0915);
    assert!(m.lance.tx_polling());
    assert_eq!(m.lance.stats().rx_not_running, 1);
}

#[test]
fn intx_disable_masks_the_line() {
    let (mut m, _d) = up(Config::default());
    m.wire_rx(&make_frame(MAC, PEER, 1, 64));
    assert!(m.irq());
    m.lance
        .pci_config_write(4, &(0x0005u16 | 0x0400).to_le_bytes());
    assert!(!m.irq(), "INTx disabled");
    m.lance.pci_config_write(4, &0x0005u16.to_le_bytes());
    assert!(m.irq(), "pending RINT asserts again");
}
