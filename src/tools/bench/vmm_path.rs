//! The `xdp` and `tap` path runners: lancet's own VMM (`lancet run`, as a child process, flags as
//! in issue 4) booting the test guest with the AF_XDP or the TAP backend on one end of a veth pair;
//! the guest's console says when it is ready, `--stats-json` (written when the VMM stops on
//! SIGTERM) gives KVM exits by reason, the model's frame counts and the backend's drops.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::cpu::{find_thread, process_cpu, thread_cpu};
use super::guest_proc::GuestProcess;

use super::netns::VethPairNetns;
use super::packet::{Mac, ECHO_PORT};
use super::private_dir::PrivateDir;
use super::qemu_path::BLAST_LINE;
use super::report::{DropCount, Pinning};
use crate::frame::MacAddr;
use crate::net::BackendKind;
use crate::tools::guest_cmdline::GuestCmdline;
use crate::tools::testbed::Testbed;
use crate::vmm::RunStats;

use super::{BenchError, Endpoint, GuestMode, PathRunner, PathStats, Role, RunningPath};

/// The guest's MAC and address on the testbed segment.
const GUEST_MAC: Mac = Testbed::VM_MAC;
const GUEST_IP: Ipv4Addr = Testbed::VM_IP;
const GUEST_PREFIX_LEN: u8 = Testbed::PREFIX_LEN;
/// Guest RAM given to the test guest.
const GUEST_MEM: &str = "64M";
/// The name lancet's VMM gives its I/O thread (src/vmm: `std::thread::Builder::name`).
const IO_THREAD_NAME: &str = "lancet-io";
/// How long the VMM gets to stop (and write its statistics) after SIGTERM.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// Exit reasons that belong to boot and shutdown, not to moving packets (console output, PCI
/// probing, the exit port): left out of exits per packet.
const SETUP_EXIT_REASONS: [&str; 6] = [
    "pio_serial",
    "pio_pci_config",
    "pio_debug_exit",
    "shutdown",
    "system_event",
    "total",
];

pub use crate::tools::guest_cmdline::PollKick;

/// `lancet run` settings shared by both backends.
#[derive(Debug, Clone)]
pub struct VmmSettings {
    /// The lancet executable (normally the running one).
    pub lancet: PathBuf,
    pub guest_image: PathBuf,
    pub boot_timeout: Duration,
    pub pin_vcpu: Option<usize>,
    pub pin_io: Option<usize>,
    /// Poll mode: when the guest writes TDMD (`lancet run --kick`).
    pub poll_kick: PollKick,
    /// `lancet run --busy-poll-us` (None: lancet's default).
    pub busy_poll_us: Option<u64>,
}

struct VmmTestbed {
    pair: VethPairNetns,
    /// `--nic`: the veth end (xdp) or the bridge it is a port of (tap).
    nic: String,
    /// `--tap` (tap backend).
    tap: String,
}

/// Runs `lancet run` in its own namespace pair (created on first use).
pub struct VmmRunner {
    backend: BackendKind,
    settings: VmmSettings,
    testbed: Option<VmmTestbed>,
    /// Where the VMM writes `--stats-json` (a private directory, made on first start).
    stats_dir: Option<PrivateDir>,
    started: u64,
}

impl VmmRunner {
    pub fn new(backend: BackendKind, settings: VmmSettings) -> Self {
        VmmRunner {
            backend,
            settings,
            testbed: None,
            stats_dir: None,
            started: 0,
        }
    }

    fn testbed(&mut self) -> Result<&VmmTestbed, BenchError> {
        if self.testbed.is_none() {
            let (pair, nic, tap) = match self.backend {
                BackendKind::Xdp => {
                    let pair = VethPairNetns::create("vx")?;
                    let nic = pair.a.ifname.clone();
                    (pair, nic, String::new())
                }
                BackendKind::Tap => {
                    let pair = VethPairNetns::create_bridged("vt")?;
                    let bridge = pair.bridge().unwrap_or(Testbed::BRIDGE).to_string();
                    (pair, bridge, Testbed::TAP.to_string())
                }
            };
            self.testbed = Some(VmmTestbed { pair, nic, tap });
        }
        self.testbed
            .as_ref()
            .ok_or_else(|| BenchError::Setup("VMM testbed missing".into()))
    }
}

