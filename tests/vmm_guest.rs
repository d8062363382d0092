//! The project's test guest (tests/guest, `make guest`) booted in the VMM with an in-process
//! backend standing in for the peer: it finds the Lance, answers ARP, ICMP echo and UDP echo in
//! interrupt and poll mode, and keeps answering a UDP ping-pong (printing exits per echo and the
//! in-VMM round-trip time, which are measurements, not assertions).

mod common;

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::frames::{arp_fields, arp_request, icmp_echo, ipv4_fields, udp};
use common::{test_guest_elf, Captured, EchoPort};
use lancet::net::Backend;
use lancet::tools::guest_cmdline::{GuestCmdline, GuestMode, GuestProgram, Ipv4Cidr, PollKick};
use lancet::vmm::{run_vm, RunReport, VmConfig, VmOutcome};

const VM_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const VM_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

type Sent = Arc<Mutex<Vec<Vec<u8>>>>;

fn boot_guest(
    cmdline: &str,
    tx_inline: bool,
    port: EchoPort,
    sent: Sent,
    done: impl Fn(&[Vec<u8>]) -> bool + Send + 'static,
) -> (RunReport, String) {
    let serial = Captured::default();
    let backend: Box<dyn Backend> = Box::new(port);
    let report = run_vm(VmConfig {
        stop_check: Some(Box::new(move || done(&sent.lock().unwrap()))),
        ..common::vm_config(
            test_guest_elf(),
            cmdline,
            &serial,
            Some(common::lance_net(VM_MAC, backend, tx_inline)),
            Duration::from_secs(120),
        )
    })
    .expect("VM runs");
    (report, serial.text())
}

/// The echo program in `mode` ("irq" or "poll") at VM_IP/24, kicking after every batch (the
/// guest's default).
fn guest(mode: &str) -> GuestCmdline {
    guest_cmdline(GuestProgram::Echo, mode)
}

/// The test guest's command line for `program` in `mode` ("irq" or "poll") at VM_IP/24, kicking
/// after every batch (the guest's default).
fn guest_line(program: GuestProgram, mode: &str) -> String {
    guest_cmdline(program, mode).to_string()
}

fn guest_cmdline(program: GuestProgram, mode: &str) -> GuestCmdline {
    GuestCmdline {
        mode: if mode == "poll" {
            GuestMode::Poll
        } else {
            GuestMode::Irq
        },
        kick: PollKick::Always,
        ip: Some(Ipv4Cidr {
            addr: VM_IP,
            prefix_len: 24,
        }),
        ..GuestCmdline::new(program)
    }
}

fn echo_cmdline(mode: &str) -> String {
    guest_line(GuestProgram::Echo, mode)
}

fn is_udp_reply(f: &[u8], payload: &[u8]) -> bool {
    match ipv4_fields(f) {
        Some((src, dst, 17, body)) => {
            src == VM_IP
                && dst == PEER_IP
                && f[0..6] == PEER_MAC
                && body.len() >= 8
                && body[0..2] == 7u16.to_be_bytes()
                && body[2..4] == 40000u16.to_be_bytes()
                && &body[8..] == payload
        }
        _ => false,
    }
}

fn answers_arp_icmp_and_udp(mode: &str) {
    let (mut port, sent) = EchoPort::new(|_| None);
    port.inject(arp_request(PEER_MAC, PEER_IP, VM_IP));
    port.inject(icmp_echo(
        VM_MAC,
        PEER_MAC,
        PEER_IP,
        VM_IP,
        1,
        b"ping-payload",
    ));
    port.inject(udp(
        VM_MAC,
        PEER_MAC,
        PEER_IP,
        VM_IP,
        40000,
        7,
        b"hello-lancet-udp",
    ));
    let (report, serial) = boot_guest(&echo_cmdline(mode), true, port, Arc::clone(&sent), |s| {
        s.len() >= 3
    });
    assert_eq!(report.outcome, VmOutcome::Stopped, "serial:\n{serial}");
    assert!(
        serial.contains(
            "lancet-guest: nic 79C970A mac=52:54:00:12:34:56 io=0xc000 mmio=0xfebf0000 irq=11"
        ),
        "{serial}"
    );
    assert!(
        serial.contains(&format!(
            "lancet-guest: ready prog=echo ip=10.77.0.10 mode={mode}"
        )),
        "{serial}"
    );
    let sent = sent.lock().unwrap();
    let arp = sent
        .iter()
        .find_map(|f| arp_fields(f))
        .expect("an ARP reply");
    assert_eq!(arp, (2, VM_MAC, VM_IP, PEER_MAC, PEER_IP));
    let icmp = sent
        .iter()
        .find_map(|f| ipv4_fields(f).filter(|(_, _, proto, _)| *proto == 1))
        .expect("an ICMP reply");
    assert_eq!((icmp.0, icmp.1), (VM_IP, PEER_IP));
    assert_eq!(icmp.3[0], 0, "echo reply type");
    assert_eq!(&icmp.3[8..], b"ping-payload");
    assert!(
        sent.iter().any(|f| is_udp_reply(f, b"hello-lancet-udp")),
        "a UDP echo"
    );
    let nic = report.nic.unwrap();
    assert_eq!(nic.rx_frames, 3);
    assert_eq!(nic.tx_frames, 3);
}

#[test]
fn echo_answers_arp_icmp_and_udp_in_irq_mode() {
    answers_arp_icmp_and_udp("irq");
}

#[test]
fn echo_answers_arp_icmp_and_udp_in_poll_mode() {
    answers_arp_icmp_and_udp("poll");
}

/// A UDP ping-pong of `count` echoes, one outstanding, driven by the backend itself. Returns the
/// report and the round-trip times (backend hands the request over -> guest's answer committed).
fn ping_pong(mode: &str, tx_inline: bool, count: usize) -> (RunReport, Vec<Duration>) {
    ping_pong_cmdline(&echo_cmdline(mode), tx_inline, count)
}

