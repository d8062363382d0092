//! `lancet` command line: parses arguments and calls the library.
#![deny(clippy::undocumented_unsafe_blocks)]

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use lancet::net::names::{IfName, NetnsName, VmName};
use lancet::tools::bench::vmm_path::PollKick;
use lancet::vmm::boot::BootSpec;
use lancet::vmm::memory::parse_size;
use lancet::vmm::serial::{CappedWriter, SerialDrops, DEFAULT_SERIAL_MAX_BYTES};
use lancet::vmm::{run_vm, HiddenFeatures, VmConfig, DEFAULT_HIDDEN};

#[derive(Parser, Debug)]
#[command(
    name = "lancet",
    version,
    about = "A hosted VMM whose emulated AMD PCnet-PCI II (Am79C970A) NIC is bridged over AF_XDP or TAP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Boot a VM (a Linux kernel or the built-in test guest) with the Lance NIC bridged to a host NIC.
    #[command(long_about = RUN_ABOUT)]
    Run(Box<RunArgs>),
    /// Filter rules of a NIC's steering program: add, del, list, flush.
    #[command(subcommand)]
    Filter(lancet::cli_filter::FilterCmd),
    /// Attach, detach or inspect lancet's XDP program on a NIC (pinned under bpffs).
    #[command(subcommand)]
    Nic(lancet::cli_filter::NicCmd),
    /// Verdicts, per-rule hits and per-VM counters of a NIC.
    Stats(lancet::cli_filter::StatsArgs),
    /// Measure the AF_XDP path against the TAP path, QEMU's pcnet + TAP and a raw AF_XDP socket,
    /// side by side in one run (echo RTT percentiles, guest RX/TX rates, exits per packet).
    Bench(Box<lancet::tools::bench::BenchArgs>),
    /// Build a demo topology in `lt-*` network namespaces, boot the test guest bridged over AF_XDP
    /// (or TAP), ping it and UDP-echo it from the peer namespace, show the counters, clean up.
    Demo(lancet::tools::demo::DemoArgs),
}

