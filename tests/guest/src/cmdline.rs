//! The guest command line: `prog=echo|sink|blast|ping|hostile|tcp-sink|tcp-source mode=irq|poll
//! ip=A.B.C.D/N [peer=A.B.C.D[:PORT]] [count=N] [size=N] [port=N] [kick=0|1|lazy] [bytes=N]
//! [tsc_khz=N]`, space separated; unknown keys are ignored.

/// Longest command line read from guest memory.
pub const CMDLINE_LIMIT: usize = 1024;
/// UDP echo port when `port=` is absent.
pub const DEFAULT_ECHO_PORT: u16 = 7;
/// TCP port tcp-sink listens on when `port=` is absent (discard).
pub const DEFAULT_TCP_SINK_PORT: u16 = 9;
/// Connections tcp-sink serves before exiting when `count=` is absent (`count=0`: forever).
pub const DEFAULT_TCP_SINK_CONNECTIONS: u64 = 1;
/// Blast frame length (bytes handed to the NIC, FCS excluded) when `size=` is absent.
pub const DEFAULT_FRAME_SIZE: usize = 64;
/// Frames sent by blast when `count=` is absent.
pub const DEFAULT_BLAST_COUNT: u64 = 100_000;
/// Echo requests sent by ping when `count=` is absent.
pub const DEFAULT_PING_COUNT: u64 = 4;
/// Smallest and largest frame blast can build (Ethernet + IPv4 + UDP headers .. 1514).
pub const MIN_FRAME_SIZE: usize = 42;
pub const MAX_FRAME_SIZE: usize = 1514;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Program {
    Echo,
    Sink,
    Blast,
    /// Programs the NIC like a malicious guest (bad rings, zero lengths, endless chains).
    Hostile,
    /// ICMP echo requests to `peer=`, `count=` of them (default 4), one at a time.
    Ping,
    /// TCP (smoltcp): listen on `port=` (default 9), discard, report bytes and time per connection.
    TcpSink,
    /// TCP (smoltcp): connect to `peer=A.B.C.D:PORT`, send `bytes=` bytes, close.
    TcpSource,
}

impl Program {
    pub fn name(self) -> &'static str {
        match self {
            Program::Echo => "echo",
            Program::Sink => "sink",
            Program::Blast => "blast",
            Program::Hostile => "hostile",
            Program::Ping => "ping",
            Program::TcpSink => "tcp-sink",
            Program::TcpSource => "tcp-source",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Interrupt driven (IENA, ring 3 waits through the wait request).
    Irq,
    /// Ring 3 polls descriptor OWN bits; only TDMD writes exit.
    Poll,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Irq => "irq",
            Mode::Poll => "poll",
        }
    }
}

/// When the poll-mode driver writes TDMD after queuing frames (`kick=`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kick {
    /// `kick=1` (default): after every batch, one MMIO exit.
    Always,
    /// `kick=0`: never; the chip's own TX ring poll (CSR4 DPOLL clear) sends the frames.
    Never,
    /// `kick=lazy`: only when the chip has not taken a queued frame by itself within a few
    /// microseconds (a VMM that busy-polls the ring takes it first: no exit).
    Lazy,
}

impl Kick {
    pub fn name(self) -> &'static str {
        match self {
            Kick::Always => "1",
            Kick::Never => "0",
            Kick::Lazy => "lazy",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub program: Program,
    pub mode: Mode,
    pub ip: [u8; 4],
    pub prefix_len: u8,
    pub peer: Option<[u8; 4]>,
    /// The `:PORT` of `peer=` (tcp-source connects to it).
    pub peer_port: Option<u16>,
    /// sink: frames to receive before exiting (0 = forever); blast: frames to send; ping: echo
    /// requests; tcp-sink: connections to serve (default 1, 0 = forever).
    pub count: u64,
    pub size: usize,
    pub port: u16,
    /// TDMD policy in poll mode (interrupt mode always kicks).
    pub kick: Kick,
    /// tcp-source: bytes to send (required, > 0).
    pub bytes: u64,
    /// The TSC frequency the VMM reported (`tsc_khz=`), None when absent.
    pub tsc_khz: Option<u32>,
}

fn parse_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 {
        return None;
    }
    let mut value: u64 = 0;
    for &byte in text {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u64::from(byte - b'0');
    }
    Some(value)
}

