//! `lancet bench`: measures the AF_XDP path, the TAP path, QEMU's pcnet + TAP and a raw AF_XDP
//! socket side by side (echo RTT percentiles, receive and transmit rates) and reports the ratios.
//!
//! Building blocks: [`rtt`] (echo RTT client), [`gen`] (AF_PACKET generator and counter),
//! [`raw_xsk`] (raw AF_XDP rxdrop/txonly/echo), [`report`] (JSON model, checks, table, .hgrm, SVG).
//! Paths are [`PathRunner`]s: [`vmm_path::VmmRunner`] (`xdp`, `tap`: `lancet run` as a child),
//! [`qemu_path::QemuTapRunner`] (`qemu_tap`) and [`raw_path::RawXskRunner`] (`raw_xsk`). Each round
//! runs, for every path and mode in turn, an echo phase, a receive phase, a transmit phase and a
//! TCP bulk phase (both ways), each with a freshly started path (the test guest runs one program
//! per boot). [`native_path::NativeRunner`] (`native`) is the kernel stack on the same kind of
//! veth with no VM: the echo and TCP baseline. [`cpu`] samples CPU time from /proc for
//! `host_cpu_ms_per_mb` (TCP) and `io_cpu_ns_per_frame` (receive and transmit phases).
//!
//! Wiring into the CLI: `Command::Bench(args: lancet::tools::bench::BenchArgs)` in main.rs calling
//! [`run_bench`], exit status non-zero on `Err` (the report is printed and written by `run_bench`).
//! The xdp/tap runners start `lancet run` from the running executable (`--lancet` overrides).

pub mod cpu;
pub mod gen;
mod guest_proc;
pub mod native_path;
pub mod netns;
pub mod packet;
pub mod private_dir;
pub mod qemu_cpu;
pub mod qemu_path;
pub mod raw_path;
pub mod raw_xsk;
pub mod report;
pub mod rtt;
mod runner;
pub mod tcp;
pub mod vmm_path;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use runner::run_rounds;

use crate::net::BackendKind;
use packet::Mac;
use report::{BenchReport, DropCount, Pinning};

/// Errors of the bench; each message says what failed and what to check.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BenchError {
    #[error("bench set-up: {0}")]
    Setup(String),
    #[error("bench I/O: {0}")]
    Io(String),
    #[error("bench configuration: {0}")]
    Config(String),
    #[error("path {path}: {reason}")]
    Path { path: String, reason: String },
}

/// Pin the calling thread to one CPU; returns whether it worked (the bench runs on anyway, with a
/// warning naming the CPU).
pub fn pin_current_thread(cpu: usize) -> bool {
    match affinity::set_thread_affinity([cpu]) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("bench: warning: cannot pin a thread to CPU {cpu} ({e}); it runs unpinned");
            false
        }
    }
}