const RUN_ABOUT: &str = "Boot a VM under KVM with one network device, the emulated Am79C970A (PCnet-PCI II) at PCI 00:03.0 \
(BAR0 I/O 0xc000, BAR1 MMIO 0xfebf0000, IRQ 11), bridged to a host NIC over AF_XDP (--backend xdp: an XDP program steers \
frames for the VM's MAC to the VM's socket) or TAP (--backend tap: a TAP device on the NIC's bridge).\n\n\
Guest: either a Linux kernel (--kernel bzImage or vmlinux with a PVH note, --initrd, --cmdline) or the project's test \
guest (--guest echo|sink|blast, built by `make guest`). The serial console (COM1) goes to stdout or --serial FILE. \
The exit status is the guest's own (debug-exit port 0x501), 0 after Ctrl-C, 1 when the VM failed.\n\n\
Needs root (or CAP_NET_ADMIN + CAP_BPF for the backend and access to /dev/kvm).\n\n\
Examples:\n  lancet run --nic lt-nic --backend xdp --guest echo --guest-ip 10.77.0.10/24\n  \
lancet run --nic lt-br0 --backend tap --kernel .cache/linux-guest/bzImage --initrd .cache/linux-guest/initramfs.cpio \
--cmdline 'console=ttyS0 ip=10.77.0.10::10.77.0.1:255.255.255.0::eth0:off'";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    /// AF_XDP socket on the NIC, with the XDP steering program.
    Xdp,
    /// TAP device enslaved to the NIC's bridge (or to --nic when it is a bridge).
    Tap,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum XdpModeArg {
    /// Native (driver) XDP when the NIC's driver supports it, generic otherwise.
    Auto,
    /// Driver mode only.
    Native,
    /// Generic (skb) mode.
    Generic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum GuestProgram {
    /// Answer ARP, ICMP echo and UDP echo (port 7).
    Echo,
    /// Count received frames.
    Sink,
    /// Send --count UDP frames of --size bytes to --peer.
    Blast,
    /// Resolve --peer by ARP, send it --count ICMP echo requests (default 4) one at a time, print
    /// each reply; exit 0 only if all were answered.
    Ping,
    /// Program the NIC like a broken or malicious driver (bad rings, zero lengths, descriptors
    /// outside RAM, endless chains), resetting it after each step; exits 0 when the chip stayed sane.
    Hostile,
    /// TCP (smoltcp in the guest): listen on --port (default 9), discard, print bytes and time
    /// when the peer closes; serves --count connections (default 1, 0 = forever).
    TcpSink,
    /// TCP (smoltcp in the guest): connect to --peer IP:PORT, send --bytes N, exit 0 once all were
    /// acknowledged and the connection closed.
    TcpSource,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TxMode {
    /// Walk the TX ring on the vCPU thread at TDMD.
    Inline,
    /// Hand TX to the I/O thread.
    IoThread,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Host network interface to bridge the VM to (AF_XDP: the NIC; TAP: a bridge, or a NIC enslaved to one).
    /// Without it the VM's NIC has no link.
    #[arg(long, value_name = "IFACE")]
    nic: Option<IfName>,
    /// Host side of the wire.
    #[arg(long, value_enum, default_value = "xdp")]
    backend: BackendKind,
    /// How the XDP steering program attaches (--backend xdp).
    #[arg(long, value_enum, default_value = "auto")]
    xdp_mode: XdpModeArg,
    /// The VM's MAC address (the Lance's PROM address).
    #[arg(long, value_name = "MAC", default_value = "52:54:00:12:34:56", value_parser = parse_mac)]
    mac: [u8; 6],
    /// Guest RAM, e.g. 256M or 1G (16M..3G).
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = parse_size)]
    mem: u64,
    /// Number of vCPUs (1..8).
    #[arg(long, value_name = "N", default_value_t = 1)]
    cpus: usize,

    /// Linux kernel to boot: a bzImage, or a vmlinux ELF with a PVH entry note.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "guest",
        required_unless_present = "guest"
    )]
    kernel: Option<PathBuf>,
    /// Initial ramdisk for --kernel.
    #[arg(long, value_name = "FILE", requires = "kernel")]
    initrd: Option<PathBuf>,
    /// Kernel command line for --kernel.
    #[arg(long, value_name = "S", requires = "kernel", default_value = DEFAULT_LINUX_CMDLINE)]
    cmdline: String,

    /// Run the test guest (`make guest`) with this program instead of a kernel.
    #[arg(long, value_enum)]
    guest: Option<GuestProgram>,
    /// The test guest's address and prefix length.
    #[arg(
        long,
        value_name = "A/N",
        default_value = "10.77.0.10/24",
        requires = "guest"
    )]
    guest_ip: String,
    /// Test guest: poll the rings (only TDMD exits) instead of taking interrupts.
    #[arg(long, requires = "guest")]
    poll: bool,
    /// Test guest in poll mode: when to write TDMD (guest `kick=`). always: after every batch (one
    /// exit per echo); lazy: only if the I/O thread's TX ring poll has not sent the frame within
    /// ~20 us; never: rely on the TX ring poll alone (the chip polls its ring, CSR4 DPOLL clear).
    #[arg(
        long,
        value_enum,
        value_name = "WHEN",
        requires = "poll",
        default_value = "lazy"
    )]
    kick: PollKick,
    /// Test guest: the peer's IPv4 address (blast and ping send to it), with the port for
    /// tcp-source (IP:PORT).
    #[arg(long, value_name = "IP[:PORT]", requires = "guest", value_parser = parse_peer)]
    peer: Option<(Ipv4Addr, Option<u16>)>,
    /// Test guest: frames to receive (sink; 0 = forever) or send (blast), echo requests (ping).
    #[arg(long, value_name = "N", requires = "guest")]
    count: Option<u64>,
    /// Test guest: Ethernet frame length for blast (default 64).
    #[arg(long, value_name = "N", requires = "guest")]
    size: Option<u32>,
    /// Test guest: bytes tcp-source sends.
    #[arg(long, value_name = "N", requires = "guest")]
    bytes: Option<u64>,
    /// Test guest: the UDP echo port (default 7), the port tcp-sink listens on (default 9).
    #[arg(long, value_name = "N", requires = "guest")]
    port: Option<u16>,
    /// The test guest image (default: $LANCET_GUEST_ELF, else the one `make guest` built).
    #[arg(long, value_name = "FILE", requires = "guest")]
    guest_elf: Option<PathBuf>,

    /// Where the serial console goes: `stdio` or a file path (created mode 0600).
    #[arg(long, value_name = "FILE|stdio", default_value = "stdio")]
    serial: String,
    /// Cap of the --serial FILE in MiB: further guest output is dropped and counted.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SERIAL_MAX_BYTES >> 20)]
    serial_max_mb: u64,
    /// Pin the vCPU thread(s) to this host CPU.
    #[arg(long, value_name = "N")]
    pin_vcpu: Option<usize>,
    /// Pin the I/O thread to this host CPU.
    #[arg(long, value_name = "N")]
    pin_io: Option<usize>,
    /// Write counters at exit (frames, bytes, drops by reason, exits by reason, exits per frame).
    #[arg(long, value_name = "FILE")]
    stats_json: Option<PathBuf>,
    /// Enter this network namespace (ip netns) before opening the backend.
    #[arg(long, value_name = "NAME")]
    netns: Option<NetnsName>,
    /// CPU features hidden from the guest (comma-separated; "" hides none). For --kernel the matching
    /// `noxsave clearcpuid=...` parameters are appended to the command line unless it has its own.
    #[arg(long, value_name = "LIST", default_value = DEFAULT_HIDDEN)]
    cpuid_hide: String,
    /// Where TX happens after the guest sets TDMD.
    #[arg(long, value_enum, default_value = "inline")]
    tx_mode: TxMode,
    /// Microseconds the I/O thread busy-polls the TX ring after activity (when the chip polls).
    #[arg(long, value_name = "US", default_value_t = 50)]
    busy_poll_us: u64,
    /// Stop the VM after this many seconds (exit status 1).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Name of the TAP device (--backend tap).
    #[arg(long, value_name = "NAME", default_value = "lt-tap0")]
    tap: IfName,
    /// The VM's name for filter rules (`lancet filter add IFACE ... to vm NAME`) and `lancet stats`.
    #[arg(long, value_name = "NAME", default_value = "vm")]
    vm_name: VmName,
    /// Capture what the VM sends and receives into this pcap file (tcpdump -r FILE; mode 0600).
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// Cap of the --pcap FILE in MiB: the capture stops there and further frames are counted as
    /// not captured (`lancet stats`).
    #[arg(long, value_name = "N", default_value_t = lancet::net::pcap::DEFAULT_MAX_BYTES >> 20)]
    pcap_max_mb: u64,
    /// Turn anti-spoofing off: let the VM send any frame. Otherwise a frame is dropped (and counted
    /// by reason) when its source MAC is not the VM's, it is VLAN-tagged (see --vlan), it goes to
    /// an 802.1 link-local control address (PAUSE, STP, LLDP...), or its ARP/IPv4/IPv6 source is
    /// not the VM's (--guest-ip / the kernel's `ip=`, else the addresses it uses, up to 4 IPv4 + 8 IPv6).
    #[arg(long)]
    allow_spoof: bool,
    /// The VM is on this VLAN: its frames must carry exactly one 802.1Q tag with this VID
    /// (default: untagged frames only).
    #[arg(long, value_name = "VID", value_parser = clap::value_parser!(u16).range(1..=4094))]
    vlan: Option<u16>,
    /// TAP device that receives the host copy of frames a `mirror vm NAME` rule sends to the VM.
    #[arg(long, value_name = "NAME")]
    mirror_tap: Option<IfName>,
}

