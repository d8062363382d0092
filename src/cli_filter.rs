//! The `lancet filter`, `lancet nic` and `lancet stats` subcommands (clap definitions and their
//! implementations), for src/main.rs to embed:
//!
//! ```text
//! lancet filter add IFACE MATCH... ACTION [prio N]   e.g. lancet filter add lt-nic0 udp dport 4789 to vm web1 prio 10
//! lancet filter del IFACE ID
//! lancet filter list IFACE [--json]
//! lancet filter flush IFACE
//! lancet nic attach IFACE [--mode auto|native|generic] [--netns NAME]
//! lancet nic detach IFACE
//! lancet nic status IFACE [--json] [--netns NAME]
//! lancet stats IFACE [--json] [--watch [SECONDS]]
//! ```
//!
//! Every command works on the state pinned under `/sys/fs/bpf/lancet/IFACE/` by a running
//! `lancet run` or by `lancet nic attach`; `nic attach` works in the NIC's network namespace
//! (`--netns NAME`; not under `ip netns exec`, whose private /sys would take the pins with it).

use std::{io::Write, time::Duration};

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use crate::net::{
    format_mac,
    names::{IfName, NetnsName, NicKey},
    nic, pin,
    rulemaps::{FilterError, RuleMaps},
    rules::Rule,
    stats,
    steer::{self, Steering, XdpMode},
    NetError,
};

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

/// XDP attach mode on the command line.
#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum ModeArg {
    /// Native when the driver supports it, else generic.
    #[default]
    Auto,
    /// Driver mode.
    Native,
    /// Generic (skb) mode.
    Generic,
}

impl From<ModeArg> for XdpMode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Auto => XdpMode::Auto,
            ModeArg::Native => XdpMode::Native,
            ModeArg::Generic => XdpMode::Generic,
        }
    }
}

/// `lancet nic ...`
#[derive(Debug, Clone, Subcommand)]
pub enum NicCmd {
    /// Attach the steering program and pin it, so it stays without a running process.
    Attach {
        /// The NIC (in this network namespace).
        iface: IfName,
        /// XDP mode.
        #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
        mode: ModeArg,
        /// Enter this network namespace (ip netns) first. Use it instead of `ip netns exec`,
        /// which gives the process a private /sys where pins vanish with it.
        #[arg(long, value_name = "NAME")]
        netns: Option<NetnsName>,
    },
    /// Remove the pinned program, link and maps (the program detaches when no VMM holds it).
    Detach {
        /// The NIC.
        iface: NicKey,
    },
    /// Show what is attached and pinned.
    Status {
        /// The NIC.
        iface: NicKey,
        /// Enter this network namespace (ip netns) first (for the attach mode).
        #[arg(long, value_name = "NAME")]
        netns: Option<NetnsName>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

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

/// Errors of these commands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("{0}")]
    Usage(String),
}

/// Enter network namespace `name` (as `ip netns` names it) in this thread.
fn enter_netns(name: &str) -> Result<(), CliError> {
    let path = format!("/var/run/netns/{name}");
    let file = std::fs::File::open(&path).map_err(|e| {
        CliError::Usage(format!(
            "network namespace {name} not found ({path}: {e}): list them with `ip netns`"
        ))
    })?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
        CliError::Usage(format!(
            "cannot enter network namespace {name}: {e} (needs root)"
        ))
    })
}

/// Refuse to pin from a private mount namespace (`ip netns exec` remounts /sys): bpffs mounted
/// there disappears with the process, and the "persistent" program with it.
fn check_shared_bpffs() -> Result<(), CliError> {
    let ns = |p: &str| std::fs::read_link(p).ok();
    let mine = ns("/proc/self/ns/mnt");
    // `ip netns exec` unshares the mount namespace and then execs us: our parent (the shell)
    // stays in the original one.
    let parent = ns(&format!(
        "/proc/{}/ns/mnt",
        std::os::unix::process::parent_id()
    ));
    let init = ns("/proc/1/ns/mnt");
    let differs =
        |other: &Option<std::path::PathBuf>| mine.is_some() && other.is_some() && &mine != other;
    if differs(&parent) || differs(&init) {
        return Err(CliError::Usage(
            "this process runs in a private mount namespace (e.g. under `ip netns exec`), where pins under /sys/fs/bpf vanish when it exits: run `lancet nic attach --netns NAME IFACE` instead".into(),
        ));
    }
    Ok(())
}

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
                serde_json::to_writer_pretty(&mut *out, &rules).map_err(std::io::Error::other)?;
                writeln!(out)?;
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

