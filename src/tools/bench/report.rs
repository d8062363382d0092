//! The bench's result model (serde, the `--json` file), its consistency check, the stdout table,
//! the ratios between paths, and the `--out` files: .hgrm percentile distributions, the latency
//! SVG (one panel per guest mode) and the TCP bar chart SVG.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The paths `lancet bench` compares, in report order.
pub const PATHS: [&str; 5] = ["xdp", "tap", "qemu_tap", "raw_xsk", "native"];
/// The guest modes (for raw_xsk: `poll` = spinning on the rings, `irq` = sleeping in poll(2)).
pub const MODES: [&str; 2] = ["irq", "poll"];
/// The ratio pairs reported, numerator over denominator.
pub const RATIO_PAIRS: [(&str, &str); 5] = [
    ("xdp", "native"),
    ("xdp", "tap"),
    ("xdp", "qemu_tap"),
    ("xdp", "raw_xsk"),
    ("tap", "raw_xsk"),
];
/// Version of the JSON layout.
pub const REPORT_VERSION: u32 = 1;

/// Latency percentiles of one RTT histogram, microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RttSummary {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
    pub samples: u64,
    /// Requests that timed out (not in the percentiles).
    pub lost: u64,
}

impl RttSummary {
    pub fn from_histogram(h: &Histogram<u64>, lost: u64) -> Self {
        RttSummary {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
            samples: h.len(),
            lost,
        }
    }
}

/// Frames dropped, and the counter that saw it (e.g. "generator: device queue full",
/// "raw_xsk: XDP_STATISTICS fill ring empty", "guest sink: not received").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCount {
    #[serde(rename = "where")]
    pub counted_at: String,
    pub frames: u64,
}

/// One direction of the TCP bulk phase (totals over the rounds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcpTransfer {
    /// Payload megabits (10^6 bits) per second.
    pub mbps: f64,
    /// Host CPU time (utime + stime) per MB (10^6 bytes) moved, milliseconds: the VMM's or
    /// QEMU's process, all threads; `native`: the kernel sink (to_guest) or source (from_guest)
    /// thread playing the guest's part. `None` with a reason under
    /// `unavailable_metrics["tcp.<direction>.host_cpu_ms_per_mb"]`.
    pub host_cpu_ms_per_mb: Option<f64>,
    /// Payload bytes moved (all rounds).
    pub bytes: u64,
    /// Transfers the figures sum (one per round).
    pub transfers: u32,
    /// Whose clock timed the transfer: `peer client: connect to close` (to_guest) or
    /// `peer listener: first byte to EOF` (from_guest).
    pub timed_by: String,
}

/// The TCP bulk phase: peer -> guest (the guest's tcp-sink) and guest -> peer (tcp-source).
/// A `None` direction has a reason under `unavailable_metrics["tcp.<direction>"]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TcpFigures {
    pub to_guest: Option<TcpTransfer>,
    pub from_guest: Option<TcpTransfer>,
}

/// CPU time of the path's I/O thread per frame moved, nanoseconds (lancet's `lancet-io`, QEMU's
/// main loop, the raw socket's thread): receive flood (`rx`) and transmit blast (`tx`). A `None`
/// has a reason under `unavailable_metrics["io_cpu_ns_per_frame.<rx|tx>"]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct IoCpuPerFrame {
    pub rx: Option<f64>,
    pub tx: Option<f64>,
}

/// Figures of one path in one mode. A `None` metric must have a reason in `unavailable_metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Echo RTT with 64-byte frames (18-byte UDP payload).
    pub rtt_us: Option<RttSummary>,
    /// Echo RTT with a 1472-byte UDP payload (1514-byte frames).
    pub rtt_us_large: Option<RttSummary>,
    /// Rate the peer's generator offered towards the path (64-byte frames).
    pub rx_offered_pps: Option<f64>,
    /// Rate the path's receiver counted.
    pub rx_pps: Option<f64>,
    /// Rate the peer's counter saw from the path's transmitter (64-byte frames).
    pub tx_pps: Option<f64>,
    pub drops: Vec<DropCount>,
    /// KVM exits per echoed packet (all reasons), from the VMM's statistics.
    pub exits_per_packet: Option<f64>,
    /// KVM exits by reason over the echo phase, if the path has a VM.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exits_by_reason: BTreeMap<String, u64>,
    /// The I/O thread's CPU time per frame in the receive and transmit phases.
    #[serde(default)]
    pub io_cpu_ns_per_frame: IoCpuPerFrame,
    /// TCP bulk throughput and host CPU, both directions.
    #[serde(default)]
    pub tcp: TcpFigures,
    /// Metric name -> why it is null.
    #[serde(default)]
    pub unavailable_metrics: BTreeMap<String, String>,
}

/// One path in one mode: measured, or unavailable with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PathResult {
    Unavailable { unavailable: String },
    Measured(Box<Measurement>),
}

impl PathResult {
    pub fn measured(&self) -> Option<&Measurement> {
        match self {
            PathResult::Measured(m) => Some(m.as_ref()),
            PathResult::Unavailable { .. } => None,
        }
    }
}

/// `numerator / denominator` for the headline figures; null when either side lacks the figure.
/// Below 1 is better for RTT, above 1 is better for rates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RatioSet {
    pub rtt_p50: Option<f64>,
    pub rtt_p99: Option<f64>,
    pub rx_pps: Option<f64>,
    pub tx_pps: Option<f64>,
    /// I/O thread CPU ns per frame (lower is better).
    #[serde(default)]
    pub rx_io_cpu_ns_per_frame: Option<f64>,
    #[serde(default)]
    pub tx_io_cpu_ns_per_frame: Option<f64>,
    /// TCP Mb/s (higher is better) and host CPU ms per MB (lower is better).
    #[serde(default)]
    pub tcp_to_guest_mbps: Option<f64>,
    #[serde(default)]
    pub tcp_from_guest_mbps: Option<f64>,
    #[serde(default)]
    pub tcp_to_guest_cpu_ms_per_mb: Option<f64>,
    #[serde(default)]
    pub tcp_from_guest_cpu_ms_per_mb: Option<f64>,
}

