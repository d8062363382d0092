//! `lancet demo`: what `make run` shows; its arguments and its work live in the project's tools
//! (`lancet::tools::demo`).

use lancet::tools::bench::BenchError;
use lancet::tools::demo::{run_demo, DemoArgs};

/// Run the demo (it prints as it goes).
pub fn run(args: &DemoArgs) -> Result<(), BenchError> {
    run_demo(args)
}
