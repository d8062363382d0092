//! The test guest's command line (tests/guest, `make guest`), written in one place: [`GuestCmdline`]
//! holds what a run of the guest needs (program, driver mode, address, peer, counts, TSC rate) and
//! renders it two ways: as the guest's own kernel command line (`prog=echo mode=poll ip=...`, parsed
//! by tests/guest/src/cmdline.rs) and as the `lancet run` flags that produce that line
//! ([`GuestCmdline::run_args`]). `lancet run --guest`, the bench's VMM and QEMU paths and the
//! integration tests all build it here.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Guest mode: the guest driver takes interrupts (`irq`) or polls descriptors (`poll`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum GuestMode {
    /// Interrupt-driven.
    Irq,
    /// Ring 3 polls the descriptor rings (only TDMD exits).
    Poll,
}

impl GuestMode {
    pub const ALL: [GuestMode; 2] = [GuestMode::Irq, GuestMode::Poll];

    /// The name used in the report and on the guest command line (`mode=irq|poll`).
    pub fn name(self) -> &'static str {
        match self {
            GuestMode::Irq => "irq",
            GuestMode::Poll => "poll",
        }
    }
}

/// When a poll-mode test guest writes TDMD (`lancet run --kick`, the guest's `kick=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PollKick {
    /// After every batch of queued frames: one MMIO exit per echo.
    Always,
    /// The default. Only if the chip's TX ring poll (lancet's I/O thread) has not taken the frame within
    /// ~20 us: no exit while the I/O thread busy-polls, a bounded wait when it cannot run.
    #[default]
    Lazy,
    /// Never: frames leave only through the chip's TX ring poll (busy window or ~2 ms idle poll).
    Never,
}

impl PollKick {
    /// The guest command line value (`kick=`).
    pub fn guest_value(self) -> &'static str {
        match self {
            PollKick::Always => "1",
            PollKick::Lazy => "lazy",
            PollKick::Never => "0",
        }
    }

    /// The `lancet run --kick` value.
    pub fn cli_value(self) -> &'static str {
        match self {
            PollKick::Always => "always",
            PollKick::Lazy => "lazy",
            PollKick::Never => "never",
        }
    }
}

/// The test guest's programs (`prog=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GuestProgram {
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

impl GuestProgram {
    /// The `prog=` value (and the `lancet run --guest` value).
    pub fn name(self) -> &'static str {
        match self {
            GuestProgram::Echo => "echo",
            GuestProgram::Sink => "sink",
            GuestProgram::Blast => "blast",
            GuestProgram::Ping => "ping",
            GuestProgram::Hostile => "hostile",
            GuestProgram::TcpSink => "tcp-sink",
            GuestProgram::TcpSource => "tcp-source",
        }
    }

    /// The TCP programs time transfers with the TSC: they need its rate (`tsc_khz=`).
    pub fn needs_tsc(self) -> bool {
        matches!(self, GuestProgram::TcpSink | GuestProgram::TcpSource)
    }
}

/// Why a text or a combination of settings is not a valid guest command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestCmdlineError {
    #[error("--guest-ip '{0}' is not ADDRESS/PREFIX (e.g. 10.77.0.10/24)")]
    Cidr(String),
    #[error("--peer '{0}' is not IP or IP:PORT (e.g. 10.77.0.2 or 10.77.0.2:5001)")]
    Peer(String),
    #[error("--guest {0} needs --peer IP (the address to send to)")]
    NoPeer(&'static str),
    #[error("--guest tcp-source needs --peer IP:PORT (where to connect)")]
    NoPeerPort,
    #[error("--guest tcp-source needs --bytes N (N > 0: how much to send)")]
    NoBytes,
}

/// An IPv4 address with its prefix length (`10.77.0.10/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

/// Longest IPv4 prefix.
const IPV4_MAX_PREFIX: u8 = 32;

impl FromStr for Ipv4Cidr {
    type Err = GuestCmdlineError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || GuestCmdlineError::Cidr(text.to_string());
        let (addr, len) = text.split_once('/').ok_or_else(bad)?;
        let addr = addr.parse().map_err(|_| bad())?;
        let prefix_len = len.parse().map_err(|_| bad())?;
        if prefix_len > IPV4_MAX_PREFIX {
            return Err(bad());
        }
        Ok(Ipv4Cidr { addr, prefix_len })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// The guest's peer: an address, with a port for tcp-source (`10.77.0.2` or `10.77.0.2:5001`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestPeer {
    pub ip: Ipv4Addr,
    pub port: Option<u16>,
}