/// A thread the bench pinned, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pinning {
    pub thread: String,
    pub cpu: Option<usize>,
}

/// The whole `--json` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub version: u32,
    pub quick: bool,
    pub rounds: u32,
    pub duration_s: f64,
    /// Kernel and CPU count of the machine (figures are only comparable on the same machine).
    pub machine: String,
    pub pinning: Vec<Pinning>,
    /// path -> mode -> result, for every path in [`PATHS`] and mode in [`MODES`].
    pub paths: BTreeMap<String, BTreeMap<String, PathResult>>,
    /// mode -> "num/den" -> ratios.
    pub ratios: BTreeMap<String, BTreeMap<String, RatioSet>>,
    /// Extra reference rows measured with the same client (e.g. `kernel_udp_echo`).
    #[serde(default)]
    pub reference: BTreeMap<String, Measurement>,
}

impl BenchReport {
    /// An empty report in which every path/mode is unavailable with `reason` until filled in.
    pub fn new(quick: bool, rounds: u32, reason: &str) -> Self {
        let paths = PATHS
            .iter()
            .map(|p| {
                let modes = MODES
                    .iter()
                    .map(|m| {
                        (
                            m.to_string(),
                            PathResult::Unavailable {
                                unavailable: reason.to_string(),
                            },
                        )
                    })
                    .collect();
                (p.to_string(), modes)
            })
            .collect();
        BenchReport {
            version: REPORT_VERSION,
            quick,
            rounds,
            duration_s: 0.0,
            machine: machine_description(),
            pinning: Vec::new(),
            paths,
            ratios: BTreeMap::new(),
            reference: BTreeMap::new(),
        }
    }

    pub fn set(&mut self, path: &str, mode: &str, result: PathResult) {
        self.paths
            .entry(path.to_string())
            .or_default()
            .insert(mode.to_string(), result);
    }

    pub fn get(&self, path: &str, mode: &str) -> Option<&PathResult> {
        self.paths.get(path)?.get(mode)
    }

    /// Fill [`BenchReport::ratios`] from the measured paths.
    pub fn compute_ratios(&mut self) {
        let mut ratios = BTreeMap::new();
        for mode in MODES {
            let mut per_mode = BTreeMap::new();
            for (num, den) in RATIO_PAIRS {
                let a = self.get(num, mode).and_then(PathResult::measured);
                let b = self.get(den, mode).and_then(PathResult::measured);
                let ratio = |f: &dyn Fn(&Measurement) -> Option<f64>| -> Option<f64> {
                    let x = f(a?)?;
                    let y = f(b?)?;
                    (y > 0.0 && x.is_finite() && y.is_finite()).then(|| x / y)
                };
                per_mode.insert(
                    format!("{num}/{den}"),
                    RatioSet {
                        rtt_p50: ratio(&|m| m.rtt_us.map(|r| r.p50 as f64)),
                        rtt_p99: ratio(&|m| m.rtt_us.map(|r| r.p99 as f64)),
                        rx_pps: ratio(&|m| m.rx_pps),
                        tx_pps: ratio(&|m| m.tx_pps),
                        rx_io_cpu_ns_per_frame: ratio(&|m| m.io_cpu_ns_per_frame.rx),
                        tx_io_cpu_ns_per_frame: ratio(&|m| m.io_cpu_ns_per_frame.tx),
                        tcp_to_guest_mbps: ratio(&|m| Some(m.tcp.to_guest.as_ref()?.mbps)),
                        tcp_from_guest_mbps: ratio(&|m| Some(m.tcp.from_guest.as_ref()?.mbps)),
                        tcp_to_guest_cpu_ms_per_mb: ratio(&|m| {
                            m.tcp.to_guest.as_ref()?.host_cpu_ms_per_mb
                        }),
                        tcp_from_guest_cpu_ms_per_mb: ratio(&|m| {
                            m.tcp.from_guest.as_ref()?.host_cpu_ms_per_mb
                        }),
                    },
                );
            }
            ratios.insert(mode.to_string(), per_mode);
        }
        self.ratios = ratios;
    }

    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

fn machine_description() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown kernel".into());
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    format!("Linux {kernel}, {cpus} CPUs")
}

fn check_rtt(label: &str, rtt: &RttSummary, problems: &mut Vec<String>) {
    if rtt.samples == 0 {
        problems.push(format!("{label}: no samples"));
    }
    let ordered =
        rtt.p50 <= rtt.p90 && rtt.p90 <= rtt.p99 && rtt.p99 <= rtt.p999 && rtt.p999 <= rtt.max;
    if !ordered {
        problems.push(format!("{label}: percentiles not ordered: {rtt:?}"));
    }
    if !(rtt.mean.is_finite() && rtt.mean <= rtt.max as f64) {
        problems.push(format!(
            "{label}: mean {} not within 0..=max {}",
            rtt.mean, rtt.max
        ));
    }
}

