//! The report model: JSON round trip, the consistency check, ratios, the stdout table, .hgrm and
//! SVG output.

use lancet::tools::bench::report::{
    check_report, render_percentile_svg, render_table, render_tcp_svg, write_hgrm, BenchReport,
    DropCount, IoCpuPerFrame, Measurement, PathResult, RttSummary, TcpFigures, TcpTransfer, MODES,
    PATHS, PATH_COLORS,
};
use lancet::tools::bench::rtt::new_histogram;

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

/// The `<g id="{id}">` element of `doc`.
fn group<'a>(doc: &'a roxmltree::Document<'a>, id: &str) -> roxmltree::Node<'a, 'a> {
    doc.descendants()
        .find(|n| n.has_tag_name("g") && n.attribute("id") == Some(id))
        .unwrap_or_else(|| panic!("no <g id=\"{id}\">"))
}

/// The text of every x axis tick label under `panel`, left to right.
fn x_ticks(panel: roxmltree::Node<'_, '_>) -> Vec<String> {
    panel
        .descendants()
        .filter(|n| n.has_tag_name("text") && n.attribute("class") == Some("x-tick"))
        .map(|n| n.text().unwrap_or_default().to_string())
        .collect()
}

/// The polylines under `panel`, as (data-path, data-size, stroke, stroke-dasharray).
fn curves(panel: roxmltree::Node<'_, '_>) -> Vec<(String, String, String, Option<String>)> {
    panel
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .map(|n| {
            (
                n.attribute("data-path").unwrap().to_string(),
                n.attribute("data-size").unwrap().to_string(),
                n.attribute("stroke").unwrap().to_string(),
                n.attribute("stroke-dasharray").map(str::to_string),
            )
        })
        .collect()
}

fn colour_of(path: &str) -> &'static str {
    PATH_COLORS.iter().find(|(p, _)| *p == path).unwrap().1
}

#[test]
fn svg_plot_has_one_panel_per_mode_with_fixed_path_colours_and_size_dashes() {
    let a = histogram(&(1..=1000).collect::<Vec<_>>());
    let mut labels = Vec::new();
    for path in PATHS {
        for mode in MODES {
            for size in ["64B", "1514B"] {
                labels.push(format!("{path}_{mode}_{size}"));
            }
        }
    }
    let series: Vec<_> = labels.iter().map(|l| (l.clone(), &a)).collect();
    let svg = render_percentile_svg("t", &series);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let colours: std::collections::BTreeSet<_> = PATH_COLORS.iter().map(|(_, c)| c).collect();
    assert_eq!(colours.len(), PATHS.len(), "path colours must be distinct");
    for mode in MODES {
        let panel = group(&doc, &format!("panel-{mode}"));
        let lines = curves(panel);
        assert_eq!(lines.len(), PATHS.len() * 2, "{mode}");
        for (path, size, stroke, dash) in lines {
            assert_eq!(stroke, colour_of(&path), "{mode} {path} {size}");
            match size.as_str() {
                "64B" => assert_eq!(dash, None, "{path} 64B is solid"),
                "1514B" => assert_eq!(dash.as_deref(), Some("6 3"), "{path} 1514B is dashed"),
                other => panic!("unexpected size {other}"),
            }
        }
        let titles: Vec<_> = panel
            .descendants()
            .filter(|n| n.has_tag_name("title"))
            .filter_map(|n| n.text())
            .collect();
        assert!(titles.iter().all(|t| t.contains(&format!("_{mode}_"))));
    }
    let legend: Vec<_> = group(&doc, "legend")
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect();
    for path in PATHS {
        assert!(legend.contains(&path), "{path} missing from {legend:?}");
    }
    assert!(legend.contains(&"64 B") && legend.contains(&"1514 B"));
}