/// `ping_pong` with the guest's whole command line given.
fn ping_pong_cmdline(cmdline: &str, tx_inline: bool, count: usize) -> (RunReport, Vec<Duration>) {
    let rtts = Arc::new(Mutex::new(Vec::new()));
    let started = Arc::new(Mutex::new(Instant::now()));
    let request = |seq: usize| {
        let payload = format!("seq-{seq:06}");
        udp(
            VM_MAC,
            PEER_MAC,
            PEER_IP,
            VM_IP,
            40000,
            7,
            payload.as_bytes(),
        )
    };
    let (rtts_in, started_in) = (Arc::clone(&rtts), Arc::clone(&started));
    let mut next = 1;
    let (mut port, sent) = EchoPort::new(move |frame| {
        let expected = format!("seq-{:06}", next - 1);
        if !is_udp_reply(frame, expected.as_bytes()) || next > count {
            return None;
        }
        let mut start = started_in.lock().unwrap();
        rtts_in.lock().unwrap().push(start.elapsed());
        next += 1;
        *start = Instant::now();
        (next <= count).then(|| request(next - 1))
    });
    port.inject(request(0));
    *started.lock().unwrap() = Instant::now();
    let (report, serial) = boot_guest(cmdline, tx_inline, port, sent, move |s| s.len() >= count);
    assert_eq!(report.outcome, VmOutcome::Stopped, "serial:\n{serial}");
    let rtts = rtts.lock().unwrap().clone();
    assert_eq!(rtts.len(), count, "every request was answered in order");
    (report, rtts)
}

#[test]
fn udp_ping_pong_every_echo_answered_with_exits_per_echo() {
    for (mode, tx_inline) in [
        ("irq", true),
        ("poll", true),
        ("irq", false),
        ("poll", false),
    ] {
        let (short, _) = ping_pong(mode, tx_inline, 20);
        let (long, mut rtts) = ping_pong(mode, tx_inline, 220);
        let per_echo = (long.exits.nic_exits() - short.exits.nic_exits()) as f64 / 200.0;
        let all_per_echo = (long.exits.total() - short.exits.total()) as f64 / 200.0;
        rtts.sort();
        eprintln!(
            "test guest mode={mode} tx={}: NIC exits per echo {per_echo:.1} (all exits {all_per_echo:.1}); \
             in-VMM RTT p50 {:?} p99 {:?}",
            if tx_inline { "inline" } else { "io-thread" },
            rtts[rtts.len() / 2],
            rtts[rtts.len() * 99 / 100]
        );
    }
}

#[test]
fn poll_mode_without_tdmd_answers_every_echo_with_no_nic_exit_per_echo() {
    // kick=0: the guest never writes TDMD; its replies leave through the I/O thread's TX ring
    // poll (the chip polls its ring when TXON and not DPOLL). Set-up exits are the same in a
    // short and a long run, so every echo beyond the first ones costs no NIC exit at all.
    let cmdline = GuestCmdline {
        kick: PollKick::Never,
        ..guest("poll")
    }
    .to_string();
    let (short, _) = ping_pong_cmdline(&cmdline, true, 20);
    let (long, _) = ping_pong_cmdline(&cmdline, true, 220);
    assert_eq!(
        long.exits.nic_exits(),
        short.exits.nic_exits(),
        "NIC exits must not grow with the echo count: short {:?} long {:?}",
        short.exits.snapshot(),
        long.exits.snapshot()
    );
    // kick=lazy: TDMD only when the I/O thread's poll has not taken a reply within ~20 us; every
    // echo is answered either way.
    let cmdline = GuestCmdline {
        kick: PollKick::Lazy,
        ..guest("poll")
    }
    .to_string();
    let (_, rtts) = ping_pong_cmdline(&cmdline, true, 50);
    assert_eq!(rtts.len(), 50);
    // The same guest with kicks writes TDMD once per echo.
    let (short, _) = ping_pong("poll", true, 20);
    let (long, _) = ping_pong("poll", true, 220);
    assert!(long.exits.nic_exits() >= short.exits.nic_exits() + 200);
}

#[test]
fn hostile_test_guest_leaves_the_vmm_up_and_the_next_vm_is_served() {
    let (mut port, sent) = EchoPort::new(|_| None);
    for i in 0..64u16 {
        port.inject(icmp_echo(
            VM_MAC,
            PEER_MAC,
            PEER_IP,
            VM_IP,
            i,
            b"while-hostile",
        ));
    }
    let (report, serial) = boot_guest(
        &guest_line(GuestProgram::Hostile, "poll"),
        true,
        port,
        Arc::clone(&sent),
        |_| false,
    );
    // The guest ran every step to its own end (no triple fault, no VMM failure), every reset
    // brought the chip back to STOP (the final one in DWIO, which the model keeps across S_RESET
    // as the datasheet says), and the errors are counted.
    assert_eq!(report.outcome, VmOutcome::GuestExit(0), "serial:\n{serial}");
    assert!(
        serial.contains("lancet-guest: hostile done steps=11"),
        "{serial}"
    );
    for step in [
        "init-block-outside-ram",
        "zero-ring-lengths",
        "endless-tx-chain",
        "dwio-switch",
    ] {
        assert!(
            serial.contains(&format!("lancet-guest: hostile step={step} ")),
            "{serial}"
        );
    }
    let nic = report.nic.unwrap();
    eprintln!("hostile test guest: NIC counters {nic:?}");
    assert!(nic.dma_errors > 0, "errors are reported: {nic:?}");
    // The same process then serves a well-behaved VM.
    answers_arp_icmp_and_udp("poll");
}
