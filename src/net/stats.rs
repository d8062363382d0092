//! `lancet stats IFACE`: everything observable about one NIC's steering and its VMs in one report.
//!
//! Sources: the pinned maps (XDP verdicts, per-rule hits, registered VMs) and the counters each
//! running VMM publishes with [`StatsPublisher`] to `/run/lancet/<ifname>/<vm>.json` (frames,
//! bytes, drops by reason including the XSK ring statistics XDP_STATISTICS, mirror and anti-spoof
//! counters). The file is replaced atomically (write + rename) at most every
//! [`PUBLISH_INTERVAL`], so the I/O thread pays one small write per interval.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{
    rulemaps::{FilterError, ListedRule, RuleMaps, VmName},
    steer::{pinned_counters, SteerCounters},
    vmnet::PublishedStats,
    NetError,
};

/// Where running VMMs publish their counters.
pub const STATS_ROOT: &str = "/run/lancet";
/// How often [`StatsPublisher::maybe_publish`] writes.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(500);

/// The file a VM's counters go to; `key` is the NIC's pin directory name (`<ifname>` or
/// `<ifname>@<netns inode>`, see [`super::pin`]).
pub fn stats_path(key: &str, vm: &str) -> PathBuf {
    Path::new(STATS_ROOT).join(key).join(format!("{vm}.json"))
}

/// The stats key of NIC `ifname` in the calling thread's namespace.
pub fn key_here(ifname: &str) -> String {
    super::pin::pin_dir_here(ifname)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ifname.to_string())
}

/// Remove the stats directories (`<ifname>@<netns inode>`) of namespaces that no longer exist:
/// a VMM killed with -9 cannot remove its file, and once its namespace is gone no `lancet stats`
/// can ask for it. Best effort; only plain files directly inside such a directory are removed.
fn sweep_dead_namespaces() {
    let Ok(entries) = std::fs::read_dir(STATS_ROOT) else {
        return;
    };
    let live = super::pin::live_netns_inodes();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((_, tag)) = name.to_str().and_then(|n| n.rsplit_once('@')) else {
            continue;
        };
        let dead = tag.parse::<u64>().is_ok_and(|tag| !live.contains(&tag));
        // DirEntry::file_type does not follow symlinks: a planted one is left alone.
        if !dead || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if let Ok(files) = std::fs::read_dir(entry.path()) {
            for file in files.flatten() {
                if file.file_type().is_ok_and(|t| t.is_file()) {
                    let _ = std::fs::remove_file(file.path());
                }
            }
        }
        let _ = std::fs::remove_dir(entry.path());
    }
}

/// Publishes one VM's counters for `lancet stats`.
#[derive(Debug)]
pub struct StatsPublisher {
    path: PathBuf,
    last: Option<Instant>,
}

impl StatsPublisher {
    /// A publisher for VM `vm` on the NIC whose stats key (see [`key_here`]) is `key`.
    pub fn new(key: &str, vm: &str) -> Result<Self, NetError> {
        sweep_dead_namespaces();
        let path = stats_path(key, vm);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| NetError::io(format!("creating {}", dir.display()), e))?;
        }
        Ok(Self { path, last: None })
    }

    /// Whether [`PUBLISH_INTERVAL`] passed since the last publication (collecting the counters
    /// costs syscalls: callers on a hot path check this first).
    pub fn due(&self) -> bool {
        !self.last.is_some_and(|t| t.elapsed() < PUBLISH_INTERVAL)
    }

    /// Publish `counters` if [`PUBLISH_INTERVAL`] passed since the last time.
    pub fn maybe_publish(&mut self, counters: &PublishedStats) {
        if self.due() {
            self.publish(counters);
        }
    }

    /// Publish `counters` now (errors are logged, never fatal to the VM).
    pub fn publish(&mut self, counters: &PublishedStats) {
        self.last = Some(Instant::now());
        let tmp = self.path.with_extension("json.tmp");
        let result = serde_json::to_vec_pretty(counters)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|_| std::fs::rename(&tmp, &self.path));
        if let Err(e) = result {
            tracing::warn!(path = %self.path.display(), error = %e, "publishing stats");
        }
    }
}

impl Drop for StatsPublisher {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        // Removed only when no other VM of this NIC still publishes there.
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Everything `lancet stats IFACE` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The NIC.
    pub ifname: String,
    /// The XDP program's verdicts.
    pub verdicts: SteerCounters,
    /// Rules with their hit counters.
    pub rules: Vec<ListedRule>,
    /// Registered VMs (`stale`: their process is gone).
    pub vms: Vec<VmReport>,
}

