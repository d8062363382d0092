//! End to end over the real backends, in network namespaces from `src/tools/testbed.rs`: `lancet run`
//! (the binary) boots the test guest bridged over AF_XDP and over TAP, in interrupt and poll mode,
//! and the peer namespace pings it, resolves it by ARP and gets UDP echoes back; sink and blast move
//! 100 000 frames each way with every frame counted on both ends; the small Linux guest's pcnet32
//! driver binds the Lance and answers ping over each backend.
//!
//! The guests must have been built (`make guest`, `make linux-guest`); a missing image fails the
//! test with that instruction.

mod common;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::vm::{guest_args, testbed, VmProcess};
use lancet::tools::testbed::{frames, Side, Testbed};

/// Pings the VM from the peer namespace: `count` requests, returns how many were answered.
fn ping(bed: &Testbed, count: u32) -> (u32, String) {
    let out = bed
        .ping(Side::Peer, Testbed::VM_IP, count)
        .expect("ping (iputils-ping)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let received = text
        .split(',')
        .find_map(|part| part.trim().strip_suffix(" received"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    (received, text)
}

/// `count` UDP echoes from the peer namespace, one outstanding; returns the sorted RTTs.
fn udp_echo(bed: &Testbed, count: usize) -> Vec<Duration> {
    let _in_peer = bed.enter_peer().unwrap();
    let sock = UdpSocket::bind((Testbed::PEER_IP, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.connect((Testbed::VM_IP, 7)).unwrap();
    let mut rtts = Vec::with_capacity(count);
    let mut buf = [0u8; 2048];
    for i in 0..count {
        let payload = format!("lancet-udp-echo-{i:08}");
        let start = Instant::now();
        sock.send(payload.as_bytes()).unwrap();
        loop {
            let n = sock
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("echo {i} not answered: {e}"));
            if &buf[..n] == payload.as_bytes() {
                break;
            }
        }
        rtts.push(start.elapsed());
    }
    rtts.sort();
    rtts
}

fn echo_over(backend: &str, poll: bool, tag: &str) {
    let bed = testbed(backend, tag);
    let args = guest_args("echo", poll);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut vm = VmProcess::start(&bed, backend, &args, tag);
    vm.wait_for("lancet-guest: nic 79C970A", Duration::from_secs(60));
    vm.wait_for("lancet-guest: ready prog=echo", Duration::from_secs(60));
    let (received, text) = ping(&bed, 5);
    assert_eq!(received, 5, "ping over {backend}:\n{text}");
    let neigh = bed
        .run_in(
            Side::Peer,
            &["ip", "neigh", "show", &Testbed::VM_IP.to_string()],
        )
        .unwrap();
    let neigh = String::from_utf8_lossy(&neigh.stdout).to_string();
    assert!(
        neigh.contains("52:54:00:12:34:56"),
        "ARP resolved the VM's MAC: {neigh}"
    );
    let rtts = udp_echo(&bed, 200);
    let (code, stats) = vm.stop();
    assert_eq!(code, 0, "clean stop");
    let echoes = 200 + 5;
    let nic_exits = stats["exits"]["pio_nic"].as_u64().unwrap_or(0)
        + stats["exits"]["mmio_nic"].as_u64().unwrap_or(0);
    eprintln!(
        "{backend} {}: UDP echo RTT p50 {:?} p99 {:?}; NIC exits per echo (incl. set-up) {:.1}; stats {}",
        if poll { "poll" } else { "irq" },
        rtts[rtts.len() / 2],
        rtts[rtts.len() * 99 / 100],
        nic_exits as f64 / echoes as f64,
        stats
    );
}

#[test]
fn echo_over_xdp_irq() {
    echo_over("xdp", false, "xi");
}

#[test]
fn echo_over_xdp_poll() {
    echo_over("xdp", true, "xp");
}

#[test]
fn echo_over_tap_irq() {
    echo_over("tap", false, "ti");
}

#[test]
fn echo_over_tap_poll() {
    echo_over("tap", true, "tp");
}

const BULK_FRAMES: u64 = 100_000;

fn sink_over(backend: &str, poll: bool, tag: &str) {
    let bed = testbed(backend, tag);
    let mut args = guest_args("sink", poll);
    args.extend(["--count".to_string(), BULK_FRAMES.to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut vm = VmProcess::start(&bed, backend, &args, tag);
    vm.wait_for("lancet-guest: ready prog=sink", Duration::from_secs(60));
    let sock = bed.raw_socket(Side::Peer, Testbed::PEER_NIC).unwrap();
    let peer_mac = bed.mac_of(Side::Peer, Testbed::PEER_NIC).unwrap();
    let start = Instant::now();
    for seq in 0..BULK_FRAMES {
        let frame = frames::test_frame(Testbed::VM_MAC, peer_mac, seq, 64);
        while let Err(e) = sock.send(&frame) {
            // A full socket/qdisc queue: wait a moment and retry (the frame is not lost).
            assert_eq!(e.raw_os_error(), Some(libc::ENOBUFS), "send: {e}");
            std::thread::sleep(Duration::from_micros(200));
        }
        // Paced bursts: the guest drains its ring between them.
        if seq % 32 == 31 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let sent_in = start.elapsed();
    let expected = format!("lancet-guest: sink frames={BULK_FRAMES} ");
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        vm.wait_for(&expected, Duration::from_secs(60))
    }));
    let serial = vm.serial_text();
    let (code, stats) = vm.stop();
    if waited.is_err() {
        panic!("the guest did not count {BULK_FRAMES} frames; lancet stats (drops by reason): {stats}\nserial:\n{serial}");
    }
    assert_eq!(code, 0);
    assert_eq!(
        stats["nic"]["rx_frames"].as_u64(),
        Some(BULK_FRAMES),
        "{stats}"
    );
    eprintln!(
        "{backend} sink {}: {BULK_FRAMES} frames sent in {sent_in:?}, all counted by the guest",
        if poll { "poll" } else { "irq" }
    );
}

fn blast_over(backend: &str, poll: bool, tag: &str) {
    let bed = testbed(backend, tag);
    let sock = bed.raw_socket(Side::Peer, Testbed::PEER_NIC).unwrap();
    let counter = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut count = 0u64;
        let deadline = Instant::now() + Duration::from_secs(240);
        while count < BULK_FRAMES && Instant::now() < deadline {
            match sock.recv(&mut buf, Duration::from_secs(1)) {
                Ok(Some(n)) => {
                    let f = &buf[..n];
                    // UDP to port 9 from the VM's MAC.
                    if n >= 42
                        && f[6..12] == Testbed::VM_MAC
                        && f[12..14] == [8, 0]
                        && f[23] == 17
                        && f[36..38] == [0, 9]
                    {
                        count += 1;
                    }
                }
                Ok(None) => {}
                Err(e) => panic!("recv: {e}"),
            }
        }
        count
    });
    let mut args = guest_args("blast", poll);
    args.extend([
        "--peer".to_string(),
        Testbed::PEER_IP.to_string(),
        "--count".into(),
        BULK_FRAMES.to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vm = VmProcess::start(&bed, backend, &args, tag);
    let start = Instant::now();
    let (code, stats, _) = vm.wait_exit(Duration::from_secs(240));
    let received = counter.join().unwrap();
    eprintln!(
        "{backend} blast {}: the peer counted {received} frames; VM run (boot included) {:?}",
        if poll { "poll" } else { "irq" },
        start.elapsed()
    );
    assert_eq!(code, 0, "the guest finished its blast; stats {stats}");
    assert_eq!(
        stats["nic"]["tx_frames"].as_u64().map(|n| n >= BULK_FRAMES),
        Some(true),
        "{stats}"
    );
    assert_eq!(
        received, BULK_FRAMES,
        "frames the peer counted; lancet stats {stats}"
    );
}

#[test]
fn sink_over_xdp() {
    sink_over("xdp", true, "sx");
}

#[test]
fn sink_over_tap() {
    sink_over("tap", false, "st");
}

#[test]
fn blast_over_xdp() {
    blast_over("xdp", true, "bx");
}

#[test]
fn blast_over_tap() {
    blast_over("tap", false, "bt");
}

fn linux_guest_files(image: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::var_os("LINUX_GUEST_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.cache/linux-guest"))
        });
    let (kernel, initrd) = (dir.join(image), dir.join("initramfs.cpio"));
    assert!(
        kernel.is_file() && initrd.is_file(),
        "the Linux guest ({}) is missing: run `make linux-guest` first",
        dir.display()
    );
    (kernel, initrd)
}

fn linux_ping_over(backend: &str, tag: &str, image: &str, extra_cmdline: &str) {
    let (kernel, initrd) = linux_guest_files(image);
    let bed = testbed(backend, tag);
    let cmdline = format!(
        "console=ttyS0 ip={}::{}:255.255.255.0::eth0:off rdinit=/init {extra_cmdline}",
        Testbed::VM_IP,
        Testbed::HOST_IP
    );
    let args = [
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--cmdline",
        &cmdline,
    ];
    let mut vm = VmProcess::start(&bed, backend, &args, tag);
    vm.wait_for("PCnet/PCI II 79C970A", Duration::from_secs(240));
    vm.wait_for("link up", Duration::from_secs(240));

    // The emulated kernel answers slowly at first: retry single pings for a while.
    let start = Instant::now();
    let mut answered = false;
    while !answered && start.elapsed() < Duration::from_secs(240) {
        answered = ping(&bed, 1).0 == 1;
    }
    let first_reply = start.elapsed();
    // A short measured series (RTT printed, not asserted: the guest's kernel runs emulated).
    let (series_received, series) = if answered {
        ping(&bed, 20)
    } else {
        (0, String::new())
    };
    let serial = vm.serial_text();
    let (code, stats) = vm.stop();
    assert!(
        answered,
        "no ping reply over {backend}; stats {stats}\nserial:\n{serial}"
    );
    assert!(serial.contains("assigned IRQ 11"), "{serial}");
    if std::env::var_os("LANCET_E2E_SHOW_SERIAL").is_some() {
        eprintln!("{serial}");
    }
    assert_eq!(code, 0);
    let rtt_line = series
        .lines()
        .find(|l| l.contains("rtt"))
        .unwrap_or("")
        .to_string();
    let nic_exits = stats["exits"]["pio_nic"].as_u64().unwrap_or(0)
        + stats["exits"]["mmio_nic"].as_u64().unwrap_or(0);
    let frames = stats["frames_moved"].as_u64().unwrap_or(0);
    eprintln!(
        "Linux ({image} {extra_cmdline}) over {backend}: first ping reply {first_reply:?} after the driver came up; \
         then {series_received}/20 answered, {rtt_line}; NIC exits {nic_exits} for {frames} frames (boot included)"
    );
}

#[test]
fn linux_guest_answers_ping_over_xdp() {
    linux_ping_over("xdp", "lx", "bzImage", "");
}

/// `noapic`: the kernel ignores the IOAPIC and takes the NIC's interrupt through the 8259 PIC, using
/// the IRQ from the config-space Interrupt Line register.
#[test]
fn linux_guest_answers_ping_over_xdp_with_the_8259_pic() {
    linux_ping_over("xdp", "lp", "bzImage", "noapic");
}

#[test]
fn linux_guest_answers_ping_over_tap() {
    linux_ping_over("tap", "lt", "bzImage", "");
}

/// The uncompressed vmlinux through its PVH entry note.
#[test]
fn linux_vmlinux_booted_via_pvh_answers_ping_over_tap() {
    linux_ping_over("tap", "lv", "vmlinux", "");
}

/// The ping guest resolves the LAN peer by ARP and gets every echo request answered by the peer's
/// own kernel; a peer that does not exist makes it fail (exit status non-zero, timeouts printed).
fn guest_pings_the_lan_over(backend: &str, tag: &str) {
    let bed = testbed(backend, tag);
    let mut args = guest_args("ping", true);
    args.extend([
        "--peer".to_string(),
        Testbed::PEER_IP.to_string(),
        "--count".into(),
        "5".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vm = VmProcess::start(&bed, backend, &args, tag);
    let (code, stats, text) = vm.wait_exit(Duration::from_secs(120));
    assert_eq!(code, 0, "ping guest over {backend}: {stats}\n{text}");
    for seq in 1..=5 {
        let line = format!("ping reply seq={seq} from={}", Testbed::PEER_IP);
        assert!(text.contains(&line), "{line:?} missing:\n{text}");
    }
    assert!(text.contains("ping done sent=5 received=5"), "{text}");
}

#[test]
fn ping_guest_reaches_the_lan_over_xdp() {
    guest_pings_the_lan_over("xdp", "gpx");
}

#[test]
fn ping_guest_reaches_the_lan_over_tap() {
    guest_pings_the_lan_over("tap", "gpt");
}

#[test]
fn ping_guest_fails_when_nobody_answers() {
    let bed = testbed("xdp", "gpn");
    let mut args = guest_args("ping", true);
    // An address on the segment that no host owns: ARP goes unanswered.
    args.extend([
        "--peer".to_string(),
        "10.77.0.99".into(),
        "--count".into(),
        "1".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vm = VmProcess::start(&bed, "xdp", &args, "gpn");
    let (code, _, text) = vm.wait_exit(Duration::from_secs(180));
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("did not answer ARP"), "{text}");
}

/// dnsmasq serving DHCP on the peer namespace's side of the LAN; killed by its PID on drop.
struct Dnsmasq {
    child: Child,
    leases: PathBuf,
}

/// The range dnsmasq leases from (a /24 that holds the testbed's addresses).
const DHCP_FIRST: &str = "10.77.0.50";
const DHCP_LAST: &str = "10.77.0.59";

impl Dnsmasq {
    fn start(bed: &Testbed, tag: &str) -> Self {
        let leases =
            std::env::temp_dir().join(format!("lancet-e2e-{}-{tag}.leases", std::process::id()));
        let _ = std::fs::remove_file(&leases);
        // `ip netns exec` execs dnsmasq in place: the child's PID is dnsmasq's.
        let child = Command::new("ip")
            .args(["netns", "exec", bed.ns_name(Side::Peer), "dnsmasq"])
            .args([
                "--no-daemon",
                "--port=0",
                "--conf-file=/dev/null",
                "--bind-interfaces",
            ])
            .arg(format!("--interface={}", Testbed::PEER_NIC))
            .arg(format!(
                "--dhcp-range={DHCP_FIRST},{DHCP_LAST},255.255.255.0,10m"
            ))
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .arg("--pid-file=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (Debian package dnsmasq-base; make test installs it)");
        Self { child, leases }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the PID of our own unreaped child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.leases);
    }
}

/// The address the Linux kernel's DHCP client took (its line `IP-Config: Got DHCP answer from
/// SERVER, my address is A.B.C.D`).
fn leased_address(serial: &str) -> Option<std::net::Ipv4Addr> {
    serial
        .split("my address is ")
        .nth(1)?
        .split(|c: char| c == ',' || c.is_whitespace())
        .next()?
        .parse()
        .ok()
}

/// The small Linux guest boots with `ip=dhcp` and takes a lease from dnsmasq on the LAN (lancet
/// is told no address); the peer then forgets every neighbour and pings the leased address, so
/// its ARP request must reach the VM whose address nobody configured.
fn linux_dhcp_over(backend: &str, tag: &str) {
    let (kernel, initrd) = linux_guest_files("bzImage");
    let bed = testbed(backend, tag);
    let _dnsmasq = Dnsmasq::start(&bed, tag);
    let args = [
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--cmdline",
        "console=ttyS0 ip=dhcp rdinit=/init",
    ];
    let mut vm = VmProcess::start(&bed, backend, &args, tag);
    vm.wait_for("IP-Config: Complete", Duration::from_secs(300));
    let serial = vm.serial_text();
    let leased =
        leased_address(&serial).unwrap_or_else(|| panic!("no leased address in:\n{serial}"));
    let range = DHCP_FIRST.parse::<std::net::Ipv4Addr>().unwrap()
        ..=DHCP_LAST.parse::<std::net::Ipv4Addr>().unwrap();
    assert!(range.contains(&leased), "{leased} outside the DHCP range");
    bed.run_in(Side::Peer, &["ip", "neigh", "flush", "all"])
        .expect("ip neigh flush");
    let start = Instant::now();
    let mut answered = false;
    while !answered && start.elapsed() < Duration::from_secs(240) {
        let out = bed
            .run_in(
                Side::Peer,
                &["ping", "-c", "1", "-W", "2", &leased.to_string()],
            )
            .expect("ping (iputils-ping)");
        answered = out.status.success();
    }
    let (_, stats) = vm.stop();
    assert!(
        answered,
        "the DHCP guest at {leased} never answered over {backend}; stats {stats}\nserial:\n{serial}"
    );
    eprintln!(
        "Linux with ip=dhcp over {backend}: lease {leased}, answered {:?} after the neighbour flush",
        start.elapsed()
    );
}

#[test]
fn linux_guest_takes_a_dhcp_lease_and_answers_over_tap() {
    linux_dhcp_over("tap", "dt");
}

#[test]
fn linux_guest_takes_a_dhcp_lease_and_answers_over_xdp() {
    linux_dhcp_over("xdp", "dx");
}

/// The ping guest of one VM pinging `target`; returns the console. `extra` adds run options.
fn ping_from_vm(
    bed: &Testbed,
    mac: [u8; 6],
    ip: std::net::Ipv4Addr,
    name: &str,
    target: std::net::Ipv4Addr,
) -> String {
    let mut args = common::vm::guest_args_at("ping", true, ip);
    args.extend(
        [
            "--peer",
            &target.to_string(),
            "--count",
            "3",
            "--vm-name",
            name,
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut vm = VmProcess::start_as(bed, "xdp", mac, &args, name);
    vm.wait_for("ping done", Duration::from_secs(120));
    let (code, stats, text) = vm.wait_exit(Duration::from_secs(30));
    assert_eq!(code, 0, "{name} pinging {target}: {stats}\n{text}");
    assert!(text.contains("ping done sent=3 received=3"), "{text}");
    text
}

/// Bridged over AF_XDP, VMs on one NIC reach each other and the host that owns the NIC, as on a
/// switch: a VM on a veth port pings the VM on the NIC queue and the host; then a VM on the NIC
/// queue pings a VM on a veth port and the host (all with the ping guest; echo guests answer).
#[test]
fn ping_guests_reach_other_vms_and_the_host_over_xdp() {
    let bed = testbed("xdp", "pv");
    let ip = |last| std::net::Ipv4Addr::new(10, 77, 0, last);
    let mac = |last| [0x52, 0x54, 0x00, 0x12, 0x34, last];
    let echo = |m: [u8; 6], a: std::net::Ipv4Addr, name: &str| {
        let mut args = common::vm::guest_args_at("echo", true, a);
        args.extend(["--vm-name", name].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut vm = VmProcess::start_as(&bed, "xdp", m, &args, name);
        vm.wait_for("ready", Duration::from_secs(60));
        vm
    };
    // Echo A takes the NIC queue (first on the NIC); the ping guests come second: veth ports.
    let a = echo(mac(0x61), ip(61), "pva");
    ping_from_vm(&bed, mac(0x62), ip(62), "pvb", ip(61));
    ping_from_vm(&bed, mac(0x63), ip(63), "pvc", Testbed::HOST_IP);
    // Echo D on a port; A leaves, so the next ping guest takes the NIC queue.
    let d = echo(mac(0x64), ip(64), "pvd");
    let (code, _) = a.stop();
    assert_eq!(code, 0);
    ping_from_vm(&bed, mac(0x65), ip(65), "pve", ip(64));
    ping_from_vm(&bed, mac(0x66), ip(66), "pvf", Testbed::HOST_IP);
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}
