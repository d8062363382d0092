//! The `lancet` command line: the clap types of every subcommand and their implementations, one
//! file each. It belongs to the binary; everything it does goes through the library (`lancet::net`,
//! `lancet::vmm`, `lancet::tools`).
//!
//! ```text
//! lancet run ...                          run.rs    boot a VM bridged to a host NIC
//! lancet filter add|del|list|flush IFACE  filter.rs the steering program's rules
//! lancet nic attach|detach|status IFACE   nic.rs    lancet's XDP program on a NIC
//! lancet stats IFACE|VM                   stats.rs  verdicts, rule hits, per-VM counters
//! lancet bench ...                        bench.rs  the side-by-side comparison (src/tools/bench)
//! lancet demo ...                         demo.rs   what `make run` shows (src/tools/demo.rs)
//! ```

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use lancet::net::{netns::NetnsError, rulemaps::FilterError, NetError};

mod bench;
mod demo;
mod filter;
mod nic;
mod run;
mod stats;

#[derive(Parser, Debug)]
#[command(
    name = "lancet",
    version,
    about = "A hosted VMM whose emulated AMD PCnet-PCI II (Am79C970A) NIC is bridged over AF_XDP or TAP"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Boot a VM (a Linux kernel or the built-in test guest) with the Lance NIC bridged to a host NIC.
    #[command(long_about = run::RUN_ABOUT)]
    Run(Box<run::RunArgs>),
    /// Filter rules of a NIC's steering program: add, del, list, flush.
    #[command(subcommand)]
    Filter(filter::FilterCmd),
    /// Attach, detach or inspect lancet's XDP program on a NIC (pinned under bpffs).
    #[command(subcommand)]
    Nic(nic::NicCmd),
    /// Verdicts, per-rule hits and per-VM counters of a NIC.
    Stats(stats::StatsArgs),
    /// Measure the AF_XDP path against the TAP path, QEMU's pcnet + TAP and a raw AF_XDP socket,
    /// side by side in one run (echo RTT percentiles, guest RX/TX rates, exits per packet).
    Bench(Box<lancet::tools::bench::BenchArgs>),
    /// Build a demo topology in `lt-*` network namespaces, boot the test guest bridged over AF_XDP
    /// (or TAP), ping it and UDP-echo it from the peer namespace, show the counters, clean up.
    Demo(lancet::tools::demo::DemoArgs),
}

/// Errors of the `filter`, `nic` and `stats` subcommands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

/// `value` as indented JSON and a newline (the `--json` output of `filter list` and `nic status`).
fn write_json(out: &mut dyn Write, value: &impl serde::Serialize) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::other)?;
    writeln!(out)
}

/// Run `command`; its errors become one line on stderr and exit status 1 (`lancet run`: the
/// guest's own exit status).
pub fn dispatch(command: Command) -> ExitCode {
    let mut out = std::io::stdout();
    let (what, done): (&str, Result<(), Box<dyn std::error::Error>>) = match command {
        Command::Run(args) => match run::run(*args) {
            Ok(status) => return ExitCode::from(status.clamp(0, 255) as u8),
            Err(e) => ("lancet", Err(e.into())),
        },
        Command::Filter(cmd) => (
            "lancet",
            filter::run_filter(&cmd, &mut out).map_err(Into::into),
        ),
        Command::Nic(cmd) => ("lancet", nic::run_nic(&cmd, &mut out).map_err(Into::into)),
        Command::Stats(args) => (
            "lancet",
            stats::run_stats(&args, &mut out).map_err(Into::into),
        ),
        Command::Bench(args) => ("lancet bench", bench::run(&args).map_err(Into::into)),
        Command::Demo(args) => ("lancet demo", demo::run(&args).map_err(Into::into)),
    };
    let _ = out.flush();
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{what}: error: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