impl PathRunner for VmmRunner {
    fn name(&self) -> &'static str {
        self.backend.name()
    }

    fn unavailable(&mut self, _mode: GuestMode) -> Option<String> {
        if !self.settings.lancet.is_file() {
            return Some(format!(
                "lancet executable {} not found",
                self.settings.lancet.display()
            ));
        }
        if !std::path::Path::new("/dev/kvm").exists() {
            return Some("no /dev/kvm".into());
        }
        if !self.settings.guest_image.is_file() {
            return Some(format!(
                "no test guest image at {}: build it with `make guest` or pass --guest FILE",
                self.settings.guest_image.display()
            ));
        }
        None
    }

    fn pinning(&self) -> Vec<Pinning> {
        let name = self.backend.name();
        vec![
            Pinning {
                thread: format!("lancet ({name}) vCPU"),
                cpu: self.settings.pin_vcpu,
            },
            Pinning {
                thread: format!("lancet ({name}) I/O thread"),
                cpu: self.settings.pin_io,
            },
        ]
    }

    fn prepare(&mut self, _mode: GuestMode) -> Result<Endpoint, BenchError> {
        let tb = self.testbed()?;
        Ok(Endpoint {
            peer_netns: tb.pair.b.netns.clone(),
            peer_ifname: tb.pair.b.ifname.clone(),
            peer_mac: tb.pair.b.mac,
            peer_ip: tb.pair.b.ip,
            dut_mac: GUEST_MAC,
            dut_ip: GUEST_IP,
            echo_port: ECHO_PORT,
        })
    }

    fn start(&mut self, mode: GuestMode, role: &Role) -> Result<Box<dyn RunningPath>, BenchError> {
        let endpoint = self.prepare(mode)?;
        let stats_dir = match &self.stats_dir {
            Some(dir) => dir.path().to_path_buf(),
            None => self
                .stats_dir
                .insert(PrivateDir::new()?)
                .path()
                .to_path_buf(),
        };
        self.started += 1;
        let stats_file = stats_dir.join(format!("run-{}.json", self.started));
        let _ = std::fs::remove_file(&stats_file);
        let settings = self.settings.clone();
        let backend = self.backend;
        let tb = self.testbed()?;
        let mut command = Command::new(&settings.lancet);
        command
            .arg("run")
            .args(["--netns", &tb.pair.a.netns])
            .args(["--nic", &tb.nic])
            .args(["--backend", backend.name()])
            .args(["--mac", &MacAddr(GUEST_MAC).to_string()])
            .args(["--mem", GUEST_MEM])
            .args(["--serial", "stdio"])
            .arg("--stats-json")
            .arg(&stats_file)
            .arg("--guest-elf")
            .arg(&settings.guest_image)
            .args(
                GuestCmdline {
                    kick: settings.poll_kick,
                    ..role.guest_cmdline(mode, GUEST_IP, GUEST_PREFIX_LEN, endpoint.peer_ip)
                }
                .run_args(),
            );
        if backend == BackendKind::Tap {
            command.args(["--tap", &tb.tap]);
        }
        if let Some(us) = settings.busy_poll_us {
            command.args(["--busy-poll-us", &us.to_string()]);
        }
        if let Some(cpu) = settings.pin_vcpu {
            command.args(["--pin-vcpu", &cpu.to_string()]);
        }
        if let Some(cpu) = settings.pin_io {
            command.args(["--pin-io", &cpu.to_string()]);
        }
        let process = GuestProcess::start(backend.name(), command, settings.boot_timeout)?;
        Ok(Box::new(RunningVmm {
            process,
            endpoint,
            role: role.clone(),
            stats_file,
            backend,
        }))
    }
}

struct RunningVmm {
    process: GuestProcess,
    endpoint: Endpoint,
    role: Role,
    stats_file: PathBuf,
    backend: BackendKind,
}

/// Turn the VMM's `--stats-json` document into the bench's counters.
pub fn stats_from_vmm_report(doc: &RunStats, role: &Role, path: &str) -> PathStats {
    let mut stats = PathStats::default();
    for (reason, n) in doc.exits.by_reason() {
        if n > 0 && !SETUP_EXIT_REASONS.contains(&reason) {
            stats.kvm_exits.insert(reason.to_string(), n);
        }
    }
    let Some(nic) = &doc.nic else {
        return with_backend_drops(stats, doc, path);
    };
    match role {
        Role::Sink { .. } => stats.frames_received = Some(nic.rx_frames),
        Role::Blast { .. } => stats.frames_sent = Some(nic.tx_frames),
        _ => {}
    }
    for (field, n) in [
        ("rx_missed", nic.rx_missed),
        ("rx_overflow", nic.rx_overflow),
        ("rx_not_running", nic.rx_not_running),
        ("tx_dropped_oversize", nic.tx_dropped_oversize),
        ("dma_errors", nic.dma_errors),
    ] {
        if n > 0 {
            stats.drops.push(DropCount {
                counted_at: format!("{path}: Lance model {field}"),
                frames: n,
            });
        }
    }
    with_backend_drops(stats, doc, path)
}

/// `stats` with the backend's drops by reason added.
fn with_backend_drops(mut stats: PathStats, doc: &RunStats, path: &str) -> PathStats {
    let Some(backend) = &doc.backend else {
        return stats;
    };
    for (reason, n) in backend.counters.drops.by_reason() {
        if n > 0 {
            stats.drops.push(DropCount {
                counted_at: format!("{path}: backend {reason}"),
                frames: n,
            });
        }
    }
    stats
}

impl RunningPath for RunningVmm {
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn host_cpu(&self) -> Result<Duration, BenchError> {
        let pid = self.process.pid().ok_or_else(|| {
            BenchError::Io(format!("{}: lancet run has exited", self.backend.name()))
        })?;
        process_cpu(pid)
    }

    fn io_cpu(&self) -> Result<Duration, BenchError> {
        let pid = self.process.pid().ok_or_else(|| {
            BenchError::Io(format!("{}: lancet run has exited", self.backend.name()))
        })?;
        thread_cpu(pid, find_thread(pid, IO_THREAD_NAME)?)
    }

    fn finish(mut self: Box<Self>) -> Result<PathStats, BenchError> {
        let exited_by_itself = self.process.stop(TERM_GRACE);
        let path = self.backend.name();
        let text = std::fs::read_to_string(&self.stats_file).map_err(|e| BenchError::Path {
            path: path.into(),
            reason: format!(
                "no --stats-json from lancet run at {} ({e}){}; console: {}",
                self.stats_file.display(),
                if exited_by_itself {
                    ""
                } else {
                    " after SIGTERM"
                },
                self.process.console_tail()
            ),
        })?;
        let doc: RunStats = serde_json::from_str(&text).map_err(|e| BenchError::Path {
            path: path.into(),
            reason: format!("unreadable --stats-json {}: {e}", self.stats_file.display()),
        })?;
        let mut stats = stats_from_vmm_report(&doc, &self.role, path);
        if let (Role::Blast { .. }, None) = (&self.role, stats.frames_sent) {
            stats.frames_sent = self.process.last_number_after(BLAST_LINE);
        }
        Ok(stats)
    }
}
