//! The bench's round loop: for each round, each path, each mode, run the echo, receive, transmit
//! and TCP phases with the client/generator/counter in the path's peer namespace; accumulate
//! histograms, rates, drops, the I/O thread's CPU time per frame (receive, transmit) and TCP
//! transfers with the path's host CPU time; build the report; write the `--out` directory.
//!
//! TCP phase (peer TX checksum offload off meanwhile, see [`TxChecksumOffloadOff`]): peer -> guest
//! is timed by the peer's client from connect to the guest's close (so every byte arrived);
//! guest -> peer by the peer's listener from the first byte to EOF. The guest's own `ms=` is not
//! used: QEMU passes the guest no TSC frequency, and one clock for all paths keeps them
//! comparable. Host CPU is sampled around the transfer (guest -> peer: from the guest's ready
//! line, so the connect is included).

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::path::Path;
use std::sync::mpsc;

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::cpu::per_unit;
use super::gen::{rate, run_generator, spawn_counter, CountConfig, FrameFilter, GenConfig};
use super::netns::{join, spawn_in_netns, TxChecksumOffloadOff, VethPairNetns};
use super::packet::{
    UdpFlow, DISCARD_PORT, FCS_LEN, MIN_FRAME_LEN, MIN_FRAME_UDP_PAYLOAD, MTU_UDP_PAYLOAD,
};
use super::report::{
    render_percentile_svg, render_tcp_svg, write_hgrm, BenchReport, DropCount, Measurement,
    PathResult, Pinning, RttSummary, TcpTransfer,
};
use super::rtt::{new_histogram, run_rtt, KernelUdpEcho, RttConfig, WaitMode};
use super::tcp::{spawn_receiver, spawn_sender, Transfer, TCP_SINK_PORT, TCP_SOURCE_PORT};
use super::{BenchError, BenchPlan, Endpoint, GuestMode, PathRunner, Phase, Role, RunningPath};

/// The two echo sizes: (label, UDP payload bytes).
const RTT_SIZES: [(&str, usize); 2] = [("64B", MIN_FRAME_UDP_PAYLOAD), ("1514B", MTU_UDP_PAYLOAD)];
/// Source port of the generator's frames.
const GEN_SRC_PORT: u16 = 40007;
/// How long the transmit-phase counter waits for the path to start sending (VM boot included).
const BLAST_START_ALLOWANCE: Duration = Duration::from_secs(30);
/// The transmit phase ends when nothing arrived for this long after traffic began.
const BLAST_IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// File names of the `--out` plots: latency percentiles and TCP throughput.
const LATENCY_SVG: &str = "latency.svg";
const TCP_SVG: &str = "tcp.svg";
/// UDP port of the kernel echo reference.
const KERNEL_ECHO_PORT: u16 = 7;
/// How long the peer's listener keeps a finished connection open for the CPU sample at most.
const EOF_HOLD_MAX: Duration = Duration::from_secs(5);
/// How long the guest's tcp-source may take after its ready line to connect to the listener.
const TCP_CONNECT_ALLOWANCE: Duration = Duration::from_secs(15);
/// Bytes per MB in `host_cpu_ms_per_mb`, bits per Mb in `mbps`.
const MEGA: f64 = 1e6;
/// The TCP directions: index in [`Accum::tcp`], report name, whose clock times it.
const TCP_TO_GUEST: usize = 0;
const TCP_FROM_GUEST: usize = 1;
const TCP_DIRECTIONS: [(&str, &str); 2] = [
    ("to_guest", "peer client: connect to close"),
    ("from_guest", "peer listener: first byte to EOF"),
];

/// CPU time over a phase and the work done in it, summed over the rounds; the first error if
/// no round could sample it.
#[derive(Default)]
struct CpuAcc {
    cpu: Duration,
    work: u64,
    samples: u32,
    error: Option<String>,
}