/// Where `make guest` leaves the test guest in this checkout (used when neither --guest-elf nor
/// LANCET_GUEST_ELF says otherwise).
const DEFAULT_GUEST_ELF: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/target/guest/release/lancet-guest"
);

/// The kernel command line when none is given.
const DEFAULT_LINUX_CMDLINE: &str = "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1 reboot=t";

fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = text.split(':').collect();
    let bad = || format!("'{text}' is not a MAC address (e.g. 52:54:00:12:34:56)");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 != 0 {
        return Err(format!(
            "'{text}' is a multicast address: a NIC needs a unicast MAC"
        ));
    }
    Ok(mac)
}

/// The `--guest-ip A/N` pair.
fn parse_peer(text: &str) -> Result<(Ipv4Addr, Option<u16>), String> {
    let bad = || format!("--peer '{text}' is not IP or IP:PORT (e.g. 10.77.0.2 or 10.77.0.2:5001)");
    match text.split_once(':') {
        Some((ip, port)) => Ok((
            ip.parse().map_err(|_| bad())?,
            Some(port.parse().map_err(|_| bad())?),
        )),
        None => Ok((text.parse().map_err(|_| bad())?, None)),
    }
}

/// The TSC frequency (kHz) the test guest's clock runs at: as KVM gives it to a new vCPU (from a
/// throw-away VM), else the CPU's own report (CPUID 0x15, then 0x16); None if neither tells (the
/// guest then assumes 2 GHz and says so on its ready line).
fn guest_tsc_khz() -> Option<u32> {
    let from_kvm = || {
        let kvm = kvm_ioctls::Kvm::new().ok()?;
        let vcpu = kvm.create_vm().ok()?.create_vcpu(0).ok()?;
        vcpu.get_tsc_khz().ok().filter(|&khz| khz > 0)
    };
    from_kvm().or_else(cpuid_tsc_khz)
}