impl FromStr for GuestPeer {
    type Err = GuestCmdlineError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || GuestCmdlineError::Peer(text.to_string());
        match text.split_once(':') {
            Some((ip, port)) => Ok(GuestPeer {
                ip: ip.parse().map_err(|_| bad())?,
                port: Some(port.parse().map_err(|_| bad())?),
            }),
            None => Ok(GuestPeer {
                ip: text.parse().map_err(|_| bad())?,
                port: None,
            }),
        }
    }
}

impl fmt::Display for GuestPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.ip),
            None => write!(f, "{}", self.ip),
        }
    }
}

impl From<std::net::SocketAddrV4> for GuestPeer {
    fn from(addr: std::net::SocketAddrV4) -> Self {
        GuestPeer {
            ip: *addr.ip(),
            port: Some(addr.port()),
        }
    }
}

/// One run of the test guest. `Display` gives its kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestCmdline {
    pub program: GuestProgram,
    /// Interrupts or polling (`mode=`).
    pub mode: GuestMode,
    /// Poll mode: when to write TDMD (`kick=`; `Always` is the guest's own default).
    pub kick: PollKick,
    /// The guest's address (`ip=`).
    pub ip: Option<Ipv4Cidr>,
    /// Where blast/ping send and tcp-source connects (`peer=`).
    pub peer: Option<GuestPeer>,
    /// Frames (sink, blast), echo requests (ping), connections (tcp-sink) (`count=`).
    pub count: Option<u64>,
    /// Ethernet frame length for blast (`size=`).
    pub size: Option<u32>,
    /// Bytes tcp-source sends (`bytes=`).
    pub bytes: Option<u64>,
    /// UDP echo port / tcp-sink's port (`port=`).
    pub port: Option<u16>,
    /// The TSC rate the guest's clock runs at (`tsc_khz=`; TCP programs).
    pub tsc_khz: Option<u32>,
}

impl GuestCmdline {
    /// `program` in irq mode with nothing else set (kick: `lancet run`'s default, lazy).
    pub fn new(program: GuestProgram) -> Self {
        GuestCmdline {
            program,
            mode: GuestMode::Irq,
            kick: PollKick::default(),
            ip: None,
            peer: None,
            count: None,
            size: None,
            bytes: None,
            port: None,
            tsc_khz: None,
        }
    }

    /// Refuse what the guest would refuse at boot: blast and ping without a peer, tcp-source
    /// without a peer port or without bytes to send.
    pub fn validate(&self) -> Result<(), GuestCmdlineError> {
        let program = self.program;
        if matches!(program, GuestProgram::Blast | GuestProgram::Ping) && self.peer.is_none() {
            return Err(GuestCmdlineError::NoPeer(program.name()));
        }
        if program == GuestProgram::TcpSource {
            if !matches!(self.peer, Some(GuestPeer { port: Some(_), .. })) {
                return Err(GuestCmdlineError::NoPeerPort);
            }
            if !matches!(self.bytes, Some(1..)) {
                return Err(GuestCmdlineError::NoBytes);
            }
        }
        Ok(())
    }

    /// The `lancet run` flags that boot this guest (`--guest P --guest-ip ... --poll --kick K
    /// --peer ... --count N ...`); `tsc_khz` is lancet run's own business (it asks KVM).
    pub fn run_args(&self) -> Vec<String> {
        let mut args = vec!["--guest".to_string(), self.program.name().to_string()];
        let mut opt = |flag: &str, value: Option<String>| {
            if let Some(value) = value {
                args.push(flag.to_string());
                args.push(value);
            }
        };
        opt("--guest-ip", self.ip.map(|ip| ip.to_string()));
        opt("--peer", self.peer.map(|p| p.to_string()));
        opt("--count", self.count.map(|n| n.to_string()));
        opt("--size", self.size.map(|n| n.to_string()));
        opt("--bytes", self.bytes.map(|n| n.to_string()));
        opt("--port", self.port.map(|n| n.to_string()));
        if self.mode == GuestMode::Poll {
            args.push("--poll".into());
            args.push("--kick".into());
            args.push(self.kick.cli_value().into());
        }
        args
    }
}

