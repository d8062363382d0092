//! `run_bench` end to end on the raw_xsk path (the one this build measures itself): the JSON file
//! is complete and consistent, and the --out directory has the histograms and the plot.

use std::path::PathBuf;

use lancet::tools::bench::report::{check_report, BenchReport, PathResult, MODES};
use lancet::tools::bench::{run_bench, BenchArgs};

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lancet-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn quick_bench_on_raw_xsk_writes_a_consistent_report() {
    let dir = scratch_dir("bench-run");
    let json = dir.join("bench.json");
    let out = dir.join("out");
    let args = BenchArgs {
        quick: true,
        json: Some(json.clone()),
        out: Some(out.clone()),
        paths: vec!["raw_xsk".into()],
        samples: Some(300),
        rate_seconds: Some(0.3),
        ..BenchArgs::default()
    };
    let report = run_bench(&args).unwrap();
    let text = std::fs::read_to_string(&json).unwrap();
    assert_eq!(text, report.to_json().unwrap());
    let from_file = BenchReport::from_json(&text).unwrap();
    check_report(&from_file).unwrap();
    for mode in MODES {
        let Some(PathResult::Measured(m)) = from_file.get("raw_xsk", mode) else {
            panic!(
                "raw_xsk/{mode} not measured: {:?}",
                from_file.get("raw_xsk", mode)
            );
        };
        let rtt = m.rtt_us.unwrap();
        assert!(
            rtt.samples > 0 && rtt.p50 <= rtt.p99 && rtt.p99 <= rtt.max,
            "{rtt:?}"
        );
        assert!(m.rx_pps.unwrap() > 0.0 && m.tx_pps.unwrap() > 0.0, "{m:?}");
        assert!(m.unavailable_metrics.contains_key("exits_per_packet"));
        assert!(out.join(format!("raw_xsk_{mode}_64B.hgrm")).is_file());
        assert!(out.join(format!("raw_xsk_{mode}_1514B.hgrm")).is_file());
    }
    assert!(matches!(
        from_file.get("xdp", "poll"),
        Some(PathResult::Unavailable { .. })
    ));
    assert!(
        from_file.reference["kernel_udp_echo"]
            .rtt_us
            .unwrap()
            .samples
            > 0
    );
    let svg = std::fs::read_to_string(out.join("latency.svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    assert!(
        doc.descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .count()
            >= 4
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_options_are_refused_with_the_option_named() {
    let err = |args: BenchArgs| run_bench(&args).unwrap_err().to_string();
    let e = err(BenchArgs {
        paths: vec!["vde".into()],
        ..BenchArgs::default()
    });
    assert!(e.contains("--paths") && e.contains("vde"), "{e}");
    let e = err(BenchArgs {
        modes: vec!["busy".into()],
        ..BenchArgs::default()
    });
    assert!(e.contains("--modes") && e.contains("busy"), "{e}");
    let e = err(BenchArgs {
        phases: vec!["rx".into()],
        ..BenchArgs::default()
    });
    assert!(e.contains("--phases must include echo"), "{e}");
}

#[test]
fn unselected_modes_and_phases_are_reported_with_a_reason() {
    let args = BenchArgs {
        quick: true,
        paths: vec!["raw_xsk".into()],
        modes: vec!["poll".into()],
        phases: vec!["echo".into(), "tx".into()],
        samples: Some(100),
        rate_seconds: Some(0.2),
        ..BenchArgs::default()
    };
    let report = run_bench(&args).unwrap();
    check_report(&report).unwrap();
    assert_eq!(
        report.get("raw_xsk", "irq"),
        Some(&PathResult::Unavailable {
            unavailable: "mode not selected with --modes".into()
        })
    );
    let Some(PathResult::Measured(m)) = report.get("raw_xsk", "poll") else {
        panic!("{:?}", report.get("raw_xsk", "poll"));
    };
    assert!(m.rx_pps.is_none() && m.tx_pps.is_some(), "{m:?}");
    assert_eq!(
        m.unavailable_metrics["rx_pps"],
        "phase not selected with --phases"
    );
}

#[derive(clap::Parser, Debug)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

#[test]
fn bench_args_parse_from_a_command_line() {
    use clap::{CommandFactory, Parser};
    Cli::command().debug_assert();
    let cli = Cli::try_parse_from([
        "lancet-bench",
        "--quick",
        "--json",
        "/tmp/x.json",
        "--out",
        "/tmp/o",
        "--paths",
        "xdp,raw_xsk",
        "--modes",
        "poll",
        "--phases",
        "echo,tx",
        "--rounds",
        "2",
        "--client-spin",
        "--pin-vcpu",
        "1",
    ])
    .unwrap();
    let b = cli.bench;
    assert!(b.quick && b.client_spin);
    assert_eq!(b.paths, ["xdp", "raw_xsk"]);
    assert_eq!(b.modes, ["poll"]);
    assert_eq!(b.phases, ["echo", "tx"]);
    assert_eq!(b.rounds, Some(2));
    assert_eq!(b.pin_vcpu, Some(1));
    assert_eq!(b.json.as_deref(), Some(std::path::Path::new("/tmp/x.json")));
    assert!(Cli::try_parse_from(["lancet-bench", "--rounds", "many"]).is_err());
}

#[test]
fn the_raw_socket_runs_where_lancets_io_thread_runs() {
    use clap::Parser;
    use lancet::tools::bench::BenchPlan;
    let plan = |argv: &[&str]| {
        let cli = Cli::try_parse_from(std::iter::once("lancet-bench").chain(argv.iter().copied()))
            .unwrap();
        BenchPlan::from_args(&cli.bench).unwrap()
    };
    // By default both touch their rings on the client's CPU.
    let default = plan(&[]);
    assert_eq!(default.raw_cpu, default.pin_io);
    assert_eq!(default.pin_io, default.client_cpu);
    // Moving lancet's I/O thread moves the raw socket with it, unless --raw-cpu says otherwise.
    let moved = plan(&["--pin-io", "1"]);
    assert_eq!((moved.pin_io, moved.raw_cpu), (Some(1), Some(1)));
    let own = plan(&["--pin-io", "1", "--raw-cpu", "0"]);
    assert_eq!((own.pin_io, own.raw_cpu), (Some(1), Some(0)));
}