/// Check that the report is complete and consistent: every path and mode present, each either
/// unavailable with a non-empty reason or measured with an RTT (samples > 0, p50 <= p90 <= p99 <=
/// p99.9 <= max), finite non-negative rates, and a reason for every null metric; ratios present.
/// Returns every problem found.
pub fn check_report(report: &BenchReport) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for path in PATHS {
        for mode in MODES {
            let label = format!("{path}/{mode}");
            match report.get(path, mode) {
                None => problems.push(format!("{label}: missing")),
                Some(PathResult::Unavailable { unavailable }) => {
                    if unavailable.trim().is_empty() {
                        problems.push(format!("{label}: unavailable without a reason"));
                    }
                }
                Some(PathResult::Measured(m)) => check_measurement(&label, m, &mut problems),
            }
        }
    }
    for mode in MODES {
        for (num, den) in RATIO_PAIRS {
            if report
                .ratios
                .get(mode)
                .and_then(|r| r.get(&format!("{num}/{den}")))
                .is_none()
            {
                problems.push(format!("ratios: {mode} {num}/{den} missing"));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn check_measurement(label: &str, m: &Measurement, problems: &mut Vec<String>) {
    match &m.rtt_us {
        Some(rtt) => check_rtt(&format!("{label} rtt_us"), rtt, problems),
        None => problems.push(format!("{label}: measured but no rtt_us")),
    }
    if let Some(rtt) = &m.rtt_us_large {
        check_rtt(&format!("{label} rtt_us_large"), rtt, problems);
    }
    let tcp_mbps = |t: &Option<TcpTransfer>| t.as_ref().map(|t| t.mbps);
    let metrics = [
        ("rtt_us_large", m.rtt_us_large.map(|r| r.mean)),
        ("rx_offered_pps", m.rx_offered_pps),
        ("rx_pps", m.rx_pps),
        ("tx_pps", m.tx_pps),
        ("exits_per_packet", m.exits_per_packet),
        ("io_cpu_ns_per_frame.rx", m.io_cpu_ns_per_frame.rx),
        ("io_cpu_ns_per_frame.tx", m.io_cpu_ns_per_frame.tx),
        ("tcp.to_guest", tcp_mbps(&m.tcp.to_guest)),
        ("tcp.from_guest", tcp_mbps(&m.tcp.from_guest)),
    ];
    for (dir, t) in [
        ("to_guest", &m.tcp.to_guest),
        ("from_guest", &m.tcp.from_guest),
    ] {
        let Some(t) = t else { continue };
        if !(t.mbps.is_finite() && t.mbps > 0.0) || t.bytes == 0 || t.transfers == 0 {
            problems.push(format!(
                "{label} tcp.{dir}: mbps {} over {} bytes in {} transfers: not a measured transfer",
                t.mbps, t.bytes, t.transfers
            ));
        }
        let name = format!("tcp.{dir}.host_cpu_ms_per_mb");
        match t.host_cpu_ms_per_mb {
            Some(v) if !(v.is_finite() && v >= 0.0) => problems.push(format!(
                "{label} {name}: {v} is not a finite non-negative number"
            )),
            Some(_) => {}
            None => {
                if m.unavailable_metrics
                    .get(&name)
                    .map(|r| r.trim())
                    .is_none_or_empty()
                {
                    problems.push(format!(
                        "{label} {name}: null without a reason in unavailable_metrics"
                    ));
                }
            }
        }
    }
    for (name, value) in metrics {
        match value {
            Some(v) if !(v.is_finite() && v >= 0.0) => problems.push(format!(
                "{label} {name}: {v} is not a finite non-negative number"
            )),
            Some(_) => {}
            None => {
                let reason = m.unavailable_metrics.get(name).map(|r| r.trim());
                if reason.is_none_or_empty() {
                    problems.push(format!(
                        "{label} {name}: null without a reason in unavailable_metrics"
                    ));
                }
            }
        }
    }
    for drop in &m.drops {
        if drop.counted_at.trim().is_empty() {
            problems.push(format!(
                "{label}: a drop count without saying where it was counted"
            ));
        }
    }
}

trait NoneOrEmpty {
    fn is_none_or_empty(&self) -> bool;
}

impl NoneOrEmpty for Option<&str> {
    fn is_none_or_empty(&self) -> bool {
        self.map_or(true, str::is_empty)
    }
}

fn fmt_opt(v: Option<f64>, scale: f64, decimals: usize) -> String {
    v.map_or_else(
        || "-".to_string(),
        |v| format!("{:.*}", decimals, v / scale),
    )
}

/// The stdout table: one row per path and mode, then the ratios.
pub fn render_table(report: &BenchReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<9} {:<4} | {:>6} {:>6} {:>6} {:>7} {:>7} {:>8} {:>7} | {:>7} {:>7} | {:>8} {:>8} {:>8} | {:>9} {:>8}",
        "path", "mode", "p50", "p90", "p99", "p99.9", "max", "mean", "samples", "p50 1K", "p99 1K",
        "rx offer", "rx kpps", "tx kpps", "drops", "exits/pk"
    );
    let _ = writeln!(
        out,
        "{:-<9} {:-<4} | {:-<58} | {:-<15} | {:-<26} | {:-<18}",
        "", "", "", "", "", ""
    );
    for path in PATHS {
        for mode in MODES {
            match report.get(path, mode) {
                Some(PathResult::Measured(m)) => {
                    let r = m.rtt_us;
                    let big = m.rtt_us_large;
                    let u = |f: fn(&RttSummary) -> u64| r.map_or("-".into(), |r| f(&r).to_string());
                    let drops: u64 = m.drops.iter().map(|d| d.frames).sum();
                    let _ = writeln!(
                        out,
                        "{:<9} {:<4} | {:>6} {:>6} {:>6} {:>7} {:>7} {:>8} {:>7} | {:>7} {:>7} | {:>8} {:>8} {:>8} | {:>9} {:>8}",
                        path,
                        mode,
                        u(|r| r.p50),
                        u(|r| r.p90),
                        u(|r| r.p99),
                        u(|r| r.p999),
                        u(|r| r.max),
                        fmt_opt(r.map(|r| r.mean), 1.0, 1),
                        u(|r| r.samples),
                        big.map_or("-".into(), |r| r.p50.to_string()),
                        big.map_or("-".into(), |r| r.p99.to_string()),
                        fmt_opt(m.rx_offered_pps, 1000.0, 1),
                        fmt_opt(m.rx_pps, 1000.0, 1),
                        fmt_opt(m.tx_pps, 1000.0, 1),
                        drops,
                        fmt_opt(m.exits_per_packet, 1.0, 2),
                    );
                }
                Some(PathResult::Unavailable { unavailable }) => {
                    let _ = writeln!(out, "{path:<9} {mode:<4} | unavailable: {unavailable}");
                }
                None => {
                    let _ = writeln!(out, "{path:<9} {mode:<4} | missing");
                }
            }
        }
    }
    for (name, m) in &report.reference {
        if let Some(r) = m.rtt_us {
            let _ = writeln!(
                out,
                "reference {name}: rtt p50 {} p90 {} p99 {} p99.9 {} max {} mean {:.1} us ({} samples)",
                r.p50, r.p90, r.p99, r.p999, r.max, r.mean, r.samples
            );
        }
    }
    let _ = writeln!(
        out,
        "\nratios (RTT: lower is better; rates: higher is better)"
    );
    let _ = writeln!(
        out,
        "{:<4} {:<13} | {:>8} {:>8} {:>8} {:>8}",
        "mode", "pair", "rtt p50", "rtt p99", "rx pps", "tx pps"
    );
    for (mode, pairs) in &report.ratios {
        for (pair, r) in pairs {
            let _ = writeln!(
                out,
                "{:<4} {:<13} | {:>8} {:>8} {:>8} {:>8}",
                mode,
                pair,
                fmt_opt(r.rtt_p50, 1.0, 2),
                fmt_opt(r.rtt_p99, 1.0, 2),
                fmt_opt(r.rx_pps, 1.0, 2),
                fmt_opt(r.tx_pps, 1.0, 2),
            );
        }
    }
    render_cpu_tcp(report, &mut out);
    let _ = writeln!(
        out,
        "\n{} ({}), {:.1} s",
        report.machine,
        if report.quick { "quick" } else { "default" },
        report.duration_s
    );
    for pin in &report.pinning {
        let _ = writeln!(
            out,
            "pinned: {} -> {}",
            pin.thread,
            pin.cpu.map_or("unpinned".into(), |c| format!("cpu {c}"))
        );
    }
    out
}

/// Ticks per half distance in the .hgrm percentile iteration (HdrHistogram's default is 5).
const HGRM_TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Write `h` (microseconds) in HdrHistogram's percentile distribution text format (.hgrm), as
/// `outputPercentileDistribution` with a value unit ratio of 1, readable by the HdrHistogram plotter.
pub fn write_hgrm(out: &mut dyn Write, h: &Histogram<u64>) -> io::Result<()> {
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let mut total = 0u64;
    for v in h.iter_quantiles(HGRM_TICKS_PER_HALF_DISTANCE) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let value = v.value_iterated_to() as f64;
        if q < 1.0 {
            writeln!(
                out,
                "{value:12.3} {q:2.12} {total:10} {:14.2}",
                1.0 / (1.0 - q)
            )?;
        } else {
            writeln!(out, "{value:12.3} {q:2.12} {total:10}")?;
        }
    }
    let sub_buckets = (2.0 * 10f64.powi(i32::from(h.sigfig())))
        .log2()
        .ceil()
        .exp2() as u64;
    writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean(),
        h.stdev()
    )?;
    writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64,
        h.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets
    )?;
    Ok(())
}