/// CPUID leaf 0x15 (TSC/crystal ratio x crystal Hz), else 0x16 (base MHz).
fn cpuid_tsc_khz() -> Option<u32> {
    use std::arch::x86_64::__cpuid;
    const LEAF_TSC: u32 = 0x15;
    const LEAF_FREQUENCY: u32 = 0x16;
    // CPUID is always available on x86-64 and has no side effects.
    let max_leaf = __cpuid(0).eax;
    if max_leaf >= LEAF_TSC {
        let tsc = __cpuid(LEAF_TSC);
        if tsc.eax != 0 && tsc.ebx != 0 && tsc.ecx != 0 {
            let hz = u64::from(tsc.ecx) * u64::from(tsc.ebx) / u64::from(tsc.eax);
            return u32::try_from(hz / 1000).ok().filter(|&khz| khz > 0);
        }
    }
    if max_leaf >= LEAF_FREQUENCY {
        let mhz = __cpuid(LEAF_FREQUENCY).eax & 0xffff;
        return (mhz != 0).then_some(mhz * 1000);
    }
    None
}

fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let bad = || format!("--guest-ip '{text}' is not ADDRESS/PREFIX (e.g. 10.77.0.10/24)");
    let (ip, len) = text.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    Ok((ip, len))
}

/// The user's kernel command line plus the parameters that hide the `--cpuid-hide` features from
/// Linux itself, unless the user already chose (`noxsave` / `clearcpuid=` present).
fn linux_cmdline(user: &str, hidden: &HiddenFeatures) -> String {
    if user.contains("clearcpuid=") || user.contains("noxsave") {
        return user.to_string();
    }
    let extra = hidden.linux_cmdline_args();
    if extra.is_empty() {
        user.to_string()
    } else {
        format!("{user} {extra}")
    }
}

/// `n` MiB in bytes (saturating).
fn mib(n: u64) -> u64 {
    n.saturating_mul(1 << 20)
}

/// Everything that can go wrong in the CLI, for one error line.
type CliResult<T> = Result<T, String>;

