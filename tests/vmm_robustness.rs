//! The machine against a guest that uses string port I/O and against its own threads failing:
//! `rep insb` / `rep outsw` from a real vCPU reach the Lance as separate accesses of their element
//! size (KVM_EXIT_IO count > 1), and a panicking vCPU or I/O thread stops the VM with a message
//! and a non-zero exit status instead of leaving the main thread waiting forever.

mod common;

use std::time::Duration;

use common::{pvh_elf_with_data, temp_file, Captured, Code, EchoPort};
use lancet::frame::FrameTx;
use lancet::lance::{LanceStats, RegEffect, TxReport};
use lancet::net::{Backend, BackendStats, NetError};
use lancet::vmm::nic::NicModel;
use lancet::vmm::{run_vm, NetConfig, RunReport, VmOutcome};
use vm_memory::GuestMemoryMmap;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x57];
// Lance WIO registers in BAR0.
const RDP: u16 = 0xc010;
const RAP: u16 = 0xc012;
const RESET: u16 = 0xc014;
/// Where `rep ins*` stores what it reads.
const BUFFER: u32 = 0x20_0000;
/// Bounds every VM here: a VM that is never stopped ends as `TimedOut`, which the tests reject.
const VM_TIMEOUT: Duration = Duration::from_secs(30);

fn run(name: &str, code: &Code, net: NetConfig) -> (RunReport, String) {
    let path = temp_file(name, &pvh_elf_with_data(&code.0, &[]));
    let serial = Captured::default();
    let report = run_vm(common::vm_config(
        path.clone(),
        "",
        &serial,
        Some(net),
        VM_TIMEOUT,
    ))
    .expect("VM runs");
    std::fs::remove_file(path).unwrap();
    (report, serial.text())
}

/// `mov edi, dst; mov esi, dst; mov ecx, count; mov dx, port; cld; rep <op>` (op: the string
/// instruction's bytes after the REP prefix).
fn rep(code: &mut Code, op: &[u8], port: u16, count: u32) {
    code.0.push(0xbf);
    code.0.extend_from_slice(&BUFFER.to_le_bytes());
    code.0.push(0xbe);
    code.0.extend_from_slice(&BUFFER.to_le_bytes());
    code.0.push(0xb9);
    code.0.extend_from_slice(&count.to_le_bytes());
    code.mov_dx(port);
    code.0.extend_from_slice(&[0xfc, 0xf3]);
    code.0.extend_from_slice(op);
}

const INSB: [u8; 1] = [0x6c];
const INSW: [u8; 2] = [0x66, 0x6d];
const OUTSW: [u8; 2] = [0x66, 0x6f];

#[test]
fn rep_string_io_from_the_guest_is_separate_accesses() {
    let mut code = Code::default();
    code.in16(RESET).out16(RAP, 1);
    // Two byte reads of RESET (ignored by the chip); one 16-bit read would reset it (RAP = 0).
    rep(&mut code, &INSB, RESET, 2);
    code.in16(RAP).expect_ax(1, 2);
    // Two 16-bit writes of CSR1 from memory: [0x1234, 0x5678]; one 32-bit write would switch the
    // chip to DWIO mode and leave CSR1 alone.
    code.mov_eax(0x5678_1234).store32(BUFFER);
    rep(&mut code, &OUTSW, RDP, 2);
    code.in16(RDP).expect_ax(0x5678, 3);
    // Two 16-bit reads of CSR1 into memory.
    code.mov_eax(0).store32(BUFFER);
    rep(&mut code, &INSW, RDP, 2);
    code.load32(BUFFER).expect_eax(0x5678_5678, 4);
    code.print("ok\n").exit(0);
    let (port, _) = EchoPort::new(|_| None);
    let (report, serial) = run(
        "rep-string-io",
        &code,
        common::lance_net(MAC, Box::new(port), true),
    );
    assert_eq!(report.outcome, VmOutcome::GuestExit(0), "serial: {serial}");
    assert_eq!(serial, "ok\n");
}

/// The Lance, except that a register read panics (a stand-in for any bug in a device model).
struct PanicOnRegisterRead(Box<dyn NicModel>);

