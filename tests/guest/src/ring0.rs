//! Ring 0: everything the guest must do with privilege, kept short because ring 0 is emulated
//! (~1 us per instruction) on the target machine. It installs the TSS and IDT, finds the Lance by a
//! PCI config mechanism #1 scan, programs the 8259 PIC, serves the ring-3 requests (`int3` with
//! %rax = request) and the NIC interrupt, writes the serial console, and exits through port 0x501.
//!
//! No SSE in this module: every function is placed in `.text.ring0` (checked by
//! `tests/guest/check-ring0.sh`) and tables are written with volatile scalar stores.

use core::arch::{asm, global_asm};
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use crate::boot::{gdt64, pvh_start_info, KERNEL_CS, TSS_SEL, USER_CS, USER_DS};

/// COM1 data register; only ring 0 writes it.
const SERIAL_DATA: u16 = 0x3f8;
/// COM1 line status register.
const SERIAL_LSR: u16 = 0x3fd;
/// Line status: transmit holding register empty.
const LSR_THRE: u8 = 0x20;
/// Bounded wait for THRE, so a console without a 16550 cannot hang the guest.
const SERIAL_SPIN_LIMIT: u32 = 256;
/// isa-debug-exit (QEMU) / lancet exit port: a byte written here ends the VM.
const EXIT_PORT: u16 = 0x501;

/// PCI configuration mechanism #1 address and data ports.
const PCI_CONFIG_ADDRESS: u16 = 0xcf8;
const PCI_CONFIG_DATA: u16 = 0xcfc;
const PCI_ENABLE: u32 = 0x8000_0000;
const PCI_REG_ID: u8 = 0x00;
const PCI_REG_COMMAND: u8 = 0x04;
const PCI_REG_BAR0: u8 = 0x10;
const PCI_REG_BAR1: u8 = 0x14;
const PCI_REG_INTERRUPT_LINE: u8 = 0x3c;
/// Command register: I/O space, memory space, bus master.
const PCI_COMMAND_IO_MEM_MASTER: u32 = 0x0007;
/// Vendor 0x1022 (AMD), device 0x2000 (PCnet-PCI), as read from config offset 0.
const LANCE_PCI_ID: u32 = 0x2000_1022;
const PCI_DEVICES_PER_BUS: u8 = 32;
const PCI_BAR_IO_MASK: u32 = !0x3;
const PCI_BAR_MEM_MASK: u32 = !0xf;
/// Offset of RDP (CSR data port) inside the Lance register window.
const LANCE_RDP: u64 = 0x10;

/// 8259 PIC ports.
const PIC1_CMD: u16 = 0x20;
const PIC1_DATA: u16 = 0x21;
const PIC2_CMD: u16 = 0xa0;
const PIC2_DATA: u16 = 0xa1;
/// Edge/level control registers (one bit per IRQ, 1 = level).
const ELCR1: u16 = 0x4d0;
const ELCR2: u16 = 0x4d1;
const PIC_ICW1_INIT_ICW4: u8 = 0x11;
const PIC_ICW4_8086: u8 = 0x01;
const PIC_CASCADE_IRQ: u8 = 2;
/// First vector of the remapped PIC IRQs (IRQ n -> vector 0x20 + n).
pub const IRQ_VECTOR_BASE: u8 = 0x20;
const IRQ_COUNT: u8 = 16;
/// Exceptions handled by the common trap path.
const EXCEPTION_COUNT: usize = 32;
const BREAKPOINT_VECTOR: usize = 3;

/// IDT gate attributes: present, interrupt gate, DPL 0 / DPL 3.
const GATE_INTERRUPT_DPL0: u64 = 0x8e;
const GATE_INTERRUPT_DPL3: u64 = 0xee;
/// TSS descriptor type: present, 64-bit available TSS.
const TSS_DESCRIPTOR_TYPE: u64 = 0x89;
const TSS_SIZE: usize = 104;
/// GDT index of the TSS descriptor.
const GDT_TSS_INDEX: usize = 5;

/// `struct hvm_start_info` magic and field offsets (PVH boot ABI).
const HVM_START_MAGIC: u32 = 0x336e_c578;
const HVM_CMDLINE_PADDR_OFFSET: usize = 24;

