//! `lancet bench`: the side-by-side comparison of the AF_XDP, TAP, QEMU and raw XSK paths; its
//! arguments and its work live in the project's tools (`lancet::tools::bench`).

use lancet::tools::bench::{run_bench, BenchArgs, BenchError};

/// Run the bench (it prints and writes its report itself).
pub fn run(args: &BenchArgs) -> Result<(), BenchError> {
    run_bench(args).map(|_| ())
}