/// Width of both SVGs (pixels).
const SVG_WIDTH: f64 = 1000.0;
/// Height of the title band above the panels (pixels).
const TITLE_HEIGHT: f64 = 40.0;
/// Height of one guest-mode panel, plot and tick labels included (pixels).
const PANEL_HEIGHT: f64 = 440.0;
/// Plot area of a panel: left and right edges (pixels from the SVG's left edge).
const PLOT_LEFT: f64 = 80.0;
const PLOT_RIGHT: f64 = 700.0;
/// Plot area of a panel: top and bottom edges (pixels from the panel's top).
const PLOT_TOP: f64 = 30.0;
const PLOT_BOTTOM: f64 = 380.0;
/// The x axis spans at least this many decades of 1/(1-percentile), even for < 10 samples.
const MIN_X_DECADES: f64 = 1.0;
/// Line colour of each path's curves (and nothing else uses these colours).
pub const PATH_COLORS: [(&str, &str); 5] = [
    ("xdp", "#1f77b4"),
    ("tap", "#d62728"),
    ("qemu_tap", "#2ca02c"),
    ("raw_xsk", "#ff7f0e"),
    ("native", "#9467bd"),
];
/// Colour of a curve whose path is not in [`PATH_COLORS`] (e.g. a reference row).
pub const OTHER_PATH_COLOR: &str = "#7f7f7f";
/// `stroke-dasharray` of each frame size's curves; `None` is a solid line.
pub const SIZE_DASHES: [(&str, Option<&str>); 2] = [("64B", None), ("1514B", Some("6 3"))];
/// `stroke-dasharray` of a frame size not in [`SIZE_DASHES`].
pub const OTHER_SIZE_DASH: &str = "2 3";
/// The TCP directions plotted: report field name, legend text, bar colour.
pub const TCP_DIRECTIONS: [(&str, &str, &str); 2] = [
    ("to_guest", "to guest", "#1f77b4"),
    ("from_guest", "from guest", "#ff7f0e"),
];
/// Width of one TCP bar and the gap between path groups (pixels).
const BAR_WIDTH: f64 = 30.0;
const BAR_GROUP_GAP: f64 = 40.0;
/// Horizontal grid lines of the TCP chart (above the zero line).
const TCP_Y_TICKS: u32 = 5;

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Path, guest mode and frame size of a histogram label `<path>_<mode>_<size>`; a label without a
/// mode (e.g. `reference_kernel_udp_echo_64B`) has `mode: None` and belongs in every panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SeriesKey<'a> {
    path: &'a str,
    mode: Option<&'a str>,
    size: &'a str,
}

