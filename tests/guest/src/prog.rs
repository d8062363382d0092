//! The ring-3 entry and the raw-frame programs: echo, sink, blast and ping (the TCP ones are in
//! `tcp.rs`), each in interrupt or poll mode, on top of the
//! driver in `lance.rs`. Poll mode exits to the VMM only for TDMD writes (one per batch);
//! interrupt mode sleeps through the ring-0 wait request after re-arming IENA.

use core::hint::spin_loop;

use crate::clock::{TscClock, DEFAULT_TSC_KHZ};
use crate::cmdline::{self, Config, Kick, Mode, Program};
use crate::fmt::Line;
use crate::lance::{Lance, ProbeError, BUF_SIZE};
use crate::net::{self, UdpFlow};
use crate::ring0::BootInfo;
use crate::user;

/// Descriptors handled per pass before transmit is kicked.
const BATCH: usize = 32;
/// Queued frames that force a TDMD even in interrupt mode.
const KICK_BATCH: usize = 32;
/// Sink progress line period (frames).
const PROGRESS_PERIOD: u64 = 1 << 16;
/// Poll-mode sink: report the count after this many TSC cycles without a frame.
const IDLE_REPORT_CYCLES: u64 = 3_000_000_000;
/// Blast: ARP attempts and the wait for a reply after each (TSC cycles, ~0.3-1 s).
const ARP_ATTEMPTS: u32 = 30;
const ARP_WAIT_CYCLES: u64 = 1_000_000_000;
/// Blast: give up when the TX ring makes no progress for this long (TSC cycles).
const TX_STUCK_CYCLES: u64 = 30_000_000_000;
/// Ping: how long each echo request waits for its reply (TSC cycles, ~1-3 s).
const PING_WAIT_CYCLES: u64 = 3_000_000_000;
/// Ping: the ICMP identifier ("LT") and the pattern bytes after the ICMP header.
const PING_ID: u16 = 0x4c54;
const PING_PAYLOAD_LEN: usize = 56;
/// Highest PIC IRQ the ring-0 code can route.
const MAX_PIC_IRQ: u8 = 15;

fn read_cmdline(address: u64, out: &mut [u8; cmdline::CMDLINE_LIMIT]) -> usize {
    if address == 0 {
        return 0;
    }
    let mut len = 0;
    while len < out.len() {
        // SAFETY: the PVH loader placed the NUL-terminated command line in identity-mapped RAM;
        // reading is bounded by CMDLINE_LIMIT.
        let byte = unsafe { core::ptr::read_volatile((address + len as u64) as *const u8) };
        if byte == 0 {
            break;
        }
        out[len] = byte;
        len += 1;
    }
    len
}

fn fail_probe(error: ProbeError) -> ! {
    let mut line = Line::new();
    match error {
        ProbeError::NotStopped(csr0) => line
            .text("error CSR0 after reset is ")
            .hex(u64::from(csr0), 4)
            .text(" (want 0x0004)"),
        ProbeError::RapReadback(rap) => line
            .text("error RAP reads back ")
            .hex(u64::from(rap), 4)
            .text(" after writing 88"),
        ProbeError::ChipId(id) => line
            .text("error chip id ")
            .hex(u64::from(id), 8)
            .text(" is not a 79C970A"),
        ProbeError::NoInitDone(csr0) => line
            .text("error no IDON after INIT, CSR0=")
            .hex(u64::from(csr0), 4),
    };
    line.print();
    user::exit(crate::ring0::EXIT_FAILURE)
}

