//! The `qemu_tap` path runner: Debian's qemu-system-x86_64 with KVM, QEMU's own pcnet model on a
//! TAP device bridged to a veth (like lancet's TAP path), running the lancet test guest
//! (PVH `-kernel`); the guest's console (serial on stdio) says when it is ready and what it sent.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use crate::tools::guest_cmdline::{GuestCmdline, PollKick};
use crate::tools::testbed::Testbed;

use super::cpu::{process_cpu, thread_cpu};
use super::guest_proc::GuestProcess;

use super::netns::{link_counters, LinkCounters, VethPairNetns};
use super::packet::{Mac, ECHO_PORT};
use super::qemu_cpu::qemu_cpu_model;
use super::report::{DropCount, Pinning};
use super::{BenchError, Endpoint, GuestMode, PathRunner, PathStats, Role, RunningPath};
use crate::net::netlink::{NetlinkError, Netns};

/// The QEMU binary looked up in PATH.
pub const QEMU_BINARY: &str = "qemu-system-x86_64";
/// Where `make guest` puts the test guest image in this checkout.
pub const DEFAULT_GUEST_IMAGE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/target/guest/release/lancet-guest"
);
/// Environment variable naming the test guest image (as `lancet run` reads it).
pub const GUEST_IMAGE_ENV: &str = "LANCET_GUEST_ELF";

/// The test guest image: `$LANCET_GUEST_ELF`, else the one `make guest` built in this checkout.
pub fn default_guest_image() -> PathBuf {
    std::env::var_os(GUEST_IMAGE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_GUEST_IMAGE))
}
/// The guest's MAC and address on the testbed segment.
const GUEST_MAC: Mac = Testbed::VM_MAC;
const GUEST_IP: Ipv4Addr = Testbed::VM_IP;
const GUEST_PREFIX_LEN: u8 = Testbed::PREFIX_LEN;
/// Guest RAM (the ABI asks for at least 64 MiB).
const GUEST_MEM_MIB: u32 = 64;
/// Console line prefix of the blast program's final count.
pub const BLAST_LINE: &str = "lancet-guest: blast sent=";
/// How long the VM gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// QEMU path settings.
#[derive(Debug, Clone)]
pub struct QemuSettings {
    pub guest_image: PathBuf,
    /// Time from QEMU start to the guest's `ready` line.
    pub boot_timeout: Duration,
    /// CPU QEMU (all its threads) is pinned to with taskset.
    pub cpu: Option<usize>,
}

/// Runs QEMU in its own namespace pair (created on first use): `<ns a>` holds the bridge, the TAP
/// and QEMU; the bench's threads run in `<ns b>`.
pub struct QemuTapRunner {
    settings: QemuSettings,
    testbed: Option<(VethPairNetns, String)>,
}

impl QemuTapRunner {
    pub fn new(settings: QemuSettings) -> Self {
        QemuTapRunner {
            settings,
            testbed: None,
        }
    }

    fn testbed(&mut self) -> Result<&(VethPairNetns, String), BenchError> {
        if self.testbed.is_none() {
            let pair = VethPairNetns::create_bridged("qm")?;
            let tap = pair.add_bridged_tap()?;
            self.testbed = Some((pair, tap));
        }
        self.testbed
            .as_ref()
            .ok_or_else(|| BenchError::Setup("qemu_tap testbed missing".into()))
    }
}

pub(crate) fn find_in_path(binary: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(binary))
        .find(|p| p.is_file())
}

/// The guest's command line under QEMU: no `kick=` (the guest's own default, a kick per batch).
fn guest_cmdline(mode: GuestMode, role: &Role, peer_ip: Ipv4Addr) -> String {
    GuestCmdline {
        kick: PollKick::Always,
        ..role.guest_cmdline(mode, GUEST_IP, GUEST_PREFIX_LEN, peer_ip)
    }
    .to_string()
}

