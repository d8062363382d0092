//! `lancet run`: boot a VM (a Linux kernel or the test guest) with the Lance NIC bridged to a host
//! NIC. The arguments become a [`VmConfig`]: the boot image and command line (the test guest's through
//! [`GuestCmdline`]), the network ([`NetSetup`], assembled by the library), the serial sink; the run
//! report goes to stderr and `--stats-json`.
//!
//! Started under `ip netns exec NS` with an AF_XDP backend, it refuses before anything is pinned:
//! that command's private /sys would hide the pins from `lancet filter|stats|nic` (use `--netns NS`).

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ValueEnum;

use lancet::frame::MacAddr;
use lancet::net::names::{IfName, NetnsName, VmName};
use lancet::net::netns::{check_shared_bpffs, enter_netns, NetnsError};
use lancet::net::vmnet::VmNetOptions;
use lancet::net::{BackendKind, NetError, XdpMode};
use lancet::tools::guest_cmdline::{
    guest_tsc_khz, GuestCmdline, GuestCmdlineError, GuestMode, GuestPeer, GuestProgram, Ipv4Cidr,
    PollKick,
};
use lancet::vmm::boot::BootSpec;
use lancet::vmm::memory::parse_size;
use lancet::vmm::net_setup::{net_config, NetSetup};
use lancet::vmm::serial::{CappedWriter, SerialDrops, DEFAULT_SERIAL_MAX_BYTES};
use lancet::vmm::{error::VmmError, run_vm, HiddenFeatures, VmConfig, DEFAULT_HIDDEN};

