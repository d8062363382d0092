//! Helpers shared by the VMM integration tests: a tiny x86 code emitter for hand-made guests, a PVH
//! ELF image builder, a fake NIC model and a captured serial console.
#![allow(dead_code)]

pub mod vm;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lancet::frame::FrameTx;
use lancet::lance::IrqLine;
use lancet::lance::{LanceStats, RegEffect, TxReport};
use lancet::net::{Backend, BackendStats, NetError};
use lancet::vmm::nic::NicModel;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Guest-physical load address of hand-made guests (1 MiB, as the PVH ABI of the test guest).
pub const LOAD_ADDR: u64 = 0x10_0000;

/// Emits 32-bit protected-mode code (the PVH entry state).
#[derive(Default)]
pub struct Code(pub Vec<u8>);

impl Code {
    pub fn mov_dx(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&[0x66, 0xba]);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn mov_al(&mut self, v: u8) -> &mut Self {
        self.0.extend_from_slice(&[0xb0, v]);
        self
    }
    pub fn mov_eax(&mut self, v: u32) -> &mut Self {
        self.0.push(0xb8);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn out8(&mut self, port: u16, v: u8) -> &mut Self {
        self.mov_dx(port).mov_al(v);
        self.0.push(0xee);
        self
    }
    pub fn out32(&mut self, port: u16, v: u32) -> &mut Self {
        self.mov_dx(port).mov_eax(v);
        self.0.push(0xef);
        self
    }
    pub fn out16(&mut self, port: u16, v: u16) -> &mut Self {
        self.mov_dx(port);
        self.0.extend_from_slice(&[0x66, 0xb8]);
        self.0.extend_from_slice(&v.to_le_bytes());
        self.0.extend_from_slice(&[0x66, 0xef]);
        self
    }
    pub fn in8(&mut self, port: u16) -> &mut Self {
        self.mov_dx(port);
        self.0.push(0xec);
        self
    }
    pub fn in16(&mut self, port: u16) -> &mut Self {
        self.mov_dx(port);
        self.0.extend_from_slice(&[0x66, 0xed]);
        self
    }
    pub fn in32(&mut self, port: u16) -> &mut Self {
        self.mov_dx(port);
        self.0.push(0xed);
        self
    }
    /// mov eax, [addr]
    pub fn load32(&mut self, addr: u32) -> &mut Self {
        self.0.push(0xa1);
        self.0.extend_from_slice(&addr.to_le_bytes());
        self
    }
    /// mov [addr], eax
    pub fn store32(&mut self, addr: u32) -> &mut Self {
        self.0.push(0xa3);
        self.0.extend_from_slice(&addr.to_le_bytes());
        self
    }
    pub fn print(&mut self, text: &str) -> &mut Self {
        for b in text.bytes() {
            self.out8(0x3f8, b);
        }
        self
    }
    /// Writes `code` to the debug-exit port, then halts.
    pub fn exit(&mut self, code: u8) -> &mut Self {
        self.out8(0x501, code);
        self.0.push(0xf4);
        self
    }
    /// Unless eax == v, exit with `code`.
    pub fn expect_eax(&mut self, v: u32, code: u8) -> &mut Self {
        self.0.push(0x3d);
        self.0.extend_from_slice(&v.to_le_bytes());
        self.0.extend_from_slice(&[0x74, 8]); // je over the 8-byte exit sequence
        self.exit(code)
    }
    /// Unless al == v, exit with `code`.
    pub fn expect_al(&mut self, v: u8, code: u8) -> &mut Self {
        self.0.extend_from_slice(&[0x3c, v, 0x74, 8]);
        self.exit(code)
    }
    /// Unless ax == v, exit with `code`.
    pub fn expect_ax(&mut self, v: u16, code: u8) -> &mut Self {
        self.0.extend_from_slice(&[0x66, 0x3d]);
        self.0.extend_from_slice(&v.to_le_bytes());
        self.0.extend_from_slice(&[0x74, 8]);
        self.exit(code)
    }
    /// ud2: an invalid opcode with no IDT, so the CPU triple-faults.
    pub fn ud2(&mut self) -> &mut Self {
        self.0.extend_from_slice(&[0x0f, 0x0b]);
        self
    }
    /// Config mechanism #1 address for bus 0.
    pub fn pci_address(device: u32, register: u32) -> u32 {
        0x8000_0000 | (device << 11) | register
    }
}

/// Wraps `code` in an ELF64 image loaded at [`LOAD_ADDR`] with a PVH note pointing at its start.
pub fn pvh_elf(code: &[u8], with_note: bool) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let phnum = if with_note { 2 } else { 1 };
    let note_off = EHDR + PHDR * phnum;
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes()); // namesz
    note.extend_from_slice(&4u32.to_le_bytes()); // descsz
    note.extend_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
    note.extend_from_slice(b"Xen\0");
    let code_off = (note_off + note.len() + 12 + 15) & !15;
    let entry = LOAD_ADDR + code_off as u64;
    note.extend_from_slice(&(entry as u32).to_le_bytes());
    let mut f = vec![0u8; code_off];
    f[0..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // 64-bit
    f[5] = 1; // little endian
    f[6] = 1; // version
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&entry.to_le_bytes());
    f[32..40].copy_from_slice(&(EHDR as u64).to_le_bytes()); // phoff
    f[52..54].copy_from_slice(&(EHDR as u16).to_le_bytes());
    f[54..56].copy_from_slice(&(PHDR as u16).to_le_bytes());
    f[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
    let total = (code_off + code.len()) as u64;
    let mut ph = |i: usize, ty: u32, off: u64, addr: u64, size: u64| {
        let p = &mut f[EHDR + i * PHDR..EHDR + (i + 1) * PHDR];
        p[0..4].copy_from_slice(&ty.to_le_bytes());
        p[4..8].copy_from_slice(&5u32.to_le_bytes()); // R+X
        p[8..16].copy_from_slice(&off.to_le_bytes());
        p[16..24].copy_from_slice(&addr.to_le_bytes());
        p[24..32].copy_from_slice(&addr.to_le_bytes());
        p[32..40].copy_from_slice(&size.to_le_bytes());
        p[40..48].copy_from_slice(&size.to_le_bytes());
        p[48..56].copy_from_slice(&4u64.to_le_bytes());
    };
    ph(0, 1, 0, LOAD_ADDR, total);
    if with_note {
        ph(
            1,
            4,
            note_off as u64,
            LOAD_ADDR + note_off as u64,
            note.len() as u64,
        );
        f[note_off..note_off + note.len()].copy_from_slice(&note);
    }
    f.extend_from_slice(code);
    f
}

