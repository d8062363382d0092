//! `lancet nic attach|detach|status IFACE`: lancet's XDP program on a NIC, pinned under
//! `/sys/fs/bpf/lancet/IFACE/` so it stays without a running process.
//!
//! ```text
//! lancet nic attach IFACE [--mode auto|native|generic] [--netns NAME]
//! lancet nic detach IFACE
//! lancet nic status IFACE [--json] [--netns NAME]
//! ```
//!
//! `nic attach` works in the NIC's network namespace (`--netns NAME`; not under `ip netns exec`,
//! whose private /sys would take the pins with it: refused).

use std::io::Write;

use clap::Subcommand;
use serde::Serialize;

use lancet::frame::MacAddr;
use lancet::net::{
    names::{IfName, NetnsName, NicKey},
    netns::{check_shared_bpffs, enter_netns},
    nic, pin,
    rulemaps::{FilterError, RuleMaps},
    steer::{self, Steering, XdpMode},
};

use super::CliError;

/// `lancet nic ...`
#[derive(Debug, Clone, Subcommand)]
pub enum NicCmd {
    /// Attach the steering program and pin it, so it stays without a running process.
    Attach {
        /// The NIC (in this network namespace).
        iface: IfName,
        /// XDP mode.
        #[arg(long, value_enum, default_value = "auto")]
        mode: XdpMode,
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
                .map(|v| (v.name.clone(), MacAddr(v.mac).to_string(), v.is_stale()))
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
            check_shared_bpffs("nic attach")?;
            if let Some(ns) = netns {
                enter_netns(ns)?;
            }
            let mut steering = Steering::attach_pinned(iface, *mode)?;
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
                super::write_json(out, &s)?;
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