#[test]
fn svg_x_axis_ends_where_the_sample_count_supports_it() {
    let thousand = histogram(&(1..=1000).collect::<Vec<_>>());
    let hundred_thousand = histogram(&(1..=100_000).collect::<Vec<_>>());
    let series = [
        ("xdp_irq_64B".to_string(), &thousand),
        ("tap_irq_64B".to_string(), &thousand),
        ("xdp_poll_64B".to_string(), &hundred_thousand),
    ];
    let svg = render_percentile_svg("t", &series);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let irq = x_ticks(group(&doc, "panel-irq"));
    assert_eq!(irq, ["0", "90", "99", "99.9"]);
    let poll = x_ticks(group(&doc, "panel-poll"));
    assert_eq!(poll.last().map(String::as_str), Some("99.999"));
    // The 1000-sample curve reaches the right edge of the plot (p = 99.9 %).
    let polyline = group(&doc, "panel-irq")
        .descendants()
        .find(|n| n.has_tag_name("polyline"))
        .unwrap();
    let frame = group(&doc, "panel-irq")
        .descendants()
        .find(|n| n.has_tag_name("rect"))
        .unwrap();
    let right: f64 = frame.attribute("x").unwrap().parse::<f64>().unwrap()
        + frame.attribute("width").unwrap().parse::<f64>().unwrap();
    let xs: Vec<f64> = polyline
        .attribute("points")
        .unwrap()
        .split_whitespace()
        .map(|xy| xy.split_once(',').unwrap().0.parse().unwrap())
        .collect();
    let max_x = xs.iter().copied().fold(f64::MIN, f64::max);
    assert!((max_x - right).abs() < 0.5, "{max_x} vs {right}");
    // p = 99 % lies two thirds of the way along a 3-decade axis.
    let left: f64 = frame.attribute("x").unwrap().parse().unwrap();
    let tick_99 = group(&doc, "panel-irq")
        .descendants()
        .find(|n| n.attribute("class") == Some("x-tick") && n.text() == Some("99"))
        .unwrap();
    let x_99: f64 = tick_99.attribute("x").unwrap().parse().unwrap();
    assert!((x_99 - (left + (right - left) * 2.0 / 3.0)).abs() < 0.5);
}

#[test]
fn tcp_svg_has_one_bar_per_path_and_direction_proportional_to_mbps() {
    let mut report = full_report();
    // A path with only one direction measured, and one without TCP figures.
    let mut m = measured(1, 300_000.0);
    m.tcp.from_guest = None;
    report.set("raw_xsk", "irq", PathResult::Measured(Box::new(m)));
    let mut m = measured(1, 300_000.0);
    m.tcp = TcpFigures::default();
    report.set("native", "irq", PathResult::Measured(Box::new(m)));
    let svg = render_tcp_svg("tcp <&>", &report);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    for mode in MODES {
        let panel = group(&doc, &format!("tcp-panel-{mode}"));
        let bars: Vec<_> = panel
            .descendants()
            .filter(|n| n.has_tag_name("rect") && n.attribute("data-path").is_some())
            .collect();
        let mut expected = Vec::new();
        for path in PATHS {
            let Some(m) = report.get(path, mode).and_then(PathResult::measured) else {
                continue;
            };
            for (dir, t) in [
                ("to_guest", &m.tcp.to_guest),
                ("from_guest", &m.tcp.from_guest),
            ] {
                if let Some(t) = t {
                    expected.push((path.to_string(), dir.to_string(), t.mbps));
                }
            }
        }
        let got: Vec<(String, String, f64)> = bars
            .iter()
            .map(|b| {
                (
                    b.attribute("data-path").unwrap().to_string(),
                    b.attribute("data-direction").unwrap().to_string(),
                    b.attribute("height").unwrap().parse().unwrap(),
                )
            })
            .collect();
        let names = |v: &[(String, String, f64)]| -> Vec<(String, String)> {
            v.iter().map(|(p, d, _)| (p.clone(), d.clone())).collect()
        };
        assert_eq!(names(&got), names(&expected), "{mode}");
        assert!(!got.is_empty(), "{mode}");
        assert!(got.iter().all(|(p, _, _)| p != "native" || mode != "irq"));
        // Height / Mb/s is the same for every bar of the panel.
        let ratio = got[0].2 / expected[0].2;
        assert!(ratio > 0.0);
        for (g, e) in got.iter().zip(&expected) {
            assert!(
                (g.2 / e.2 - ratio).abs() < ratio * 1e-3,
                "{mode} {} {}: height {} for {} Mb/s",
                g.0,
                g.1,
                g.2,
                e.2
            );
        }
    }
    assert!(svg.contains("tcp &lt;&amp;&gt;"));
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
