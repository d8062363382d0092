//! `prog=hostile`: programs the Lance the way a broken or malicious guest would (the QEMU pcnet
//! CVE classes and friends), one step after another, resetting the chip between steps. The VMM
//! must stay up and keep the chip sane: after every step a reset must bring CSR0 back to STOP.
//! Prints `lancet-guest: hostile step=NAME csr0=0x....` per step and `lancet-guest: hostile done
//! steps=N` at the end (exit 0); a chip that does not reset gives `lancet-guest: error ...`.

use core::hint::spin_loop;

use crate::fmt::Line;
use crate::lance::{
    rx_word, tx_word, Lance, RawLance, BCR_SOFTWARE_STYLE, BUF_SIZE, CSR_RX_RING_LENGTH,
    CSR_TX_RING_LENGTH, DWIO_RESET_OFFSET, OUTSIDE_RAM, RDP_OFFSET, RX_RING_LEN, TX_RING_LEN,
};
use crate::user;

/// CSR0 after a reset.
const CSR0_STOP: u16 = 0x0004;
/// Time given to the VMM to act on each step (TSC cycles, ~10-30 ms).
const SETTLE_CYCLES: u64 = 50_000_000;

fn settle() {
    let start = user::rdtsc();
    while user::rdtsc().wrapping_sub(start) < SETTLE_CYCLES {
        spin_loop();
    }
}

type Step = fn(&RawLance) -> u16;

/// INIT with the init block outside guest RAM.
fn init_block_outside_ram(raw: &RawLance) -> u16 {
    raw.set_bcr(BCR_SOFTWARE_STYLE, 2);
    raw.init_at(OUTSIDE_RAM)
}

/// Both rings outside guest RAM, then start and transmit demand.
fn rings_outside_ram(raw: &RawLance) -> u16 {
    raw.init(7, 7, OUTSIDE_RAM, OUTSIDE_RAM);
    raw.start_and_kick();
    settle();
    raw.csr(0)
}

/// Valid rings, then ring lengths of zero written while stopped, then start and kick.
fn zero_ring_lengths(raw: &RawLance) -> u16 {
    raw.set_tx(0, raw.tx_buffer(0), tx_word(60, true, true));
    raw.init(7, 7, raw.rx_ring(), raw.tx_ring());
    raw.stop();
    raw.set_csr(CSR_RX_RING_LENGTH, 0);
    raw.set_csr(CSR_TX_RING_LENGTH, 0);
    raw.start_and_kick();
    settle();
    raw.csr(0)
}

/// Every TX descriptor owned, STP on the first, ENP on none: an endless chain.
fn endless_tx_chain(raw: &RawLance) -> u16 {
    for i in 0..TX_RING_LEN {
        raw.set_tx(i, raw.tx_buffer(i), tx_word(BUF_SIZE as u32, i == 0, false));
    }
    raw.init(7, 7, raw.rx_ring(), raw.tx_ring());
    raw.start_and_kick();
    settle();
    raw.csr(0)
}

/// A chain of 4096-byte fragments (BCNT 0 means 4096) larger than any frame, ENP on the last.
fn oversized_tx_chain(raw: &RawLance) -> u16 {
    for i in 0..TX_RING_LEN {
        raw.set_tx(
            i,
            raw.tx_buffer(0),
            tx_word(4096, i == 0, i == TX_RING_LEN - 1),
        );
    }
    raw.init(7, 7, raw.rx_ring(), raw.tx_ring());
    raw.start_and_kick();
    settle();
    raw.csr(0)
}

/// A one-descriptor frame whose buffer is outside guest RAM.
fn tx_buffer_outside_ram(raw: &RawLance) -> u16 {
    raw.set_tx(0, OUTSIDE_RAM, tx_word(60, true, true));
    raw.set_tx(1, 0xffff_f000, tx_word(1514, true, true));
    raw.init(7, 7, raw.rx_ring(), raw.tx_ring());
    raw.start_and_kick();
    settle();
    raw.csr(0)
}

/// A TX descriptor whose BCNT lacks the mandatory ones in the top nibble.
fn bad_bcnt(raw: &RawLance) -> u16 {
    raw.set_tx(0, raw.tx_buffer(0), tx_word(60, true, true) & !0xf000);
    raw.init(7, 7, raw.rx_ring(), raw.tx_ring());
    raw.start_and_kick();
    settle();
    raw.csr(0)
}