impl fmt::Display for GuestCmdline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "prog={} mode={}", self.program.name(), self.mode.name())?;
        if let Some(ip) = self.ip {
            write!(f, " ip={ip}")?;
        }
        if self.mode == GuestMode::Poll && self.kick != PollKick::Always {
            write!(f, " kick={}", self.kick.guest_value())?;
        }
        if let Some(peer) = self.peer {
            write!(f, " peer={peer}")?;
        }
        if let Some(bytes) = self.bytes {
            write!(f, " bytes={bytes}")?;
        }
        if let Some(count) = self.count {
            write!(f, " count={count}")?;
        }
        if let Some(size) = self.size {
            write!(f, " size={size}")?;
        }
        if let Some(port) = self.port {
            write!(f, " port={port}")?;
        }
        if let Some(khz) = self.tsc_khz {
            write!(f, " tsc_khz={khz}")?;
        }
        Ok(())
    }
}

/// The TSC frequency (kHz) the test guest's clock runs at: as KVM gives it to a new vCPU (from a
/// throw-away VM), else the CPU's own report (CPUID 0x15, then 0x16); None if neither tells (the
/// guest then assumes 2 GHz and says so on its ready line).
pub fn guest_tsc_khz() -> Option<u32> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip() -> Ipv4Cidr {
        "10.77.0.10/24".parse().unwrap()
    }

    #[test]
    fn cidr_and_peer_parse() {
        assert_eq!(
            "10.0.0.2/24".parse::<Ipv4Cidr>(),
            Ok(Ipv4Cidr {
                addr: Ipv4Addr::new(10, 0, 0, 2),
                prefix_len: 24
            })
        );
        assert!("10.0.0.2".parse::<Ipv4Cidr>().is_err());
        assert!("10.0.0.2/40".parse::<Ipv4Cidr>().is_err());
        let ip = Ipv4Addr::new(10, 77, 0, 2);
        assert_eq!(
            "10.77.0.2".parse::<GuestPeer>(),
            Ok(GuestPeer { ip, port: None })
        );
        assert_eq!(
            "10.77.0.2:5001".parse::<GuestPeer>(),
            Ok(GuestPeer {
                ip,
                port: Some(5001)
            })
        );
        for bad in ["10.77.0.2:", "10.77.0.2:70000", "10.77.0:9", "host:9", ""] {
            let err = bad.parse::<GuestPeer>().unwrap_err().to_string();
            assert!(err.contains("IP:PORT"), "{bad}");
        }
    }

    #[test]
    fn renders_the_line_the_guest_parses() {
        let echo = GuestCmdline {
            mode: GuestMode::Poll,
            ip: Some(ip()),
            ..GuestCmdline::new(GuestProgram::Echo)
        };
        assert_eq!(
            echo.to_string(),
            "prog=echo mode=poll ip=10.77.0.10/24 kick=lazy"
        );
        let always = GuestCmdline {
            kick: PollKick::Always,
            ..echo.clone()
        };
        assert_eq!(always.to_string(), "prog=echo mode=poll ip=10.77.0.10/24");
        let blast = GuestCmdline {
            ip: Some(ip()),
            peer: Some("10.77.0.2".parse().unwrap()),
            count: Some(5),
            size: Some(128),
            ..GuestCmdline::new(GuestProgram::Blast)
        };
        assert_eq!(
            blast.to_string(),
            "prog=blast mode=irq ip=10.77.0.10/24 peer=10.77.0.2 count=5 size=128"
        );
        assert_eq!(
            blast.run_args().join(" "),
            "--guest blast --guest-ip 10.77.0.10/24 --peer 10.77.0.2 --count 5 --size 128"
        );
        assert_eq!(
            echo.run_args().join(" "),
            "--guest echo --guest-ip 10.77.0.10/24 --poll --kick lazy"
        );
    }

    #[test]
    fn refuses_what_the_guest_would() {
        let mut c = GuestCmdline::new(GuestProgram::Ping);
        assert_eq!(c.validate(), Err(GuestCmdlineError::NoPeer("ping")));
        c.peer = Some("10.0.0.1".parse().unwrap());
        assert_eq!(c.validate(), Ok(()));
        let mut t = GuestCmdline {
            peer: Some("10.0.0.1".parse().unwrap()),
            ..GuestCmdline::new(GuestProgram::TcpSource)
        };
        assert_eq!(t.validate(), Err(GuestCmdlineError::NoPeerPort));
        t.peer = Some("10.0.0.1:9".parse().unwrap());
        assert_eq!(t.validate(), Err(GuestCmdlineError::NoBytes));
        t.bytes = Some(0);
        assert_eq!(t.validate(), Err(GuestCmdlineError::NoBytes));
        t.bytes = Some(10);
        assert_eq!(t.validate(), Ok(()));
    }
}
