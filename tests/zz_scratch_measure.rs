use lancet::bench::{run_bench, BenchArgs};
#[test]
#[ignore]
fn measure() {
    let spin = std::env::var("SPIN").is_ok();
    let args = BenchArgs {
        quick: false,
        rounds: Some(2),
        samples: Some(5000),
        rate_seconds: Some(2.0),
        paths: vec!["raw_xsk".into()],
        client_spin: spin,
        json: Some("/tmp/lt-bench-measure.json".into()),
        ..BenchArgs::default()
    };
    run_bench(&args).unwrap();
}