/// Ring-3 requests (`int3` with %rax = number).
pub const REQ_PRINT: u64 = 1;
pub const REQ_EXIT: u64 = 2;
pub const REQ_WAIT_IRQ: u64 = 3;
/// Longest string a print request may pass.
const PRINT_LIMIT: usize = 512;

/// Exit status for every failure (ABI: `lancet-guest: error ...` then exit 2).
pub const EXIT_FAILURE: u8 = 2;

/// What ring 0 found, handed to ring 3 (read-only there).
#[repr(C)]
pub struct BootInfo {
    /// Guest-physical address of the NUL-terminated command line (0 if none).
    pub cmdline: u64,
    /// Lance I/O BAR (BAR0) base.
    pub io_base: u32,
    /// Lance MMIO BAR (BAR1) base.
    pub mmio_base: u32,
    /// PCI device number on bus 0.
    pub pci_device: u8,
    /// Legacy PIC IRQ from the Interrupt Line register.
    pub irq: u8,
}

static mut BOOT_INFO: BootInfo = BootInfo {
    cmdline: 0,
    io_base: 0,
    mmio_base: 0,
    pci_device: 0,
    irq: 0,
};

/// Address of the Lance RDP register in the MMIO BAR, used by the interrupt stub.
#[no_mangle]
static mut lancet_nic_rdp: u64 = 0;
/// Set by the NIC interrupt stub, cleared by the wait request.
#[no_mangle]
static mut lancet_irq_pending: u8 = 0;

#[repr(C, align(16))]
struct Tss([u32; TSS_SIZE / 4]);
static mut TSS: Tss = Tss([0; TSS_SIZE / 4]);

#[repr(C, align(4096))]
struct Idt([u64; 512]);
static mut IDT: Idt = Idt([0; 512]);

extern "C" {
    static ring0_stack_top: u8;
    static user_stack_top: u8;
    /// Addresses of the 32 exception stubs.
    static lancet_trap_table: [u64; EXCEPTION_COUNT];
    fn lancet_int3_entry();
    fn lancet_irq_nic_entry();
    fn lancet_irq_other_entry();
    fn lancet_enter_user(entry: u64, stack: u64, arg: u64) -> !;
}

