//! The machine around the chip: KVM VM and vCPUs, guest memory, PCI and I/O buses, serial console,
//! guest loading (PVH ELF, bzImage) and the I/O thread that connects the Lance to a backend.
//!
//! This file builds and runs the machine ([`run_vm`], one short step per responsibility). The NIC
//! is any [`nic::NicModel`] on a [`crate::net::Backend`] ([`nic`]); how a VM ends and the state its
//! threads share to end it are in [`control`] (what [`vcpu`] and [`io_thread`] depend on, never
//! this file); what a finished VM reports, including the `--stats-json` document, is in [`report`].
//!
//! # Threads and locking
//! - **vCPU threads** (one per vCPU) run KVM_RUN and serve every port I/O / MMIO exit themselves
//!   ([`bus::Bus`]): serial, PCI config, and the NIC's registers through BAR0 or BAR1.
//! - **The I/O thread** ([`io_thread`]) sleeps in epoll on the backend fd, the NIC kick eventfd and a
//!   stop eventfd; it delivers RX frames into the guest ring and walks the TX ring when the chip
//!   polls it (or when TX is handed to it).
//! - **The main thread** builds the VM, waits for the outcome (guest exit, triple fault, Ctrl-C /
//!   SIGTERM), then stops the others: sets the stop flag, kicks vCPUs out of KVM_RUN with a signal
//!   (`immediate_exit` closes the race), signals the I/O thread's stop eventfd, and joins them all.
//!
//! One mutex, [`nic::NetShared`]'s `NetState`, holds the NIC model *and* its backend. It is taken
//! for one register access (and, on TDMD with inline TX, the TX ring walk that follows), for one RX
//! batch (at most the ring's free descriptors), and for reading BAR bases during decode. Nothing else
//! is locked while it is held except the backend's own internals, so there is no lock ordering to
//! get wrong; the serial port and the PCI address latch have their own small mutexes, never held
//! together with it except PCI latch -> NetState during a config cycle (in that order only).
//! Guest memory is shared without a lock (`GuestMemoryMmap` clones; the guest owns the bytes and
//! the model validates every descriptor it reads). The interrupt line is `KVM_IRQ_LINE` on the
//! `VmFd`, an ioctl safe from any thread, raised by whichever thread changed the model's state.
//!
//! TX placement: on TDMD the vCPU thread walks the TX ring itself (`tx_inline`, the default): the
//! frame leaves before the guest resumes and no thread wake-up is paid. The alternative hands the
//! walk to the I/O thread via the kick eventfd (`--tx-mode io-thread`), which frees the vCPU sooner
//! but adds a wake-up per burst. Both are selectable so they can be measured on a given machine.
//!
//! Measured here (release build, test guest echo, 200 UDP round trips from a kernel socket in the
//! peer namespace, p50; a 2-core machine shared with other builds, so treat as +-50%):
//! | guest mode | TAP | AF_XDP | note |
//! |---|---|---|---|
//! | poll, vCPU and I/O thread pinned apart (`--pin-vcpu 1 --pin-io 0`) | 58 us | 96 us | |
//! | poll, unpinned | 58-160 us | 97-160 us | bimodal: the threads often share a core |
//! | poll, both on one core | 160 us | 156 us | |
//! | irq | 175-195 us | 175-195 us | interrupt injection + emulated ring-0 stub |
//! | poll / irq, `--tx-mode io-thread` | 172 / 221 us | 100 / 218 us | never better than inline |
//!
//! Exits per echoed packet (NIC register exits, test guest, 205 echoes with set-up included):
//! interrupt mode 2.2-2.4 (TDMD, then the interrupt acknowledge and IENA re-enable through MMIO),
//! poll mode 1.2 (only TDMD; 1.0 in the steady state).
//!
//! Adaptive TX polling (the chip polls its ring when TXON and not DPOLL): the I/O thread spins on
//! the TX ring and the backend's RX rings (AF_XDP: the XSK producer index, no system call; TAP: epoll
//! with timeout 0) for `--busy-poll-us` (default 50) after a frame moved, then sleeps until TDMD,
//! the backend fd or a 2 ms safety poll (see `io_thread`). Linux pcnet32 writes TDMD
//! after queuing, so for it the window changes little. The test guest in poll mode can skip TDMD
//! (`kick=0`, or `kick=lazy`: TDMD only if the frame is still owned ~20 us later; `lancet run --poll
//! --kick lazy` is the default): then an echo makes no exit at all while the I/O thread polls, and
//! RX frames are picked up by the spinning thread without an epoll wake-up.
//!
//! Measured with `lancet bench --quick --paths xdp,tap --modes poll --phases echo` (64-byte UDP
//! echo from a kernel socket in the peer namespace, 1000 samples, client and I/O thread on CPU 0,
//! vCPU on CPU 1, the bench's default pinning; this nested 2-core machine shared with other builds):
//! | `--kick` | AF_XDP p50 / p99 | TAP p50 / p99 | NIC exits per echo |
//! |---|---|---|---|
//! | always (TDMD per echo) | 56 / 166-2200 us | 56 / 390-8200 us | 1.01 |
//! | lazy (default) | 7 / 49-102 us | 8 / 51-103 us | 0.015 (set-up only) |
//! | never | 7 / 48 us | 8 / 50 us | 0.014 |
//! With the vCPU and the I/O thread on one core (`--pin-vcpu 1 --pin-io 1`) the I/O thread cannot
//! poll while the ring-3 guest spins: `never` waits for the 2 ms idle poll (p50 ~2.2 ms), `lazy`
//! falls back to TDMD (p50 ~185 us, 1.0 exit per echo), `always` ~155 us. Both paths now sit near
//! the raw XSK echo floor (~5 us) plus the kernel UDP client; the AF_XDP/TAP difference is within
//! the noise because the guest-side path dominates neither.

