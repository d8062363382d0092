//! Errors of the machine layer (KVM, guest memory, boot, threads), each message saying what is wrong
//! and how to fix it.

use std::path::PathBuf;

/// Everything that can stop `lancet run` from starting or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("/dev/kvm does not exist: load the kvm module (modprobe kvm_intel or kvm_amd) or run on a host with hardware virtualization enabled")]
    KvmMissing,
    #[error("permission denied opening /dev/kvm: run as root or add your user to the group kvm")]
    KvmPermission,
    #[error("cannot open /dev/kvm: {0}")]
    KvmOpen(#[source] kvm_ioctls::Error),
    #[error("KVM API version {0} is not supported (need 12)")]
    KvmApiVersion(i32),
    #[error("KVM ioctl {what} failed: {source}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error(
        "guest memory size {0} bytes is invalid: use between 16 MiB and 3 GiB (e.g. --mem 256M)"
    )]
    MemorySize(u64),
    #[error("cannot allocate guest memory: {0}")]
    MemoryAlloc(String),
    #[error("guest memory access at {addr:#x} failed while {what}: the image does not fit in guest RAM (raise --mem)")]
    GuestMemory { what: &'static str, addr: u64 },
    #[error("kernel file {0} not found: pass an existing bzImage or vmlinux (ELF with a PVH note), e.g. `make linux-guest` builds .cache/linux-guest/bzImage")]
    KernelMissing(PathBuf),
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is neither a bzImage (Linux boot protocol header \"HdrS\") nor an ELF vmlinux")]
    NotAKernel(PathBuf),
    #[error("{0} is an ELF file without a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): build the kernel with CONFIG_PVH=y or pass its bzImage")]
    NoPvhNote(PathBuf),
    #[error("loading {path} failed: {detail}")]
    KernelLoad { path: PathBuf, detail: String },
    #[error(
        "initrd {path} ({size} bytes) does not fit in guest RAM below {limit:#x}: raise --mem"
    )]
    InitrdTooBig {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("initrd {0} is not a regular file (a device, FIFO or directory): pass an initramfs image file, e.g. .cache/linux-guest/initramfs.cpio")]
    InitrdNotAFile(PathBuf),
    #[error("kernel command line is too long ({0} bytes, at most 4095)")]
    CmdlineTooLong(usize),
    #[error("--cpus {0} is invalid: use 1 to 8")]
    CpuCount(usize),
    #[error("unknown CPU feature '{0}' in --cpuid-hide (known: {1})")]
    UnknownCpuFeature(String, String),
    #[error("cannot create {what}: {source}")]
    Os {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot pin {thread} thread to CPU {cpu}: {detail} (this machine has CPUs 0..{count})"
    )]
    Pin {
        thread: &'static str,
        cpu: usize,
        count: usize,
        detail: String,
    },
}

/// Shorthand for results of this module.
pub type Result<T> = std::result::Result<T, VmmError>;

/// Wraps a failed KVM ioctl with the operation's name.
pub(crate) fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
    move |source| VmmError::Kvm { what, source }
}

/// Wraps a failed OS call with what was being created.
pub(crate) fn os_err(what: &'static str) -> impl FnOnce(std::io::Error) -> VmmError {
    move |source| VmmError::Os { what, source }
}

/// A VM thread (a vCPU or the I/O thread) panicked; the VM was stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {thread} thread panicked: {message}")]
pub struct ThreadPanic {
    /// "vCPU 0", "I/O", ...
    pub thread: String,
    /// The panic message ("no message" when the payload was not a string).
    pub message: String,
}

/// Why the I/O thread ended before it was told to stop.
#[derive(Debug, thiserror::Error)]
pub enum IoThreadError {
    #[error("{op}: {source}")]
    Epoll {
        /// The failed call (`epoll_create`, `epoll_ctl`, `epoll_wait`).
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pin(VmmError),
    #[error(transparent)]
    Panicked(#[from] ThreadPanic),
    #[error("the I/O thread ended without a result")]
    NoResult,
}

impl IoThreadError {
    /// Wraps a failed epoll call.
    pub(crate) fn epoll(op: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| IoThreadError::Epoll { op, source }
    }
}