/// Ring-3 entry: parse the command line, probe and start the NIC, run the program.
pub fn run(info: &BootInfo) -> ! {
    let mut raw = [0u8; cmdline::CMDLINE_LIMIT];
    let len = read_cmdline(info.cmdline, &mut raw);
    let config = match cmdline::parse(&raw[..len]) {
        Ok(config) => config,
        Err(message) => user::fail(message),
    };
    let mut lance = Lance::probe(info.mmio_base).unwrap_or_else(|e| fail_probe(e));
    Line::new()
        .text("nic 79C970A mac=")
        .mac(&lance.mac)
        .text(" io=")
        .hex(u64::from(info.io_base), 4)
        .text(" mmio=")
        .hex(u64::from(info.mmio_base), 8)
        .text(" irq=")
        .dec(u64::from(info.irq))
        .print();
    let irq_mode = config.mode == Mode::Irq;
    if irq_mode && info.irq > MAX_PIC_IRQ {
        user::fail("mode=irq needs a PIC IRQ 0..15 in the Interrupt Line register; use mode=poll");
    }
    if config.program == Program::Hostile {
        crate::hostile::run(&lance);
    }
    if let Err(error) = lance.start(irq_mode, config.program == Program::Blast) {
        fail_probe(error);
    }
    // kick= is a poll-mode option: interrupt mode keeps its TDMD writes (they share the CSR0
    // write that re-arms IENA anyway).
    let kick = if irq_mode { Kick::Always } else { config.kick };
    lance.set_kick_policy(kick);
    let tcp = matches!(config.program, Program::TcpSink | Program::TcpSource);
    let clock = TscClock::new(user::rdtsc(), config.tsc_khz.unwrap_or(DEFAULT_TSC_KHZ));
    let mut ready = Line::new();
    ready
        .text("ready prog=")
        .text(config.program.name())
        .text(" ip=")
        .ip(&config.ip)
        .text(" mode=")
        .text(config.mode.name())
        .text(if kick == Kick::Always { "" } else { " kick=" })
        .text(if kick == Kick::Always {
            ""
        } else {
            kick.name()
        });
    if tcp {
        // The TCP programs' clock: from the VMM, or assumed (then said so).
        ready.text(" tsc_khz=").dec(u64::from(clock.khz()));
        if config.tsc_khz.is_none() {
            ready.text(" tsc_khz_assumed");
        }
    }
    ready.print();
    match config.program {
        Program::Echo => echo(&mut lance, &config),
        Program::Sink => sink(&mut lance, &config),
        Program::Blast => blast(&mut lance, &config),
        Program::Ping => ping(&mut lance, &config),
        Program::TcpSink => crate::tcp::sink(&mut lance, &config, clock),
        Program::TcpSource => crate::tcp::source(&mut lance, &config, clock),
        Program::Hostile => user::fail("hostile runs before the NIC is started"),
    }
}

/// Interrupt mode, nothing to do: re-arm (one MMIO write, also kicking queued frames), look
/// once more, and sleep if still idle.
fn idle_wait(lance: &mut Lance, ready: impl Fn(&mut Lance) -> bool) {
    lance.arm();
    if !ready(lance) {
        user::wait_for_interrupt();
    }
}

fn echo(lance: &mut Lance, config: &Config) -> ! {
    let mac = lance.mac;
    let mut dropped: u64 = 0;
    let mut reported_drops: u64 = 0;
    loop {
        let handled = lance.receive(BATCH, |frame, tx| {
            let mut wanted = false;
            let queued = tx.send(|buffer| {
                match net::echo_reply(frame, buffer, &mac, &config.ip, config.port) {
                    Some((length, _)) => {
                        wanted = true;
                        length
                    }
                    None => 0,
                }
            });
            if wanted && !queued {
                dropped += 1;
            }
        });
        if handled > 0 {
            if !lance.irq_mode() || lance.tx().unkicked() >= KICK_BATCH {
                lance.kick();
            }
            continue;
        }
        if dropped.is_power_of_two() && dropped != reported_drops {
            // Replies lost to a full TX ring (and bad RX descriptors), reported at 1, 2, 4, ...
            reported_drops = dropped;
            Line::new()
                .text("echo tx_full_drops=")
                .dec(dropped)
                .text(" rx_errors=")
                .dec(lance.rx_errors)
                .print();
        }
        if lance.irq_mode() {
            idle_wait(lance, |l| l.rx_ready());
        } else {
            // No MMIO unless a lazy kick is due.
            lance.kick();
            spin_loop();
        }
    }
}