pub mod boot;
pub mod bus;
pub mod control;
pub mod cpuid;
pub mod error;
pub mod io_thread;
pub mod irq;
pub mod memory;
pub mod net_setup;
pub mod nic;
pub mod pci;
pub mod report;
pub mod serial;
pub mod stats;
pub mod vcpu;

use std::io::Write;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::signal::Killable;

use boot::{BootEntry, BootSpec};
use control::stop_vm_on_panic;
use error::{kvm_err, os_err, IoThreadError, Result, VmmError};
use nic::{NetShared, NicModel};
use stats::ExitStats;

pub use control::{VmControl, VmOutcome};
pub use cpuid::{HiddenFeatures, DEFAULT_HIDDEN};
pub use io_thread::IoTuning;
pub use report::{BackendReport, RunReport, RunStats, SerialStats};

/// Address of the TSS region KVM needs on Intel (three pages below the BIOS area's end).
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;
/// PCI config values the VMM assigns before boot (firmware's job on a PC).
pub const NIC_IO_BAR: u32 = 0xc000;
pub const NIC_MMIO_BAR: u32 = 0xfebf_0000;
const PCI_COMMAND: usize = 0x04;
const PCI_BAR0: usize = 0x10;
const PCI_BAR1: usize = 0x14;
const PCI_INTERRUPT_LINE: usize = 0x3c;
const PCI_COMMAND_IO: u16 = 1 << 0;
const PCI_COMMAND_MEMORY: u16 = 1 << 1;
const PCI_COMMAND_MASTER: u16 = 1 << 2;
/// BAR bit 0: I/O space.
const PCI_BAR_IO: u32 = 1;

/// The eventfd that SIGINT/SIGTERM write to (-1: none installed).
static SIGNAL_EVENTFD: AtomicI32 = AtomicI32::new(-1);
/// The last shutdown signal received.
static SIGNAL_RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn shutdown_handler(sig: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    SIGNAL_RECEIVED.store(sig, Ordering::SeqCst);
    let fd = SIGNAL_EVENTFD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) on an eventfd with an 8-byte buffer that lives on this stack frame; write
        // is async-signal-safe.
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }
}

/// What the NIC is made of: the model (built once the VM exists, since its interrupt line needs the
/// VM fd) and the backend.
pub struct NetConfig {
    pub make_nic: Box<dyn FnOnce(irq::KvmIrqLine) -> Box<dyn NicModel>>,
    pub backend: Option<Box<dyn crate::net::Backend>>,
    pub tx_inline: bool,
    pub io: IoTuning,
}

