//! The machine around the chip: KVM VM and vCPUs, guest memory, PCI and I/O buses, serial console,
//! guest loading (PVH ELF, bzImage) and the I/O thread that connects the Lance to a backend.
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
pub mod cpuid;
pub mod error;
pub mod io_thread;
pub mod irq;
pub mod memory;
pub mod nic;
pub mod pci;
pub mod serial;
pub mod stats;
pub mod vcpu;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kvm_ioctls::{Kvm, VmFd};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::signal::Killable;

use boot::BootSpec;
use error::{kvm_err, os_err, Result, VmmError};
use nic::{NetPort, NetShared, NicModel};
use stats::ExitStats;

pub use cpuid::{HiddenFeatures, DEFAULT_HIDDEN};
pub use io_thread::IoTuning;

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

/// How the VM ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmOutcome {
    /// The guest wrote this status to the debug-exit port.
    GuestExit(u8),
    /// A vCPU executed HLT with no interrupt controller able to wake it.
    Halted,
    /// KVM_EXIT_SHUTDOWN: the guest triple-faulted (or asked for a reset that way).
    TripleFault { vcpu: usize, rip: u64 },
    /// KVM_EXIT_SYSTEM_EVENT (shutdown / reset / crash).
    SystemEvent(u32),
    /// Stopped by a signal (Ctrl-C / SIGTERM).
    Signal(i32),
    /// Something the VMM cannot continue from, with a message.
    Failed(String),
    /// `timeout` expired before the guest finished.
    TimedOut(std::time::Duration),
    /// The embedding program's `stop_check` asked to stop.
    Stopped,
}

impl VmOutcome {
    /// Process exit status for this outcome: the guest's own status, 0 for a clean stop by signal,
    /// 1 for failures.
    pub fn exit_status(&self) -> i32 {
        match self {
            VmOutcome::GuestExit(code) => i32::from(*code),
            VmOutcome::Halted | VmOutcome::Signal(_) | VmOutcome::Stopped => 0,
            VmOutcome::SystemEvent(kind) if *kind == kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => 0,
            _ => 1,
        }
    }
}

impl std::fmt::Display for VmOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmOutcome::GuestExit(code) => write!(f, "guest exited with status {code}"),
            VmOutcome::Halted => write!(f, "guest halted"),
            VmOutcome::TripleFault { vcpu, rip } => write!(
                f,
                "guest triple-faulted on vCPU {vcpu} (last rip {rip:#x}); the VM was stopped"
            ),
            VmOutcome::SystemEvent(kind) => write!(
                f,
                "guest system event {kind} (1 = shutdown, 2 = reset, 3 = crash)"
            ),
            VmOutcome::Signal(sig) => write!(f, "stopped by signal {sig}"),
            VmOutcome::Failed(msg) => write!(f, "VM stopped: {msg}"),
            VmOutcome::Stopped => write!(f, "stopped by the embedding program"),
            VmOutcome::TimedOut(after) => {
                write!(
                    f,
                    "VM stopped: the guest did not finish within {}s",
                    after.as_secs_f64()
                )
            }
        }
    }
}

/// Shared run state: the stop flag, the first outcome, and the eventfd the main thread waits on.
pub struct VmControl {
    stop: AtomicBool,
    outcome: Mutex<Option<VmOutcome>>,
    done: EventFd,
}

impl VmControl {
    fn new() -> Result<Self> {
        Ok(Self {
            stop: AtomicBool::new(false),
            outcome: Mutex::new(None),
            done: EventFd::new(EFD_NONBLOCK).map_err(os_err("the VM exit eventfd"))?,
        })
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Records `outcome` (the first one wins) and wakes the main thread.
    pub fn finish(&self, outcome: VmOutcome) {
        let mut slot = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(outcome);
        }
        self.stop.store(true, Ordering::Release);
        let _ = self.done.write(1);
    }
}

/// Runs `body` (a vCPU or the I/O thread's work); if it panics, the VM stops with outcome
/// [`VmOutcome::Failed`] naming the thread and the panic message (a non-zero exit status), so the
/// main thread never waits for a thread that is gone. Returns the message as the error.
fn stop_vm_on_panic<T>(
    control: &VmControl,
    what: &str,
    body: impl FnOnce() -> T,
) -> std::result::Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        let message = format!("the {what} thread panicked: {message}");
        control.finish(VmOutcome::Failed(message.clone()));
        message
    })
}

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
    pub backend: Option<Box<dyn NetPort>>,
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