impl CpuAcc {
    fn add(
        &mut self,
        before: Result<Duration, BenchError>,
        after: Result<Duration, BenchError>,
        work: u64,
    ) {
        match (before, after) {
            (Ok(b), Ok(a)) if a < b => {
                self.error.get_or_insert_with(|| {
                    "the CPU time went backwards (the process ended while sampled)".into()
                });
            }
            (Ok(b), Ok(a)) if work > 0 => {
                self.cpu += a.saturating_sub(b);
                self.work += work;
                self.samples += 1;
            }
            (Ok(_), Ok(_)) => {
                self.error
                    .get_or_insert_with(|| "no work done while sampled".into());
            }
            (Err(e), _) | (_, Err(e)) => {
                self.error.get_or_insert_with(|| e.to_string());
            }
        }
    }

    /// CPU per work item in `unit`s, or why not.
    fn per(&self, unit: Duration, scale: f64) -> Result<f64, String> {
        if self.samples == 0 {
            return Err(self.error.clone().unwrap_or_else(|| "not sampled".into()));
        }
        per_unit(Duration::ZERO, self.cpu, self.work as f64 / scale, unit)
            .ok_or_else(|| "no work done while sampled".into())
    }
}

/// One TCP direction summed over the rounds.
#[derive(Default)]
struct TcpAcc {
    bytes: u64,
    time: Duration,
    transfers: u32,
    cpu: CpuAcc,
    error: Option<String>,
}

/// Histograms by label `<path>_<mode>_<size>` (and `reference_<name>_<size>`).
pub type HistogramSet = BTreeMap<String, Histogram<u64>>;

#[derive(Default)]
struct Accum {
    lost: [u64; 2],
    echo_answered: u64,
    exits: u64,
    exits_by_reason: BTreeMap<String, u64>,
    exits_reported: bool,
    rx_offered: u64,
    rx_offered_time: Duration,
    rx_delivered: u64,
    rx_delivered_time: Duration,
    tx_frames: u64,
    tx_time: Duration,
    drops: BTreeMap<String, u64>,
    echo_error: Option<String>,
    rx_error: Option<String>,
    tx_error: Option<String>,
    rx_io: CpuAcc,
    tx_io: CpuAcc,
    tcp: [TcpAcc; 2],
}

impl Accum {
    fn add_drop(&mut self, at: &str, frames: u64) {
        if frames > 0 {
            *self.drops.entry(at.to_string()).or_default() += frames;
        }
    }
}

struct Progress {
    started: Instant,
}

impl Progress {
    fn line(&self, text: &str) {
        eprintln!(
            "[bench {:6.1}s] {text}",
            self.started.elapsed().as_secs_f64()
        );
    }
}

fn hist_label(path: &str, mode: &str, size: &str) -> String {
    format!("{path}_{mode}_{size}")
}

fn rtt_config(plan: &BenchPlan, target: SocketAddrV4, payload_len: usize) -> RttConfig {
    RttConfig {
        target,
        payload_len,
        samples: plan.rtt_samples,
        warmup: plan.rtt_warmup,
        timeout: plan.rtt_timeout,
        max_losses: plan.rtt_max_losses,
        max_duration: plan.rtt_max_duration,
        wait: if plan.client_spin {
            WaitMode::Spin
        } else {
            WaitMode::Block
        },
    }
}

/// Run the RTT client inside `netns`, pinned to the plan's client CPU.
fn client_rtt(
    plan: &BenchPlan,
    netns: &str,
    cfg: RttConfig,
) -> Result<super::rtt::RttOutcome, BenchError> {
    let cpu = plan.client_cpu;
    join(spawn_in_netns(netns, "bench-rtt-client", move || {
        if let Some(cpu) = cpu {
            super::pin_current_thread(cpu);
        }
        run_rtt(&cfg)
    })?)
}

