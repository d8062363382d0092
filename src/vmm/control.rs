//! How a VM ends ([`VmOutcome`]) and the state every VM thread shares to end it ([`VmControl`]):
//! the stop flag, the first outcome, and the eventfd the main thread waits on. The vCPU and I/O
//! threads depend on this module only, never on the machine builder in `vmm/mod.rs`.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::error::{os_err, Result, ThreadPanic};

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
    pub(crate) fn new() -> Result<Self> {
        Ok(Self {
            stop: AtomicBool::new(false),
            outcome: Mutex::new(None),
            done: EventFd::new(EFD_NONBLOCK).map_err(os_err("the VM exit eventfd"))?,
        })
    }

    /// Whether the VM is stopping (the threads leave their loops).
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Tells every thread to stop (the first outcome, if any, stays).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// The descriptor that is readable once an outcome is recorded (or a signal arrived).
    pub fn done_fd(&self) -> RawFd {
        self.done.as_raw_fd()
    }

    /// Consumes the readiness of [`VmControl::done_fd`].
    pub fn clear_done(&self) {
        let _ = self.done.read();
    }

    /// The first outcome recorded.
    pub fn outcome(&self) -> Option<VmOutcome> {
        self.outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
/// main thread never waits for a thread that is gone.
pub(crate) fn stop_vm_on_panic<T>(
    control: &VmControl,
    thread: &str,
    body: impl FnOnce() -> T,
) -> std::result::Result<T, ThreadPanic> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        let panic = ThreadPanic {
            thread: thread.to_string(),
            message,
        };
        control.finish(VmOutcome::Failed(panic.to_string()));
        panic
    })
}