/// Like [`pvh_elf`], with `data` blobs placed at guest-physical addresses (all at or above
/// `LOAD_ADDR + 0x1000`, so after the code).
pub fn pvh_elf_with_data(code: &[u8], data: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut image = pvh_elf(code, true);
    let code_end = LOAD_ADDR + image.len() as u64;
    for (addr, bytes) in data {
        assert!(*addr >= code_end, "data at {addr:#x} overlaps the code");
        let off = (addr - LOAD_ADDR) as usize;
        if image.len() < off + bytes.len() {
            image.resize(off + bytes.len(), 0);
        }
        image[off..off + bytes.len()].copy_from_slice(bytes);
    }
    // The PT_LOAD segment covers the whole file.
    let total = image.len() as u64;
    image[64 + 32..64 + 40].copy_from_slice(&total.to_le_bytes());
    image[64 + 40..64 + 48].copy_from_slice(&total.to_le_bytes());
    image
}

/// Writes `bytes` to a fresh file in the temp dir, named after `name` and this process.
pub fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("lancet-test-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A serial sink the test can read back.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A PCI function with a fixed identity and 32 bytes of plain registers, visible through BAR0 and
/// BAR1, recording what the VMM did to it.
pub struct FakeNic<I: IrqLine> {
    pub config: [u8; 256],
    pub regs: [u8; 32],
    pub irq: I,
}

pub const FAKE_VENDOR: u16 = 0x1022;
pub const FAKE_DEVICE: u16 = 0x2000;

impl<I: IrqLine> FakeNic<I> {
    pub fn new(irq: I) -> Self {
        let mut config = [0u8; 256];
        config[0..2].copy_from_slice(&FAKE_VENDOR.to_le_bytes());
        config[2..4].copy_from_slice(&FAKE_DEVICE.to_le_bytes());
        config[0x3d] = 1; // INTA
        Self {
            config,
            regs: [0; 32],
            irq,
        }
    }
    fn command(&self) -> u16 {
        u16::from_le_bytes([self.config[4], self.config[5]])
    }
    fn bar(&self, n: usize) -> u32 {
        let o = 0x10 + 4 * n;
        u32::from_le_bytes(self.config[o..o + 4].try_into().unwrap())
    }
}

impl<I: IrqLine + Send> NicModel for FakeNic<I> {
    fn pci_config_read(&self, offset: usize, data: &mut [u8]) {
        data.copy_from_slice(&self.config[offset..offset + data.len()]);
    }
    fn pci_config_write(&mut self, offset: usize, data: &[u8]) {
        self.config[offset..offset + data.len()].copy_from_slice(data);
    }
    fn io_bar(&self) -> Option<u16> {
        (self.command() & 1 != 0).then(|| (self.bar(0) & !3) as u16)
    }
    fn mmio_bar(&self) -> Option<u64> {
        (self.command() & 2 != 0).then(|| u64::from(self.bar(1) & !15))
    }
    fn read_reg(&mut self, _mem: &GuestMemoryMmap, offset: u64, data: &mut [u8]) {
        let o = offset as usize;
        data.copy_from_slice(&self.regs[o..o + data.len()]);
    }
    fn write_reg(&mut self, _mem: &GuestMemoryMmap, offset: u64, data: &[u8]) -> RegEffect {
        let o = offset as usize;
        self.regs[o..o + data.len()].copy_from_slice(data);
        // Register 0x1c: bit 0 raises the interrupt line, writing 0 lowers it.
        if o == 0x1c {
            self.irq.set_level(data[0] & 1 != 0);
        }
        RegEffect::default()
    }
    fn transmit(&mut self, _mem: &GuestMemoryMmap, _tx: &mut dyn FrameTx) -> TxReport {
        TxReport::default()
    }
    fn tx_polling(&self) -> bool {
        false
    }
    fn rx_room(&self, _mem: &GuestMemoryMmap) -> usize {
        0
    }
    fn receive(&mut self, _mem: &GuestMemoryMmap, _frame: &[u8]) {}
    fn stats(&self) -> LanceStats {
        LanceStats::default()
    }
}

/// A backend that records every transmitted frame and answers each with `reply(frame)` (if any);
/// `inject` queues frames for the guest. Its poll fd is an eventfd readable while frames wait.
pub struct EchoPort {
    pub sent: Arc<Mutex<Vec<Vec<u8>>>>,
    pending: VecDeque<Vec<u8>>,
    ready: EventFd,
    buf: Vec<u8>,
    reply: Box<Responder>,
}

/// The peer's answer (if any) to a frame the guest sent.
pub type Responder = dyn FnMut(&[u8]) -> Option<Vec<u8>> + Send;

impl EchoPort {
    pub fn new(
        reply: impl FnMut(&[u8]) -> Option<Vec<u8>> + Send + 'static,
    ) -> (Self, Arc<Mutex<Vec<Vec<u8>>>>) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let port = Self {
            sent: Arc::clone(&sent),
            pending: VecDeque::new(),
            ready: EventFd::new(EFD_NONBLOCK).unwrap(),
            buf: vec![0; 2048],
            reply: Box::new(reply),
        };
        (port, sent)
    }

    pub fn inject(&mut self, frame: Vec<u8>) {
        self.pending.push_back(frame);
        self.ready.write(1).unwrap();
    }
}