/// Everything `run_vm` needs.
pub struct VmConfig {
    pub mem_bytes: u64,
    pub cpus: usize,
    pub boot: BootSpec,
    pub hidden: HiddenFeatures,
    pub serial_out: Box<dyn Write + Send>,
    pub net: Option<NetConfig>,
    pub pin_vcpu: Option<usize>,
    pub pin_io: Option<usize>,
    /// Stop on SIGINT/SIGTERM (the CLI); tests running VMs in threads leave it off.
    pub handle_signals: bool,
    /// Stop the VM after this long (outcome [`VmOutcome::TimedOut`]).
    pub timeout: Option<std::time::Duration>,
    /// Polled every [`STOP_CHECK_PERIOD`] by the main thread; `true` stops the VM (outcome
    /// [`VmOutcome::Stopped`]). For programs and tests that embed the VMM.
    pub stop_check: Option<Box<dyn FnMut() -> bool + Send>>,
}

/// How often `VmConfig::stop_check` is polled.
pub const STOP_CHECK_PERIOD: std::time::Duration = std::time::Duration::from_millis(10);

/// Opens /dev/kvm with errors that say what to do.
pub fn open_kvm() -> Result<Kvm> {
    let kvm = Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT | libc::ENODEV | libc::ENXIO => VmmError::KvmMissing,
        libc::EACCES | libc::EPERM => VmmError::KvmPermission,
        _ => VmmError::KvmOpen(e),
    })?;
    let version = kvm.get_api_version();
    if version != 12 {
        return Err(VmmError::KvmApiVersion(version));
    }
    Ok(kvm)
}

fn pin(thread: &'static str, cpu: Option<usize>) -> Result<()> {
    let Some(cpu) = cpu else { return Ok(()) };
    let count = affinity::get_core_num();
    if cpu >= count {
        return Err(VmmError::Pin {
            thread,
            cpu,
            count,
            detail: "no such CPU".into(),
        });
    }
    affinity::set_thread_affinity([cpu]).map_err(|e| VmmError::Pin {
        thread,
        cpu,
        count,
        detail: e.to_string(),
    })
}

/// Presets the NIC's config space as firmware would: BARs, COMMAND, Interrupt Line.
fn assign_nic_resources(nic: &mut dyn NicModel) {
    nic.pci_config_write(PCI_BAR0, &(NIC_IO_BAR | PCI_BAR_IO).to_le_bytes());
    nic.pci_config_write(PCI_BAR1, &NIC_MMIO_BAR.to_le_bytes());
    nic.pci_config_write(PCI_INTERRUPT_LINE, &[boot::mptable::NIC_IRQ]);
    let command = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
    nic.pci_config_write(PCI_COMMAND, &command.to_le_bytes());
}

/// Builds the VM, boots the guest, runs it to the end, and reports.
pub fn run_vm(config: VmConfig) -> Result<RunReport> {
    check_config(&config)?;
    let VmConfig {
        mem_bytes,
        cpus,
        boot,
        hidden,
        serial_out,
        net,
        pin_vcpu,
        pin_io,
        handle_signals,
        timeout,
        stop_check,
    } = config;
    let machine = Machine::create(mem_bytes)?;
    let entry = load_guest(&machine.mem, &boot, cpus)?;
    let serial = serial_console(&machine.vm, serial_out)?;
    let exits = Arc::new(ExitStats::default());
    let (net, io_tuning) = build_nic(&machine.vm, net)?;
    let bus = Arc::new(bus::Bus::new(
        serial,
        net.clone(),
        machine.mem.clone(),
        Arc::clone(&exits),
    ));
    let control = Arc::new(VmControl::new()?);
    let vcpus = create_vcpus(&machine, &hidden, cpus, entry)?;
    let _signals = if handle_signals {
        Some(SignalRoute::install(&control)?)
    } else {
        None
    };
    check_pinning(pin_vcpu, pin_io)?;
    let io = match &net {
        Some(net) => Some(spawn_io_thread(
            IoThreadParts {
                net: Arc::clone(net),
                mem: machine.mem.clone(),
                exits: Arc::clone(&exits),
                tuning: io_tuning,
                pin: pin_io,
            },
            &control,
        )?),
        None => None,
    };
    let vcpu_handles = spawn_vcpus(vcpus, &bus, &control, pin_vcpu)?;
    wait_for_outcome(&control, timeout, stop_check);
    let io_thread_error = stop_threads(&control, vcpu_handles, io);
    bus.flush_serial();
    Ok(collect_report(
        &control,
        exits,
        net.as_deref(),
        io_thread_error,
    ))
}

