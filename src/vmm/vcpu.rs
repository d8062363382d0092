//! vCPU set-up (CPUID, LAPIC LINT0/LINT1, the register state of each boot protocol) and the run loop:
//! every exit is dispatched to the [`Bus`] on the vCPU's own thread; triple faults, failed entries and
//! unknown exits stop the VM with a message. A stop request interrupts KVM_RUN with a signal whose
//! handler sets `kvm_run.immediate_exit`, so a request that lands just before KVM_RUN is not lost.

use std::cell::Cell;
use std::sync::Arc;

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_run, kvm_segment, kvm_sregs, CpuId};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use super::boot::{BootEntry, BOOT_CS, BOOT_DS, BOOT_TSS, GDT_ADDR, IDT_ADDR, PML4_ADDR};
use super::bus::{Bus, BusAction};
use super::control::{VmControl, VmOutcome};
use super::error::{kvm_err, Result, VmmError};
use super::stats::ExitReason;

// Control register and EFER bits.
const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// RFLAGS bit 1 is reserved and always set.
const RFLAGS_RESERVED: u64 = 1 << 1;
/// x87 control word and MXCSR after FNINIT / reset.
const FPU_CONTROL_WORD: u16 = 0x37f;
const MXCSR_DEFAULT: u32 = 0x1f80;
/// Stack pointer for the 64-bit Linux entry (below the zero page; the kernel sets its own).
const BOOT_STACK: u64 = 0x8ff0;
/// GDT limit: 5 descriptors.
const GDT_LIMIT: u16 = 5 * 8 - 1;
/// Local APIC register offsets and LVT delivery modes.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_DELIVERY_MODE_SHIFT: u32 = 8;
const APIC_DELIVERY_MODE_MASK: u32 = 0x7 << APIC_DELIVERY_MODE_SHIFT;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_LVT_MASKED: u32 = 1 << 16;
// Segment descriptor types.
const SEG_TYPE_CODE_EXEC_READ_ACCESSED: u8 = 0xb;
const SEG_TYPE_DATA_READ_WRITE_ACCESSED: u8 = 0x3;
const SEG_TYPE_TSS_BUSY: u8 = 0xb;

/// Applies CPUID, FPU state and LAPIC LINT wiring (LINT0 ExtINT so the 8259 reaches the CPU,
/// LINT1 NMI), as firmware leaves them.
pub fn configure_vcpu(vcpu: &VcpuFd, cpuid: &CpuId) -> Result<()> {
    vcpu.set_cpuid2(cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
    let fpu = kvm_fpu {
        fcw: FPU_CONTROL_WORD,
        mxcsr: MXCSR_DEFAULT,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm_err("KVM_SET_FPU"))?;
    let mut lapic = vcpu.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?;
    set_lvt(&mut lapic.regs, APIC_LVT0, APIC_MODE_EXTINT);
    set_lvt(&mut lapic.regs, APIC_LVT1, APIC_MODE_NMI);
    vcpu.set_lapic(&lapic).map_err(kvm_err("KVM_SET_LAPIC"))
}

fn set_lvt(regs: &mut [std::os::raw::c_char], offset: usize, mode: u32) {
    let Some(bytes) = regs.get_mut(offset..offset + 4) else {
        return;
    };
    let mut raw = [0u8; 4];
    for (d, s) in raw.iter_mut().zip(bytes.iter()) {
        *d = *s as u8;
    }
    let value = u32::from_le_bytes(raw);
    let value =
        (value & !(APIC_DELIVERY_MODE_MASK | APIC_LVT_MASKED)) | (mode << APIC_DELIVERY_MODE_SHIFT);
    for (d, s) in bytes.iter_mut().zip(value.to_le_bytes()) {
        *d = s as std::os::raw::c_char;
    }
}

fn segment(selector: u16, type_: u8, long: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: u8::from(!long),
        s: 1,
        l: u8::from(long),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Sets the boot vCPU's registers for `entry`.
pub fn set_boot_registers(vcpu: &VcpuFd, entry: BootEntry) -> Result<()> {
    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
    let long = matches!(entry, BootEntry::Linux64 { .. });
    let data = segment(BOOT_DS, SEG_TYPE_DATA_READ_WRITE_ACCESSED, false);
    sregs.cs = segment(BOOT_CS, SEG_TYPE_CODE_EXEC_READ_ACCESSED, long);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        limit: 0x67,
        s: 0,
        g: 0,
        db: 0,
        type_: SEG_TYPE_TSS_BUSY,
        ..segment(BOOT_TSS, SEG_TYPE_TSS_BUSY, false)
    };
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = GDT_LIMIT;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cr0 = CR0_PE | CR0_ET | CR0_NE;
    let mut regs = kvm_regs {
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    };
    match entry {
        BootEntry::Pvh { entry, start_info } => {
            sregs.cr4 = 0;
            sregs.efer = 0;
            regs.rip = entry;
            regs.rbx = start_info;
        }
        BootEntry::Linux64 { entry, zero_page } => {
            sregs.cr3 = PML4_ADDR;
            sregs.cr4 = CR4_PAE;
            sregs.cr0 |= CR0_PG;
            sregs.efer = EFER_LME | EFER_LMA;
            regs.rip = entry;
            regs.rsi = zero_page;
            regs.rsp = BOOT_STACK;
            regs.rbp = BOOT_STACK;
        }
    }
    vcpu.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;
    vcpu.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))
}