impl FrameTx for EchoPort {
    fn link_up(&self) -> bool {
        true
    }
    fn tx_buffer(&mut self) -> Option<&mut [u8]> {
        Some(&mut self.buf)
    }
    fn tx_commit(&mut self, len: usize) {
        let frame = self.buf[..len].to_vec();
        if let Some(answer) = (self.reply)(&frame) {
            self.inject(answer);
        }
        self.sent.lock().unwrap().push(frame);
    }
}

impl Backend for EchoPort {
    fn kind(&self) -> &'static str {
        "echo-test"
    }
    fn poll_fd(&self) -> RawFd {
        self.ready.as_raw_fd()
    }
    fn recv_batch(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, NetError> {
        let mut n = 0;
        while n < max {
            let Some(frame) = self.pending.pop_front() else {
                break;
            };
            deliver(&frame);
            n += 1;
        }
        if self.pending.is_empty() {
            let _ = self.ready.read();
        }
        Ok(n)
    }
    fn reap(&mut self) {}
    fn stats(&self) -> BackendStats {
        BackendStats {
            tx_frames: self.sent.lock().unwrap().len() as u64,
            ..BackendStats::default()
        }
    }
}

/// Frames a peer sends to the test guest, and parsers for its answers.
pub mod frames {
    use std::net::Ipv4Addr;

    pub const ETH_ARP: u16 = 0x0806;
    pub const ETH_IPV4: u16 = 0x0800;

    fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
        let mut f = Vec::with_capacity(64);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    fn pad(mut f: Vec<u8>) -> Vec<u8> {
        if f.len() < 60 {
            f.resize(60, 0);
        }
        f
    }

