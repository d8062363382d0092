//! The Lance on the machine's buses, driven by hand-made guests through BAR0 (port I/O) and BAR1
//! (MMIO): a frame goes guest ring -> model -> backend and an answer comes back backend -> I/O
//! thread -> guest ring (TX inline on the vCPU and TX on the I/O thread); a hostile guest (init
//! block and rings outside RAM, one-descriptor rings, an endless TX chain, oversize descriptors)
//! leaves the VMM up, the errors counted, and the next VM served.

mod common;

use std::time::Duration;

use common::{pvh_elf_with_data, temp_file, Captured, Code, EchoPort};
use lancet::net::Backend;
use lancet::vmm::{run_vm, RunReport, VmOutcome};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
// Lance WIO registers in BAR0.
const RDP: u16 = 0xc010;
const RAP: u16 = 0xc012;
const RESET: u16 = 0xc014;
const BDP: u16 = 0xc016;
// Guest-physical layout of the test data.
const INIT_BLOCK: u64 = 0x11_0000;
const RX_RING: u64 = 0x11_1000;
const TX_RING: u64 = 0x11_1100;
const RX_BUFFERS: u64 = 0x11_2000;
const TX_BUFFER: u64 = 0x11_6000;
const LONG_TX_RING: u64 = 0x12_0000;
const OUTSIDE_RAM: u32 = 0xf000_0000;
// Descriptor bits (SWSTYLE 2).
const OWN: u32 = 1 << 31;
const STP: u32 = 1 << 25;
const ENP: u32 = 1 << 24;
const ONES: u32 = 0xf000;

fn bcnt(len: u32) -> u32 {
    ONES | (len.wrapping_neg() & 0xfff)
}

fn init_block(rx_log2: u8, tx_log2: u8, rdra: u32, tdra: u32) -> Vec<u8> {
    let mut b = vec![0u8; 28];
    b[2] = rx_log2 << 4;
    b[3] = tx_log2 << 4;
    b[4..10].copy_from_slice(&MAC);
    b[20..24].copy_from_slice(&rdra.to_le_bytes());
    b[24..28].copy_from_slice(&tdra.to_le_bytes());
    b
}

fn descriptor(addr: u32, bits: u32) -> Vec<u8> {
    let mut d = vec![0u8; 16];
    d[0..4].copy_from_slice(&addr.to_le_bytes());
    d[4..8].copy_from_slice(&bits.to_le_bytes());
    d
}

fn test_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0..6].fill(0xff);
    f[6..12].copy_from_slice(&MAC);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f[14..14 + payload.len()].copy_from_slice(payload);
    f
}

