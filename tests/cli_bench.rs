//! `lancet bench --quick --json FILE` as a user runs it (the binary, every path): the JSON is
//! complete and consistent — every path and mode present, measured or marked unavailable with a
//! reason; where measured, samples > 0 and p50 <= p99 <= max; the ratios object present.

use std::process::Command;

use lancet::bench::report::{check_report, BenchReport, PathResult, MODES};

const PATHS: [&str; 4] = ["xdp", "tap", "qemu_tap", "raw_xsk"];

#[test]
fn quick_bench_json_is_complete_and_consistent() {
    let dir = std::env::temp_dir().join(format!("lancet-cli-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("bench.json");
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
    assert!(text.contains("\"ratios\""), "ratios object missing");
    assert!(
        stdout.contains("xdp") && stdout.contains("tap"),
        "no table on stdout"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
