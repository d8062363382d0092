//! The bench's result model (serde, the `--json` file), its consistency check, the stdout table,
//! the ratios between paths, and the `--out` files: .hgrm percentile distributions and one SVG plot.

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

/// Plot area geometry of the SVG (pixels).
const SVG_WIDTH: f64 = 1000.0;
const SVG_HEIGHT: f64 = 600.0;
const PLOT_LEFT: f64 = 80.0;
const PLOT_RIGHT: f64 = 700.0;
const PLOT_TOP: f64 = 40.0;
const PLOT_BOTTOM: f64 = 540.0;
/// Decades of 1/(1-percentile) on the x axis: 0%, 90%, ... 99.9999%.
const X_DECADES: u32 = 6;
const SERIES_COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One SVG with the latency percentile curves of all `series` (label, histogram in us), in
/// HdrHistogram's style: x = percentile on a log scale of 1/(1-p), y = latency (log scale).
pub fn render_percentile_svg(title: &str, series: &[(String, &Histogram<u64>)]) -> String {
    let non_empty: Vec<&(String, &Histogram<u64>)> =
        series.iter().filter(|(_, h)| !h.is_empty()).collect();
    let y_min = non_empty
        .iter()
        .map(|(_, h)| h.min().max(1))
        .min()
        .unwrap_or(1) as f64;
    let y_max = non_empty
        .iter()
        .map(|(_, h)| h.max().max(2))
        .max()
        .unwrap_or(10) as f64;
    let lo_decade = y_min.log10().floor();
    let hi_decade = y_max.log10().ceil().max(lo_decade + 1.0);
    let x_of = |q: f64| {
        let d = (1.0 / (1.0 - q.min(1.0 - 1e-6)))
            .log10()
            .min(f64::from(X_DECADES));
        PLOT_LEFT + d / f64::from(X_DECADES) * (PLOT_RIGHT - PLOT_LEFT)
    };
    let y_of = |us: f64| {
        let d = (us.max(1.0).log10() - lo_decade) / (hi_decade - lo_decade);
        PLOT_BOTTOM - d * (PLOT_BOTTOM - PLOT_TOP)
    };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_WIDTH}" height="{SVG_HEIGHT}" viewBox="0 0 {SVG_WIDTH} {SVG_HEIGHT}" font-family="sans-serif" font-size="12">
<rect x="0" y="0" width="{SVG_WIDTH}" height="{SVG_HEIGHT}" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="16">{}</text>"#,
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        xml_escape(title)
    );
    let _ = writeln!(svg, r##"<g id="grid" stroke="#dddddd" stroke-width="1">"##);
    for d in 0..=X_DECADES {
        let x = PLOT_LEFT + f64::from(d) / f64::from(X_DECADES) * (PLOT_RIGHT - PLOT_LEFT);
        let _ = writeln!(
            svg,
            r#"<line x1="{x:.1}" y1="{PLOT_TOP}" x2="{x:.1}" y2="{PLOT_BOTTOM}"/>"#
        );
    }
    let mut decade = lo_decade;
    while decade <= hi_decade {
        let y = y_of(10f64.powf(decade));
        let _ = writeln!(
            svg,
            r#"<line x1="{PLOT_LEFT}" y1="{y:.1}" x2="{PLOT_RIGHT}" y2="{y:.1}"/>"#
        );
        decade += 1.0;
    }
    let _ = writeln!(svg, "</g>");
    let _ = writeln!(svg, r#"<g id="axes" fill="black">"#);
    let _ = writeln!(
        svg,
        r#"<rect x="{PLOT_LEFT}" y="{PLOT_TOP}" width="{}" height="{}" fill="none" stroke="black"/>"#,
        PLOT_RIGHT - PLOT_LEFT,
        PLOT_BOTTOM - PLOT_TOP
    );
    let x_labels = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"];
    for (d, label) in x_labels.iter().enumerate().take(X_DECADES as usize + 1) {
        let x = PLOT_LEFT + d as f64 / f64::from(X_DECADES) * (PLOT_RIGHT - PLOT_LEFT);
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"#,
            PLOT_BOTTOM + 18.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        PLOT_BOTTOM + 40.0
    );
    let mut decade = lo_decade;
    while decade <= hi_decade {
        let y = y_of(10f64.powf(decade));
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            PLOT_LEFT - 6.0,
            y + 4.0,
            10f64.powf(decade) as u64
        );
        decade += 1.0;
    }
    let _ = writeln!(
        svg,
        r#"<text x="20" y="{}" text-anchor="middle" transform="rotate(-90 20 {})">RTT (us, log scale)</text>"#,
        (PLOT_TOP + PLOT_BOTTOM) / 2.0,
        (PLOT_TOP + PLOT_BOTTOM) / 2.0
    );
    let _ = writeln!(svg, "</g>");
    // One colour per series group (the label without its last `_size` part), a dash pattern for
    // every size after the group's first: paths and modes by colour, sizes by dashes.
    let mut groups: Vec<&str> = Vec::new();
    let mut styles = Vec::new();
    for (label, _) in &non_empty {
        let group = label.rsplit_once('_').map_or(label.as_str(), |(g, _)| g);
        let seen_sizes = styles.iter().filter(|(g, _)| *g == group).count();
        let index = groups.iter().position(|g| *g == group).unwrap_or_else(|| {
            groups.push(group);
            groups.len() - 1
        });
        let dash = if seen_sizes == 0 {
            ""
        } else {
            r#" stroke-dasharray="6 3""#
        };
        styles.push((group, (SERIES_COLORS[index % SERIES_COLORS.len()], dash)));
    }
    let _ = writeln!(svg, r#"<g id="series" fill="none" stroke-width="2">"#);
    for (i, (label, h)) in non_empty.iter().enumerate() {
        let (color, dash) = styles[i].1;
        let mut points = String::new();
        for v in h.iter_quantiles(HGRM_TICKS_PER_HALF_DISTANCE) {
            let q = v.quantile_iterated_to();
            let _ = write!(
                points,
                "{:.1},{:.1} ",
                x_of(q),
                y_of(v.value_iterated_to() as f64)
            );
        }
        let _ = writeln!(
            svg,
            r#"<polyline stroke="{color}"{dash} points="{}"><title>{}</title></polyline>"#,
            points.trim_end(),
            xml_escape(label)
        );
    }
    let _ = writeln!(svg, "</g>");
    let _ = writeln!(svg, r#"<g id="legend">"#);
    for (i, (label, _)) in non_empty.iter().enumerate() {
        let (color, dash) = styles[i].1;
        let y = PLOT_TOP + 10.0 + i as f64 * 18.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="{color}"{dash} stroke-width="3"/><text x="{}" y="{:.1}">{}</text>"#,
            PLOT_RIGHT + 15.0,
            PLOT_RIGHT + 40.0,
            PLOT_RIGHT + 46.0,
            y + 4.0,
            xml_escape(label)
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
