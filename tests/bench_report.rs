//! The report model: JSON round trip, the consistency check, ratios, the stdout table, .hgrm and
//! SVG output.

use lancet::bench::report::{
    check_report, render_percentile_svg, render_table, write_hgrm, BenchReport, DropCount,
    IoCpuPerFrame, Measurement, PathResult, RttSummary, TcpFigures, TcpTransfer, MODES, PATHS,
};
use lancet::bench::rtt::new_histogram;

fn histogram(values: &[u64]) -> hdrhistogram::Histogram<u64> {
    let mut h = new_histogram();
    for v in values {
        h.record(*v).unwrap();
    }
    h
}

fn measured(p50_scale: u64, rx: f64) -> Measurement {
    let h = histogram(&(1..=1000).map(|i| i * p50_scale).collect::<Vec<_>>());
    let mut m = Measurement {
        rtt_us: Some(RttSummary::from_histogram(&h, 2)),
        rtt_us_large: Some(RttSummary::from_histogram(&h, 0)),
        rx_offered_pps: Some(rx * 2.0),
        rx_pps: Some(rx),
        tx_pps: Some(rx / 2.0),
        drops: vec![DropCount {
            counted_at: "peer counter socket".into(),
            frames: 3,
        }],
        exits_per_packet: Some(1.5),
        io_cpu_ns_per_frame: IoCpuPerFrame {
            rx: Some(1e9 / rx),
            tx: Some(2e9 / rx),
        },
        tcp: TcpFigures {
            to_guest: Some(tcp(rx / 100.0, Some(2.0))),
            from_guest: Some(tcp(rx / 200.0, Some(4.0))),
        },
        ..Measurement::default()
    };
    m.exits_by_reason.insert("mmio".into(), 10);
    m
}

fn tcp(mbps: f64, host_cpu_ms_per_mb: Option<f64>) -> TcpTransfer {
    TcpTransfer {
        mbps,
        host_cpu_ms_per_mb,
        bytes: 8 << 20,
        transfers: 1,
        timed_by: "peer client: connect to close".into(),
    }
}

fn full_report() -> BenchReport {
    let mut r = BenchReport::new(true, 1, "not measured");
    r.set(
        "xdp",
        "poll",
        PathResult::Measured(Box::new(measured(1, 500_000.0))),
    );
    r.set(
        "tap",
        "poll",
        PathResult::Measured(Box::new(measured(2, 250_000.0))),
    );
    let mut raw = measured(1, 1_000_000.0);
    raw.exits_per_packet = None;
    raw.unavailable_metrics
        .insert("exits_per_packet".into(), "no VM".into());
    r.set("raw_xsk", "poll", PathResult::Measured(Box::new(raw)));
    r.compute_ratios();
    r
}

#[test]
fn json_round_trips_and_has_the_documented_keys() {
    let report = full_report();
    let text = report.to_json().unwrap();
    let back = BenchReport::from_json(&text).unwrap();
    assert_eq!(back, report);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for path in PATHS {
        for mode in MODES {
            assert!(v["paths"][path][mode].is_object(), "{path}/{mode}");
        }
    }
    let xdp = &v["paths"]["xdp"]["poll"];
    for key in ["p50", "p90", "p99", "p999", "max", "mean", "samples"] {
        assert!(xdp["rtt_us"][key].is_number(), "{key}");
    }
    for key in ["rx_pps", "tx_pps", "drops", "exits_per_packet"] {
        assert!(!xdp[key].is_null(), "{key}");
    }
    assert_eq!(xdp["drops"][0]["where"], "peer counter socket");
    for dir in ["to_guest", "from_guest"] {
        for key in ["mbps", "host_cpu_ms_per_mb", "bytes"] {
            assert!(xdp["tcp"][dir][key].is_number(), "tcp.{dir}.{key}");
        }
    }
    for key in ["rx", "tx"] {
        assert!(xdp["io_cpu_ns_per_frame"][key].is_number(), "{key}");
    }
    assert!(v["ratios"]["poll"]["xdp/native"].is_object());
    assert!(v["ratios"]["poll"]["xdp/tap"]["tcp_to_guest_mbps"].is_number());
    assert!(v["paths"]["qemu_tap"]["irq"]["unavailable"].is_string());
    assert!(v["ratios"]["poll"]["xdp/tap"]["rtt_p50"].is_number());
}

#[test]
fn consistency_check_accepts_a_complete_report() {
    check_report(&full_report()).unwrap();
}