impl NicModel for PanicOnRegisterRead {
    fn pci_config_read(&self, offset: usize, data: &mut [u8]) {
        self.0.pci_config_read(offset, data)
    }
    fn pci_config_write(&mut self, offset: usize, data: &[u8]) {
        self.0.pci_config_write(offset, data)
    }
    fn io_bar(&self) -> Option<u16> {
        self.0.io_bar()
    }
    fn mmio_bar(&self) -> Option<u64> {
        self.0.mmio_bar()
    }
    fn read_reg(&mut self, _: &GuestMemoryMmap, _: u64, _: &mut [u8]) {
        panic!("injected device model failure");
    }
    fn write_reg(&mut self, mem: &GuestMemoryMmap, offset: u64, data: &[u8]) -> RegEffect {
        self.0.write_reg(mem, offset, data)
    }
    fn transmit(&mut self, mem: &GuestMemoryMmap, tx: &mut dyn FrameTx) -> TxReport {
        self.0.transmit(mem, tx)
    }
    fn tx_polling(&self) -> bool {
        self.0.tx_polling()
    }
    fn rx_room(&self, mem: &GuestMemoryMmap) -> usize {
        self.0.rx_room(mem)
    }
    fn receive(&mut self, mem: &GuestMemoryMmap, frame: &[u8]) {
        self.0.receive(mem, frame)
    }
    fn stats(&self) -> LanceStats {
        self.0.stats()
    }
}

/// A backend whose fd is readable from the start and whose `reap` panics: the I/O thread's first
/// wake-up fails.
struct PanicOnReap(EchoPort);

impl FrameTx for PanicOnReap {
    fn tx_buffer(&mut self) -> Option<&mut [u8]> {
        self.0.tx_buffer()
    }
    fn tx_commit(&mut self, len: usize) {
        self.0.tx_commit(len)
    }
}

impl Backend for PanicOnReap {
    fn kind(&self) -> &'static str {
        "panic-test"
    }
    fn poll_fd(&self) -> std::os::fd::RawFd {
        self.0.poll_fd()
    }
    fn recv_batch(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, NetError> {
        self.0.recv_batch(max, deliver)
    }
    fn reap(&mut self) {
        panic!("injected backend failure");
    }
    fn stats(&self) -> BackendStats {
        BackendStats::default()
    }
}

fn assert_failed_with(report: &RunReport, expected: &str) {
    match &report.outcome {
        VmOutcome::Failed(message) => assert!(message.contains(expected), "{message}"),
        other => panic!("outcome {other:?}, expected a failure naming {expected:?}"),
    }
    assert_ne!(report.outcome.exit_status(), 0);
}

#[test]
fn a_panicking_vcpu_thread_stops_the_vm_with_a_message() {
    let mut code = Code::default();
    code.in16(RDP).print("survived\n").exit(0);
    let (port, _) = EchoPort::new(|_| None);
    let mut net = common::lance_net(MAC, Box::new(port), true);
    let make_lance = net.make_nic;
    net.make_nic = Box::new(move |irq| Box::new(PanicOnRegisterRead(make_lance(irq))));
    let (report, serial) = run("vcpu-panic", &code, net);
    assert_failed_with(
        &report,
        "the vCPU 0 thread panicked: injected device model failure",
    );
    assert_eq!(serial, "");
}

#[test]
fn a_panicking_io_thread_stops_the_vm_with_a_message() {
    // The guest spins forever: only the I/O thread's failure can end this VM before the timeout.
    let mut code = Code::default();
    code.0.extend_from_slice(&[0xeb, 0xfe]);
    let (mut port, _) = EchoPort::new(|_| None);
    port.inject(vec![0; 60]);
    let net = common::lance_net(MAC, Box::new(PanicOnReap(port)), true);
    let (report, _) = run("io-panic", &code, net);
    assert_failed_with(&report, "the I/O thread panicked: injected backend failure");
    assert_eq!(
        report
            .io_thread_error
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("the I/O thread panicked: injected backend failure")
    );
}
