//! The TCP programs on the smoltcp stack (`stack.rs`), both spinning on the rings in either mode:
//! - `tcp-sink`: listens on `port=` (default 9), discards what a connection sends and, when the
//!   peer closes, prints bytes and TSC cycles from the first byte to the FIN; serves `count=`
//!   connections one after another (default 1; 0 = forever), then exits 0.
//! - `tcp-source`: connects to `peer=A.B.C.D:PORT`, sends `bytes=` bytes, closes, and exits 0
//!   once every byte and its FIN were acknowledged and the peer closed too.

use core::hint::spin_loop;

use smoltcp::socket::tcp::State;
use smoltcp::wire::{IpEndpoint, Ipv4Address};

use crate::clock::{cycles_to_millis, TscClock};
use crate::cmdline::Config;
use crate::fmt::Line;
use crate::lance::Lance;
use crate::stack::Stack;
use crate::user;

/// How long (ms) tcp-source waits for the connection, and either program for any progress
/// (bytes moved or a state change) before giving up.
const STALL_TIMEOUT_MS: u64 = 10_000;
/// tcp-sink: how long (ms) it waits for its own FIN to be acknowledged before the next listen.
const CLOSE_TIMEOUT_MS: u64 = 2_000;
/// tcp-source: local ports are taken from [EPHEMERAL_BASE, EPHEMERAL_BASE + EPHEMERAL_SPAN).
const EPHEMERAL_BASE: u16 = 49_152;
const EPHEMERAL_SPAN: u64 = 16_384;

/// Appends ` cycles=C`, ` ms=M` when the TSC frequency came from the VMM (not assumed), and the
/// frames lost in the guest (` tx_full_drops=N rx_errors=E`) when there were any.
fn timing(line: &mut Line, config: &Config, cycles: u64, stack: &Stack) {
    line.text(" cycles=").dec(cycles);
    if let Some(khz) = config.tsc_khz {
        line.text(" ms=").dec(cycles_to_millis(cycles, khz));
    }
    let (tx_drops, rx_errors) = (stack.device.tx_full_drops, stack.device.lance.rx_errors);
    if tx_drops != 0 || rx_errors != 0 {
        line.text(" tx_full_drops=")
            .dec(tx_drops)
            .text(" rx_errors=")
            .dec(rx_errors);
    }
}

fn endpoint(line: &mut Line, endpoint: Option<IpEndpoint>) {
    match endpoint {
        Some(IpEndpoint { addr, port }) => {
            let smoltcp::wire::IpAddress::Ipv4(ip) = addr;
            line.ip(&ip.octets()).text(":").dec(u64::from(port));
        }
        None => {
            line.text("?");
        }
    }
}

fn ms_since(clock: &TscClock, since: u64) -> u64 {
    cycles_to_millis(user::rdtsc().wrapping_sub(since), clock.khz())
}

/// `prog=tcp-sink`.
pub fn sink(lance: &mut Lance, config: &Config, clock: TscClock) -> ! {
    let mut stack = Stack::new(lance, config, clock);
    let mut served: u64 = 0;
    loop {
        if stack.tcp().listen(config.port).is_err() {
            user::fail("tcp-sink: cannot listen (port= must be 1..65535)");
        }
        let (bytes, cycles) = sink_one(&mut stack);
        served += 1;
        let mut line = Line::new();
        line.text("tcp-sink bytes=").dec(bytes);
        timing(&mut line, config, cycles, &stack);
        line.print();
        // Close our side too (the peer may wait for our FIN, e.g. `nc -N`), then listen again.
        stack.tcp().close();
        let closing = user::rdtsc();
        while !matches!(stack.tcp().state(), State::Closed | State::TimeWait)
            && ms_since(&stack.clock, closing) < CLOSE_TIMEOUT_MS
        {
            stack.poll();
            spin_loop();
        }
        stack.tcp().abort();
        stack.poll();
        if config.count != 0 && served >= config.count {
            user::exit(0);
        }
    }
}