/// `lancet bench` options.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BenchArgs {
    /// Short run (about a minute): one round, 1000 echo samples per size, 0.5 s rate phases,
    /// 8 MiB TCP transfers.
    #[arg(long)]
    pub quick: bool,
    /// Write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write every RTT histogram (.hgrm) and one SVG plot of all percentile curves into DIR.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Interleaved rounds over all paths (default 3, quick 1).
    #[arg(long, value_name = "N")]
    pub rounds: Option<u32>,
    /// Only these paths (comma-separated: xdp,tap,qemu_tap,raw_xsk,native); the others are reported as
    /// unavailable ("not selected").
    #[arg(long, value_delimiter = ',', value_name = "PATHS")]
    pub paths: Vec<String>,
    /// Measured echo requests per frame size and round (default 5000, quick 1000).
    #[arg(long, value_name = "N")]
    pub samples: Option<u64>,
    /// Length of each receive/transmit rate phase in seconds (default 2, quick 0.5).
    #[arg(long, value_name = "SECONDS")]
    pub rate_seconds: Option<f64>,
    /// CPU for the bench's client, generator and counter threads (default 0).
    #[arg(long, value_name = "CPU")]
    pub client_cpu: Option<usize>,
    /// CPU for the path's own busy thread: the kernel echo reference and the native TCP thread
    /// (default 1; the VMM runner pins its vCPU and I/O threads itself).
    #[arg(long, value_name = "CPU")]
    pub path_cpu: Option<usize>,
    /// CPU for the raw XSK socket's thread (default: lancet's I/O CPU, `--pin-io`: the raw socket
    /// touches its rings on the core where lancet's I/O thread touches the VM's, so the two are
    /// compared with the same cross-core wake-ups).
    #[arg(long, value_name = "CPU")]
    pub raw_cpu: Option<usize>,
    /// Spin on the client's UDP socket instead of blocking (lower RTT, burns the client CPU).
    #[arg(long)]
    pub client_spin: bool,
    /// The test guest image (PVH ELF) the VM paths boot (default $LANCET_GUEST_ELF, else the one
    /// `make guest` built: target/guest/release/lancet-guest).
    #[arg(long, value_name = "FILE")]
    pub guest: Option<PathBuf>,
    /// Seconds a VM path may take from start to the guest's ready line (default 60).
    #[arg(long, value_name = "SECONDS")]
    pub boot_timeout: Option<f64>,
    /// The lancet executable that runs the xdp and tap paths (`lancet run`; default: this program).
    #[arg(long, value_name = "FILE")]
    pub lancet: Option<PathBuf>,
    /// CPU for lancet's vCPU thread (default: the path CPU).
    #[arg(long, value_name = "CPU")]
    pub pin_vcpu: Option<usize>,
    /// CPU for lancet's I/O thread (default: the client CPU, where the peer's traffic is handled).
    #[arg(long, value_name = "CPU")]
    pub pin_io: Option<usize>,
    /// Poll mode: when the test guest writes TDMD (`lancet run --kick`): always (one exit per
    /// echo), lazy (only if the I/O thread's TX ring poll has not sent the frame within ~20 us)
    /// or never.
    #[arg(long, value_enum, default_value = "lazy")]
    pub kick: crate::tools::guest_cmdline::PollKick,
    /// Microseconds lancet's I/O thread busy-polls after traffic (`lancet run --busy-poll-us`).
    #[arg(long, value_name = "US")]
    pub busy_poll_us: Option<u64>,
    /// Only these guest modes (comma-separated: irq,poll; default both).
    #[arg(long, value_delimiter = ',', value_name = "MODES")]
    pub modes: Vec<String>,
    /// Only these phases (comma-separated: echo,rx,tx,tcp; default all; echo is required).
    #[arg(long, value_delimiter = ',', value_name = "PHASES")]
    pub phases: Vec<String>,
    /// Bytes per TCP bulk transfer in the tcp phase (default 64 MiB, quick 8 MiB).
    #[arg(long, value_name = "BYTES")]
    pub tcp_bytes: Option<u64>,
}

/// Which measurement phases run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phases {
    pub echo: bool,
    pub rx: bool,
    pub tx: bool,
    pub tcp: bool,
}

impl Phases {
    fn from_names(names: &[String]) -> Result<Self, BenchError> {
        if names.is_empty() {
            return Ok(Phases {
                echo: true,
                rx: true,
                tx: true,
                tcp: true,
            });
        }
        let mut phases = Phases {
            echo: false,
            rx: false,
            tx: false,
            tcp: false,
        };
        for name in names {
            match name.as_str() {
                "echo" => phases.echo = true,
                "rx" => phases.rx = true,
                "tx" => phases.tx = true,
                "tcp" => phases.tcp = true,
                other => {
                    return Err(BenchError::Config(format!(
                        "unknown phase {other:?} in --phases: choose from echo,rx,tx,tcp"
                    )))
                }
            }
        }
        if !phases.echo {
            return Err(BenchError::Config(
                "--phases must include echo: every measured path reports its RTT".into(),
            ));
        }
        Ok(phases)
    }
}