fn echo_phase(
    plan: &BenchPlan,
    runner: &mut dyn PathRunner,
    mode: GuestMode,
    acc: &mut Accum,
    hists: &mut HistogramSet,
    progress: &Progress,
) -> Result<(), BenchError> {
    let running = runner.start(mode, &Role::Echo)?;
    let ep = running.endpoint().clone();
    let target = SocketAddrV4::new(ep.dut_ip, ep.echo_port);
    let mut result = Ok(());
    for (i, (size, payload)) in RTT_SIZES.iter().enumerate() {
        match client_rtt(plan, &ep.peer_netns, rtt_config(plan, target, *payload)) {
            Ok(out) => {
                let label = hist_label(runner.name(), mode.name(), size);
                let h = hists.entry(label).or_insert_with(new_histogram);
                let _ = h.add(&out.histogram);
                acc.lost[i] += out.lost;
                acc.echo_answered += out.received + plan.rtt_warmup.saturating_sub(out.warmup_lost);
                let s = RttSummary::from_histogram(&out.histogram, out.lost);
                progress.line(&format!(
                    "{}/{} echo {size}: p50 {} p99 {} max {} us, {} samples, {} lost{}",
                    runner.name(),
                    mode.name(),
                    s.p50,
                    s.p99,
                    s.max,
                    s.samples,
                    out.lost,
                    out.stopped_early
                        .map_or(String::new(), |w| format!(" (stopped: {w})"))
                ));
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let stats = running.finish()?;
    if !stats.kvm_exits.is_empty() {
        acc.exits_reported = true;
        for (reason, n) in &stats.kvm_exits {
            *acc.exits_by_reason.entry(reason.clone()).or_default() += n;
            acc.exits += n;
        }
    }
    for d in &stats.drops {
        acc.add_drop(&format!("echo: {}", d.counted_at), d.frames);
    }
    result
}

fn rx_phase(
    plan: &BenchPlan,
    runner: &mut dyn PathRunner,
    mode: GuestMode,
    acc: &mut Accum,
    progress: &Progress,
) -> Result<(), BenchError> {
    let running = runner.start(
        mode,
        &Role::Sink {
            max_frames: plan.rate_max_frames,
        },
    )?;
    let ep = running.endpoint().clone();
    let io_before = running.io_cpu();
    let cfg = GenConfig {
        ifname: ep.peer_ifname.clone(),
        flow: UdpFlow {
            src_mac: ep.peer_mac,
            dst_mac: ep.dut_mac,
            src_ip: ep.peer_ip,
            dst_ip: ep.dut_ip,
            src_port: GEN_SRC_PORT,
            dst_port: DISCARD_PORT,
        },
        payload_len: MIN_FRAME_UDP_PAYLOAD,
        count: plan.rate_max_frames,
        max_duration: plan.rate_duration,
        rate_pps: None,
        batch: super::gen::DEFAULT_BATCH,
    };
    let cpu = plan.client_cpu;
    let generated = join(spawn_in_netns(
        &ep.peer_netns,
        "bench-generator",
        move || {
            if let Some(cpu) = cpu {
                super::pin_current_thread(cpu);
            }
            run_generator(&cfg)
        },
    )?);
    // Let frames still in flight land before the path stops counting.
    std::thread::sleep(Duration::from_millis(50));
    let io_after = running.io_cpu();
    let stats = running.finish()?;
    let sent = generated?;
    let received = stats.frames_received.ok_or_else(|| BenchError::Path {
        path: runner.name().into(),
        reason: "the sink reported no received-frame count".into(),
    })?;
    acc.rx_io.add(io_before, io_after, received);
    acc.rx_offered += sent.sent;
    acc.rx_offered_time += sent.elapsed;
    acc.rx_delivered += received;
    acc.rx_delivered_time += stats
        .receive_window
        .filter(|w| !w.is_zero())
        .unwrap_or(sent.elapsed);
    acc.add_drop(
        "peer generator: refused by the kernel (device queue full)",
        sent.refused,
    );
    let mut path_drops = 0;
    for d in &stats.drops {
        path_drops += d.frames;
        acc.add_drop(&format!("receive: {}", d.counted_at), d.frames);
    }
    acc.add_drop(
        "receive: offered but neither received nor in a path drop counter",
        sent.sent
            .saturating_sub(received)
            .saturating_sub(path_drops),
    );
    progress.line(&format!(
        "{}/{} receive: offered {:.0} pps ({} frames), delivered {} frames",
        runner.name(),
        mode.name(),
        sent.offered_pps,
        sent.sent,
        received
    ));
    Ok(())
}

fn tx_phase(
    plan: &BenchPlan,
    runner: &mut dyn PathRunner,
    mode: GuestMode,
    ep: &Endpoint,
    acc: &mut Accum,
    progress: &Progress,
) -> Result<(), BenchError> {
    let count = plan.rate_max_frames;
    let counter = spawn_counter(
        &ep.peer_netns,
        &ep.peer_ifname,
        plan.client_cpu,
        CountConfig {
            filter: FrameFilter {
                udp_dst_port: Some(DISCARD_PORT),
                dst_mac: None,
                src_ip: Some(ep.dut_ip),
            },
            expected: Some(count),
            max_duration: BLAST_START_ALLOWANCE + plan.rate_duration,
            idle_timeout: BLAST_IDLE_TIMEOUT,
            max_active: Some(plan.rate_duration),
        },
    )?;
    let running = match runner.start(
        mode,
        &Role::Blast {
            count,
            frame_len: MIN_FRAME_LEN - FCS_LEN,
        },
    ) {
        Ok(r) => r,
        Err(e) => {
            let _ = counter.stop_and_finish();
            return Err(e);
        }
    };
    let io_before = running.io_cpu();
    let counted = counter.finish();
    let io_after = running.io_cpu();
    let stats = running.finish()?;
    let counted = counted?;
    if counted.matched == 0 {
        return Err(BenchError::Path {
            path: runner.name().into(),
            reason: "no frame from the path reached the peer's counter".into(),
        });
    }
    // Frames the counter socket dropped did reach the peer's interface (the socket overflowed
    // after delivery): they count as arrived, so the rate is the path's, not the counter's.
    let arrived = counted.matched + counted.socket_drops;
    acc.tx_io.add(io_before, io_after, arrived);
    acc.tx_frames += arrived.saturating_sub(1);
    acc.tx_time += counted.active;
    acc.add_drop(
        "transmit: peer counter socket overflow (arrived at the peer, counted in tx_pps)",
        counted.socket_drops,
    );
    for d in &stats.drops {
        acc.add_drop(&format!("transmit: {}", d.counted_at), d.frames);
    }
    progress.line(&format!(
        "{}/{} transmit: {:.0} pps arrived at the peer ({} frames counted, {} overflowed the counter{})",
        runner.name(),
        mode.name(),
        rate(arrived.saturating_sub(1), counted.active),
        counted.matched,
        counted.socket_drops,
        stats
            .frames_sent
            .map_or(String::new(), |s| format!("; path sent {s} until stopped"))
    ));
    Ok(())
}

/// A transfer and the path's host CPU before and after it.
type Sampled = (
    Transfer,
    Result<Duration, BenchError>,
    Result<Duration, BenchError>,
);

/// Sample the path's host CPU around `transfer`, then stop the path; the transfer's error wins.
fn timed_transfer(
    running: Box<dyn RunningPath>,
    transfer: impl FnOnce() -> Result<Transfer, BenchError>,
) -> (
    Result<Transfer, BenchError>,
    Result<Duration, BenchError>,
    Result<Duration, BenchError>,
) {
    let before = running.host_cpu();
    let moved = transfer();
    let after = running.host_cpu();
    let finished = running.finish();
    let moved = moved.and_then(|t| finished.map(|_| t));
    (moved, before, after)
}

/// Peer -> guest: the path runs a TCP sink; the bench's client in the peer namespace sends.
fn tcp_to_guest(
    plan: &BenchPlan,
    runner: &mut dyn PathRunner,
    mode: GuestMode,
) -> Result<Sampled, BenchError> {
    let running = runner.start(
        mode,
        &Role::TcpSink {
            port: TCP_SINK_PORT,
        },
    )?;
    let ep = running.endpoint().clone();
    let target = SocketAddrV4::new(ep.dut_ip, TCP_SINK_PORT);
    let (bytes, cpu) = (plan.tcp_bytes, plan.client_cpu);
    let (moved, before, after) = timed_transfer(running, || {
        join(spawn_sender(&ep.peer_netns, target, bytes, cpu)?)
    });
    Ok((moved?, before, after))
}

/// Guest -> peer: the bench's listener in the peer namespace counts; the path runs a TCP source.
fn tcp_from_guest(
    plan: &BenchPlan,
    runner: &mut dyn PathRunner,
    mode: GuestMode,
    ep: &Endpoint,
) -> Result<Sampled, BenchError> {
    let at = SocketAddrV4::new(ep.peer_ip, TCP_SOURCE_PORT);
    // The listener holds the connection open at EOF until the path's CPU time is sampled: the
    // guest's tcp-source (and with it the VM) ends as soon as the peer closes.
    let (eof_tx, eof_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let listener = spawn_receiver(
        &ep.peer_netns,
        at,
        plan.boot_timeout + TCP_CONNECT_ALLOWANCE,
        plan.client_cpu,
        move || {
            let _ = eof_tx.send(());
            let _ = release_rx.recv_timeout(EOF_HOLD_MAX);
        },
    )?;
    let role = Role::TcpSource {
        peer: at,
        bytes: plan.tcp_bytes,
    };
    let running = match runner.start(mode, &role) {
        Ok(r) => r,
        Err(e) => {
            // Release the listener (and its port) at once: an empty connection ends it.
            let _ = spawn_sender(&ep.peer_netns, at, 0, None).map(join);
            let _ = join(listener);
            return Err(e);
        }
    };
    let sampled_at = Instant::now();
    let before = running.host_cpu();
    // Err when the listener ended without EOF: its join below says why.
    let _ = eof_rx.recv();
    let after = running.host_cpu();
    drop(release_tx);
    let moved = join(listener);
    let finished = running.finish();
    let moved = moved?;
    finished?;
    // A VM whose console reaches the bench late (QEMU's, when its main loop shares a CPU with a
    // spinning vCPU) may have begun sending before the first sample: that window is too short.
    let before = if moved.started_at < sampled_at {
        Err(BenchError::Io(
            "the transfer began before the path's ready line reached the bench, so before the \
             first CPU sample"
                .into(),
        ))
    } else {
        before
    };
    if moved.bytes != plan.tcp_bytes {
        return Err(BenchError::Path {
            path: runner.name().into(),
            reason: format!(
                "the peer received {} of the {} bytes the path was to send",
                moved.bytes, plan.tcp_bytes
            ),
        });
    }
    Ok((moved, before, after))
}

/// TCP bulk both ways, with the peer's TX checksum offload off for the phase.
fn tcp_phase(
    plan: &BenchPlan,
    runner: &mut dyn PathRunner,
    mode: GuestMode,
    acc: &mut Accum,
    progress: &Progress,
) {
    let set_up = runner.prepare(mode).and_then(|ep| {
        TxChecksumOffloadOff::new(&ep.peer_netns, &ep.peer_ifname).map(|guard| (ep, guard))
    });
    let (ep, _offload) = match set_up {
        Ok(ready) => ready,
        Err(e) => {
            // Both directions fail with the set-up's error.
            for t in &mut acc.tcp {
                note_error(
                    &mut t.error,
                    &e,
                    progress,
                    &format!("{}/{} tcp", runner.name(), mode.name()),
                );
            }
            return;
        }
    };
    for (dir, (name, _)) in TCP_DIRECTIONS.iter().enumerate() {
        let result = if dir == TCP_TO_GUEST {
            tcp_to_guest(plan, runner, mode)
        } else {
            tcp_from_guest(plan, runner, mode, &ep)
        };
        let label = format!("{}/{} tcp {name}", runner.name(), mode.name());
        let t = &mut acc.tcp[dir];
        match result {
            Ok((moved, before, after)) if !moved.elapsed.is_zero() => {
                t.bytes += moved.bytes;
                t.time += moved.elapsed;
                t.transfers += 1;
                t.cpu.add(before, after, moved.bytes);
                progress.line(&format!(
                    "{label}: {} bytes in {:.3} s = {:.1} Mb/s",
                    moved.bytes,
                    moved.elapsed.as_secs_f64(),
                    moved.bytes as f64 * 8.0 / moved.elapsed.as_secs_f64() / MEGA
                ));
            }
            Ok(_) => note_error(
                &mut t.error,
                &BenchError::Io("the transfer took no measurable time".into()),
                progress,
                &label,
            ),
            Err(e) => note_error(&mut t.error, &e, progress, &label),
        }
    }
}

fn note_error(slot: &mut Option<String>, e: &BenchError, progress: &Progress, what: &str) {
    progress.line(&format!("{what} failed: {e}"));
    slot.get_or_insert_with(|| e.to_string());
}

/// Kernel UDP echo over its own veth pair, measured with the same client: the kernel-stack row.
fn kernel_echo_reference(
    plan: &BenchPlan,
    hists: &mut HistogramSet,
    progress: &Progress,
) -> Result<Measurement, BenchError> {
    let pair = VethPairNetns::create("kref")?;
    let echo = KernelUdpEcho::spawn(&pair.a.netns, KERNEL_ECHO_PORT, false, plan.path_cpu)?;
    let target = SocketAddrV4::new(pair.a.ip, KERNEL_ECHO_PORT);
    let mut m = Measurement::default();
    for (size, payload) in RTT_SIZES {
        let out = client_rtt(plan, &pair.b.netns, rtt_config(plan, target, payload))?;
        let s = RttSummary::from_histogram(&out.histogram, out.lost);
        progress.line(&format!(
            "reference kernel_udp_echo {size}: p50 {} p99 {} us",
            s.p50, s.p99
        ));
        hists.insert(format!("reference_kernel_udp_echo_{size}"), out.histogram);
        if size == RTT_SIZES[0].0 {
            m.rtt_us = Some(s);
        } else {
            m.rtt_us_large = Some(s);
        }
    }
    echo.stop()?;
    for metric in [
        "rx_offered_pps",
        "rx_pps",
        "tx_pps",
        "exits_per_packet",
        "io_cpu_ns_per_frame.rx",
        "io_cpu_ns_per_frame.tx",
        "tcp.to_guest",
        "tcp.from_guest",
    ] {
        m.unavailable_metrics
            .insert(metric.into(), "reference row: echo RTT only".into());
    }
    Ok(m)
}

/// Run `plan.rounds` interleaved rounds over `runners` (every mode of every runner in each round)
/// and build the report (ratios not yet computed) and the histograms.
pub fn run_rounds(
    plan: &BenchPlan,
    runners: &mut [Box<dyn PathRunner>],
) -> Result<(BenchReport, HistogramSet), BenchError> {
    let progress = Progress {
        started: Instant::now(),
    };
    let mut report = BenchReport::new(plan.quick, plan.rounds, "path not measured in this run");
    let mut hists = HistogramSet::new();
    // The calling thread is not pinned: VM processes started from it would inherit its mask.
    // The client, generator and counter threads pin themselves.
    report.pinning.push(Pinning {
        thread: "bench client, generator and counter".into(),
        cpu: plan.client_cpu,
    });
    for r in runners.iter() {
        report.pinning.extend(r.pinning());
    }
    for pin in &report.pinning {
        progress.line(&format!(
            "pinning: {} -> {}",
            pin.thread,
            pin.cpu.map_or("unpinned".into(), |c| format!("cpu {c}"))
        ));
    }
    match kernel_echo_reference(plan, &mut hists, &progress) {
        Ok(m) => {
            report.reference.insert("kernel_udp_echo".into(), m);
        }
        Err(e) => progress.line(&format!("reference kernel_udp_echo failed: {e}")),
    }
    let mut unavailable: BTreeMap<(usize, GuestMode), String> = BTreeMap::new();
    for (i, r) in runners.iter_mut().enumerate() {
        for mode in GuestMode::ALL {
            if let Some(reason) = r.unavailable(mode) {
                progress.line(&format!(
                    "{}/{}: unavailable: {reason}",
                    r.name(),
                    mode.name()
                ));
                unavailable.insert((i, mode), reason);
            }
        }
    }
    let mut accs: BTreeMap<(usize, GuestMode), Accum> = BTreeMap::new();
    for round in 1..=plan.rounds {
        progress.line(&format!("round {round}/{}", plan.rounds));
        for (i, runner) in runners.iter_mut().enumerate() {
            for &mode in &plan.modes {
                if unavailable.contains_key(&(i, mode)) {
                    continue;
                }
                let acc = accs.entry((i, mode)).or_default();
                let runner = runner.as_mut();
                let name = runner.name();
                let label = |phase: &str| format!("{name}/{} {phase}", mode.name());
                if let Err(e) = echo_phase(plan, runner, mode, acc, &mut hists, &progress) {
                    note_error(&mut acc.echo_error, &e, &progress, &label("echo"));
                    if acc.echo_answered == 0 {
                        // Never worked: do not spend more boot timeouts on it in this run.
                        progress.line(&format!(
                            "{}: skipped for the rest of the run",
                            label("all phases")
                        ));
                        unavailable.insert((i, mode), e.to_string());
                        continue;
                    }
                }
                let unsupported = |phase| runner.phase_unavailable(phase);
                let (rx_unsupported, tx_unsupported, tcp_unsupported) = (
                    unsupported(Phase::Rx),
                    unsupported(Phase::Tx),
                    unsupported(Phase::Tcp),
                );
                if let Some(reason) = rx_unsupported.filter(|_| plan.phases.rx) {
                    acc.rx_error.get_or_insert(reason);
                } else if plan.phases.rx {
                    if let Err(e) = rx_phase(plan, runner, mode, acc, &progress) {
                        note_error(&mut acc.rx_error, &e, &progress, &label("receive"));
                    }
                }
                if let Some(reason) = tx_unsupported.filter(|_| plan.phases.tx) {
                    acc.tx_error.get_or_insert(reason);
                } else if plan.phases.tx {
                    let tx = runner
                        .prepare(mode)
                        .and_then(|ep| tx_phase(plan, runner, mode, &ep, acc, &progress));
                    if let Err(e) = tx {
                        note_error(&mut acc.tx_error, &e, &progress, &label("transmit"));
                    }
                }
                if let Some(reason) = tcp_unsupported.filter(|_| plan.phases.tcp) {
                    for t in &mut acc.tcp {
                        t.error.get_or_insert(reason.clone());
                    }
                } else if plan.phases.tcp {
                    tcp_phase(plan, runner, mode, acc, &progress);
                }
            }
        }
    }
    for (i, runner) in runners.iter().enumerate() {
        for mode in GuestMode::ALL {
            let result = if let Some(reason) = unavailable.get(&(i, mode)) {
                PathResult::Unavailable {
                    unavailable: reason.clone(),
                }
            } else if !plan.modes.contains(&mode) {
                PathResult::Unavailable {
                    unavailable: "mode not selected with --modes".into(),
                }
            } else {
                build_result(plan, runner.as_ref(), mode, accs.get(&(i, mode)), &hists)
            };
            report.set(runner.name(), mode.name(), result);
        }
    }
    Ok((report, hists))
}

/// Why a phase's figures are missing: its error, or that it was not selected.
fn phase_missing_reason(error: &Option<String>, selected: bool, phase: &str) -> String {
    match (error, selected) {
        (Some(e), _) => e.clone(),
        (None, false) => "phase not selected with --phases".into(),
        (None, true) => format!("{phase} phase did not run"),
    }
}

fn build_result(
    plan: &BenchPlan,
    runner: &dyn PathRunner,
    mode: GuestMode,
    acc: Option<&Accum>,
    hists: &HistogramSet,
) -> PathResult {
    let Some(acc) = acc else {
        return PathResult::Unavailable {
            unavailable: "no round ran".into(),
        };
    };
    let hist = |size: &str| {
        hists
            .get(&hist_label(runner.name(), mode.name(), size))
            .filter(|h| !h.is_empty())
    };
    let Some(small) = hist(RTT_SIZES[0].0) else {
        return PathResult::Unavailable {
            unavailable: acc
                .echo_error
                .clone()
                .unwrap_or_else(|| "the echo path answered no request".into()),
        };
    };
    let mut m = Measurement {
        rtt_us: Some(RttSummary::from_histogram(small, acc.lost[0])),
        rtt_us_large: hist(RTT_SIZES[1].0).map(|h| RttSummary::from_histogram(h, acc.lost[1])),
        ..Measurement::default()
    };
    let mut why = |metric: &str, reason: String| {
        m.unavailable_metrics.insert(metric.into(), reason);
    };
    if m.rtt_us_large.is_none() {
        why(
            "rtt_us_large",
            acc.echo_error
                .clone()
                .unwrap_or_else(|| "no 1514-byte echo answered".into()),
        );
    }
    if acc.rx_offered_time.is_zero() {
        let reason = phase_missing_reason(&acc.rx_error, plan.phases.rx, "receive");
        why("rx_offered_pps", reason.clone());
        why("rx_pps", reason);
    } else {
        m.rx_offered_pps = Some(rate(acc.rx_offered, acc.rx_offered_time));
        m.rx_pps = Some(rate(acc.rx_delivered, acc.rx_delivered_time));
    }
    if acc.tx_time.is_zero() {
        why(
            "tx_pps",
            phase_missing_reason(&acc.tx_error, plan.phases.tx, "transmit"),
        );
    } else {
        m.tx_pps = Some(rate(acc.tx_frames, acc.tx_time));
    }
    if let Err(reason) = runner.reports_exits() {
        why("exits_per_packet", reason);
    } else if !acc.exits_reported || acc.echo_answered == 0 {
        why(
            "exits_per_packet",
            "the path reported no KVM exit counts".into(),
        );
    } else {
        m.exits_per_packet = Some(acc.exits as f64 / acc.echo_answered as f64);
        m.exits_by_reason = acc.exits_by_reason.clone();
    }
    for (name, io, frames_error, selected, phase) in [
        ("rx", &acc.rx_io, &acc.rx_error, plan.phases.rx, "receive"),
        ("tx", &acc.tx_io, &acc.tx_error, plan.phases.tx, "transmit"),
    ] {
        let value = match io.per(Duration::from_nanos(1), 1.0) {
            Ok(v) => Some(v),
            Err(reason) => {
                let reason = if frames_error.is_some() || !selected {
                    phase_missing_reason(frames_error, selected, phase)
                } else {
                    reason
                };
                m.unavailable_metrics
                    .insert(format!("io_cpu_ns_per_frame.{name}"), reason);
                None
            }
        };
        if name == "rx" {
            m.io_cpu_ns_per_frame.rx = value;
        } else {
            m.io_cpu_ns_per_frame.tx = value;
        }
    }
    for (dir, (name, timed_by)) in TCP_DIRECTIONS.iter().enumerate() {
        let t = &acc.tcp[dir];
        let figure = if t.transfers == 0 || t.time.is_zero() {
            m.unavailable_metrics.insert(
                format!("tcp.{name}"),
                phase_missing_reason(&t.error, plan.phases.tcp, "tcp"),
            );
            None
        } else {
            let host_cpu_ms_per_mb = match t.cpu.per(Duration::from_millis(1), MEGA) {
                Ok(v) => Some(v),
                Err(reason) => {
                    m.unavailable_metrics
                        .insert(format!("tcp.{name}.host_cpu_ms_per_mb"), reason);
                    None
                }
            };
            Some(TcpTransfer {
                mbps: t.bytes as f64 * 8.0 / t.time.as_secs_f64() / MEGA,
                host_cpu_ms_per_mb,
                bytes: t.bytes,
                transfers: t.transfers,
                timed_by: timed_by.to_string(),
            })
        };
        if dir == TCP_FROM_GUEST {
            m.tcp.from_guest = figure;
        } else {
            m.tcp.to_guest = figure;
        }
    }
    m.drops = acc
        .drops
        .iter()
        .map(|(at, frames)| DropCount {
            counted_at: at.clone(),
            frames: *frames,
        })
        .collect();
    PathResult::Measured(Box::new(m))
}

/// Write every histogram as `<label>.hgrm`, all curves into `latency.svg` (one panel per guest
/// mode) and the TCP Mb/s of `report` into `tcp.svg`, under `dir`.
pub fn write_out_dir(
    dir: &Path,
    hists: &HistogramSet,
    report: &BenchReport,
) -> Result<(), BenchError> {
    let io_err =
        |what: &Path, e: std::io::Error| BenchError::Io(format!("writing {}: {e}", what.display()));
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    for (label, h) in hists {
        let file = dir.join(format!("{label}.hgrm"));
        let mut text = Vec::new();
        write_hgrm(&mut text, h).map_err(|e| io_err(&file, e))?;
        std::fs::write(&file, text).map_err(|e| io_err(&file, e))?;
    }
    let series: Vec<(String, &Histogram<u64>)> =
        hists.iter().map(|(l, h)| (l.clone(), h)).collect();
    let svg = render_percentile_svg("lancet bench: echo RTT percentiles", &series);
    let file = dir.join(LATENCY_SVG);
    std::fs::write(&file, svg).map_err(|e| io_err(&file, e))?;
    let svg = render_tcp_svg("lancet bench: TCP bulk throughput", report);
    let file = dir.join(TCP_SVG);
    std::fs::write(&file, svg).map_err(|e| io_err(&file, e))
}