impl PathRunner for QemuTapRunner {
    fn name(&self) -> &'static str {
        "qemu_tap"
    }

    fn unavailable(&mut self, _mode: GuestMode) -> Option<String> {
        if find_in_path(QEMU_BINARY).is_none() {
            return Some(format!(
                "{QEMU_BINARY} not found in PATH: apt-get install qemu-system-x86"
            ));
        }
        if !Path::new("/dev/kvm").exists() {
            return Some("no /dev/kvm: QEMU needs KVM for a comparable baseline".into());
        }
        if !self.settings.guest_image.is_file() {
            return Some(format!(
                "no test guest image at {}: build it with `make guest` or pass --guest FILE",
                self.settings.guest_image.display()
            ));
        }
        qemu_cpu_model().err().map(|e| e.to_string())
    }

    fn pinning(&self) -> Vec<Pinning> {
        vec![Pinning {
            thread: "qemu (all threads, taskset)".into(),
            cpu: self.settings.cpu,
        }]
    }

    fn reports_exits(&self) -> Result<(), String> {
        Err("QEMU does not report KVM exit counts to the bench".into())
    }

    fn prepare(&mut self, _mode: GuestMode) -> Result<Endpoint, BenchError> {
        let (pair, _) = self.testbed()?;
        Ok(Endpoint {
            peer_netns: pair.b.netns.clone(),
            peer_ifname: pair.b.ifname.clone(),
            peer_mac: pair.b.mac,
            peer_ip: pair.b.ip,
            dut_mac: GUEST_MAC,
            dut_ip: GUEST_IP,
            echo_port: ECHO_PORT,
        })
    }

    fn start(&mut self, mode: GuestMode, role: &Role) -> Result<Box<dyn RunningPath>, BenchError> {
        let endpoint = self.prepare(mode)?;
        let settings = self.settings.clone();
        let (pair, tap) = self.testbed()?;
        let setup = |e: NetlinkError| BenchError::Setup(e.to_string());
        let netns = pair.a.netns.clone();
        let tap = tap.clone();
        let cmdline = guest_cmdline(mode, role, endpoint.peer_ip);
        // QEMU runs in the host namespace of the testbed, where its TAP is.
        let ns = Netns::named(&netns).map_err(setup)?;
        let mut command = match settings.cpu {
            Some(cpu) => {
                let mut taskset = ns.command("taskset").map_err(setup)?;
                taskset.args(["-c", &cpu.to_string(), QEMU_BINARY]);
                taskset
            }
            None => ns.command(QEMU_BINARY).map_err(setup)?,
        };
        let cpu = qemu_cpu_model().map_err(|e| BenchError::Path {
            path: "qemu_tap".into(),
            reason: e.to_string(),
        })?;
        let mac = crate::frame::MacAddr(GUEST_MAC).to_string();
        command
            .args([
                "-enable-kvm",
                "-M",
                "pc",
                "-cpu",
                &cpu,
                "-m",
                &GUEST_MEM_MIB.to_string(),
            ])
            .args([
                "-display",
                "none",
                "-monitor",
                "none",
                "-serial",
                "stdio",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(&settings.guest_image)
            .args(["-append", &cmdline])
            .args(["-device", "isa-debug-exit,iobase=0x501"])
            .args([
                "-netdev",
                &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            ])
            .args(["-device", &format!("pcnet,netdev=n0,mac={mac},romfile=")]);
        let process = GuestProcess::start("qemu_tap", command, settings.boot_timeout)?;
        let tap_at_start = link_counters(&netns, &tap)?;
        Ok(Box::new(RunningQemu {
            process,
            endpoint,
            role: role.clone(),
            netns,
            tap,
            tap_at_start,
        }))
    }
}

impl RunningQemu {
    /// `ip netns exec` and `taskset` exec QEMU in place: the child's pid is QEMU's.
    fn qemu_pid(&self) -> Result<u32, BenchError> {
        self.process
            .pid()
            .ok_or_else(|| BenchError::Io("qemu_tap: QEMU has exited".into()))
    }
}

struct RunningQemu {
    process: GuestProcess,
    endpoint: Endpoint,
    role: Role,
    netns: String,
    tap: String,
    tap_at_start: LinkCounters,
}

impl RunningPath for RunningQemu {
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn host_cpu(&self) -> Result<Duration, BenchError> {
        process_cpu(self.qemu_pid()?)
    }

    /// QEMU's main loop thread (the process's first thread) does the TAP I/O for pcnet.
    fn io_cpu(&self) -> Result<Duration, BenchError> {
        let pid = self.qemu_pid()?;
        thread_cpu(pid, pid)
    }

    fn finish(mut self: Box<Self>) -> Result<PathStats, BenchError> {
        let mut stats = PathStats::default();
        if let Role::Sink { .. } = self.role {
            // Frames the TAP handed to QEMU (tun counts TX when QEMU reads); what QEMU could not
            // take (the guest's RX ring full, so QEMU stopped reading) overflowed the TAP queue.
            let now = link_counters(&self.netns, &self.tap)?;
            stats.frames_received =
                Some(now.tx_packets.saturating_sub(self.tap_at_start.tx_packets));
            let dropped = now.tx_dropped.saturating_sub(self.tap_at_start.tx_dropped);
            if dropped > 0 {
                stats.drops.push(DropCount {
                    counted_at: "qemu_tap: TAP queue overflow (QEMU not reading, guest RX ring full)".into(),
                    frames: dropped,
                });
            }
        }
        if let Role::Blast { .. } = self.role {
            // Give the guest a moment to print its final line if it is finishing.
            thread::sleep(Duration::from_millis(100));
            stats.frames_sent = self.process.last_number_after(BLAST_LINE);
        }
        self.process.stop(TERM_GRACE);
        Ok(stats)
    }
}