/// What `lancet nic status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct NicStatus {
    /// The NIC.
    pub iface: String,
    /// Whether lancet's maps are pinned for it.
    pub pinned: bool,
    /// Whether its link is pinned (`nic attach`).
    pub link_pinned: bool,
    /// The program id of the pinned link.
    pub prog_id: Option<u32>,
    /// The attach mode, if the NIC is in this namespace and has a program.
    pub mode: Option<String>,
    /// Rules installed.
    pub rules: usize,
    /// Registered VMs: name, MAC, whether the process is gone.
    pub vms: Vec<(String, String, bool)>,
}

/// Gather `lancet nic status IFACE`.
pub fn nic_status(iface: &str) -> Result<NicStatus, CliError> {
    let dir = pin::pin_dir(iface)?;
    let link = pin::open_pinned(&dir.join(pin::LINK_PIN))?;
    let prog_id = match &link {
        Some(l) => Some(pin::link_info(l)?.prog_id),
        None => None,
    };
    let mode = nic::ifindex(iface)
        .ok()
        .and_then(|i| steer::xdp_attach_mode(i).ok().flatten())
        .map(|m| format!("{m:?}").to_lowercase());
    let (rules, vms) = match RuleMaps::open_pinned(iface) {
        Ok(maps) => (
            maps.list()?.len(),
            maps.vms()
                .into_iter()
                .map(|v| (v.name.clone(), format_mac(v.mac), v.is_stale()))
                .collect(),
        ),
        Err(FilterError::NotAttached { .. }) => (0, Vec::new()),
        Err(e) => return Err(e.into()),
    };
    Ok(NicStatus {
        iface: iface.to_string(),
        pinned: dir.exists(),
        link_pinned: link.is_some(),
        prog_id,
        mode,
        rules,
        vms,
    })
}

/// Run `lancet nic ...`, printing to `out`.
pub fn run_nic(cmd: &NicCmd, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        NicCmd::Attach { iface, mode, netns } => {
            check_shared_bpffs()?;
            if let Some(ns) = netns {
                enter_netns(ns)?;
            }
            let mut steering = Steering::attach_pinned(iface, (*mode).into())?;
            steering.pin_link()?;
            writeln!(
                out,
                "attached lancet's XDP program (id {}, {:?} mode) to {iface}; pinned in {}",
                steering.prog_id()?,
                steering.mode(),
                steering
                    .pin_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default()
            )?;
        }
        NicCmd::Detach { iface } => {
            let dir = pin::pin_dir(iface)?;
            if !dir.exists() {
                writeln!(out, "nothing pinned for {iface}")?;
                return Ok(());
            }
            pin::remove_dir(&dir)?;
            writeln!(
                out,
                "removed {}: the program detaches from {iface} when no running VMM holds it",
                dir.display()
            )?;
        }
        NicCmd::Status { iface, json, netns } => {
            if let Some(ns) = netns {
                enter_netns(ns)?;
            }
            let s = nic_status(iface)?;
            if *json {
                serde_json::to_writer_pretty(&mut *out, &s).map_err(std::io::Error::other)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "{}: {}{}{}, {} rules",
                    s.iface,
                    if s.link_pinned {
                        "attached and pinned (nic attach)"
                    } else if s.pinned {
                        "maps pinned by a running lancet"
                    } else {
                        "not attached by lancet"
                    },
                    s.prog_id
                        .map(|p| format!(", program {p}"))
                        .unwrap_or_default(),
                    s.mode
                        .as_deref()
                        .map(|m| format!(", {m} mode"))
                        .unwrap_or_default(),
                    s.rules
                )?;
                for (name, mac, stale) in &s.vms {
                    writeln!(
                        out,
                        "  vm {name} {mac}{}",
                        if *stale { " (stale: process gone)" } else { "" }
                    )?;
                }
            }
        }
    }
    Ok(())
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