fn modes_from_names(names: &[String]) -> Result<Vec<GuestMode>, BenchError> {
    if names.is_empty() {
        return Ok(GuestMode::ALL.to_vec());
    }
    names
        .iter()
        .map(|n| {
            GuestMode::ALL
                .into_iter()
                .find(|m| m.name() == n)
                .ok_or_else(|| {
                    BenchError::Config(format!(
                        "unknown mode {n:?} in --modes: choose from irq,poll"
                    ))
                })
        })
        .collect()
}

pub use crate::tools::guest_cmdline::GuestMode;
use crate::tools::guest_cmdline::{GuestCmdline, GuestPeer, GuestProgram, Ipv4Cidr};

/// What the path under test runs for one phase (the test guest's `prog=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Answer UDP on the endpoint's echo port (and ARP) by swapping addresses.
    Echo,
    /// Count every received frame (the generator sends at most `max_frames`).
    Sink { max_frames: u64 },
    /// Send `count` UDP frames of `frame_len` bytes (FCS excluded) to the peer's discard port
    /// (`peer_mac`/`peer_ip` of the endpoint), as fast as possible.
    Blast { count: u64, frame_len: usize },
    /// TCP: accept one connection on `port` of the endpoint's address and discard what arrives
    /// until the peer closes (the test guest's `tcp-sink`).
    TcpSink { port: u16 },
    /// TCP: connect to `peer`, send `bytes`, close (the test guest's `tcp-source`).
    TcpSource { peer: SocketAddrV4, bytes: u64 },
}

/// `count=` for sink and tcp-sink: serve until stopped, so the VM is still running when the bench
/// samples its CPU time after the transfer (tcp-sink's default 1 would exit at once).
const GUEST_SERVE_FOREVER: u64 = 0;

impl Role {
    /// The test guest command line that plays this role in `mode` at `ip`/`prefix_len`, with the
    /// endpoint's peer at `peer_ip` (blast's target). Kick: `lancet run`'s default.
    pub fn guest_cmdline(
        &self,
        mode: GuestMode,
        ip: Ipv4Addr,
        prefix_len: u8,
        peer_ip: Ipv4Addr,
    ) -> GuestCmdline {
        let base = |program| GuestCmdline {
            mode,
            ip: Some(Ipv4Cidr {
                addr: ip,
                prefix_len,
            }),
            ..GuestCmdline::new(program)
        };
        match self {
            Role::Echo => base(GuestProgram::Echo),
            Role::Sink { .. } => GuestCmdline {
                count: Some(GUEST_SERVE_FOREVER),
                ..base(GuestProgram::Sink)
            },
            Role::Blast { count, frame_len } => GuestCmdline {
                peer: Some(GuestPeer {
                    ip: peer_ip,
                    port: None,
                }),
                count: Some(*count),
                size: u32::try_from(frame_len + packet::FCS_LEN).ok(),
                ..base(GuestProgram::Blast)
            },
            Role::TcpSink { port } => GuestCmdline {
                port: Some(*port),
                count: Some(GUEST_SERVE_FOREVER),
                ..base(GuestProgram::TcpSink)
            },
            Role::TcpSource { peer, bytes } => GuestCmdline {
                peer: Some((*peer).into()),
                bytes: Some(*bytes),
                ..base(GuestProgram::TcpSource)
            },
        }
    }
}

/// A measurement phase a path may not support (see [`PathRunner::phase_unavailable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Rx,
    Tx,
    Tcp,
}

/// Where the bench's own threads run and what they talk to, for one started path.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Namespace of the peer side, where the client, generator and counter run.
    pub peer_netns: String,
    /// The peer's interface in that namespace (the generator sends and the counter listens here).
    pub peer_ifname: String,
    pub peer_mac: Mac,
    pub peer_ip: Ipv4Addr,
    /// The device under test as seen from the peer: the guest's (or raw socket's) MAC and IP.
    pub dut_mac: Mac,
    pub dut_ip: Ipv4Addr,
    /// UDP port the echo role answers on.
    pub echo_port: u16,
}