/// What a finished VM reports.
#[derive(Debug)]
pub struct RunReport {
    pub outcome: VmOutcome,
    pub exits: Arc<ExitStats>,
    pub nic: Option<serde_json::Value>,
    pub backend: Option<serde_json::Value>,
    pub frames_moved: u64,
    pub io_thread_error: Option<String>,
}

impl RunReport {
    /// The `--stats-json` document.
    pub fn to_json(&self) -> serde_json::Value {
        let nic_exits = self.exits.nic_exits();
        let per_frame = if self.frames_moved > 0 {
            serde_json::json!(nic_exits as f64 / self.frames_moved as f64)
        } else {
            serde_json::Value::Null
        };
        serde_json::json!({
            "outcome": self.outcome.to_string(),
            "exit_status": self.outcome.exit_status(),
            "exits": self.exits.to_json(),
            "unhandled_accesses": self.exits.unhandled_accesses.load(Ordering::Relaxed),
            "io_thread_wakeups": self.exits.io_wakeups.load(Ordering::Relaxed),
            "backend_lost": self.exits.backend_lost.load(Ordering::Relaxed),
            "frames_moved": self.frames_moved,
            "nic_exits_per_frame": per_frame,
            "nic": self.nic,
            "backend": self.backend,
            "io_thread_error": self.io_thread_error,
        })
    }
}

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
    if !(1..=8).contains(&config.cpus) {
        return Err(VmmError::CpuCount(config.cpus));
    }
    boot::kernel_format(&config.boot.kernel)?;
    if let Some(initrd) = &config.boot.initrd {
        // Refused before any guest memory exists; checked again (same rule) when it is loaded.
        boot::open_initrd(initrd, boot::initrd_limit(config.mem_bytes))?;
    }
    let kvm = open_kvm()?;
    let vm: Arc<VmFd> = Arc::new(kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?);
    vm.set_tss_address(KVM_TSS_ADDRESS)
        .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
    irq::create_interrupt_controllers(&vm)?;
    irq::set_pic_level_triggered(&vm, boot::mptable::NIC_IRQ)?;
    let mem = memory::create_guest_memory(config.mem_bytes)?;
    memory::register_guest_memory(&vm, &mem)?;

    let mut boot_spec = config.boot.clone();
    boot_spec.cpus = config.cpus as u8;
    let entry = boot::load_guest(&mem, &boot_spec)?;
    boot::write_gdt(&mem, matches!(entry, boot::BootEntry::Linux64 { .. }))?;

    let serial_irq = EventFd::new(EFD_NONBLOCK).map_err(os_err("the serial IRQ eventfd"))?;
    vm.register_irqfd(&serial_irq, serial::SERIAL_IRQ)
        .map_err(kvm_err("KVM_IRQFD"))?;
    let serial = serial::SerialConsole::new(serial::IrqFdTrigger(serial_irq), config.serial_out);

    let exits = Arc::new(ExitStats::default());
    let (net, io_tuning) = match config.net {
        Some(net_config) => {
            let mut nic = (net_config.make_nic)(irq::KvmIrqLine::new(
                Arc::clone(&vm),
                u32::from(boot::mptable::NIC_IRQ),
            ));
            assign_nic_resources(nic.as_mut());
            let shared = NetShared::new(nic, net_config.backend, net_config.tx_inline)?;
            (Some(Arc::new(shared)), net_config.io)
        }
        None => (None, IoTuning::default()),
    };
    let bus = Arc::new(bus::Bus::new(
        serial,
        net.clone(),
        mem.clone(),
        Arc::clone(&exits),
    ));
    let control = Arc::new(VmControl::new()?);

    let mut vcpus = Vec::with_capacity(config.cpus);
    for index in 0..config.cpus {
        let vcpu = vm
            .create_vcpu(index as u64)
            .map_err(kvm_err("KVM_CREATE_VCPU"))?;
        let cpuid = cpuid::guest_cpuid(&kvm, &config.hidden, index as u8, config.cpus as u8)?;
        vcpu::configure_vcpu(&vcpu, &cpuid)?;
        if index == 0 {
            vcpu::set_boot_registers(&vcpu, entry)?;
        }
        vcpus.push(vcpu);
    }
    vcpu::install_kick_handler()?;
    if config.handle_signals {
        SIGNAL_EVENTFD.store(control.done.as_raw_fd(), Ordering::SeqCst);
        for sig in [libc::SIGINT, libc::SIGTERM] {
            vmm_sys_util::signal::register_signal_handler(sig, shutdown_handler).map_err(|e| {
                VmmError::Os {
                    what: "the SIGINT/SIGTERM handler",
                    source: std::io::Error::from_raw_os_error(e.errno()),
                }
            })?;
        }
    }

    // Pinning errors are reported before any thread starts.
    let core_count = affinity::get_core_num();
    for (thread, cpu) in [("vCPU", config.pin_vcpu), ("I/O", config.pin_io)] {
        if let Some(cpu) = cpu.filter(|c| *c >= core_count) {
            return Err(VmmError::Pin {
                thread,
                cpu,
                count: core_count,
                detail: "no such CPU".into(),
            });
        }
    }

    let io_stop = EventFd::new(EFD_NONBLOCK).map_err(os_err("the I/O thread stop eventfd"))?;
    let io_handle: Option<JoinHandle<std::result::Result<(), String>>> = match &net {
        Some(net) => {
            let (net, mem, stats, pin_io) = (
                Arc::clone(net),
                mem.clone(),
                Arc::clone(&exits),
                config.pin_io,
            );
            let stop = io_stop
                .try_clone()
                .map_err(os_err("the I/O thread stop eventfd"))?;
            let control = Arc::clone(&control);
            Some(
                std::thread::Builder::new()
                    .name("lancet-io".into())
                    .spawn(move || {
                        stop_vm_on_panic(&control, "I/O", || {
                            pin("I/O", pin_io).map_err(|e| e.to_string())?;
                            let result = io_thread::run_io_thread(net, mem, stop, stats, io_tuning);
                            if let Err(e) = &result {
                                control.finish(VmOutcome::Failed(format!("I/O thread: {e}")));
                            }
                            result
                        })
                        .and_then(|result| result)
                    })
                    .map_err(os_err("the I/O thread"))?,
            )
        }
        None => None,
    };
    let mut vcpu_handles = Vec::with_capacity(vcpus.len());
    for (index, vcpu) in vcpus.into_iter().enumerate() {
        let (bus, control, pin_vcpu) = (Arc::clone(&bus), Arc::clone(&control), config.pin_vcpu);
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
        vcpu_handles.push(handle);
    }

    // Wait for the first outcome (a vCPU, the I/O thread, a signal, or the timeout).
    let deadline = config.timeout.map(|t| (t, std::time::Instant::now() + t));
    let mut stop_check = config.stop_check;
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
            fd: control.done.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd for an eventfd we own, for the duration of the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, wait_ms) };
        if ready > 0 {
            let _ = control.done.read();
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
    control.stop.store(true, Ordering::Release);
    for handle in &vcpu_handles {
        let _ = handle.kill(vcpu::kick_signal());
    }
    let _ = io_stop.write(1);
    for handle in vcpu_handles {
        let _ = handle.join();
    }
    let io_thread_error = match io_handle.map(JoinHandle::join) {
        Some(Ok(Err(e))) => Some(e),
        Some(Err(_)) => Some("the I/O thread ended without a result".into()),
        _ => None,
    };
    if config.handle_signals {
        SIGNAL_EVENTFD.store(-1, Ordering::SeqCst);
    }
    bus.flush_serial();
    let outcome = control
        .outcome
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or(VmOutcome::Failed("no outcome recorded".into()));
    let (nic, backend, frames_moved) = match &net {
        Some(net) => {
            let state = net.lock();
            (
                Some(state.nic.stats_json()),
                state.backend.as_ref().map(|b| b.stats_json()),
                state.nic.frames_moved(),
            )
        }
        None => (None, None, 0),
    };
    Ok(RunReport {
        outcome,
        exits,
        nic,
        backend,
        frames_moved,
        io_thread_error,
    })
}