fn print_sink(frames: u64, bytes: u64) {
    Line::new()
        .text("sink frames=")
        .dec(frames)
        .text(" bytes=")
        .dec(bytes)
        .print();
}

fn sink(lance: &mut Lance, config: &Config) -> ! {
    let mut frames: u64 = 0;
    let mut bytes: u64 = 0;
    let mut reported = 0;
    let mut last_activity = user::rdtsc();
    loop {
        let budget = if config.count == 0 {
            BATCH
        } else {
            BATCH.min((config.count - frames) as usize)
        };
        let handled = lance.receive(budget, |frame, _| {
            frames += 1;
            bytes += frame.len() as u64;
        });
        if frames / PROGRESS_PERIOD > reported / PROGRESS_PERIOD {
            print_sink(frames, bytes);
            reported = frames;
        }
        if config.count != 0 && frames >= config.count {
            print_sink(frames, bytes);
            let missed = lance.missed_frames();
            Line::new()
                .text("sink done rx_errors=")
                .dec(lance.rx_errors)
                .text(" missed=")
                .dec(u64::from(missed))
                .print();
            user::exit(0);
        }
        if handled > 0 {
            last_activity = user::rdtsc();
            continue;
        }
        if lance.irq_mode() {
            idle_wait(lance, |l| l.rx_ready());
        } else {
            spin_loop();
            if frames != reported && user::rdtsc().wrapping_sub(last_activity) > IDLE_REPORT_CYCLES
            {
                print_sink(frames, bytes);
                reported = frames;
            }
        }
    }
}

/// Sends ARP requests for `peer` until it answers; returns its MAC (None: no answer).
fn resolve(lance: &mut Lance, ip: &[u8; 4], peer: &[u8; 4]) -> Option<[u8; 6]> {
    let mac = lance.mac;
    for _ in 0..ARP_ATTEMPTS {
        lance
            .tx()
            .send(|buffer| net::arp_request(buffer, &mac, ip, peer));
        lance.kick();
        let start = user::rdtsc();
        while user::rdtsc().wrapping_sub(start) < ARP_WAIT_CYCLES {
            let mut found = None;
            lance.receive(BATCH, |frame, tx| {
                if let Some(peer_mac) = net::arp_reply_from(frame, ip, peer) {
                    found = Some(peer_mac);
                } else {
                    // Answer the peer's own ARP for us, so it can reach us too.
                    tx.send(|buffer| match net::echo_reply(frame, buffer, &mac, ip, 0) {
                        Some((length, net::Echoed::Arp)) => length,
                        _ => 0,
                    });
                }
            });
            lance.kick();
            if let Some(peer_mac) = found {
                return Some(peer_mac);
            }
            spin_loop();
        }
    }
    None
}