/// Refuses a configuration before any KVM or guest memory exists: the vCPU count, the kernel's
/// format, the initrd's size (checked again, same rule, when it is loaded).
fn check_config(config: &VmConfig) -> Result<()> {
    if !(1..=8).contains(&config.cpus) {
        return Err(VmmError::CpuCount(config.cpus));
    }
    boot::kernel_format(&config.boot.kernel)?;
    if let Some(initrd) = &config.boot.initrd {
        boot::open_initrd(initrd, boot::initrd_limit(config.mem_bytes))?;
    }
    Ok(())
}

/// The KVM VM with its interrupt controllers and its registered guest memory.
struct Machine {
    kvm: Kvm,
    vm: Arc<VmFd>,
    mem: GuestMemoryMmap,
}

impl Machine {
    /// Creates the VM (TSS, PIC/IOAPIC, the NIC's level-triggered line) and `mem_bytes` of RAM.
    fn create(mem_bytes: u64) -> Result<Self> {
        let kvm = open_kvm()?;
        let vm: Arc<VmFd> = Arc::new(kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?);
        vm.set_tss_address(KVM_TSS_ADDRESS)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        irq::create_interrupt_controllers(&vm)?;
        irq::set_pic_level_triggered(&vm, boot::mptable::NIC_IRQ)?;
        let mem = memory::create_guest_memory(mem_bytes)?;
        memory::register_guest_memory(&vm, &mem)?;
        Ok(Self { kvm, vm, mem })
    }
}

/// Loads the kernel (and initrd, command line, MP table for `cpus`) and the GDT; returns where
/// the boot vCPU starts.
fn load_guest(mem: &GuestMemoryMmap, boot: &BootSpec, cpus: usize) -> Result<BootEntry> {
    let mut boot_spec = boot.clone();
    boot_spec.cpus = cpus as u8;
    let entry = boot::load_guest(mem, &boot_spec)?;
    boot::write_gdt(mem, matches!(entry, BootEntry::Linux64 { .. }))?;
    Ok(entry)
}

/// The serial console writing to `out`, its interrupt delivered through an irqfd.
fn serial_console(vm: &VmFd, out: Box<dyn Write + Send>) -> Result<serial::SerialConsole> {
    let serial_irq = EventFd::new(EFD_NONBLOCK).map_err(os_err("the serial IRQ eventfd"))?;
    vm.register_irqfd(&serial_irq, serial::SERIAL_IRQ)
        .map_err(kvm_err("KVM_IRQFD"))?;
    Ok(serial::SerialConsole::new(
        serial::IrqFdTrigger(serial_irq),
        out,
    ))
}

/// Builds the NIC model on its interrupt line, presets its PCI resources and locks it together
/// with its backend; returns it with the I/O thread's tuning.
fn build_nic(vm: &Arc<VmFd>, net: Option<NetConfig>) -> Result<(Option<Arc<NetShared>>, IoTuning)> {
    let Some(net) = net else {
        return Ok((None, IoTuning::default()));
    };
    let irq = irq::KvmIrqLine::new(Arc::clone(vm), u32::from(boot::mptable::NIC_IRQ));
    let mut nic = (net.make_nic)(irq);
    assign_nic_resources(nic.as_mut());
    let shared = NetShared::new(nic, net.backend, net.tx_inline)?;
    Ok((Some(Arc::new(shared)), net.io))
}