/// Serves one connection until the peer's FIN; returns the bytes and the TSC cycles from the
/// first byte to the FIN.
fn sink_one(stack: &mut Stack) -> (u64, u64) {
    let mut bytes: u64 = 0;
    let mut first_byte: Option<u64> = None;
    let mut announced = false;
    loop {
        stack.poll();
        let socket = stack.tcp();
        if !announced && socket.is_active() && socket.state() != State::SynReceived {
            announced = true;
            let remote = socket.remote_endpoint();
            let mut line = Line::new();
            line.text("tcp-sink connected from=");
            endpoint(&mut line, remote);
            line.print();
        }
        while socket.can_recv() {
            let Ok(taken) = socket.recv(|data| (data.len(), data.len())) else {
                break;
            };
            if taken > 0 && first_byte.is_none() {
                first_byte = Some(user::rdtsc());
            }
            bytes += taken as u64;
        }
        // FIN received (or the connection reset) and everything before it read.
        if announced && !socket.may_recv() && !socket.can_recv() {
            let end = user::rdtsc();
            return (bytes, first_byte.map_or(0, |start| end.wrapping_sub(start)));
        }
        spin_loop();
    }
}

fn source_fail(what: &str, state: State) -> ! {
    let mut line = Line::new();
    line.text("error tcp-source: ").text(what).text(" (state ");
    line.text(state_name(state)).text(")");
    line.print();
    user::exit(crate::ring0::EXIT_FAILURE)
}

fn state_name(state: State) -> &'static str {
    match state {
        State::Closed => "closed",
        State::Listen => "listen",
        State::SynSent => "syn-sent",
        State::SynReceived => "syn-received",
        State::Established => "established",
        State::FinWait1 => "fin-wait-1",
        State::FinWait2 => "fin-wait-2",
        State::CloseWait => "close-wait",
        State::Closing => "closing",
        State::LastAck => "last-ack",
        State::TimeWait => "time-wait",
    }
}

/// `prog=tcp-source`.
pub fn source(lance: &mut Lance, config: &Config, clock: TscClock) -> ! {
    let (Some(peer), Some(peer_port)) = (config.peer, config.peer_port) else {
        user::fail("bad cmdline: tcp-source needs peer=A.B.C.D:PORT")
    };
    let mut stack = Stack::new(lance, config, clock);
    let [a, b, c, d] = peer;
    let local_port = EPHEMERAL_BASE + (user::rdtsc() % EPHEMERAL_SPAN) as u16;
    if stack
        .connect((Ipv4Address::new(a, b, c, d), peer_port), local_port)
        .is_err()
    {
        user::fail("tcp-source: cannot connect (peer= must be a unicast address, port 1..65535)");
    }
    let mut queued: u64 = 0;
    let mut started: Option<u64> = None;
    let mut acked_at: Option<u64> = None;
    let mut closing = false;
    let mut last_progress = user::rdtsc();
    let mut last_state = State::SynSent;
    loop {
        stack.poll();
        let socket = stack.tcp();
        let state = socket.state();
        if state != last_state {
            last_state = state;
            last_progress = user::rdtsc();
        }
        match state {
            State::SynSent | State::SynReceived => {}
            State::Closed if !closing => source_fail("connection refused or reset", state),
            State::CloseWait if queued < config.bytes => {
                source_fail("the peer closed before all bytes were sent", state)
            }
            _ => {}
        }
        if socket.may_send() && queued < config.bytes {
            started.get_or_insert_with(user::rdtsc);
            while queued < config.bytes && socket.can_send() {
                let left = config.bytes - queued;
                // The payload is whatever the send buffer holds (zeros, then earlier data).
                let Ok(taken) = socket.send(|space| {
                    let n = space.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    (n, n)
                }) else {
                    break;
                };
                if taken == 0 {
                    break;
                }
                queued += taken as u64;
                last_progress = user::rdtsc();
            }
            if queued == config.bytes {
                socket.close();
                closing = true;
            }
        }
        // Our FIN is acknowledged (so is every byte before it) from FIN-WAIT-2 / TIME-WAIT on.
        if closing
            && acked_at.is_none()
            && matches!(state, State::FinWait2 | State::TimeWait | State::Closed)
        {
            acked_at = Some(user::rdtsc());
        }
        if let Some(end) = acked_at {
            if matches!(state, State::TimeWait | State::Closed) {
                let cycles = started.map_or(0, |start| end.wrapping_sub(start));
                let mut line = Line::new();
                line.text("tcp-source bytes=").dec(queued);
                timing(&mut line, config, cycles, &stack);
                line.print();
                user::exit(0);
            }
        }
        if ms_since(&stack.clock, last_progress) > STALL_TIMEOUT_MS {
            source_fail(
                match state {
                    State::SynSent => "connect timed out (no answer from peer=)",
                    State::FinWait2 => "the peer did not close the connection",
                    _ => "no progress for 10 s",
                },
                state,
            );
        }
        spin_loop();
    }
}
