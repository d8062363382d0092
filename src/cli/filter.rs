//! `lancet filter add|del|list|flush IFACE`: the rules of a NIC's steering program, changed and read
//! through the maps a running `lancet run` (or `lancet nic attach`) pinned under
//! `/sys/fs/bpf/lancet/IFACE/`.
//!
//! ```text
//! lancet filter add IFACE MATCH... ACTION [prio N]   e.g. lancet filter add lt-nic0 udp dport 4789 to vm web1 prio 10
//! lancet filter del IFACE ID
//! lancet filter list IFACE [--json]
//! lancet filter flush IFACE
//! ```

use std::io::Write;

use clap::Subcommand;

use lancet::net::{
    names::NicKey,
    rulemaps::{FilterError, RuleMaps},
    rules::Rule,
};

use super::CliError;

/// `lancet filter ...`
#[derive(Debug, Clone, Subcommand)]
pub enum FilterCmd {
    /// Add a rule: MATCH... ACTION [prio N] (see `lancet filter add --help`).
    #[command(after_help = RULE_HELP)]
    Add {
        /// The NIC.
        iface: NicKey,
        /// The rule words, e.g. `udp dport 4789 to vm web1 prio 10`.
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true, trailing_var_arg = true)]
        rule: Vec<String>,
    },
    /// Delete a rule by id.
    Del {
        /// The NIC.
        iface: NicKey,
        /// The rule id (`lancet filter list`).
        id: u32,
    },
    /// List rules with their hit counters.
    List {
        /// The NIC.
        iface: NicKey,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete every rule.
    Flush {
        /// The NIC.
        iface: NicKey,
    },
}

const RULE_HELP: &str = "\
MATCH:  dst mac MAC | src mac MAC | vlan VID | ethertype 0xHHHH|arp|ipv4|ipv6 | arp | ip | ip6
        src PREFIX | dst PREFIX | proto tcp|udp|icmp|icmp6|N | tcp | udp | icmp | icmp6
        sport P[-Q] | dport P[-Q]
ACTION: to vm NAME | to host | pass | drop | mirror vm NAME
PRIO:   prio N   (0..65535, default 100; the lowest number wins, then the older rule)
Examples:
  lancet filter add lt-nic0 udp dport 4789 to vm web1 prio 10
  lancet filter add lt-nic0 src 10.1.0.0/16 tcp dport 8000-8080 drop";

/// Run `lancet filter ...`, printing to `out`.
pub fn run_filter(cmd: &FilterCmd, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        FilterCmd::Add { iface, rule } => {
            let rule = Rule::parse(rule).map_err(FilterError::from)?;
            let maps = RuleMaps::open_pinned(iface)?;
            let vm = rule.vm_name().map(str::to_string);
            let id = maps.add(rule.clone())?;
            writeln!(out, "rule {id}: {rule}")?;
            if let Some(vm) = vm {
                if !maps.vms().iter().any(|v| v.name == vm && !v.is_stale()) {
                    writeln!(
                        out,
                        "note: no VM named {vm:?} runs on {iface}: its frames are dropped (counted as drop_no_socket) until it starts"
                    )?;
                }
            }
        }
        FilterCmd::Del { iface, id } => {
            let rule = RuleMaps::open_pinned(iface)?.delete(*id)?;
            writeln!(out, "deleted rule {id}: {rule}")?;
        }
        FilterCmd::List { iface, json } => {
            let rules = RuleMaps::open_pinned(iface)?.list()?;
            if *json {
                super::write_json(out, &rules)?;
            } else {
                writeln!(
                    out,
                    "{:>5} {:>5}  {:<40} {:<20} {:>12}",
                    "id", "prio", "match", "action", "hits"
                )?;
                for r in rules {
                    writeln!(
                        out,
                        "{:>5} {:>5}  {:<40} {:<20} {:>12}",
                        r.id, r.prio, r.matches, r.action, r.hits
                    )?;
                }
            }
        }
        FilterCmd::Flush { iface } => {
            let n = RuleMaps::open_pinned(iface)?.clear()?;
            writeln!(out, "deleted {n} rules")?;
        }
    }
    Ok(())
}