/// Creates and configures `cpus` vCPUs (CPUID, registers); vCPU 0 starts at `entry`. Installs
/// the signal handler that kicks vCPUs out of KVM_RUN.
fn create_vcpus(
    machine: &Machine,
    hidden: &HiddenFeatures,
    cpus: usize,
    entry: BootEntry,
) -> Result<Vec<VcpuFd>> {
    let mut vcpus = Vec::with_capacity(cpus);
    for index in 0..cpus {
        let vcpu = machine
            .vm
            .create_vcpu(index as u64)
            .map_err(kvm_err("KVM_CREATE_VCPU"))?;
        let cpuid = cpuid::guest_cpuid(&machine.kvm, hidden, index as u8, cpus as u8)?;
        vcpu::configure_vcpu(&vcpu, &cpuid)?;
        if index == 0 {
            vcpu::set_boot_registers(&vcpu, entry)?;
        }
        vcpus.push(vcpu);
    }
    vcpu::install_kick_handler()?;
    Ok(vcpus)
}

/// SIGINT/SIGTERM wake the main thread through the VM's done eventfd while this lives.
struct SignalRoute;

impl SignalRoute {
    /// Routes the shutdown signals to `control` (registering the handler on first use).
    fn install(control: &VmControl) -> Result<Self> {
        SIGNAL_EVENTFD.store(control.done_fd(), Ordering::SeqCst);
        let route = SignalRoute;
        for sig in [libc::SIGINT, libc::SIGTERM] {
            vmm_sys_util::signal::register_signal_handler(sig, shutdown_handler).map_err(|e| {
                VmmError::Os {
                    what: "the SIGINT/SIGTERM handler",
                    source: std::io::Error::from_raw_os_error(e.errno()),
                }
            })?;
        }
        Ok(route)
    }
}

impl Drop for SignalRoute {
    fn drop(&mut self) {
        SIGNAL_EVENTFD.store(-1, Ordering::SeqCst);
    }
}

/// Pinning errors are reported before any thread starts.
fn check_pinning(pin_vcpu: Option<usize>, pin_io: Option<usize>) -> Result<()> {
    let count = affinity::get_core_num();
    for (thread, cpu) in [("vCPU", pin_vcpu), ("I/O", pin_io)] {
        if let Some(cpu) = cpu.filter(|c| *c >= count) {
            return Err(VmmError::Pin {
                thread,
                cpu,
                count,
                detail: "no such CPU".into(),
            });
        }
    }
    Ok(())
}

/// What the I/O thread works on.
struct IoThreadParts {
    net: Arc<NetShared>,
    mem: GuestMemoryMmap,
    exits: Arc<ExitStats>,
    tuning: IoTuning,
    pin: Option<usize>,
}

/// The running I/O thread and the eventfd that stops it.
struct IoThread {
    handle: JoinHandle<std::result::Result<(), IoThreadError>>,
    stop: EventFd,
}

/// Starts the I/O thread. Its failure or panic stops the VM (outcome [`VmOutcome::Failed`]).
fn spawn_io_thread(parts: IoThreadParts, control: &Arc<VmControl>) -> Result<IoThread> {
    let stop = EventFd::new(EFD_NONBLOCK).map_err(os_err("the I/O thread stop eventfd"))?;
    let thread_stop = stop
        .try_clone()
        .map_err(os_err("the I/O thread stop eventfd"))?;
    let control = Arc::clone(control);
    let handle = std::thread::Builder::new()
        .name("lancet-io".into())
        .spawn(move || {
            stop_vm_on_panic(&control, "I/O", || {
                pin("I/O", parts.pin).map_err(IoThreadError::Pin)?;
                let IoThreadParts {
                    net,
                    mem,
                    exits,
                    tuning,
                    ..
                } = parts;
                let result = io_thread::run_io_thread(net, mem, thread_stop, exits, tuning);
                if let Err(e) = &result {
                    control.finish(VmOutcome::Failed(format!("I/O thread: {e}")));
                }
                result
            })
            .map_err(IoThreadError::from)
            .and_then(|result| result)
        })
        .map_err(os_err("the I/O thread"))?;
    Ok(IoThread { handle, stop })
}