/// Split a histogram label into its [`SeriesKey`] (path names may themselves contain `_`).
fn parse_series_label(label: &str) -> SeriesKey<'_> {
    let Some((rest, size)) = label.rsplit_once('_') else {
        return SeriesKey {
            path: label,
            mode: None,
            size: "",
        };
    };
    match rest.rsplit_once('_') {
        Some((path, mode)) if MODES.contains(&mode) => SeriesKey {
            path,
            mode: Some(mode),
            size,
        },
        _ => SeriesKey {
            path: rest,
            mode: None,
            size,
        },
    }
}

/// The fixed colour of `path`'s curves.
fn path_color(path: &str) -> &'static str {
    PATH_COLORS
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(OTHER_PATH_COLOR, |(_, c)| c)
}

/// The ` stroke-dasharray="..."` attribute of `size`'s curves (empty for a solid line).
fn size_dash_attr(size: &str) -> String {
    let dash = SIZE_DASHES
        .iter()
        .find(|(s, _)| *s == size)
        .map_or(Some(OTHER_SIZE_DASH), |(_, d)| *d);
    dash.map_or_else(String::new, |d| format!(r#" stroke-dasharray="{d}""#))
}

/// Tick label of `decade` nines on the percentile axis: 0, 90, 99, 99.9, 99.99, ...
fn nines_label(decade: u32) -> String {
    match decade {
        0 => "0".to_string(),
        1 => "90".to_string(),
        d => {
            let fraction = "9".repeat(d as usize - 2);
            if fraction.is_empty() {
                "99".to_string()
            } else {
                format!("99.{fraction}")
            }
        }
    }
}

/// The largest `k` with `10^k <= samples`: the last whole decade of nines `samples` support.
fn supported_decades(samples: u64) -> u32 {
    let mut k = 0;
    let mut power = Some(10u64);
    while let Some(p) = power.filter(|p| *p <= samples) {
        k += 1;
        power = p.checked_mul(10);
    }
    k
}

/// One curve of a latency panel.
#[derive(Clone, Copy)]
struct Curve<'a> {
    label: &'a str,
    key: SeriesKey<'a>,
    hist: &'a Histogram<u64>,
}

/// Scales of one latency panel: x in decades of 1/(1-p), y in decades of microseconds.
struct LatencyAxes {
    /// Panel's top edge in the SVG (pixels).
    top: f64,
    /// Decades on the x axis: log10 of the largest sample count (the largest supported p).
    x_decades: f64,
    /// Last whole decade with a tick.
    last_tick: u32,
    lo_decade: f64,
    hi_decade: f64,
}

impl LatencyAxes {
    /// Axes fitting `curves`: x up to the largest p with (1-p) * samples >= 1, y over min..max.
    fn fit(top: f64, curves: &[Curve<'_>]) -> Self {
        let samples = curves.iter().map(|c| c.hist.len()).max().unwrap_or(0);
        let last_tick = supported_decades(samples);
        let x_decades = (samples.max(1) as f64)
            .log10()
            .max(f64::from(last_tick))
            .max(MIN_X_DECADES);
        let y_min = curves
            .iter()
            .map(|c| c.hist.min().max(1))
            .min()
            .unwrap_or(1) as f64;
        let y_max = curves
            .iter()
            .map(|c| c.hist.max().max(2))
            .max()
            .unwrap_or(10) as f64;
        let lo_decade = y_min.log10().floor();
        let hi_decade = y_max.log10().ceil().max(lo_decade + 1.0);
        LatencyAxes {
            top,
            x_decades,
            last_tick,
            lo_decade,
            hi_decade,
        }
    }

    /// x of a decade count on the percentile axis.
    fn x_of_decades(&self, d: f64) -> f64 {
        PLOT_LEFT + d.min(self.x_decades) / self.x_decades * (PLOT_RIGHT - PLOT_LEFT)
    }

    /// x of percentile `q` (0..=1); beyond the supported range the curve stays at the right edge.
    fn x_of(&self, q: f64) -> f64 {
        let d = if q >= 1.0 {
            self.x_decades
        } else {
            -(1.0 - q).log10()
        };
        self.x_of_decades(d.max(0.0))
    }

    /// y of a latency in microseconds (log scale).
    fn y_of(&self, us: f64) -> f64 {
        let d = (us.max(1.0).log10() - self.lo_decade) / (self.hi_decade - self.lo_decade);
        self.top + PLOT_BOTTOM - d * (PLOT_BOTTOM - PLOT_TOP)
    }

    fn plot_top(&self) -> f64 {
        self.top + PLOT_TOP
    }

    fn plot_bottom(&self) -> f64 {
        self.top + PLOT_BOTTOM
    }

    /// The latency decades with a grid line and tick label.
    fn y_decades(&self) -> impl Iterator<Item = f64> {
        let (lo, hi) = (self.lo_decade, self.hi_decade);
        (0..)
            .map(move |i| lo + f64::from(i))
            .take_while(move |d| *d <= hi)
    }
}

/// The SVG prologue: root element, white background and the centred title.
fn svg_open(svg: &mut String, title: &str, height: f64) {
    let _ = writeln!(
        svg,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_WIDTH}" height="{height}" viewBox="0 0 {SVG_WIDTH} {height}" font-family="sans-serif" font-size="12">
<rect x="0" y="0" width="{SVG_WIDTH}" height="{height}" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="16">{}</text>"#,
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        xml_escape(title)
    );
}

/// The latency panel's grid, frame, tick labels and axis titles.
fn write_latency_axes(svg: &mut String, mode: &str, axes: &LatencyAxes) {
    let (top, bottom) = (axes.plot_top(), axes.plot_bottom());
    let _ = writeln!(
        svg,
        r##"<g class="grid" stroke="#dddddd" stroke-width="1">"##
    );
    for d in 0..=axes.last_tick {
        let x = axes.x_of_decades(f64::from(d));
        let _ = writeln!(
            svg,
            r#"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}"/>"#
        );
    }
    for decade in axes.y_decades() {
        let y = axes.y_of(10f64.powf(decade));
        let _ = writeln!(
            svg,
            r#"<line x1="{PLOT_LEFT}" y1="{y:.1}" x2="{PLOT_RIGHT}" y2="{y:.1}"/>"#
        );
    }
    let _ = writeln!(svg, "</g>");
    let _ = writeln!(svg, r#"<g class="axes" fill="black">"#);
    let _ = writeln!(
        svg,
        r#"<rect x="{PLOT_LEFT}" y="{top}" width="{}" height="{}" fill="none" stroke="black"/>"#,
        PLOT_RIGHT - PLOT_LEFT,
        bottom - top
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="14">guest mode: {}</text>"#,
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        top - 8.0,
        xml_escape(mode)
    );
    for d in 0..=axes.last_tick {
        let _ = writeln!(
            svg,
            r#"<text class="x-tick" x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            axes.x_of_decades(f64::from(d)),
            bottom + 18.0,
            nines_label(d)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile (%)</text>"#,
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        bottom + 40.0
    );
    for decade in axes.y_decades() {
        let _ = writeln!(
            svg,
            r#"<text class="y-tick" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            PLOT_LEFT - 6.0,
            axes.y_of(10f64.powf(decade)) + 4.0,
            10f64.powf(decade) as u64
        );
    }
    let mid = (top + bottom) / 2.0;
    let _ = writeln!(
        svg,
        r#"<text x="20" y="{mid}" text-anchor="middle" transform="rotate(-90 20 {mid})">RTT (us, log scale)</text>"#
    );
    let _ = writeln!(svg, "</g>");
}

/// One polyline per curve: colour by path, dash style by frame size.
fn write_latency_curves(svg: &mut String, axes: &LatencyAxes, curves: &[Curve<'_>]) {
    let _ = writeln!(svg, r#"<g class="series" fill="none" stroke-width="2">"#);
    for c in curves {
        let mut points = String::new();
        for v in c.hist.iter_quantiles(HGRM_TICKS_PER_HALF_DISTANCE) {
            let _ = write!(
                points,
                "{:.1},{:.1} ",
                axes.x_of(v.quantile_iterated_to()),
                axes.y_of(v.value_iterated_to() as f64)
            );
        }
        let _ = writeln!(
            svg,
            r#"<polyline stroke="{}"{} data-path="{}" data-size="{}" points="{}"><title>{}</title></polyline>"#,
            path_color(c.key.path),
            size_dash_attr(c.key.size),
            xml_escape(c.key.path),
            xml_escape(c.key.size),
            points.trim_end(),
            xml_escape(c.label)
        );
    }
    let _ = writeln!(svg, "</g>");
}

/// One `<g id="panel-<mode>">` with its own axes and the curves of `mode` (and mode-less ones).
fn write_latency_panel(svg: &mut String, mode: &str, top: f64, curves: &[Curve<'_>]) {
    let axes = LatencyAxes::fit(top, curves);
    let _ = writeln!(svg, r#"<g id="panel-{}">"#, xml_escape(mode));
    write_latency_axes(svg, mode, &axes);
    write_latency_curves(svg, &axes, curves);
    let _ = writeln!(svg, "</g>");
}

/// A legend entry: a short line in `stroke` (with `dash`) and its text, at row `row`.
fn write_legend_row(svg: &mut String, row: usize, stroke: &str, dash: &str, text: &str) {
    let y = TITLE_HEIGHT + PLOT_TOP + 10.0 + row as f64 * 18.0;
    let _ = writeln!(
        svg,
        r#"<line x1="{}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="{stroke}"{dash} stroke-width="3"/><text x="{}" y="{:.1}">{}</text>"#,
        PLOT_RIGHT + 15.0,
        PLOT_RIGHT + 45.0,
        PLOT_RIGHT + 51.0,
        y + 4.0,
        xml_escape(text)
    );
}

/// The legend: one colour per path plotted, then one dash style per frame size plotted.
fn write_latency_legend(svg: &mut String, curves: &[Curve<'_>]) {
    let mut paths: Vec<&str> = Vec::new();
    let mut sizes: Vec<&str> = Vec::new();
    for c in curves {
        if !paths.contains(&c.key.path) {
            paths.push(c.key.path);
        }
        if !sizes.contains(&c.key.size) {
            sizes.push(c.key.size);
        }
    }
    let _ = writeln!(svg, r#"<g id="legend">"#);
    for (row, path) in paths.iter().enumerate() {
        write_legend_row(svg, row, path_color(path), "", path);
    }
    for (i, size) in sizes.iter().enumerate() {
        let text = size
            .strip_suffix('B')
            .map_or(size.to_string(), |n| format!("{n} B"));
        write_legend_row(
            svg,
            paths.len() + 1 + i,
            "black",
            &size_dash_attr(size),
            &text,
        );
    }
    let _ = writeln!(svg, "</g>");
}

/// The latency SVG: one panel per guest mode in [`MODES`] (stacked, each with its own axes) with
/// the percentile curves of `series` (label `<path>_<mode>_<size>`, histogram in us), in
/// HdrHistogram's style: x = percentile on a log scale of 1/(1-p) up to the largest percentile the
/// panel's sample count supports, y = latency (log scale). Paths are told apart by colour
/// ([`PATH_COLORS`]), frame sizes by dash style ([`SIZE_DASHES`]).
pub fn render_percentile_svg(title: &str, series: &[(String, &Histogram<u64>)]) -> String {
    let curves: Vec<Curve<'_>> = series
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(label, hist)| Curve {
            label,
            key: parse_series_label(label),
            hist,
        })
        .collect();
    let height = TITLE_HEIGHT + PANEL_HEIGHT * MODES.len() as f64;
    let mut svg = String::new();
    svg_open(&mut svg, title, height);
    for (i, mode) in MODES.iter().enumerate() {
        let in_panel: Vec<Curve<'_>> = curves
            .iter()
            .filter(|c| c.key.mode.map_or(true, |m| m == *mode))
            .copied()
            .collect();
        let top = TITLE_HEIGHT + PANEL_HEIGHT * i as f64;
        write_latency_panel(&mut svg, mode, top, &in_panel);
    }
    write_latency_legend(&mut svg, &curves);
    let _ = writeln!(svg, "</svg>");
    svg
}

/// One bar of the TCP chart.
#[derive(Debug, Clone, Copy, PartialEq)]
struct TcpBar<'a> {
    path: &'a str,
    /// Index into [`TCP_DIRECTIONS`].
    direction: usize,
    mbps: f64,
}

/// The TCP Mb/s of every path measured in `mode`, in [`PATHS`] order, `to_guest` before
/// `from_guest`; directions without a figure are left out.
fn tcp_bars<'a>(report: &'a BenchReport, mode: &str) -> Vec<TcpBar<'a>> {
    let mut bars = Vec::new();
    for path in PATHS {
        let Some(m) = report.get(path, mode).and_then(PathResult::measured) else {
            continue;
        };
        for (direction, t) in [&m.tcp.to_guest, &m.tcp.from_guest].iter().enumerate() {
            if let Some(t) = t.as_ref().filter(|t| t.mbps.is_finite() && t.mbps > 0.0) {
                bars.push(TcpBar {
                    path,
                    direction,
                    mbps: t.mbps,
                });
            }
        }
    }
    bars
}

/// The smallest 1, 2 or 5 times a power of ten that is >= `v` (the bar chart's y axis top).
fn nice_ceiling(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * power)
}

/// `v` with as many decimals as a tick `step` needs (none for steps of 1 and more).
fn tick_text(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 || step <= 0.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{v:.decimals$}")
}

/// The TCP panel's grid, frame, Mb/s tick labels and titles; `y_max` is the axis top in Mb/s.
fn write_tcp_axes(svg: &mut String, mode: &str, top: f64, y_max: f64) {
    let (plot_top, plot_bottom) = (top + PLOT_TOP, top + PLOT_BOTTOM);
    let _ = writeln!(svg, r##"<g class="axes" fill="black" stroke="none">"##);
    for i in 0..=TCP_Y_TICKS {
        let frac = f64::from(i) / f64::from(TCP_Y_TICKS);
        let y = plot_bottom - frac * (plot_bottom - plot_top);
        let _ = writeln!(
            svg,
            r##"<line x1="{PLOT_LEFT}" y1="{y:.1}" x2="{PLOT_RIGHT}" y2="{y:.1}" stroke="#dddddd"/><text class="y-tick" x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            PLOT_LEFT - 6.0,
            y + 4.0,
            tick_text(frac * y_max, y_max / f64::from(TCP_Y_TICKS))
        );
    }
    let _ = writeln!(
        svg,
        r#"<rect x="{PLOT_LEFT}" y="{plot_top}" width="{}" height="{}" fill="none" stroke="black"/>"#,
        PLOT_RIGHT - PLOT_LEFT,
        PLOT_BOTTOM - PLOT_TOP
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="14">guest mode: {}</text>"#,
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        plot_top - 8.0,
        xml_escape(mode)
    );
    let mid = (plot_top + plot_bottom) / 2.0;
    let _ = writeln!(
        svg,
        r#"<text x="20" y="{mid}" text-anchor="middle" transform="rotate(-90 20 {mid})">TCP Mb/s</text>"#
    );
    let _ = writeln!(svg, "</g>");
}

/// The bars of one TCP panel, grouped by path, each labelled under its group.
fn write_tcp_bars(svg: &mut String, top: f64, y_max: f64, bars: &[TcpBar<'_>]) {
    let plot_bottom = top + PLOT_BOTTOM;
    let scale = (PLOT_BOTTOM - PLOT_TOP) / y_max;
    let group_width = BAR_WIDTH * TCP_DIRECTIONS.len() as f64;
    let mut paths: Vec<&str> = Vec::new();
    let _ = writeln!(svg, r#"<g class="bars">"#);
    for bar in bars {
        if !paths.contains(&bar.path) {
            paths.push(bar.path);
        }
        let group = (paths.len() - 1) as f64;
        let x = PLOT_LEFT
            + BAR_GROUP_GAP / 2.0
            + group * (group_width + BAR_GROUP_GAP)
            + bar.direction as f64 * BAR_WIDTH;
        let height = bar.mbps * scale;
        let (name, text, color) = TCP_DIRECTIONS[bar.direction];
        let _ = writeln!(
            svg,
            r#"<rect x="{x:.1}" y="{:.3}" width="{BAR_WIDTH}" height="{height:.3}" fill="{color}" data-path="{}" data-direction="{name}" data-mbps="{}"><title>{} {text}: {:.1} Mb/s</title></rect>"#,
            plot_bottom - height,
            xml_escape(bar.path),
            bar.mbps,
            xml_escape(bar.path),
            bar.mbps
        );
    }
    for (group, path) in paths.iter().enumerate() {
        let x = PLOT_LEFT
            + BAR_GROUP_GAP / 2.0
            + group as f64 * (group_width + BAR_GROUP_GAP)
            + group_width / 2.0;
        let _ = writeln!(
            svg,
            r#"<text class="x-tick" x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
            plot_bottom + 18.0,
            xml_escape(path)
        );
    }
    let _ = writeln!(svg, "</g>");
}

/// One `<g id="tcp-panel-<mode>">` with its own Mb/s axis and a bar group per path with figures.
fn write_tcp_panel(svg: &mut String, mode: &str, top: f64, bars: &[TcpBar<'_>]) {
    let y_max = nice_ceiling(bars.iter().map(|b| b.mbps).fold(0.0, f64::max));
    let _ = writeln!(svg, r#"<g id="tcp-panel-{}">"#, xml_escape(mode));
    write_tcp_axes(svg, mode, top, y_max);
    write_tcp_bars(svg, top, y_max, bars);
    let _ = writeln!(svg, "</g>");
}

/// The TCP SVG: per guest mode (stacked panels), a grouped bar chart of the TCP bulk Mb/s of every
/// path with TCP figures, one bar per direction ([`TCP_DIRECTIONS`]); paths without figures are
/// left out. Bar heights are proportional to Mb/s on a linear axis starting at 0.
pub fn render_tcp_svg(title: &str, report: &BenchReport) -> String {
    let height = TITLE_HEIGHT + PANEL_HEIGHT * MODES.len() as f64;
    let mut svg = String::new();
    svg_open(&mut svg, title, height);
    for (i, mode) in MODES.iter().enumerate() {
        let top = TITLE_HEIGHT + PANEL_HEIGHT * i as f64;
        write_tcp_panel(&mut svg, mode, top, &tcp_bars(report, mode));
    }
    let _ = writeln!(svg, r#"<g id="legend">"#);
    for (row, (_, text, color)) in TCP_DIRECTIONS.iter().enumerate() {
        let y = TITLE_HEIGHT + PLOT_TOP + 10.0 + row as f64 * 18.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{}" y="{:.1}" width="12" height="12" fill="{color}"/><text x="{}" y="{:.1}">{text}</text>"#,
            PLOT_RIGHT + 15.0,
            y - 6.0,
            PLOT_RIGHT + 33.0,
            y + 4.0
        );
    }
    let _ = writeln!(svg, "</g>\n</svg>");
    svg
}

/// The second table: I/O thread CPU per frame, TCP bulk throughput and host CPU per MB, and their
/// ratios.
fn render_cpu_tcp(report: &BenchReport, out: &mut String) {
    let _ = writeln!(
        out,
        "\nI/O thread CPU per frame (ns) and TCP bulk (Mb/s, host CPU ms per MB)"
    );
    let _ = writeln!(
        out,
        "{:<9} {:<4} | {:>8} {:>8} | {:>9} {:>8} | {:>9} {:>8}",
        "path", "mode", "io ns rx", "io ns tx", "to guest", "cpu/MB", "from gst", "cpu/MB"
    );
    for path in PATHS {
        for mode in MODES {
            let Some(PathResult::Measured(m)) = report.get(path, mode) else {
                continue;
            };
            let mbps = |t: &Option<TcpTransfer>| fmt_opt(t.as_ref().map(|t| t.mbps), 1.0, 1);
            let cpu = |t: &Option<TcpTransfer>| {
                fmt_opt(t.as_ref().and_then(|t| t.host_cpu_ms_per_mb), 1.0, 2)
            };
            let _ = writeln!(
                out,
                "{:<9} {:<4} | {:>8} {:>8} | {:>9} {:>8} | {:>9} {:>8}",
                path,
                mode,
                fmt_opt(m.io_cpu_ns_per_frame.rx, 1.0, 0),
                fmt_opt(m.io_cpu_ns_per_frame.tx, 1.0, 0),
                mbps(&m.tcp.to_guest),
                cpu(&m.tcp.to_guest),
                mbps(&m.tcp.from_guest),
                cpu(&m.tcp.from_guest),
            );
        }
    }
    let _ = writeln!(
        out,
        "\nratios (io ns and cpu/MB: lower is better; Mb/s: higher is better)"
    );
    let _ = writeln!(
        out,
        "{:<4} {:<13} | {:>8} {:>8} | {:>9} {:>8} | {:>9} {:>8}",
        "mode", "pair", "io ns rx", "io ns tx", "to guest", "cpu/MB", "from gst", "cpu/MB"
    );
    for (mode, pairs) in &report.ratios {
        for (pair, r) in pairs {
            let _ = writeln!(
                out,
                "{:<4} {:<13} | {:>8} {:>8} | {:>9} {:>8} | {:>9} {:>8}",
                mode,
                pair,
                fmt_opt(r.rx_io_cpu_ns_per_frame, 1.0, 2),
                fmt_opt(r.tx_io_cpu_ns_per_frame, 1.0, 2),
                fmt_opt(r.tcp_to_guest_mbps, 1.0, 2),
                fmt_opt(r.tcp_to_guest_cpu_ms_per_mb, 1.0, 2),
                fmt_opt(r.tcp_from_guest_mbps, 1.0, 2),
                fmt_opt(r.tcp_from_guest_cpu_ms_per_mb, 1.0, 2),
            );
        }
    }
}
