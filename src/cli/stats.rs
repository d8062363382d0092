//! `lancet stats IFACE|VM [--json] [--watch [SECONDS]]`: a NIC's XDP verdicts, its rules' hits and
//! the counters each VM on it publishes (`lancet::net::stats`), as tables for a terminal or as JSON.

use std::{io::Write, time::Duration};

use clap::Args;

use lancet::net::{names::NicKey, rulemaps::FilterError, stats};

use super::CliError;

/// `lancet stats IFACE [--json] [--watch [SECONDS]]`
#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    /// The NIC, or the name of a VM running on one (`lancet run --vm-name`).
    #[arg(value_name = "IFACE|VM")]
    pub iface: NicKey,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Repeat every SECONDS (default 1) until interrupted.
    #[arg(long, num_args = 0..=1, default_missing_value = "1")]
    pub watch: Option<u64>,
}

/// Run `lancet stats ...`, printing to `out`.
pub fn run_stats(args: &StatsArgs, out: &mut dyn Write) -> Result<(), CliError> {
    loop {
        // A NIC first; a name that is no pinned NIC is looked up among the registered VMs.
        let report = match stats::collect(&args.iface) {
            Ok(report) => report,
            Err(FilterError::NotAttached { .. }) => stats::collect_vm(&args.iface)?,
            Err(nic_err) => return Err(nic_err.into()),
        };
        if args.json {
            serde_json::to_writer(&mut *out, &report).map_err(std::io::Error::other)?;
            writeln!(out)?;
        } else {
            write!(out, "{}", stats::render(&report))?;
        }
        out.flush()?;
        match args.watch {
            Some(secs) => std::thread::sleep(Duration::from_secs(secs.max(1))),
            None => return Ok(()),
        }
    }
}