/// Starts one thread per vCPU; a pinning failure or a panic stops the VM.
fn spawn_vcpus(
    vcpus: Vec<VcpuFd>,
    bus: &Arc<bus::Bus>,
    control: &Arc<VmControl>,
    pin_vcpu: Option<usize>,
) -> Result<Vec<JoinHandle<()>>> {
    let mut handles = Vec::with_capacity(vcpus.len());
    for (index, vcpu) in vcpus.into_iter().enumerate() {
        let (bus, control) = (Arc::clone(bus), Arc::clone(control));
        let handle = std::thread::Builder::new()
            .name(format!("lancet-vcpu{index}"))
            .spawn(move || {
                if let Err(e) = pin("vCPU", pin_vcpu) {
                    control.finish(VmOutcome::Failed(e.to_string()));
                    return;
                }
                let what = format!("vCPU {index}");
                let run_control = Arc::clone(&control);
                let _ = stop_vm_on_panic(&control, &what, move || {
                    vcpu::run_vcpu(vcpu, index, bus, run_control)
                });
            })
            .map_err(os_err("a vCPU thread"))?;
        handles.push(handle);
    }
    Ok(handles)
}

/// Waits for the first outcome: a vCPU, the I/O thread, a signal, the timeout, or `stop_check`.
fn wait_for_outcome(
    control: &VmControl,
    timeout: Option<std::time::Duration>,
    mut stop_check: Option<Box<dyn FnMut() -> bool + Send>>,
) {
    let deadline = timeout.map(|t| (t, std::time::Instant::now() + t));
    loop {
        let mut wait_ms = match deadline {
            Some((_, at)) => {
                let left = at.saturating_duration_since(std::time::Instant::now());
                i32::try_from(left.as_millis()).unwrap_or(i32::MAX)
            }
            None => -1,
        };
        if let Some(check) = stop_check.as_mut() {
            if check() {
                control.finish(VmOutcome::Stopped);
                break;
            }
            let period = STOP_CHECK_PERIOD.as_millis() as i32;
            wait_ms = if wait_ms < 0 {
                period
            } else {
                wait_ms.min(period)
            };
        }
        let mut fds = [libc::pollfd {
            fd: control.done_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd for an eventfd we own, for the duration of the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, wait_ms) };
        if ready > 0 {
            control.clear_done();
            break;
        }
        if ready == 0 {
            match deadline {
                Some((after, at)) if std::time::Instant::now() >= at => {
                    control.finish(VmOutcome::TimedOut(after));
                    break;
                }
                Some(_) => continue,
                None if stop_check.is_some() => continue,
                None => break,
            }
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break;
        }
    }
    let signal = SIGNAL_RECEIVED.swap(0, Ordering::SeqCst);
    if signal != 0 {
        control.finish(VmOutcome::Signal(signal));
    }
}

/// Stops every thread (stop flag, a kick signal out of KVM_RUN, the I/O thread's stop eventfd),
/// joins them, and returns why the I/O thread ended early, if it did.
fn stop_threads(
    control: &VmControl,
    vcpus: Vec<JoinHandle<()>>,
    io: Option<IoThread>,
) -> Option<IoThreadError> {
    control.stop();
    for handle in &vcpus {
        let _ = handle.kill(vcpu::kick_signal());
    }
    if let Some(io) = &io {
        let _ = io.stop.write(1);
    }
    for handle in vcpus {
        let _ = handle.join();
    }
    match io.map(|io| io.handle.join()) {
        Some(Ok(Err(e))) => Some(e),
        Some(Err(_)) => Some(IoThreadError::NoResult),
        _ => None,
    }
}

/// The report of a stopped VM: its outcome and every counter.
fn collect_report(
    control: &VmControl,
    exits: Arc<ExitStats>,
    net: Option<&NetShared>,
    io_thread_error: Option<IoThreadError>,
) -> RunReport {
    let outcome = control
        .outcome()
        .unwrap_or(VmOutcome::Failed("no outcome recorded".into()));
    let (nic, backend, frames_moved) = match net {
        Some(net) => {
            let state = net.lock();
            (
                Some(state.nic.stats()),
                state.backend.as_deref().map(BackendReport::of),
                state.nic.frames_moved(),
            )
        }
        None => (None, None, 0),
    };
    RunReport {
        outcome,
        exits,
        nic,
        backend,
        frames_moved,
        io_thread_error,
    }
}
