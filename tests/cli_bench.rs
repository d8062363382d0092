//! `lancet bench --quick --json FILE` as a user runs it (the binary, every path): the JSON is
//! complete and consistent — every path and mode present, measured or marked unavailable with a
//! reason; where measured, samples > 0 and p50 <= p99 <= max; the ratios object present; the TCP
//! phase and the I/O thread CPU figures present and sane (Mb/s > 0, CPU >= 0, never a speed).

use std::process::Command;

use lancet::tools::bench::report::{check_report, BenchReport, PathResult, MODES, PATHS};

#[test]
fn quick_bench_json_is_complete_and_consistent() {
    // mkdtemp, removed on drop (also when an assertion fails).
    let dir = lancet::tools::bench::private_dir::PrivateDir::new().unwrap();
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_lancet"))
        .args(["bench", "--quick", "--json"])
        .arg(&json)
        .output()
        .expect("run lancet bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "lancet bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let text = std::fs::read_to_string(&json).expect("the --json file is written");
    let report = BenchReport::from_json(&text).expect("the JSON parses as a bench report");
    if let Err(problems) = check_report(&report) {
        panic!("inconsistent report: {problems:#?}\n{text}");
    }
    for path in PATHS {
        for mode in MODES {
            let result = report
                .get(path, mode)
                .unwrap_or_else(|| panic!("{path}/{mode} missing from the report"));
            match result {
                PathResult::Unavailable { unavailable } => {
                    assert!(
                        !unavailable.trim().is_empty(),
                        "{path}/{mode}: empty reason"
                    )
                }
                PathResult::Measured(m) => {
                    let rtt = m.rtt_us.as_ref().expect("echo RTT measured");
                    assert!(rtt.samples > 0, "{path}/{mode}: no samples");
                    assert!(
                        rtt.p50 <= rtt.p99 && rtt.p99 <= rtt.max,
                        "{path}/{mode}: {rtt:?}"
                    );
                }
            }
        }
    }
    // The two lancet paths are what the bench is for: this build has the test guest, so they
    // must be measured, not skipped.
    for path in ["xdp", "tap"] {
        for mode in MODES {
            assert!(
                matches!(report.get(path, mode), Some(PathResult::Measured(_))),
                "{path}/{mode} was not measured:\n{text}\nstderr:\n{stderr}"
            );
        }
    }
    // The lancet paths and the kernel baseline move TCP both ways, with the bytes asked for and
    // the host CPU it cost; lancet's I/O thread reports its CPU per frame in both rate phases.
    for path in ["xdp", "tap", "native"] {
        for mode in MODES {
            let Some(PathResult::Measured(m)) = report.get(path, mode) else {
                panic!("{path}/{mode} not measured:\n{text}");
            };
            for (dir, t) in [
                ("to_guest", &m.tcp.to_guest),
                ("from_guest", &m.tcp.from_guest),
            ] {
                let t = t
                    .as_ref()
                    .unwrap_or_else(|| panic!("{path}/{mode} tcp.{dir} missing:\n{text}"));
                assert_eq!(t.bytes, 8 << 20, "{path}/{mode} tcp.{dir}: {t:?}");
                assert!(t.mbps > 0.0, "{path}/{mode} tcp.{dir}: {t:?}");
                let cpu = t
                    .host_cpu_ms_per_mb
                    .unwrap_or_else(|| panic!("{path}/{mode} tcp.{dir}: no host CPU:\n{text}"));
                assert!(cpu >= 0.0, "{path}/{mode} tcp.{dir}: {t:?}");
            }
            if path != "native" {
                for (phase, v) in [
                    ("rx", m.io_cpu_ns_per_frame.rx),
                    ("tx", m.io_cpu_ns_per_frame.tx),
                ] {
                    let v = v.unwrap_or_else(|| {
                        panic!("{path}/{mode} io_cpu_ns_per_frame.{phase} missing:\n{text}")
                    });
                    assert!(v >= 0.0, "{path}/{mode} io_cpu_ns_per_frame.{phase}: {v}");
                }
            }
        }
    }
    // raw_xsk has no TCP stack: said so, not left blank.
    if let Some(PathResult::Measured(m)) = report.get("raw_xsk", "poll") {
        assert!(m.tcp.to_guest.is_none(), "{m:?}");
        assert!(
            m.unavailable_metrics["tcp.to_guest"].contains("no TCP stack"),
            "{m:?}"
        );
    }
    assert!(text.contains("\"ratios\""), "ratios object missing");
    assert!(
        stdout.contains("TCP bulk"),
        "no TCP table on stdout:\n{stdout}"
    );

    assert!(
        stdout.contains("xdp") && stdout.contains("tap"),
        "no table on stdout"
    );
}