/// One VM in a [`Report`].
#[derive(Debug, Clone, Serialize)]
pub struct VmReport {
    /// Its registration.
    #[serde(flatten)]
    pub vm: VmName,
    /// Whether its process is gone.
    pub stale: bool,
    /// What its VMM last published (None: nothing published, or unreadable).
    pub counters: Option<PublishedStats>,
}

/// Collect the report of `ifname` from its pinned maps and the published VM counters.
pub fn collect(ifname: &str) -> Result<Report, FilterError> {
    let maps = RuleMaps::open_pinned(ifname)?;
    let verdicts = pinned_counters(ifname)?;
    let key = super::pin::pin_dir(ifname)?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ifname.to_string());
    let rules = maps.list()?;
    let vms = maps
        .vms()
        .into_iter()
        .map(|vm| {
            let counters = std::fs::read(stats_path(&key, &vm.name))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            VmReport {
                stale: vm.is_stale(),
                vm,
                counters,
            }
        })
        .collect();
    Ok(Report {
        ifname: ifname.to_string(),
        verdicts,
        rules,
        vms,
    })
}

/// The report of the NIC that a VM named `vm` is registered on, narrowed to that VM (its NIC's
/// verdicts and rules stay: they are what steered its traffic). Searches every pinned NIC; a name
/// registered on several NICs is ambiguous and refused.
pub fn collect_vm(vm: &str) -> Result<Report, FilterError> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(super::pin::PIN_ROOT) {
        for e in entries.flatten() {
            let key = e.file_name().to_string_lossy().into_owned();
            let Ok(maps) = RuleMaps::open_pinned(&key) else {
                continue;
            };
            if maps.vms().iter().any(|v| v.name == vm) {
                found.push(key);
            }
        }
    }
    match found.as_slice() {
        [key] => {
            let mut report = collect(key)?;
            report.vms.retain(|v| v.vm.name == vm);
            Ok(report)
        }
        [] => Err(FilterError::from(super::NetError::InvalidConfig(format!(
            "{vm:?} is neither a NIC with lancet's program attached nor a running VM's name \
             (`lancet nic status IFACE` lists a NIC's VMs)"
        )))),
        keys => Err(FilterError::from(super::NetError::InvalidConfig(format!(
            "VMs named {vm:?} run on several NICs ({}): give the NIC",
            keys.join(", ")
        )))),
    }
}

/// The report as text for a terminal.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let v = &r.verdicts;
    let _ = writeln!(s, "{}: XDP verdicts", r.ifname);
    for (name, n) in [
        ("to_vm (MAC)", v.to_vm),
        ("to_vm (ARP)", v.to_vm_arp),
        ("to_vm (NS)", v.to_vm_ns),
        ("to_host", v.to_host),
        ("rule to_vm", v.rule_to_vm),
        ("rule pass", v.rule_pass),
        ("rule drop", v.rule_drop),
        ("rule mirror", v.rule_mirror),
        ("drop no socket", v.drop_no_socket),
        ("drop wrong queue", v.drop_wrong_queue),
    ] {
        let _ = writeln!(s, "  {name:<18} {n:>12}");
    }
    let _ = writeln!(s, "rules");
    let _ = writeln!(
        s,
        "  {:>5} {:>5}  {:<40} {:<20} {:>12}",
        "id", "prio", "match", "action", "hits"
    );
    for rule in &r.rules {
        let _ = writeln!(
            s,
            "  {:>5} {:>5}  {:<40} {:<20} {:>12}",
            rule.id, rule.prio, rule.matches, rule.action, rule.hits
        );
    }
    let _ = writeln!(s, "VMs");
    for vm in &r.vms {
        let _ = writeln!(
            s,
            "  {} slot {} {} mac {} pid {}{}",
            vm.vm.name,
            vm.vm.slot,
            if vm.vm.queue == super::steer::PORT_QUEUE {
                "veth port".to_string()
            } else if vm.vm.queue == super::steer::ALL_QUEUES {
                "all queues".to_string()
            } else {
                format!("queue {}", vm.vm.queue)
            },
            crate::frame::MacAddr(vm.vm.mac),
            vm.vm.pid,
            if vm.stale {
                " (stale: process gone)"
            } else {
                ""
            }
        );
        if let Some(c) = &vm.counters {
            s.push_str(&super::table::counters_table(c, 4));
        }
    }
    s
}