fn parse_ip(text: &[u8]) -> Option<[u8; 4]> {
    let mut ip = [0u8; 4];
    let mut parts = text.split(|&b| b == b'.');
    for octet in ip.iter_mut() {
        let value = parse_u64(parts.next()?)?;
        *octet = u8::try_from(value).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(ip)
}

/// `A.B.C.D` or `A.B.C.D:PORT`.
fn parse_endpoint(text: &[u8]) -> Option<([u8; 4], Option<u16>)> {
    match text.iter().position(|&b| b == b':') {
        Some(colon) => {
            let port = u16::try_from(parse_u64(&text[colon + 1..])?).ok()?;
            Some((parse_ip(&text[..colon])?, Some(port)))
        }
        None => Some((parse_ip(text)?, None)),
    }
}

fn parse_ip_prefix(text: &[u8]) -> Option<([u8; 4], u8)> {
    match text.iter().position(|&b| b == b'/') {
        Some(slash) => {
            let prefix = parse_u64(&text[slash + 1..])?;
            if prefix > 32 {
                return None;
            }
            Some((parse_ip(&text[..slash])?, prefix as u8))
        }
        None => Some((parse_ip(text)?, 24)),
    }
}

/// Parses the command line; the error says which argument is wrong and what is expected.
pub fn parse(line: &[u8]) -> Result<Config, &'static str> {
    let mut program = None;
    let mut mode = Mode::Irq;
    let mut ip = None;
    let mut peer = None;
    let mut peer_port = None;
    let mut count = None;
    let mut size = DEFAULT_FRAME_SIZE;
    let mut port = None;
    let mut kick = Kick::Always;
    let mut bytes = None;
    let mut tsc_khz = None;
    for word in line.split(|&b| b == b' ' || b == b'\t' || b == b'\n') {
        let Some(eq) = word.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (key, value) = (&word[..eq], &word[eq + 1..]);
        match key {
            b"prog" => {
                program = Some(match value {
                    b"echo" => Program::Echo,
                    b"sink" => Program::Sink,
                    b"blast" => Program::Blast,
                    b"hostile" => Program::Hostile,
                    b"ping" => Program::Ping,
                    b"tcp-sink" => Program::TcpSink,
                    b"tcp-source" => Program::TcpSource,
                    _ => {
                        return Err(
                            "bad cmdline: prog= must be echo, sink, blast, ping, hostile, \
                                    tcp-sink or tcp-source",
                        )
                    }
                })
            }
            b"mode" => {
                mode = match value {
                    b"irq" => Mode::Irq,
                    b"poll" => Mode::Poll,
                    _ => return Err("bad cmdline: mode= must be irq or poll"),
                }
            }
            b"ip" => ip = Some(parse_ip_prefix(value).ok_or("bad cmdline: ip= must be A.B.C.D/N")?),
            b"peer" => {
                let (ip, port) =
                    parse_endpoint(value).ok_or("bad cmdline: peer= must be A.B.C.D[:PORT]")?;
                peer = Some(ip);
                peer_port = port;
            }
            b"count" => {
                count =
                    Some(parse_u64(value).ok_or("bad cmdline: count= must be a decimal number")?)
            }
            b"size" => {
                let value =
                    parse_u64(value).ok_or("bad cmdline: size= must be a decimal number")?;
                if !(MIN_FRAME_SIZE as u64..=MAX_FRAME_SIZE as u64).contains(&value) {
                    return Err("bad cmdline: size= must be 42..1514 (frame bytes without FCS)");
                }
                size = value as usize;
            }
            b"port" => {
                let value =
                    parse_u64(value).ok_or("bad cmdline: port= must be a decimal number")?;
                port =
                    Some(u16::try_from(value).map_err(|_| "bad cmdline: port= must be 0..65535")?);
            }
            b"kick" => {
                kick = match value {
                    b"1" => Kick::Always,
                    b"0" => Kick::Never,
                    b"lazy" => Kick::Lazy,
                    _ => return Err("bad cmdline: kick= must be 0, 1 or lazy"),
                }
            }
            b"bytes" => {
                bytes =
                    Some(parse_u64(value).ok_or("bad cmdline: bytes= must be a decimal number")?)
            }
            b"tsc_khz" => {
                let value =
                    parse_u64(value).ok_or("bad cmdline: tsc_khz= must be a decimal number")?;
                tsc_khz = Some(
                    u32::try_from(value)
                        .ok()
                        .filter(|&khz| khz > 0)
                        .ok_or("bad cmdline: tsc_khz= must be 1..4294967295")?,
                );
            }
            _ => {}
        }
    }
    let program = program.ok_or("bad cmdline: prog=echo|sink|blast is required")?;
    let (ip, prefix_len) = match (ip, program) {
        (Some(ip), _) => ip,
        (None, Program::Sink | Program::Hostile) => ([0; 4], 0),
        (None, _) => return Err("bad cmdline: ip=A.B.C.D/N is required"),
    };
    if program == Program::Blast && peer.is_none() {
        return Err("bad cmdline: blast needs peer=A.B.C.D");
    }
    if program == Program::Ping && peer.is_none() {
        return Err("bad cmdline: ping needs peer=A.B.C.D");
    }
    if program == Program::TcpSource && (peer.is_none() || peer_port.is_none()) {
        return Err("bad cmdline: tcp-source needs peer=A.B.C.D:PORT");
    }
    let bytes = bytes.unwrap_or(0);
    if program == Program::TcpSource && bytes == 0 {
        return Err("bad cmdline: tcp-source needs bytes=N (N > 0)");
    }
    let port = port.unwrap_or(match program {
        Program::TcpSink => DEFAULT_TCP_SINK_PORT,
        _ => DEFAULT_ECHO_PORT,
    });
    let count = count.unwrap_or(match program {
        Program::Blast => DEFAULT_BLAST_COUNT,
        Program::Ping => DEFAULT_PING_COUNT,
        Program::TcpSink => DEFAULT_TCP_SINK_CONNECTIONS,
        _ => 0,
    });
    if program == Program::Ping && !(1..=u64::from(u16::MAX)).contains(&count) {
        return Err("bad cmdline: ping count= must be 1..65535");
    }
    Ok(Config {
        program,
        mode,
        ip,
        prefix_len,
        peer,
        peer_port,
        count,
        size,
        port,
        kick,
        bytes,
        tsc_khz,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_line() {
        let config = parse(
            b"console=ttyS0 prog=blast mode=poll ip=10.77.0.2/24 peer=10.77.0.1 count=5 size=128",
        )
        .unwrap();
        assert_eq!(config.program, Program::Blast);
        assert_eq!(config.mode, Mode::Poll);
        assert_eq!(config.ip, [10, 77, 0, 2]);
        assert_eq!(config.prefix_len, 24);
        assert_eq!(config.peer, Some([10, 77, 0, 1]));
        assert_eq!(config.count, 5);
        assert_eq!(config.size, 128);
        assert_eq!(config.kick, Kick::Always);
    }

    #[test]
    fn kick_option() {
        let cases: [(&[u8], Kick); 3] = [
            (b"prog=echo mode=poll ip=10.0.0.9/24 kick=0", Kick::Never),
            (b"prog=echo mode=poll ip=10.0.0.9/24 kick=1", Kick::Always),
            (b"prog=echo mode=poll ip=10.0.0.9/24 kick=lazy", Kick::Lazy),
        ];
        for (line, kick) in cases {
            assert_eq!(parse(line).unwrap().kick, kick);
        }
        assert_eq!(Kick::Lazy.name(), "lazy");
        assert!(parse(b"prog=echo ip=10.0.0.9/24 kick=yes").is_err());
    }

    #[test]
    fn defaults_and_errors() {
        let config = parse(b"prog=echo ip=10.0.0.9").unwrap();
        assert_eq!((config.mode, config.port, config.count), (Mode::Irq, 7, 0));
        assert!(parse(b"prog=blast ip=10.0.0.9/24").is_err());
        assert!(parse(b"prog=echo ip=10.0.0.300/24").is_err());
        assert!(parse(b"prog=echo ip=10.0.0.1/24 size=20").is_err());
        assert!(parse(b"mode=poll ip=10.0.0.1/24").is_err());
        assert!(parse(b"prog=sink").is_ok());
    }

    #[test]
    fn ping_needs_a_peer_and_counts_four_by_default() {
        let config = parse(b"prog=ping ip=10.0.0.9/24 peer=10.0.0.1").unwrap();
        assert_eq!((config.program, config.count), (Program::Ping, 4));
        assert_eq!(config.program.name(), "ping");
        assert!(parse(b"prog=ping ip=10.0.0.9/24").is_err());
        assert!(parse(b"prog=ping ip=10.0.0.9/24 peer=10.0.0.1 count=0").is_err());
        assert!(parse(b"prog=ping ip=10.0.0.9/24 peer=10.0.0.1 count=70000").is_err());
    }

    #[test]
    fn tcp_sink_listens_on_port_9_unless_told() {
        let config = parse(b"prog=tcp-sink mode=poll ip=10.0.0.9/24 tsc_khz=2500000").unwrap();
        assert_eq!(config.program, Program::TcpSink);
        assert_eq!(config.program.name(), "tcp-sink");
        assert_eq!((config.port, config.tsc_khz), (9, Some(2_500_000)));
        assert_eq!(config.count, 1, "one connection, then exit");
        assert_eq!(
            parse(b"prog=tcp-sink ip=10.0.0.9/24 count=0")
                .unwrap()
                .count,
            0
        );
        assert_eq!(
            parse(b"prog=tcp-sink ip=10.0.0.9/24 port=5001")
                .unwrap()
                .port,
            5001
        );
        assert_eq!(
            parse(b"prog=tcp-sink ip=10.0.0.9/24").unwrap().tsc_khz,
            None
        );
        assert!(parse(b"prog=tcp-sink").is_err(), "TCP needs an address");
        assert!(parse(b"prog=tcp-sink ip=10.0.0.9/24 tsc_khz=0").is_err());
        assert!(parse(b"prog=tcp-sink ip=10.0.0.9/24 tsc_khz=5000000000").is_err());
        assert!(parse(b"prog=tcp-sink ip=10.0.0.9/24 tsc_khz=fast").is_err());
        // Other programs keep the UDP echo default.
        assert_eq!(parse(b"prog=echo ip=10.0.0.9/24").unwrap().port, 7);
    }

    #[test]
    fn tcp_source_needs_peer_port_and_bytes() {
        let config =
            parse(b"prog=tcp-source ip=10.0.0.9/24 peer=10.0.0.2:5001 bytes=4194304").unwrap();
        assert_eq!(config.program.name(), "tcp-source");
        assert_eq!(config.peer, Some([10, 0, 0, 2]));
        assert_eq!(config.peer_port, Some(5001));
        assert_eq!(config.bytes, 4_194_304);
        assert!(parse(b"prog=tcp-source ip=10.0.0.9/24 peer=10.0.0.2 bytes=5").is_err());
        assert!(parse(b"prog=tcp-source ip=10.0.0.9/24 peer=10.0.0.2:5001").is_err());
        assert!(parse(b"prog=tcp-source ip=10.0.0.9/24 peer=10.0.0.2:5001 bytes=0").is_err());
        assert!(parse(b"prog=tcp-source ip=10.0.0.9/24 peer=10.0.0.2:70000 bytes=5").is_err());
        assert!(parse(b"prog=tcp-source ip=10.0.0.9/24 peer=10.0.0.2: bytes=5").is_err());
        // A port on peer= is accepted (and ignored) by the raw-frame programs.
        let ping = parse(b"prog=ping ip=10.0.0.9/24 peer=10.0.0.1:7").unwrap();
        assert_eq!((ping.peer, ping.peer_port), (Some([10, 0, 0, 1]), Some(7)));
    }
}