/// Counters a path reports when it is finished.
#[derive(Debug, Clone, Default)]
pub struct PathStats {
    /// Sink: frames the path's receiver counted.
    pub frames_received: Option<u64>,
    /// Sink: time from the first to the last received frame, if the path knows it.
    pub receive_window: Option<Duration>,
    /// Blast: frames the path says it sent.
    pub frames_sent: Option<u64>,
    /// Frames the path dropped, by where they were counted.
    pub drops: Vec<DropCount>,
    /// KVM exits by reason during the phase; empty when the path has no VM.
    pub kvm_exits: BTreeMap<String, u64>,
}

/// A started path; dropping it must also stop it (and clean up).
pub trait RunningPath {
    fn endpoint(&self) -> &Endpoint;
    /// Stop the path and return its counters.
    fn finish(self: Box<Self>) -> Result<PathStats, BenchError>;
    /// CPU time (utime + stime) so far of everything the path runs on the host for its guest: the
    /// VMM's or QEMU's process, all threads; for `native`, the thread playing the guest's part.
    fn host_cpu(&self) -> Result<Duration, BenchError> {
        Err(BenchError::Io(
            "this path does not report its host CPU time".into(),
        ))
    }
    /// CPU time so far of the thread that moves the frames: lancet's I/O thread, QEMU's main
    /// loop (its TAP I/O), the raw socket's thread.
    fn io_cpu(&self) -> Result<Duration, BenchError> {
        Err(BenchError::Io(
            "this path does not report its I/O thread's CPU time".into(),
        ))
    }
}

/// One path the bench measures: the VMM with the AF_XDP or TAP backend, QEMU, or the raw socket.
pub trait PathRunner {
    /// `xdp`, `tap`, `qemu_tap` or `raw_xsk`.
    fn name(&self) -> &'static str;
    /// Why this path cannot be measured in `mode` on this machine (checked once before the
    /// rounds), or `None` if it can.
    fn unavailable(&mut self, _mode: GuestMode) -> Option<String> {
        None
    }
    /// Set up (if not yet) the topology for `mode` and say where the peer side is; called before
    /// each [`PathRunner::start`] so the bench's counter can listen before a blast begins.
    fn prepare(&mut self, mode: GuestMode) -> Result<Endpoint, BenchError>;
    /// Start the path in `mode` doing `role`; returns once it is ready for traffic. `kvm_exits`
    /// in the returned path's stats count from this point on.
    fn start(&mut self, mode: GuestMode, role: &Role) -> Result<Box<dyn RunningPath>, BenchError>;
    /// The threads the path pins and where (printed and put in the report).
    fn pinning(&self) -> Vec<Pinning> {
        Vec::new()
    }
    /// Whether the path reports KVM exits in [`PathStats::kvm_exits`]; `Err(reason)` if not
    /// (no VM, or a VMM that does not tell), which the report shows for `exits_per_packet`.
    fn reports_exits(&self) -> Result<(), String> {
        Ok(())
    }
    /// Why this path cannot run `phase` at all (e.g. no TCP stack on a raw socket), or `None`.
    fn phase_unavailable(&self, _phase: Phase) -> Option<String> {
        None
    }
}

/// Default CPU of the bench's own threads.
pub const DEFAULT_CLIENT_CPU: usize = 0;
/// Default CPU of the path's busy thread.
pub const DEFAULT_PATH_CPU: usize = 1;

/// How much a run does.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    pub quick: bool,
    pub rounds: u32,
    pub rtt_samples: u64,
    pub rtt_warmup: u64,
    pub rtt_timeout: Duration,
    pub rtt_max_losses: u64,
    /// Longest a single RTT run may take (bounds a slow path).
    pub rtt_max_duration: Duration,
    pub rate_duration: Duration,
    /// Frames offered per receive phase at most / blasted per transmit phase.
    pub rate_max_frames: u64,
    pub client_cpu: Option<usize>,
    pub path_cpu: Option<usize>,
    pub client_spin: bool,
    pub guest_image: PathBuf,
    pub boot_timeout: Duration,
    pub modes: Vec<GuestMode>,
    pub phases: Phases,
    /// `None` when the running program's path cannot be found (the VM paths are then unavailable).
    pub lancet: Option<PathBuf>,
    pub pin_vcpu: Option<usize>,
    pub pin_io: Option<usize>,
    /// CPU of the raw XSK socket's thread.
    pub raw_cpu: Option<usize>,
    pub poll_kick: crate::tools::guest_cmdline::PollKick,
    pub busy_poll_us: Option<u64>,
    /// Bytes per TCP bulk transfer.
    pub tcp_bytes: u64,
}