fn blast(lance: &mut Lance, config: &Config) -> ! {
    let Some(peer) = config.peer else {
        user::fail("bad cmdline: blast needs peer=A.B.C.D")
    };
    let Some(peer_mac) = resolve(lance, &config.ip, &peer) else {
        user::fail("blast: the peer did not answer ARP (check peer= and the network)")
    };
    // Let the ARP traffic complete so the counters below hold blast frames only.
    let settle = user::rdtsc();
    while lance.tx_in_flight() > 0 && user::rdtsc().wrapping_sub(settle) < ARP_WAIT_CYCLES {
        spin_loop();
    }
    let (done_before, errors_before) = (lance.tx_done, lance.tx_errors);
    let flow = UdpFlow {
        src_mac: lance.mac,
        dst_mac: peer_mac,
        src_ip: config.ip,
        dst_ip: peer,
    };
    let mut template = [0u8; BUF_SIZE];
    let size = net::blast_frame(&mut template, &flow, config.size);
    let mut queued: u64 = 0;
    let mut last_progress = user::rdtsc();
    while queued < config.count {
        let sent = lance.tx().send(|buffer| {
            buffer[..size].copy_from_slice(&template[..size]);
            size
        });
        if sent {
            queued += 1;
            if lance.tx().unkicked() >= KICK_BATCH {
                lance.kick();
            }
            continue;
        }
        // TX ring full: kick and wait for the chip to hand descriptors back.
        if lance.irq_mode() {
            idle_wait(lance, |l| l.tx().has_room());
        } else {
            lance.kick();
            spin_loop();
        }
        if lance.tx().has_room() {
            last_progress = user::rdtsc();
        } else if user::rdtsc().wrapping_sub(last_progress) > TX_STUCK_CYCLES {
            user::fail("blast: the TX ring made no progress (descriptors stay owned by the chip)");
        }
    }
    lance.kick();
    let drain_start = user::rdtsc();
    while lance.tx_in_flight() > 0 {
        if lance.irq_mode() {
            idle_wait(lance, |l| l.tx_in_flight() == 0);
        } else {
            lance.kick();
            spin_loop();
        }
        if user::rdtsc().wrapping_sub(drain_start) > TX_STUCK_CYCLES {
            user::fail("blast: transmitted frames were never handed back by the chip");
        }
    }
    Line::new()
        .text("blast sent=")
        .dec(lance.tx_done - done_before)
        .print();
    if lance.tx_errors > errors_before {
        Line::new()
            .text("blast tx_errors=")
            .dec(lance.tx_errors - errors_before)
            .print();
    }
    user::exit(0)
}

/// Waits up to PING_WAIT_CYCLES for the echo reply `seq` from `peer`, answering ARP and echo
/// requests meanwhile (the peer may ARP for us before it can reply).
fn await_echo_reply(lance: &mut Lance, config: &Config, peer: &[u8; 4], seq: u16) -> bool {
    let mac = lance.mac;
    let start = user::rdtsc();
    while user::rdtsc().wrapping_sub(start) < PING_WAIT_CYCLES {
        let mut answered = false;
        lance.receive(BATCH, |frame, tx| {
            if net::icmp_echo_reply_from(frame, &config.ip, peer, PING_ID) == Some(seq) {
                answered = true;
            } else {
                tx.send(|buffer| {
                    match net::echo_reply(frame, buffer, &mac, &config.ip, config.port) {
                        Some((length, _)) => length,
                        None => 0,
                    }
                });
            }
        });
        lance.kick();
        if answered {
            return true;
        }
        spin_loop();
    }
    false
}

/// `prog=ping`: resolves `peer` by ARP, sends `count` ICMP echo requests one at a time, prints
/// each reply, and exits 0 only if every request was answered.
fn ping(lance: &mut Lance, config: &Config) -> ! {
    let Some(peer) = config.peer else {
        user::fail("bad cmdline: ping needs peer=A.B.C.D")
    };
    let Some(peer_mac) = resolve(lance, &config.ip, &peer) else {
        user::fail("ping: the peer did not answer ARP (check peer= and the network)")
    };
    let flow = UdpFlow {
        src_mac: lance.mac,
        dst_mac: peer_mac,
        src_ip: config.ip,
        dst_ip: peer,
    };
    let mut received: u64 = 0;
    for seq in 1..=config.count {
        let seq = seq as u16;
        lance
            .tx()
            .send(|buffer| net::icmp_echo_request(buffer, &flow, PING_ID, seq, PING_PAYLOAD_LEN));
        lance.kick();
        let answered = await_echo_reply(lance, config, &peer, seq);
        received += u64::from(answered);
        Line::new()
            .text(if answered {
                "ping reply seq="
            } else {
                "ping timeout seq="
            })
            .dec(u64::from(seq))
            .text(" from=")
            .ip(&peer)
            .print();
    }
    Line::new()
        .text("ping done sent=")
        .dec(config.count)
        .text(" received=")
        .dec(received)
        .print();
    if received == config.count {
        user::exit(0)
    }
    user::exit(crate::ring0::EXIT_FAILURE)
}