fn guest_elf_path(explicit: Option<PathBuf>) -> CliResult<PathBuf> {
    let path = explicit
        .or_else(|| std::env::var_os("LANCET_GUEST_ELF").map(PathBuf::from))
        .or_else(|| option_env!("LANCET_GUEST_ELF").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_GUEST_ELF));
    if !path.is_file() {
        return Err(format!(
            "test guest image {} not found: run `make guest` (or pass --guest-elf FILE)",
            path.display()
        ));
    }
    Ok(path)
}

fn guest_cmdline(args: &RunArgs, program: GuestProgram) -> CliResult<String> {
    let (ip, len) = parse_cidr(&args.guest_ip)?;
    let prog = match program {
        GuestProgram::Echo => "echo",
        GuestProgram::Sink => "sink",
        GuestProgram::Blast => "blast",
        GuestProgram::Ping => "ping",
        GuestProgram::Hostile => "hostile",
        GuestProgram::TcpSink => "tcp-sink",
        GuestProgram::TcpSource => "tcp-source",
    };
    let mode = if args.poll { "poll" } else { "irq" };
    let mut line = format!("prog={prog} mode={mode} ip={ip}/{len}");
    if args.poll && args.kick != PollKick::Always {
        line += &format!(" kick={}", args.kick.guest_value());
    }
    match args.peer {
        Some((ip, Some(port))) => line += &format!(" peer={ip}:{port}"),
        Some((ip, None)) => line += &format!(" peer={ip}"),
        None => {}
    }
    if let Some(bytes) = args.bytes {
        line += &format!(" bytes={bytes}");
    }
    if let Some(count) = args.count {
        line += &format!(" count={count}");
    }
    if let Some(size) = args.size {
        line += &format!(" size={size}");
    }
    if let Some(port) = args.port {
        line += &format!(" port={port}");
    }
    if matches!(program, GuestProgram::Blast | GuestProgram::Ping) && args.peer.is_none() {
        return Err(format!(
            "--guest {prog} needs --peer IP (the address to send to)"
        ));
    }
    if program == GuestProgram::TcpSource {
        if !matches!(args.peer, Some((_, Some(_)))) {
            return Err("--guest tcp-source needs --peer IP:PORT (where to connect)".into());
        }
        if !matches!(args.bytes, Some(1..)) {
            return Err("--guest tcp-source needs --bytes N (N > 0: how much to send)".into());
        }
    }
    if matches!(program, GuestProgram::TcpSink | GuestProgram::TcpSource) {
        if let Some(khz) = guest_tsc_khz() {
            line += &format!(" tsc_khz={khz}");
        }
    }
    Ok(line)
}

/// The serial console's output: stdout, or a log file (mode 0600, not through a symlink) capped
/// at `max_bytes`, with the counter of what the cap dropped.
fn serial_sink(
    spec: &str,
    max_bytes: u64,
) -> CliResult<(Box<dyn Write + Send>, Option<SerialDrops>)> {
    if spec == "stdio" {
        return Ok((Box::new(std::io::stdout()), None));
    }
    let file = lancet::net::pcap::create_private(std::path::Path::new(spec))
        .map_err(|e| format!("cannot create serial log {spec}: {e}"))?;
    let capped = CappedWriter::new(std::io::LineWriter::new(file), max_bytes);
    let drops = capped.drops();
    Ok((Box::new(capped), Some(drops)))
}

fn enter_netns(name: &str) -> CliResult<()> {
    let path = format!("/var/run/netns/{name}");
    let file = std::fs::File::open(&path).map_err(|e| {
        format!("network namespace {name} not found ({path}: {e}): create it with `ip netns add {name}`")
    })?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
        format!("cannot enter network namespace {name}: {e} (needs root / CAP_SYS_ADMIN)")
    })
}