    pub fn checksum(bytes: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for chunk in bytes.chunks(2) {
            let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    pub fn arp_request(mac: [u8; 6], ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
        let mut f = eth([0xff; 6], mac, ETH_ARP);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&ip.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target.octets());
        pad(f)
    }

    fn ipv4(
        dst_mac: [u8; 6],
        src_mac: [u8; 6],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        body: &[u8],
    ) -> Vec<u8> {
        let mut f = eth(dst_mac, src_mac, ETH_IPV4);
        let total = (20 + body.len()) as u16;
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&dst.octets());
        let csum = checksum(&ip);
        ip[10..12].copy_from_slice(&csum.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(body);
        pad(f)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn udp(
        dst_mac: [u8; 6],
        src_mac: [u8; 6],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        sport: u16,
        dport: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&sport.to_be_bytes());
        body.extend_from_slice(&dport.to_be_bytes());
        body.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(payload);
        ipv4(dst_mac, src_mac, src, dst, 17, &body)
    }

    pub fn icmp_echo(
        dst_mac: [u8; 6],
        src_mac: [u8; 6],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        seq: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut body = vec![8, 0, 0, 0, 0x42, 0x42];
        body.extend_from_slice(&seq.to_be_bytes());
        body.extend_from_slice(payload);
        let csum = checksum(&body);
        body[2..4].copy_from_slice(&csum.to_be_bytes());
        ipv4(dst_mac, src_mac, src, dst, 1, &body)
    }

    pub fn ethertype(f: &[u8]) -> u16 {
        u16::from_be_bytes([f[12], f[13]])
    }

    /// (op, sender MAC, sender IP, target MAC, target IP).
    pub type Arp = (u16, [u8; 6], Ipv4Addr, [u8; 6], Ipv4Addr);

    /// The fields of an ARP frame.
    pub fn arp_fields(f: &[u8]) -> Option<Arp> {
        if f.len() < 42 || ethertype(f) != ETH_ARP {
            return None;
        }
        let a = &f[14..];
        Some((
            u16::from_be_bytes([a[6], a[7]]),
            a[8..14].try_into().ok()?,
            Ipv4Addr::new(a[14], a[15], a[16], a[17]),
            a[18..24].try_into().ok()?,
            Ipv4Addr::new(a[24], a[25], a[26], a[27]),
        ))
    }

    /// (src, dst, protocol, body) of an IPv4 frame whose header checksum is valid.
    pub fn ipv4_fields(f: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u8, &[u8])> {
        if f.len() < 34 || ethertype(f) != ETH_IPV4 {
            return None;
        }
        let ip = &f[14..];
        let ihl = usize::from(ip[0] & 0xf) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if checksum(&ip[..ihl]) != 0 || total > ip.len() {
            return None;
        }
        Some((
            Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
            Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
            ip[9],
            &ip[ihl..total],
        ))
    }
}

/// The test guest image: $LANCET_GUEST_ELF, else where `make guest` puts it. Panics (the test
/// fails) when it is missing: these tests must never pass silently without the guest.
pub fn test_guest_elf() -> PathBuf {
    let path = std::env::var_os("LANCET_GUEST_ELF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/target/guest/release/lancet-guest"
            ))
        });
    assert!(
        path.is_file(),
        "test guest image {} is missing: run `make guest` first (or set LANCET_GUEST_ELF)",
        path.display()
    );
    path
}

/// A one-vCPU, 64 MiB VM booting `kernel` with `cmdline`, nothing hidden, its console captured in
/// `serial`, the network `net`, stopped after `timeout`; unpinned, no signal handling, no stop
/// check (set `stop_check` with struct update syntax).
pub fn vm_config(
    kernel: PathBuf,
    cmdline: &str,
    serial: &Captured,
    net: Option<lancet::vmm::NetConfig>,
    timeout: std::time::Duration,
) -> lancet::vmm::VmConfig {
    lancet::vmm::VmConfig {
        mem_bytes: 64 << 20,
        cpus: 1,
        boot: lancet::vmm::boot::BootSpec {
            kernel,
            initrd: None,
            cmdline: cmdline.to_string(),
            cpus: 1,
        },
        hidden: lancet::vmm::HiddenFeatures::parse("").unwrap(),
        serial_out: Box::new(serial.clone()),
        net,
        pin_vcpu: None,
        pin_io: None,
        handle_signals: false,
        timeout: Some(timeout),
        stop_check: None,
    }
}

/// The VM's network as the tests run it: the Lance with `mac` (link up) on `backend`, default
/// I/O thread tuning, TX walked inline on the vCPU thread or handed to the I/O thread.
pub fn lance_net(
    mac: [u8; 6],
    backend: Box<dyn Backend>,
    tx_inline: bool,
) -> lancet::vmm::NetConfig {
    lancet::vmm::NetConfig {
        make_nic: Box::new(move |irq| {
            let mut lance = lancet::lance::Lance::new(mac, irq);
            lance.set_link(true);
            Box::new(lance) as Box<dyn NicModel>
        }),
        backend: Some(backend),
        tx_inline,
        io: lancet::vmm::IoTuning::default(),
    }
}