/// Bytes per TCP transfer: default run and `--quick`.
pub const DEFAULT_TCP_BYTES: u64 = 64 << 20;
pub const QUICK_TCP_BYTES: u64 = 8 << 20;

/// Default time a VM path gets to boot its guest.
pub const DEFAULT_BOOT_TIMEOUT_S: f64 = 60.0;

impl BenchPlan {
    /// The plan for `args`; errors name the bad option.
    pub fn from_args(args: &BenchArgs) -> Result<Self, BenchError> {
        let (rounds, samples, rate_s, rtt_max_s) = if args.quick {
            (1, 1000, 0.5, 8)
        } else {
            (3, 5000, 2.0, 20)
        };
        let client_cpu = args.client_cpu.unwrap_or(DEFAULT_CLIENT_CPU);
        // On a one-CPU machine both sides share CPU 0 rather than pinning to a CPU that is not there.
        let last_cpu = std::thread::available_parallelism().map_or(1, usize::from) - 1;
        let path_cpu = args.path_cpu.unwrap_or(DEFAULT_PATH_CPU.min(last_cpu));
        let rate_duration =
            Duration::from_secs_f64(args.rate_seconds.unwrap_or(rate_s).clamp(0.1, 60.0));
        Ok(BenchPlan {
            quick: args.quick,
            rounds: args.rounds.unwrap_or(rounds).max(1),
            rtt_samples: args.samples.unwrap_or(samples).max(1),
            rtt_warmup: 100,
            rtt_timeout: Duration::from_millis(200),
            rtt_max_losses: 200,
            rtt_max_duration: Duration::from_secs(rtt_max_s),
            rate_duration,
            rate_max_frames: (rate_duration.as_secs_f64() * 2_000_000.0) as u64,
            client_cpu: Some(client_cpu),
            path_cpu: Some(path_cpu),
            client_spin: args.client_spin,
            guest_image: args
                .guest
                .clone()
                .unwrap_or_else(qemu_path::default_guest_image),
            boot_timeout: Duration::from_secs_f64(
                args.boot_timeout
                    .unwrap_or(DEFAULT_BOOT_TIMEOUT_S)
                    .clamp(1.0, 600.0),
            ),
            modes: modes_from_names(&args.modes)?,
            phases: Phases::from_names(&args.phases)?,
            lancet: args.lancet.clone().or_else(|| std::env::current_exe().ok()),
            pin_vcpu: Some(args.pin_vcpu.unwrap_or(path_cpu)),
            pin_io: Some(args.pin_io.unwrap_or(client_cpu)),
            raw_cpu: Some(args.raw_cpu.or(args.pin_io).unwrap_or(client_cpu)),
            poll_kick: args.kick,
            busy_poll_us: args.busy_poll_us,
            tcp_bytes: args
                .tcp_bytes
                .unwrap_or(if args.quick {
                    QUICK_TCP_BYTES
                } else {
                    DEFAULT_TCP_BYTES
                })
                .max(1),
        })
    }
}

/// A runner for a path this build cannot measure yet: always unavailable with `reason`.
pub struct UnavailablePath {
    pub name: &'static str,
    pub reason: String,
}

impl PathRunner for UnavailablePath {
    fn name(&self) -> &'static str {
        self.name
    }
    fn unavailable(&mut self, _mode: GuestMode) -> Option<String> {
        Some(self.reason.clone())
    }
    fn prepare(&mut self, _mode: GuestMode) -> Result<Endpoint, BenchError> {
        Err(BenchError::Path {
            path: self.name.into(),
            reason: self.reason.clone(),
        })
    }
    fn start(
        &mut self,
        _mode: GuestMode,
        _role: &Role,
    ) -> Result<Box<dyn RunningPath>, BenchError> {
        Err(BenchError::Path {
            path: self.name.into(),
            reason: self.reason.clone(),
        })
    }
}