fn run(args: RunArgs) -> CliResult<i32> {
    if let Some(ns) = &args.netns {
        enter_netns(ns)?;
    }
    let hidden = HiddenFeatures::parse(&args.cpuid_hide).map_err(|e| e.to_string())?;
    let boot = match (args.guest, &args.kernel) {
        (Some(program), _) => BootSpec {
            kernel: guest_elf_path(args.guest_elf.clone())?,
            initrd: None,
            cmdline: guest_cmdline(&args, program)?,
            cpus: 1,
        },
        (None, Some(kernel)) => BootSpec {
            kernel: kernel.clone(),
            initrd: args.initrd.clone(),
            cmdline: linux_cmdline(&args.cmdline, &hidden),
            cpus: 1,
        },
        (None, None) => return Err("give --kernel FILE or --guest echo|sink|blast".into()),
    };
    let net = net_setup::net_config(&args)?;
    let (serial_out, serial_drops) = serial_sink(&args.serial, mib(args.serial_max_mb))?;
    let config = VmConfig {
        mem_bytes: args.mem,
        cpus: args.cpus,
        boot,
        hidden,
        serial_out,
        net,
        pin_vcpu: args.pin_vcpu,
        pin_io: args.pin_io,
        handle_signals: true,
        timeout: args.timeout.map(std::time::Duration::from_secs),
        stop_check: None,
    };
    let report = run_vm(config).map_err(|e| e.to_string())?;
    let _ = std::io::stdout().flush();
    eprintln!("lancet: {}", report.outcome);
    let mut stats = report.stats();
    if let Some(d) = &serial_drops {
        if d.bytes() > 0 {
            eprintln!(
                "lancet: serial log {} reached --serial-max-mb {}: {} bytes of guest output dropped",
                args.serial,
                args.serial_max_mb,
                d.bytes()
            );
        }
        stats.serial = Some(lancet::vmm::SerialStats {
            dropped_bytes: d.bytes(),
        });
    }
    let nic = stats.nic.clone().unwrap_or_default();
    eprintln!(
        "lancet: NIC tx {} / rx {} frames, {} vCPU exits ({} to the NIC, {} per frame)",
        nic.tx_frames,
        nic.rx_frames,
        stats.exits.total,
        report.exits.nic_exits(),
        match stats.nic_exits_per_frame {
            Some(v) => format!("{v:.2}"),
            None => "-".into(),
        }
    );
    if let Some(path) = &args.stats_json {
        let text = serde_json::to_string_pretty(&stats).unwrap_or_default();
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(e) = &report.io_thread_error {
        eprintln!("lancet: I/O thread: {e}");
    }
    Ok(report.outcome.exit_status())
}

/// Building the NIC model and the backend from the command line.
mod net_setup {
    use std::time::Duration;

    use std::net::Ipv4Addr;

    use super::{BackendKind, CliResult, RunArgs, TxMode, XdpModeArg};
    use lancet::lance::Lance;
    use lancet::net::{self, BackendSpec, XdpMode};
    use lancet::vmm::nic::NicModel;
    use lancet::vmm::{IoTuning, NetConfig};

    pub fn net_config(args: &RunArgs) -> CliResult<Option<NetConfig>> {
        let backend: Option<Box<dyn net::Backend>> = match &args.nic {
            Some(nic) => Some(open_backend(args, nic)?),
            None => None,
        };
        let link_up = backend.is_some();
        let mac = args.mac;
        Ok(Some(NetConfig {
            make_nic: Box::new(move |irq| {
                let mut lance = Lance::new(mac, irq);
                lance.set_link(link_up);
                Box::new(lance) as Box<dyn NicModel>
            }),
            backend,
            tx_inline: args.tx_mode == TxMode::Inline,
            io: IoTuning {
                busy_poll: Duration::from_micros(args.busy_poll_us),
            },
        }))
    }

    fn open_backend(args: &RunArgs, nic: &str) -> CliResult<Box<dyn net::Backend>> {
        let spec = BackendSpec {
            kind: match args.backend {
                BackendKind::Xdp => net::BackendKind::Xdp,
                BackendKind::Tap => net::BackendKind::Tap,
            },
            nic: nic.to_string(),
            vm_mac: args.mac,
            vm_ip: vm_ipv4(args),
            tap_name: Some(args.tap.to_string()),
            xdp_mode: match args.xdp_mode {
                XdpModeArg::Auto => XdpMode::Auto,
                XdpModeArg::Native => XdpMode::Native,
                XdpModeArg::Generic => XdpMode::Generic,
            },
        };
        let opts = net::vmnet::VmNetOptions {
            vm_name: Some(args.vm_name.to_string()),
            allow_spoof: args.allow_spoof,
            vlan: args.vlan,
            addresses: spec.vm_ip.map(std::net::IpAddr::V4).into_iter().collect(),
            pcap: args.pcap.clone(),
            pcap_max_bytes: Some(super::mib(args.pcap_max_mb)),
            mirror_tap: args.mirror_tap.as_ref().map(|t| t.to_string()),
        };
        let backend = net::vmnet::VmNet::open(&spec, &opts).map_err(|e| e.to_string())?;
        Ok(Box::new(backend))
    }

    /// The VM's IPv4 address, for ARP steering: --guest-ip, or the `ip=` kernel parameter.
    fn vm_ipv4(args: &RunArgs) -> Option<Ipv4Addr> {
        if args.guest.is_some() {
            return super::parse_cidr(&args.guest_ip).ok().map(|(ip, _)| ip);
        }
        args.cmdline
            .split_whitespace()
            .find_map(|p| p.strip_prefix("ip="))
            .and_then(|v| v.split(':').next())
            .and_then(|ip| ip.parse().ok())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LANCET_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    lancet::net::liblog::route_library_logs();
    let mut out = std::io::stdout();
    let done = match cli.command {
        Command::Run(args) => match run(*args) {
            Ok(status) => return ExitCode::from(status.clamp(0, 255) as u8),
            Err(e) => Err(e),
        },
        Command::Filter(cmd) => {
            lancet::cli_filter::run_filter(&cmd, &mut out).map_err(|e| e.to_string())
        }
        Command::Nic(cmd) => lancet::cli_filter::run_nic(&cmd, &mut out).map_err(|e| e.to_string()),
        Command::Stats(args) => {
            lancet::cli_filter::run_stats(&args, &mut out).map_err(|e| e.to_string())
        }
        Command::Bench(args) => match lancet::tools::bench::run_bench(&args) {
            Ok(_) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lancet bench: error: {e}");
                return ExitCode::from(1);
            }
        },
        Command::Demo(args) => match lancet::tools::demo::run_demo(&args) {
            Ok(()) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lancet demo: error: {e}");
                return ExitCode::from(1);
            }
        },
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lancet: error: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_and_cidr_parse() {
        assert_eq!(
            parse_mac("52:54:00:12:34:56"),
            Ok([0x52, 0x54, 0, 0x12, 0x34, 0x56])
        );
        assert!(parse_mac("01:00:5e:00:00:01")
            .unwrap_err()
            .contains("multicast"));
        assert!(parse_mac("52:54:00").is_err());
        assert_eq!(
            parse_cidr("10.0.0.2/24"),
            Ok((Ipv4Addr::new(10, 0, 0, 2), 24))
        );
        assert!(parse_cidr("10.0.0.2").is_err());
        assert!(parse_cidr("10.0.0.2/40").is_err());
    }

    #[test]
    fn peer_is_an_address_with_an_optional_port() {
        let ip = Ipv4Addr::new(10, 77, 0, 2);
        assert_eq!(parse_peer("10.77.0.2"), Ok((ip, None)));
        assert_eq!(parse_peer("10.77.0.2:5001"), Ok((ip, Some(5001))));
        for bad in ["10.77.0.2:", "10.77.0.2:70000", "10.77.0:9", "host:9", ""] {
            assert!(parse_peer(bad).unwrap_err().contains("IP:PORT"), "{bad}");
        }
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