#[test]
fn consistency_check_names_each_problem() {
    let mut r = full_report();
    r.paths.get_mut("tap").unwrap().remove("irq");
    r.set(
        "qemu_tap",
        "irq",
        PathResult::Unavailable {
            unavailable: " ".into(),
        },
    );
    let mut bad = measured(1, 1.0);
    if let Some(rtt) = bad.rtt_us.as_mut() {
        rtt.p99 = rtt.max + 1;
    }
    bad.tx_pps = None;
    bad.tcp.to_guest = Some(tcp(0.0, Some(-1.0)));
    bad.tcp.from_guest = None;
    bad.io_cpu_ns_per_frame.rx = Some(f64::NAN);
    r.set("xdp", "irq", PathResult::Measured(Box::new(bad)));
    let mut empty = measured(1, 1.0);
    empty.rtt_us.as_mut().unwrap().samples = 0;
    empty.tcp.to_guest = Some(tcp(10.0, None));
    r.set("raw_xsk", "irq", PathResult::Measured(Box::new(empty)));
    r.ratios.clear();
    let problems = check_report(&r).unwrap_err();
    let has = |needle: &str| problems.iter().any(|p| p.contains(needle));
    assert!(has("tap/irq: missing"), "{problems:?}");
    assert!(
        has("qemu_tap/irq: unavailable without a reason"),
        "{problems:?}"
    );
    assert!(
        has("xdp/irq rtt_us: percentiles not ordered"),
        "{problems:?}"
    );
    assert!(has("xdp/irq tx_pps: null without a reason"), "{problems:?}");
    assert!(has("raw_xsk/irq rtt_us: no samples"), "{problems:?}");
    assert!(has("xdp/irq tcp.to_guest: mbps 0"), "{problems:?}");
    assert!(
        has("xdp/irq tcp.to_guest.host_cpu_ms_per_mb: -1 is not"),
        "{problems:?}"
    );
    assert!(
        has("xdp/irq tcp.from_guest: null without a reason"),
        "{problems:?}"
    );
    assert!(
        has("xdp/irq io_cpu_ns_per_frame.rx: NaN is not"),
        "{problems:?}"
    );
    assert!(
        has("raw_xsk/irq tcp.to_guest.host_cpu_ms_per_mb: null without a reason"),
        "{problems:?}"
    );
    assert!(has("ratios: poll xdp/tap missing"), "{problems:?}");
}

#[test]
fn ratios_divide_the_headline_figures_and_are_null_without_data() {
    let r = full_report();
    let xt = r.ratios["poll"]["xdp/tap"];
    assert!((xt.rtt_p50.unwrap() - 0.5).abs() < 0.01, "{xt:?}");
    assert!((xt.rx_pps.unwrap() - 2.0).abs() < 1e-9);
    assert!((xt.tcp_to_guest_mbps.unwrap() - 2.0).abs() < 1e-9, "{xt:?}");
    assert!(
        (xt.rx_io_cpu_ns_per_frame.unwrap() - 0.5).abs() < 1e-9,
        "{xt:?}"
    );
    assert!(r.ratios["poll"]["xdp/qemu_tap"].rtt_p50.is_none());
    assert!(r.ratios["irq"]["xdp/tap"].rx_pps.is_none());
    let table = render_table(&r);
    assert!(table.contains("unavailable: not measured"), "{table}");
    assert!(table.contains("xdp/tap"), "{table}");
    assert!(table.contains("TCP bulk"), "{table}");
}

#[test]
fn hgrm_follows_the_percentile_distribution_format() {
    let h = histogram(&(1..=10_000).collect::<Vec<_>>());
    let mut out = Vec::new();
    write_hgrm(&mut out, &h).unwrap();
    let text = String::from_utf8(out).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
    );
    assert_eq!(lines.next(), Some(""));
    let mut last_q = -1.0;
    let mut last_count = 0u64;
    let mut rows = 0;
    for line in lines.by_ref().take_while(|l| !l.starts_with('#')) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert!(cols.len() == 4 || cols.len() == 3, "{line}");
        let q: f64 = cols[1].parse().unwrap();
        let count: u64 = cols[2].parse().unwrap();
        assert!(q >= last_q && count >= last_count, "{line}");
        last_q = q;
        last_count = count;
        rows += 1;
    }
    assert!(rows > 10);
    assert_eq!(last_q, 1.0);
    assert_eq!(last_count, 10_000);
    assert!(text.contains("#[Mean    ="));
    assert!(text.contains("Total count    =        10000]"));
    assert!(text.contains("#[Buckets ="));
}

#[test]
fn svg_plot_is_well_formed_with_one_curve_per_histogram() {
    let a = histogram(&(1..=1000).collect::<Vec<_>>());
    let b = histogram(&(1..=1000).map(|v| v * 3).collect::<Vec<_>>());
    let svg = render_percentile_svg(
        "a <title> & more",
        &[("xdp_poll_64B".into(), &a), ("tap_poll_64B".into(), &b)],
    );
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let polylines: Vec<_> = root
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .collect();
    assert_eq!(polylines.len(), 2);
    for p in polylines {
        let points = p.attribute("points").unwrap();
        let coords: Vec<(f64, f64)> = points
            .split_whitespace()
            .map(|xy| {
                let (x, y) = xy.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        assert!(coords.len() > 10);
        // Percentile grows to the right, latency upwards (smaller y).
        assert!(coords
            .windows(2)
            .all(|w| w[1].0 >= w[0].0 && w[1].1 <= w[0].1 + 1e-9));
    }
    assert!(svg.contains("a &lt;title&gt; &amp; more"));
}

#[test]
fn svg_plot_gives_a_path_one_colour_and_its_second_size_dashes() {
    let a = histogram(&(1..=100).collect::<Vec<_>>());
    let series = [
        ("xdp_poll_64B".to_string(), &a),
        ("xdp_poll_1514B".to_string(), &a),
        ("tap_poll_64B".to_string(), &a),
    ];
    let svg = render_percentile_svg("t", &series);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let lines: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .collect();
    assert_eq!(lines[0].attribute("stroke"), lines[1].attribute("stroke"));
    assert_ne!(lines[0].attribute("stroke"), lines[2].attribute("stroke"));
    assert!(lines[0].attribute("stroke-dasharray").is_none());
    assert!(lines[1].attribute("stroke-dasharray").is_some());
    assert!(lines[2].attribute("stroke-dasharray").is_none());
}