/// RX descriptors owned by the chip but pointing outside RAM, left armed for a while (any
/// frame arriving now is written nowhere).
fn rx_buffers_outside_ram(raw: &RawLance) -> u16 {
    for i in 0..RX_RING_LEN {
        raw.set_rx(
            i,
            OUTSIDE_RAM.wrapping_add((i * BUF_SIZE) as u32),
            rx_word(),
        );
    }
    raw.init(9, 7, raw.rx_ring(), raw.tx_ring());
    raw.start_and_kick();
    settle();
    raw.csr(0)
}

/// INIT again while running, with an out-of-range ring length (log2 15) and rings that start
/// just below OUTSIDE_RAM, so they run off the end of what RAM there is.
fn init_while_running(raw: &RawLance) -> u16 {
    raw.init(7, 7, raw.rx_ring(), raw.tx_ring());
    raw.start_and_kick();
    raw.init(15, 15, OUTSIDE_RAM - 16, OUTSIDE_RAM - 16);
    raw.start_and_kick();
    settle();
    raw.csr(0)
}

/// Software style changed while the chip runs, then a transmit demand.
fn swstyle_mid_stream(raw: &RawLance) -> u16 {
    raw.set_tx(0, raw.tx_buffer(0), tx_word(60, true, true));
    raw.init(7, 7, raw.rx_ring(), raw.tx_ring());
    raw.start_and_kick();
    raw.set_bcr(BCR_SOFTWARE_STYLE, 0);
    raw.set_bcr(BCR_SOFTWARE_STYLE, 3);
    raw.set_bcr(BCR_SOFTWARE_STYLE, 4);
    raw.start_and_kick();
    settle();
    raw.csr(0)
}

/// Switch to DWIO with a 32-bit RDP write, poke it, and reset through the DWIO RESET register.
fn dwio_switch(raw: &RawLance) -> u16 {
    raw.write32(RDP_OFFSET, 0);
    let csr0 = raw.read32(RDP_OFFSET) as u16;
    raw.read32(DWIO_RESET_OFFSET);
    csr0
}

const STEPS: [(&str, Step); 11] = [
    ("init-block-outside-ram", init_block_outside_ram),
    ("rings-outside-ram", rings_outside_ram),
    ("zero-ring-lengths", zero_ring_lengths),
    ("endless-tx-chain", endless_tx_chain),
    ("oversized-tx-chain", oversized_tx_chain),
    ("tx-buffer-outside-ram", tx_buffer_outside_ram),
    ("bad-bcnt", bad_bcnt),
    ("rx-buffers-outside-ram", rx_buffers_outside_ram),
    ("init-while-running", init_while_running),
    ("swstyle-mid-stream", swstyle_mid_stream),
    ("dwio-switch", dwio_switch),
];

pub fn run(lance: &Lance) -> ! {
    let raw = RawLance::new(lance);
    for (name, step) in STEPS {
        let csr0 = raw.reset();
        if csr0 != CSR0_STOP {
            let mut line = Line::new();
            line.text("error hostile: before step ")
                .text(name)
                .text(" reset left CSR0=")
                .hex(u64::from(csr0), 4);
            line.print();
            user::exit(crate::ring0::EXIT_FAILURE);
        }
        let after = step(&raw);
        Line::new()
            .text("hostile step=")
            .text(name)
            .text(" csr0=")
            .hex(u64::from(after), 4)
            .print();
    }
    // The last step switched the chip to DWIO. S_RESET keeps DWIO on the Am79C970A (only H_RESET
    // clears BCR18 DWIO, and Linux's probe relies on that), so the final reset and CSR0 read use
    // 32-bit accesses. A model that clears DWIO on S_RESET (QEMU's pcnet) ignores those and reads
    // all ones; then the 16-bit (WIO) reset must work instead.
    let mut csr0 = raw.reset_dwio();
    if csr0 != CSR0_STOP {
        csr0 = raw.reset();
    }
    if csr0 != CSR0_STOP {
        let mut line = Line::new();
        line.text("error hostile: final reset (DWIO, then WIO) left CSR0=")
            .hex(u64::from(csr0), 4);
        line.print();
        user::exit(crate::ring0::EXIT_FAILURE);
    }
    Line::new()
        .text("hostile done steps=")
        .dec(STEPS.len() as u64)
        .print();
    user::exit(0)
}