pub const RUN_ABOUT: &str = "Boot a VM under KVM with one network device, the emulated Am79C970A (PCnet-PCI II) at PCI 00:03.0 \
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
enum TxMode {
    /// Walk the TX ring on the vCPU thread at TDMD.
    Inline,
    /// Hand TX to the I/O thread.
    IoThread,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Host network interface to bridge the VM to (AF_XDP: the NIC; TAP: a bridge, or a NIC enslaved to one).
    /// Without it the VM's NIC has no link.
    #[arg(long, value_name = "IFACE")]
    nic: Option<IfName>,
    /// Host side of the wire.
    #[arg(long, value_enum, default_value = "xdp")]
    backend: BackendKind,
    /// How the XDP steering program attaches (--backend xdp).
    #[arg(long, value_enum, default_value = "auto")]
    xdp_mode: XdpMode,
    /// The VM's MAC address (the Lance's PROM address).
    #[arg(long, value_name = "MAC", default_value = "52:54:00:12:34:56", value_parser = parse_unicast_mac)]
    mac: MacAddr,
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
    /// The VM's address and prefix length: the test guest's address (default 10.77.0.10/24), or
    /// the address a --kernel guest configures (otherwise taken from its `ip=` parameter).
    /// Steered to the VM (ARP) and its only IPv4 source (anti-spoofing).
    #[arg(long, value_name = "A/N")]
    guest_ip: Option<Ipv4Cidr>,
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
    #[arg(long, value_name = "IP[:PORT]", requires = "guest")]
    peer: Option<GuestPeer>,
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

/// The test guest's address when --guest-ip is not given.
const DEFAULT_GUEST_IP: Ipv4Cidr = Ipv4Cidr {
    addr: Ipv4Addr::new(10, 77, 0, 10),
    prefix_len: 24,
};

/// What can stop `lancet run` before or after the VM runs.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("test guest image {0} not found: run `make guest` (or pass --guest-elf FILE)")]
    GuestImage(PathBuf),
    #[error(transparent)]
    GuestCmdline(#[from] GuestCmdlineError),
    #[error("give --kernel FILE or --guest echo|sink|blast")]
    NoBoot,
    #[error("cannot create serial log {path}: {source}")]
    SerialLog {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    StatsJson {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Vmm(#[from] VmmError),
}

/// A `--mac` value: six octets, and not a group address.
fn parse_unicast_mac(text: &str) -> Result<MacAddr, String> {
    let mac: MacAddr = text.parse().map_err(|e| format!("{e}"))?;
    if mac.is_group() {
        return Err(format!(
            "'{text}' is a multicast address: a NIC needs a unicast MAC"
        ));
    }
    Ok(mac)
}

/// The VM's IPv4 address given in a Linux command line's `ip=` parameter (its first field, the
/// client address; `ip=dhcp` and the like give none).
fn kernel_ip_param(cmdline: &str) -> Option<Ipv4Addr> {
    cmdline
        .split_whitespace()
        .find_map(|p| p.strip_prefix("ip="))
        .and_then(|v| v.split(':').next())
        .and_then(|ip| ip.parse().ok())
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

fn guest_elf_path(explicit: Option<PathBuf>) -> Result<PathBuf, RunError> {
    let path = explicit
        .or_else(|| std::env::var_os("LANCET_GUEST_ELF").map(PathBuf::from))
        .or_else(|| option_env!("LANCET_GUEST_ELF").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_GUEST_ELF));
    if !path.is_file() {
        return Err(RunError::GuestImage(path));
    }
    Ok(path)
}

/// The test guest's command line from the `--guest ...` flags.
fn guest_cmdline(args: &RunArgs, program: GuestProgram) -> Result<GuestCmdline, RunError> {
    let mut line = GuestCmdline {
        mode: if args.poll {
            GuestMode::Poll
        } else {
            GuestMode::Irq
        },
        kick: if args.poll {
            args.kick
        } else {
            PollKick::default()
        },
        ip: Some(args.guest_ip.unwrap_or(DEFAULT_GUEST_IP)),
        peer: args.peer,
        count: args.count,
        size: args.size,
        bytes: args.bytes,
        port: args.port,
        ..GuestCmdline::new(program)
    };
    line.validate()?;
    if program.needs_tsc() {
        line.tsc_khz = guest_tsc_khz();
    }
    Ok(line)
}

/// The VM's configured IPv4 address: --guest-ip, the test guest's default, or a kernel's `ip=`.
fn vm_ipv4(args: &RunArgs) -> Option<Ipv4Addr> {
    match (args.guest_ip, args.guest) {
        (Some(ip), _) => Some(ip.addr),
        (None, Some(_)) => Some(DEFAULT_GUEST_IP.addr),
        (None, None) => kernel_ip_param(&args.cmdline),
    }
}

/// The serial console's output: stdout, or a log file (mode 0600, not through a symlink) capped
/// at `max_bytes`, with the counter of what the cap dropped.
fn serial_sink(
    spec: &str,
    max_bytes: u64,
) -> Result<(Box<dyn Write + Send>, Option<SerialDrops>), RunError> {
    if spec == "stdio" {
        return Ok((Box::new(std::io::stdout()), None));
    }
    let file = lancet::net::pcap::create_private(Path::new(spec)).map_err(|source| {
        RunError::SerialLog {
            path: spec.to_string(),
            source,
        }
    })?;
    let capped = CappedWriter::new(std::io::LineWriter::new(file), max_bytes);
    let drops = capped.drops();
    Ok((Box::new(capped), Some(drops)))
}

/// The network part of the VM from the flags.
fn net_setup(args: &RunArgs) -> NetSetup {
    NetSetup {
        nic: args.nic.clone(),
        backend: args.backend,
        xdp_mode: args.xdp_mode,
        mac: args.mac,
        vm_ip: vm_ipv4(args),
        tap: args.tap.clone(),
        options: VmNetOptions {
            vm_name: Some(args.vm_name.to_string()),
            allow_spoof: args.allow_spoof,
            vlan: args.vlan,
            addresses: Vec::new(),
            pcap: args.pcap.clone(),
            pcap_max_bytes: Some(mib(args.pcap_max_mb)),
            mirror_tap: args.mirror_tap.as_ref().map(|t| t.to_string()),
        },
        tx_inline: args.tx_mode == TxMode::Inline,
        busy_poll: Duration::from_micros(args.busy_poll_us),
    }
}

/// Run `lancet run`; returns the guest's exit status.
pub fn run(args: RunArgs) -> Result<i32, RunError> {
    // Before anything is pinned: the AF_XDP backend pins its maps for `lancet filter|stats|nic`.
    if args.nic.is_some() && args.backend == BackendKind::Xdp {
        check_shared_bpffs("run")?;
    }
    if let Some(ns) = &args.netns {
        enter_netns(ns)?;
    }
    let hidden = HiddenFeatures::parse(&args.cpuid_hide)?;
    let boot = match (args.guest, &args.kernel) {
        (Some(program), _) => BootSpec {
            kernel: guest_elf_path(args.guest_elf.clone())?,
            initrd: None,
            cmdline: guest_cmdline(&args, program)?.to_string(),
            cpus: 1,
        },
        (None, Some(kernel)) => BootSpec {
            kernel: kernel.clone(),
            initrd: args.initrd.clone(),
            cmdline: linux_cmdline(&args.cmdline, &hidden),
            cpus: 1,
        },
        (None, None) => return Err(RunError::NoBoot),
    };
    let net = net_config(&net_setup(&args))?;
    let (serial_out, serial_drops) = serial_sink(&args.serial, mib(args.serial_max_mb))?;
    let config = VmConfig {
        mem_bytes: args.mem,
        cpus: args.cpus,
        boot,
        hidden,
        serial_out,
        net: Some(net),
        pin_vcpu: args.pin_vcpu,
        pin_io: args.pin_io,
        handle_signals: true,
        timeout: args.timeout.map(Duration::from_secs),
        stop_check: None,
    };
    let report = run_vm(config)?;
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
        std::fs::write(path, text + "\n").map_err(|source| RunError::StatsJson {
            path: path.display().to_string(),
            source,
        })?;
    }
    if let Some(e) = &report.io_thread_error {
        eprintln!("lancet: I/O thread: {e}");
    }
    Ok(report.outcome.exit_status())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        args: RunArgs,
    }

    #[test]
    fn mac_must_be_unicast() {
        assert_eq!(
            parse_unicast_mac("52:54:00:12:34:56"),
            Ok(MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]))
        );
        assert!(parse_unicast_mac("01:00:5e:00:00:01")
            .unwrap_err()
            .contains("multicast"));
        assert!(parse_unicast_mac("52:54:00").is_err());
    }

