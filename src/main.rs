//! `lancet` command line: parse the arguments, set up logging, hand the subcommand to [`cli`]
//! (one file per subcommand under src/cli/).
#![deny(clippy::undocumented_unsafe_blocks)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LANCET_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    lancet::net::liblog::route_library_logs();
    cli::dispatch(args.command)
}