/// The runners of this build: lancet's VMM with the AF_XDP and the TAP backend (`lancet run` as a
/// child process), QEMU's pcnet + TAP, the raw AF_XDP baseline and the kernel stack (`native`).
pub fn default_runners(plan: &BenchPlan) -> Vec<Box<dyn PathRunner>> {
    let vmm = |backend: BackendKind| -> Box<dyn PathRunner> {
        match &plan.lancet {
            Some(lancet) => Box::new(vmm_path::VmmRunner::new(
                backend,
                vmm_path::VmmSettings {
                    lancet: lancet.clone(),
                    guest_image: plan.guest_image.clone(),
                    boot_timeout: plan.boot_timeout,
                    pin_vcpu: plan.pin_vcpu,
                    pin_io: plan.pin_io,
                    poll_kick: plan.poll_kick,
                    busy_poll_us: plan.busy_poll_us,
                },
            )),
            None => Box::new(UnavailablePath {
                name: backend.name(),
                reason: "cannot find the lancet executable: pass --lancet FILE".into(),
            }),
        }
    };
    vec![
        vmm(BackendKind::Xdp),
        vmm(BackendKind::Tap),
        Box::new(qemu_path::QemuTapRunner::new(qemu_path::QemuSettings {
            guest_image: plan.guest_image.clone(),
            boot_timeout: plan.boot_timeout,
            cpu: plan.path_cpu,
        })),
        Box::new(raw_path::RawXskRunner::new(plan.raw_cpu)),
        Box::new(native_path::NativeRunner::new(plan.path_cpu)),
    ]
}

/// `lancet bench`: run the rounds over the default runners, print the table, write `--json` and
/// `--out`. Returns the report.
pub fn run_bench(args: &BenchArgs) -> Result<BenchReport, BenchError> {
    let plan = BenchPlan::from_args(args)?;
    let runners = default_runners(&plan);
    run_bench_with(args, runners)
}

/// [`run_bench`] with the caller's runners (the lead adds the VMM and QEMU ones).
pub fn run_bench_with(
    args: &BenchArgs,
    runners: Vec<Box<dyn PathRunner>>,
) -> Result<BenchReport, BenchError> {
    let plan = BenchPlan::from_args(args)?;
    let started = Instant::now();
    let mut runners = runners;
    let selected = |name: &str| args.paths.is_empty() || args.paths.iter().any(|p| p == name);
    let mut active: Vec<Box<dyn PathRunner>> = Vec::new();
    let mut skipped = Vec::new();
    for r in runners.drain(..) {
        if selected(r.name()) {
            active.push(r);
        } else {
            skipped.push(r.name());
        }
    }
    for wanted in &args.paths {
        if !report::PATHS.contains(&wanted.as_str()) {
            return Err(BenchError::Config(format!(
                "unknown path {wanted:?} in --paths: choose from {}",
                report::PATHS.join(",")
            )));
        }
    }
    let (mut report, histograms) = run_rounds(&plan, &mut active)?;
    for name in skipped {
        for mode in report::MODES {
            report.set(
                name,
                mode,
                report::PathResult::Unavailable {
                    unavailable: "not selected with --paths".into(),
                },
            );
        }
    }
    report.compute_ratios();
    report.duration_s = started.elapsed().as_secs_f64();
    println!("{}", report::render_table(&report));
    if let Err(problems) = report::check_report(&report) {
        eprintln!(
            "bench: report inconsistencies:\n  {}",
            problems.join("\n  ")
        );
    }
    if let Some(path) = &args.json {
        let text = report
            .to_json()
            .map_err(|e| BenchError::Io(format!("serialising the report: {e}")))?;
        std::fs::write(path, text)
            .map_err(|e| BenchError::Io(format!("writing {}: {e}", path.display())))?;
        eprintln!("bench: wrote {}", path.display());
    }
    if let Some(dir) = &args.out {
        runner::write_out_dir(dir, &histograms, &report)?;
        eprintln!("bench: wrote histograms and plot to {}", dir.display());
    }
    Ok(report)
}