/// Saved state of a trap taken through the common path.
#[repr(C)]
pub struct TrapFrame {
    r15: u64,
    r14: u64,
    r13: u64,
    r12: u64,
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rbp: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    rcx: u64,
    rbx: u64,
    rax: u64,
    vector: u64,
    error: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

// Exception stubs (push a zero error code where the CPU does not), the common trap path, the hot
// int3 "wait for interrupt" path, the interrupt stubs, and the iretq into ring 3.
global_asm!(
    r#"
    .section .text.ring0.stubs, "ax"
    .macro LANCET_TRAP_NOERR vec
    lancet_trap_\vec:
        pushq $0
        pushq $\vec
        jmp lancet_trap_common
    .endm
    .macro LANCET_TRAP_ERR vec
    lancet_trap_\vec:
        pushq $\vec
        jmp lancet_trap_common
    .endm
    .irp v, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
    LANCET_TRAP_NOERR \v
    .endr
    .irp v, 8,10,11,12,13,14,17,21,29,30
    LANCET_TRAP_ERR \v
    .endr

lancet_trap_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rdi
    movq %rsp, %rbx
    andq $-16, %rsp
    call lancet_trap_dispatch
    movq %rbx, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp
    iretq

    .globl lancet_int3_entry
lancet_int3_entry:
    cmpq $3, %rax
    jne lancet_trap_3
    cmpb $0, lancet_irq_pending(%rip)
    jne 1f
    sti
    hlt
    cli
1:
    movb $0, lancet_irq_pending(%rip)
    iretq

    .globl lancet_irq_nic_entry
lancet_irq_nic_entry:
    pushq %rax
    movq lancet_nic_rdp(%rip), %rax
    movw $0, (%rax)
    movb $1, lancet_irq_pending(%rip)
    movb $0x20, %al
    outb %al, $0xa0
    outb %al, $0x20
    popq %rax
    iretq

    .globl lancet_irq_other_entry
lancet_irq_other_entry:
    pushq %rax
    movb $0x20, %al
    outb %al, $0xa0
    outb %al, $0x20
    popq %rax
    iretq

    .globl lancet_enter_user
lancet_enter_user:
    pushq ${user_ds}
    pushq %rsi
    pushq $0x202
    pushq ${user_cs}
    pushq %rdi
    movq %rdx, %rdi
    xorl %eax, %eax
    xorl %ebx, %ebx
    xorl %ecx, %ecx
    xorl %edx, %edx
    xorl %esi, %esi
    xorl %ebp, %ebp
    iretq

    .section .rodata.lancet_trap_table, "a"
    .balign 8
    .globl lancet_trap_table
lancet_trap_table:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad lancet_trap_\v
    .endr
    "#,
    user_ds = const USER_DS,
    user_cs = const USER_CS,
    options(att_syntax)
);

#[inline(always)]
fn outb(port: u16, value: u8) {
    // SAFETY: port I/O in ring 0 to devices this module owns (serial, PIC, ELCR, exit port).
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

#[inline(always)]
fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: port I/O read in ring 0 from a device this module owns.
    unsafe {
        asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    value
}

#[inline(always)]
fn outl(port: u16, value: u32) {
    // SAFETY: PCI configuration mechanism #1 access in ring 0.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    };
}

#[inline(always)]
fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: PCI configuration mechanism #1 access in ring 0.
    unsafe {
        asm!("in eax, dx", out("eax") value, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    value
}

#[link_section = ".text.ring0"]
fn serial_byte(byte: u8) {
    let mut spins = 0;
    while inb(SERIAL_LSR) & LSR_THRE == 0 && spins < SERIAL_SPIN_LIMIT {
        spins += 1;
    }
    outb(SERIAL_DATA, byte);
}

#[link_section = ".text.ring0"]
fn serial_str(text: &[u8]) {
    let mut i = 0;
    while i < text.len() {
        serial_byte(text[i]);
        i += 1;
    }
}

/// Prints a NUL-terminated string (at most `PRINT_LIMIT` bytes) from guest memory.
#[link_section = ".text.ring0"]
fn serial_cstr(addr: u64) {
    let mut i = 0;
    while i < PRINT_LIMIT {
        // SAFETY: the guest's whole low memory is identity mapped; ring 3 passes its own strings.
        let byte = unsafe { read_volatile((addr + i as u64) as *const u8) };
        if byte == 0 {
            break;
        }
        serial_byte(byte);
        i += 1;
    }
}

#[link_section = ".text.ring0"]
fn serial_hex(value: u64) {
    serial_str(b"0x");
    let mut shift = 64;
    while shift > 0 {
        shift -= 4;
        let digit = ((value >> shift) & 0xf) as u8;
        serial_byte(if digit < 10 {
            b'0' + digit
        } else {
            b'a' + digit - 10
        });
    }
}

/// Ends the VM with `code`; never returns.
#[link_section = ".text.ring0"]
pub fn ring0_exit(code: u8) -> ! {
    outb(EXIT_PORT, code);
    loop {
        // SAFETY: halting with interrupts off is the end state if the exit port is absent.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Prints `lancet-guest: error <text>` and exits with status 2.
#[link_section = ".text.ring0"]
pub fn ring0_fail(text: &[u8]) -> ! {
    serial_str(b"lancet-guest: error ");
    serial_str(text);
    serial_byte(b'\n');
    ring0_exit(EXIT_FAILURE)
}

#[link_section = ".text.ring0"]
fn pci_read(device: u8, reg: u8) -> u32 {
    outl(
        PCI_CONFIG_ADDRESS,
        PCI_ENABLE | (u32::from(device) << 11) | u32::from(reg & 0xfc),
    );
    inl(PCI_CONFIG_DATA)
}

#[link_section = ".text.ring0"]
fn pci_write(device: u8, reg: u8, value: u32) {
    outl(
        PCI_CONFIG_ADDRESS,
        PCI_ENABLE | (u32::from(device) << 11) | u32::from(reg & 0xfc),
    );
    outl(PCI_CONFIG_DATA, value);
}

/// Scans bus 0 for the Lance; fills BOOT_INFO and enables I/O, memory and bus mastering.
#[link_section = ".text.ring0"]
fn find_lance(info: &mut BootInfo) -> bool {
    let mut device = 0;
    while device < PCI_DEVICES_PER_BUS {
        if pci_read(device, PCI_REG_ID) == LANCE_PCI_ID {
            info.pci_device = device;
            info.io_base = pci_read(device, PCI_REG_BAR0) & PCI_BAR_IO_MASK;
            info.mmio_base = pci_read(device, PCI_REG_BAR1) & PCI_BAR_MEM_MASK;
            info.irq = (pci_read(device, PCI_REG_INTERRUPT_LINE) & 0xff) as u8;
            let command = pci_read(device, PCI_REG_COMMAND);
            pci_write(
                device,
                PCI_REG_COMMAND,
                (command & 0xffff) | PCI_COMMAND_IO_MEM_MASTER,
            );
            return true;
        }
        device += 1;
    }
    false
}

/// Remaps the PICs to vectors 0x20..0x2f, makes `irq` level-triggered and unmasks only it.
#[link_section = ".text.ring0"]
fn init_pic(irq: u8) {
    outb(PIC1_CMD, PIC_ICW1_INIT_ICW4);
    outb(PIC2_CMD, PIC_ICW1_INIT_ICW4);
    outb(PIC1_DATA, IRQ_VECTOR_BASE);
    outb(PIC2_DATA, IRQ_VECTOR_BASE + 8);
    outb(PIC1_DATA, 1 << PIC_CASCADE_IRQ);
    outb(PIC2_DATA, PIC_CASCADE_IRQ);
    outb(PIC1_DATA, PIC_ICW4_8086);
    outb(PIC2_DATA, PIC_ICW4_8086);
    let mut mask1: u8 = 0xff;
    let mut mask2: u8 = 0xff;
    if irq < 8 {
        outb(ELCR1, inb(ELCR1) | (1 << irq));
        mask1 &= !(1 << irq);
    } else if irq < IRQ_COUNT {
        outb(ELCR2, inb(ELCR2) | (1 << (irq - 8)));
        mask2 &= !(1 << (irq - 8));
        mask1 &= !(1 << PIC_CASCADE_IRQ);
    }
    outb(PIC1_DATA, mask1);
    outb(PIC2_DATA, mask2);
}

#[link_section = ".text.ring0"]
fn set_gate(vector: usize, handler: u64, attributes: u64) {
    let low = (handler & 0xffff)
        | (u64::from(KERNEL_CS) << 16)
        | (attributes << 40)
        | (((handler >> 16) & 0xffff) << 48);
    // SAFETY: vector < 256, so both words are inside IDT; only ring 0 set-up writes it.
    unsafe {
        let idt = addr_of_mut!(IDT.0) as *mut u64;
        write_volatile(idt.add(vector * 2), low);
        write_volatile(idt.add(vector * 2 + 1), handler >> 32);
    }
}

#[link_section = ".text.ring0"]
fn init_idt(nic_irq: u8) {
    let mut vector = 0;
    while vector < EXCEPTION_COUNT {
        // SAFETY: the trap table is a read-only array of EXCEPTION_COUNT addresses.
        let handler =
            unsafe { read_volatile(addr_of!(lancet_trap_table).cast::<u64>().add(vector)) };
        set_gate(vector, handler, GATE_INTERRUPT_DPL0);
        vector += 1;
    }
    set_gate(
        BREAKPOINT_VECTOR,
        lancet_int3_entry as *const () as usize as u64,
        GATE_INTERRUPT_DPL3,
    );
    let mut irq = 0;
    while irq < IRQ_COUNT {
        let handler = if irq == nic_irq {
            lancet_irq_nic_entry as *const () as usize
        } else {
            lancet_irq_other_entry as *const () as usize
        };
        set_gate(
            usize::from(IRQ_VECTOR_BASE + irq),
            handler as u64,
            GATE_INTERRUPT_DPL0,
        );
        irq += 1;
    }
    let mut pointer = [0u16; 5];
    let base = addr_of!(IDT) as u64;
    pointer[0] = (core::mem::size_of::<Idt>() - 1) as u16;
    pointer[1] = base as u16;
    pointer[2] = (base >> 16) as u16;
    pointer[3] = (base >> 32) as u16;
    pointer[4] = (base >> 48) as u16;
    // SAFETY: the pseudo-descriptor describes the static IDT, which lives forever.
    unsafe { asm!("lidt [{}]", in(reg) pointer.as_ptr(), options(nostack, readonly)) };
}

#[link_section = ".text.ring0"]
fn init_tss() {
    // SAFETY: single-threaded ring-0 set-up; TSS and the GDT's TSS slot are only written here.
    unsafe {
        let stack = addr_of!(ring0_stack_top) as u64;
        let tss = addr_of_mut!(TSS.0) as *mut u32;
        write_volatile(tss.add(1), stack as u32);
        write_volatile(tss.add(2), (stack >> 32) as u32);
        // I/O permission bitmap offset = TSS size: no bitmap.
        write_volatile(tss.add(25), (TSS_SIZE as u32) << 16);
        let base = tss as u64;
        let limit = (TSS_SIZE - 1) as u64;
        let low = (limit & 0xffff)
            | ((base & 0x00ff_ffff) << 16)
            | (TSS_DESCRIPTOR_TYPE << 40)
            | (((limit >> 16) & 0xf) << 48)
            | (((base >> 24) & 0xff) << 56);
        let gdt = addr_of_mut!(gdt64) as *mut u64;
        write_volatile(gdt.add(GDT_TSS_INDEX), low);
        write_volatile(gdt.add(GDT_TSS_INDEX + 1), base >> 32);
        asm!("ltr {0:x}", in(reg) TSS_SEL, options(nostack, nomem));
    }
}

/// Handles exceptions and the cold ring-3 requests (print, exit).
#[no_mangle]
#[link_section = ".text.ring0"]
extern "C" fn lancet_trap_dispatch(frame: &mut TrapFrame) {
    if frame.vector == BREAKPOINT_VECTOR as u64 && frame.cs & 3 == 3 {
        match frame.rax {
            REQ_PRINT => {
                serial_cstr(frame.rdi);
                frame.rax = 0;
                return;
            }
            REQ_EXIT => ring0_exit(frame.rdi as u8),
            _ => ring0_fail(b"unknown ring-3 request"),
        }
    }
    let cr2: u64;
    // SAFETY: reading CR2 in ring 0 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
    serial_str(b"lancet-guest: error exception vector=");
    serial_hex(frame.vector);
    serial_str(b" error=");
    serial_hex(frame.error);
    serial_str(b" rip=");
    serial_hex(frame.rip);
    serial_str(b" cs=");
    serial_hex(frame.cs);
    serial_str(b" rsp=");
    serial_hex(frame.rsp);
    serial_str(b" cr2=");
    serial_hex(cr2);
    serial_byte(b'\n');
    ring0_exit(EXIT_FAILURE)
}

/// The 64-bit ring-0 entry, called from `boot.rs` on the ring-0 stack.
#[no_mangle]
#[link_section = ".text.ring0"]
extern "C" fn ring0_main() -> ! {
    // SAFETY: set-up runs once, single-threaded, with interrupts off; the start info address
    // comes from the PVH loader and low memory is identity mapped.
    unsafe {
        let start = u64::from(read_volatile(addr_of!(pvh_start_info)));
        if start == 0 || read_volatile(start as *const u32) != HVM_START_MAGIC {
            ring0_fail(b"no PVH hvm_start_info (bad magic): boot this image through its PVH entry");
        }
        let info = &mut *addr_of_mut!(BOOT_INFO);
        info.cmdline = read_volatile((start + HVM_CMDLINE_PADDR_OFFSET as u64) as *const u64);
        init_tss();
        if !find_lance(info) {
            ring0_fail(b"no Am79C970A (PCI 1022:2000) found on PCI bus 0");
        }
        if info.mmio_base == 0 {
            ring0_fail(b"the Lance's MMIO BAR (BAR1) is not assigned");
        }
        write_volatile(
            addr_of_mut!(lancet_nic_rdp),
            u64::from(info.mmio_base) + LANCE_RDP,
        );
        init_idt(info.irq);
        init_pic(info.irq);
        lancet_enter_user(
            crate::user_main as *const () as usize as u64,
            addr_of!(user_stack_top) as u64 - 8,
            info as *const BootInfo as u64,
        )
    }
}