/// The peer: answers each frame with "ECHO" in place of the payload, addressed to the sender.
fn echo_reply(frame: &[u8]) -> Option<Vec<u8>> {
    let mut r = frame.get(..60)?.to_vec();
    r[0..6].copy_from_slice(&frame[6..12]);
    r[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    r[14..18].copy_from_slice(b"ECHO");
    Some(r)
}

trait CodeExt {
    fn csr(&mut self, n: u16, v: u16) -> &mut Code;
    fn lance_start(&mut self, init: u64, csr0: u16) -> &mut Code;
    fn wait_csr0(&mut self, mask: u16) -> &mut Code;
}

impl CodeExt for Code {
    fn csr(&mut self, n: u16, v: u16) -> &mut Code {
        self.out16(RAP, n).out16(RDP, v)
    }
    /// STOP, init block address, INIT, wait (bounded) for IDON or MERR, then CSR0 = `csr0`.
    fn lance_start(&mut self, init: u64, csr0: u16) -> &mut Code {
        self.csr(0, 0x0004)
            .csr(1, init as u16)
            .csr(2, (init >> 16) as u16)
            .csr(0, 0x0001)
            .wait_csr0(0x0900)
            .out16(RDP, 0x7f00 | csr0)
    }
    /// Spins (at most 100 000 reads) until CSR0 has a bit of `mask`; RAP must be 0.
    fn wait_csr0(&mut self, mask: u16) -> &mut Code {
        self.mov_dx(RDP);
        self.0.push(0xb9);
        self.0.extend_from_slice(&100_000u32.to_le_bytes()); // mov ecx, n
        self.0.extend_from_slice(&[0x66, 0xed, 0x66, 0xa9]); // in ax, dx; test ax, imm16
        self.0.extend_from_slice(&mask.to_le_bytes());
        self.0.extend_from_slice(&[0x75, 0x02, 0xe2, 0xf6]); // jnz +2; loop back
        self
    }
}

fn reset_and_swstyle2(code: &mut Code) {
    code.in16(RESET);
    code.out16(RAP, 20).out16(BDP, 0x0002);
}

fn run(name: &str, image: Vec<u8>, port: EchoPort, tx_inline: bool) -> (RunReport, String) {
    let path = temp_file(name, &image);
    let serial = Captured::default();
    let backend: Box<dyn Backend> = Box::new(port);
    let report = run_vm(common::vm_config(
        path.clone(),
        "",
        &serial,
        Some(common::lance_net(MAC, backend, tx_inline)),
        Duration::from_secs(60),
    ))
    .expect("VM runs");
    std::fs::remove_file(path).unwrap();
    (report, serial.text())
}

/// Sends one frame through the TX ring and waits (polling the RX descriptor in memory) for the
/// backend's answer; exit status 0 when the answer is in the RX buffer.
fn echo_guest_image() -> Vec<u8> {
    let mut code = Code::default();
    reset_and_swstyle2(&mut code);
    code.lance_start(INIT_BLOCK, 0x0042) // STRT | IENA
        .out16(RDP, 0x0048); // TDMD, keeping IENA (a read/write bit)
                             // Poll RX descriptor 0 until the chip hands it back (OWN clear).
    code.0.push(0xa1);
    code.0
        .extend_from_slice(&((RX_RING + 4) as u32).to_le_bytes());
    code.0.push(0xa9);
    code.0.extend_from_slice(&OWN.to_le_bytes());
    code.0.extend_from_slice(&[0x75, 0xf4]);
    code.load32((RX_BUFFERS + 14) as u32)
        .expect_eax(u32::from_le_bytes(*b"ECHO"), 3)
        .print("ok\n")
        .exit(0);
    let mut data = vec![(INIT_BLOCK, init_block(2, 2, RX_RING as u32, TX_RING as u32))];
    let mut rx = Vec::new();
    for i in 0..4u32 {
        rx.extend(descriptor(RX_BUFFERS as u32 + i * 0x800, OWN | bcnt(1536)));
    }
    data.push((RX_RING, rx));
    data.push((
        TX_RING,
        descriptor(TX_BUFFER as u32, OWN | STP | ENP | bcnt(60)),
    ));
    data.push((TX_BUFFER, test_frame(b"lancet-test")));
    pvh_elf_with_data(&code.0, &data)
}

fn assert_echo_worked(report: &RunReport, serial: &str, sent: &[Vec<u8>]) {
    assert_eq!(report.outcome, VmOutcome::GuestExit(0), "serial: {serial}");
    assert_eq!(serial, "ok\n");
    assert_eq!(sent.len(), 1, "one frame left the guest");
    assert_eq!(&sent[0][14..25], b"lancet-test");
    assert_eq!(&sent[0][6..12], &MAC);
    let nic = report.nic.as_ref().unwrap();
    assert_eq!(nic.tx_frames, 1);
    assert_eq!(nic.rx_frames, 1);
    assert!(nic.irqs_raised >= 1, "{nic:?}");
    assert_eq!(report.frames_moved, 2);
    assert!(report.exits.nic_exits() > 10);
}

#[test]
fn frame_round_trip_with_inline_tx() {
    let (port, sent) = EchoPort::new(echo_reply);
    let (report, serial) = run("echo-inline", echo_guest_image(), port, true);
    assert_echo_worked(&report, &serial, &sent.lock().unwrap());
}

#[test]
fn frame_round_trip_with_tx_on_the_io_thread() {
    let (port, sent) = EchoPort::new(echo_reply);
    let (report, serial) = run("echo-iothread", echo_guest_image(), port, false);
    assert_echo_worked(&report, &serial, &sent.lock().unwrap());
}

#[test]
fn hostile_guest_leaves_the_vmm_up_and_errors_counted() {
    let mut code = Code::default();
    reset_and_swstyle2(&mut code);
    // 1. Init block outside RAM.
    code.lance_start(u64::from(OUTSIDE_RAM), 0x0002);
    // 2. Rings outside RAM, one descriptor each, then TX demand.
    code.lance_start(INIT_BLOCK + 0x40, 0x0002)
        .out16(RDP, 0x0008);
    // 3. An endless chain: 512 descriptors, all STP without ENP.
    code.lance_start(INIT_BLOCK + 0x80, 0x0002)
        .out16(RDP, 0x0008);
    // 4. A buffer outside RAM, then a descriptor longer than any frame.
    code.lance_start(INIT_BLOCK + 0xc0, 0x0002)
        .out16(RDP, 0x0008);
    code.csr(0, 0x0004).print("survived\n").exit(0);

    let mut data = vec![
        (
            INIT_BLOCK + 0x40,
            init_block(0, 0, OUTSIDE_RAM, OUTSIDE_RAM + 0x1000),
        ),
        (
            INIT_BLOCK + 0x80,
            init_block(0, 9, RX_RING as u32, LONG_TX_RING as u32),
        ),
        (
            INIT_BLOCK + 0xc0,
            init_block(0, 1, RX_RING as u32, TX_RING as u32),
        ),
    ];
    let mut tx = descriptor(0xffff_f000, OWN | STP | ENP | bcnt(60));
    tx.extend(descriptor(TX_BUFFER as u32, OWN | STP | ENP | bcnt(4000)));
    data.push((TX_RING, tx));
    let mut chain = Vec::new();
    for _ in 0..512 {
        chain.extend(descriptor(TX_BUFFER as u32, OWN | STP | bcnt(60)));
    }
    data.push((LONG_TX_RING, chain));
    data.push((TX_BUFFER, test_frame(b"hostile")));
    let image = pvh_elf_with_data(&code.0, &data);

    let (mut port, sent) = EchoPort::new(|_| None);
    for _ in 0..3 {
        port.inject(test_frame(b"to-guest"));
    }
    let (report, serial) = run("hostile", image, port, true);
    assert_eq!(report.outcome, VmOutcome::GuestExit(0), "serial: {serial}");
    assert_eq!(serial, "survived\n");
    let nic = report.nic.as_ref().unwrap();
    eprintln!("hostile guest stats: {nic:?}");
    assert!(nic.dma_errors >= 1, "{nic:?}");
    assert!(nic.tx_errors >= 1, "{nic:?}");
    assert!(nic.tx_dropped_oversize >= 1, "{nic:?}");
    assert!(
        sent.lock().unwrap().is_empty(),
        "no malformed frame reached the wire"
    );

    // The same process serves the next VM normally.
    let (port, sent) = EchoPort::new(echo_reply);
    let (report, serial) = run("after-hostile", echo_guest_image(), port, true);
    assert_echo_worked(&report, &serial, &sent.lock().unwrap());
}