    #[test]
    fn the_kernel_ip_parameter_gives_the_vm_address() {
        assert_eq!(
            kernel_ip_param("console=ttyS0 ip=10.77.0.10::10.77.0.1:255.255.255.0::eth0:off"),
            Some(Ipv4Addr::new(10, 77, 0, 10))
        );
        assert_eq!(kernel_ip_param("console=ttyS0 ip=dhcp"), None);
    }

    /// The flags [`GuestCmdline::run_args`] writes are the ones `lancet run` reads back into
    /// the same guest command line.
    #[test]
    fn guest_run_args_round_trip_through_lancet_run() {
        let want = GuestCmdline {
            mode: GuestMode::Poll,
            kick: PollKick::Never,
            ip: Some("10.9.0.3/16".parse().unwrap()),
            peer: Some("10.9.0.1:5001".parse().unwrap()),
            bytes: Some(4096),
            count: Some(3),
            ..GuestCmdline::new(GuestProgram::TcpSource)
        };
        let argv = ["run".to_string()].into_iter().chain(want.run_args());
        let args = Run::try_parse_from(argv).unwrap().args;
        let mut got = guest_cmdline(&args, GuestProgram::TcpSource).unwrap();
        got.tsc_khz = None;
        assert_eq!(got, want);
        assert_eq!(vm_ipv4(&args), Some(Ipv4Addr::new(10, 9, 0, 3)));
    }

    #[test]
    fn guest_programs_that_send_need_a_peer() {
        let args = Run::try_parse_from(["run", "--guest", "blast"])
            .unwrap()
            .args;
        let err = guest_cmdline(&args, GuestProgram::Blast).unwrap_err();
        assert!(err.to_string().contains("needs --peer"), "{err}");
    }
}