thread_local! {
    /// This thread's `kvm_run.immediate_exit`, for the kick signal handler (null when no vCPU runs).
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let flag = IMMEDIATE_EXIT.with(Cell::get);
    if !flag.is_null() {
        // SAFETY: the pointer is this thread's own mapped kvm_run: `KickableVcpu::new` sets it and
        // `KickableVcpu::drop` clears it before the VcpuFd (and with it the mapping) is dropped, on
        // a normal return and when the thread unwinds from a panic alike; a byte store is
        // async-signal-safe.
        unsafe { std::ptr::write_volatile(flag, 1) };
    }
}

/// A vCPU fd whose `kvm_run.immediate_exit` is published to this thread's kick handler for exactly
/// as long as the fd (and so the kvm_run mapping) lives: `drop` clears the pointer first, then the
/// fd field is dropped, also during unwinding, so the handler never sees a dangling pointer.
struct KickableVcpu(VcpuFd);

impl KickableVcpu {
    fn new(mut vcpu: VcpuFd) -> Self {
        IMMEDIATE_EXIT.with(|c| c.set(&mut vcpu.get_kvm_run().immediate_exit as *mut u8));
        Self(vcpu)
    }
}

impl Drop for KickableVcpu {
    fn drop(&mut self) {
        IMMEDIATE_EXIT.with(|c| c.set(std::ptr::null_mut()));
    }
}

/// The signal used to kick vCPU threads out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

/// Installs the kick signal handler (once per process; later calls are harmless).
pub fn install_kick_handler() -> Result<()> {
    register_signal_handler(kick_signal(), kick_handler).map_err(|e| VmmError::Os {
        what: "the vCPU kick signal handler",
        source: std::io::Error::from_raw_os_error(e.errno()),
    })
}

/// One step's result, owned so the exit's borrow of the vCPU ends before it is handled.
enum Step {
    Continue,
    Stop(VmOutcome),
    Interrupted,
    Shutdown,
    InternalError,
}

/// The `size` of each access of the current KVM_EXIT_IO (the exit's data holds `count` of them;
/// kvm-ioctls hands out only the whole `size * count` bytes).
fn io_access_size(run: *const kvm_run) -> usize {
    // SAFETY: `run` is this vCPU's kvm_run, mmap'd for as long as its VcpuFd lives (the caller's
    // loop); the last exit was KVM_EXIT_IO, for which the kernel filled the `io` union member; the
    // read copies one plain integer field of the kvm_run header, which no live reference covers (the
    // exit's data slice starts at `io.data_offset`, a page past the header).
    usize::from(unsafe { std::ptr::addr_of!((*run).__bindgen_anon_1.io.size).read_volatile() })
}

/// Runs vCPU `index` until the VM stops; records the outcome in `control` when this vCPU ends it.
pub fn run_vcpu(vcpu: VcpuFd, index: usize, bus: Arc<Bus>, control: Arc<VmControl>) {
    let mut kickable = KickableVcpu::new(vcpu);
    let vcpu = &mut kickable.0;
    let run_ptr: *const kvm_run = vcpu.get_kvm_run();
    let stats = Arc::clone(bus.stats());
    while !control.stopping() {
        let step = match vcpu.run() {
            Ok(exit) => match exit {
                VcpuExit::IoIn(port, data) => {
                    bus.pio_in(port, io_access_size(run_ptr), data);
                    Step::Continue
                }
                VcpuExit::IoOut(port, data) => {
                    match bus.pio_out(port, io_access_size(run_ptr), data) {
                        BusAction::Continue => Step::Continue,
                        BusAction::GuestExit(code) => Step::Stop(VmOutcome::GuestExit(code)),
                    }
                }
                VcpuExit::MmioRead(addr, data) => {
                    bus.mmio_read(addr, data);
                    Step::Continue
                }
                VcpuExit::MmioWrite(addr, data) => {
                    bus.mmio_write(addr, data);
                    Step::Continue
                }
                VcpuExit::Hlt => {
                    stats.count(ExitReason::Hlt);
                    Step::Stop(VmOutcome::Halted)
                }
                VcpuExit::Shutdown => Step::Shutdown,
                VcpuExit::SystemEvent(kind, _) => {
                    stats.count(ExitReason::SystemEvent);
                    Step::Stop(VmOutcome::SystemEvent(kind))
                }
                VcpuExit::FailEntry(reason, cpu) => {
                    stats.count(ExitReason::Other);
                    Step::Stop(VmOutcome::Failed(format!(
                        "vCPU {index}: KVM could not enter the guest (hardware reason {reason:#x}, cpu {cpu})"
                    )))
                }
                VcpuExit::InternalError => Step::InternalError,
                VcpuExit::Intr => Step::Interrupted,
                other => {
                    stats.count(ExitReason::Other);
                    Step::Stop(VmOutcome::Failed(format!(
                        "vCPU {index}: unsupported KVM exit {other:?}"
                    )))
                }
            },
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Step::Interrupted,
            Err(e) => Step::Stop(VmOutcome::Failed(format!(
                "vCPU {index}: KVM_RUN failed: {e}"
            ))),
        };
        match step {
            Step::Continue => {}
            Step::Interrupted => {
                stats.count(ExitReason::Interrupted);
                vcpu.set_kvm_immediate_exit(0);
            }
            Step::Stop(outcome) => control.finish(outcome),
            Step::Shutdown => {
                stats.count(ExitReason::Shutdown);
                let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
                control.finish(VmOutcome::TripleFault { vcpu: index, rip });
            }
            Step::InternalError => {
                stats.count(ExitReason::Other);
                // SAFETY: reading the `internal` union member is valid: the last exit was
                // KVM_EXIT_INTERNAL_ERROR, for which the kernel fills exactly that member.
                let suberror = unsafe { vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
                let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
                control.finish(VmOutcome::Failed(format!(
                    "vCPU {index}: KVM internal error (suberror {suberror}, 1 = the instruction emulator failed) at rip {rip:#x}"
                )));
            }
        }
    }
}
