//! A minimal private testbed for the bench until the shared `testbed` module lands: two `lt-b*`
//! network namespaces joined by a veth pair, removed on drop; and running code inside a namespace.

use std::fs::File;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

use nix::sched::{setns, CloneFlags};

use super::packet::{format_mac, Mac};
use super::BenchError;

/// Where `ip netns` keeps its namespace handles.
const NETNS_RUN_DIR: &str = "/run/netns";
/// Longest interface name Linux accepts (IFNAMSIZ - 1).
const MAX_IFNAME_LEN: usize = 15;
/// Prefix length of the /24 the pair shares.
const PAIR_PREFIX_LEN: u8 = 24;

static PAIR_COUNTER: AtomicU32 = AtomicU32::new(0);

/// One end of the veth pair: its namespace, interface and addresses.
#[derive(Debug, Clone)]
pub struct VethEnd {
    pub netns: String,
    pub ifname: String,
    pub mac: Mac,
    pub ip: Ipv4Addr,
}

/// Two namespaces `lt-b<tag>a` / `lt-b<tag>b` with a veth pair between them, both ends up, IPv6
/// off (no neighbour-discovery noise in the counts), addresses 10.77.0.1/24 and 10.77.0.2/24.
/// Everything is deleted on drop (deleting a namespace deletes its veth end, which deletes the pair).
#[derive(Debug)]
pub struct VethPairNetns {
    pub a: VethEnd,
    pub b: VethEnd,
    created: Vec<String>,
}

fn ip_cmd(args: &[&str]) -> Result<(), BenchError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| BenchError::Setup(format!("cannot run `ip` (install iproute2): {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BenchError::Setup(format!(
            "`ip {}` failed: {} (are you root?)",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl VethPairNetns {
    /// Create the pair. `tag` (a few characters naming the user, e.g. a test's short name) and
    /// the process id and a counter make the names unique; names are cut to 15 characters.
    pub fn create(tag: &str) -> Result<Self, BenchError> {
        let serial = PAIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let unique = format!("{:x}{serial:x}", std::process::id() & 0xfffff);
        let base: String = format!("lt-b{tag}")
            .chars()
            .take(MAX_IFNAME_LEN - unique.len() - 1)
            .collect();
        let name = |side: char| format!("{base}{unique}{side}");
        let mut pair = VethPairNetns {
            a: VethEnd {
                netns: name('a'),
                ifname: name('a'),
                mac: [0x02, 0x6c, 0x74, 0x62, 0x00, 0x0a],
                ip: Ipv4Addr::new(10, 77, 0, 1),
            },
            b: VethEnd {
                netns: name('b'),
                ifname: name('b'),
                mac: [0x02, 0x6c, 0x74, 0x62, 0x00, 0x0b],
                ip: Ipv4Addr::new(10, 77, 0, 2),
            },
            created: Vec::new(),
        };
        for end in [pair.a.clone(), pair.b.clone()] {
            ip_cmd(&["netns", "add", &end.netns])?;
            pair.created.push(end.netns.clone());
        }
        ip_cmd(&[
            "link",
            "add",
            &pair.a.ifname,
            "netns",
            &pair.a.netns,
            "type",
            "veth",
            "peer",
            "name",
            &pair.b.ifname,
            "netns",
            &pair.b.netns,
        ])?;
        for end in [&pair.a, &pair.b] {
            let ns = end.netns.as_str();
            for key in ["all", "default"] {
                let knob = format!("net.ipv6.conf.{key}.disable_ipv6=1");
                ip_cmd(&["-n", ns, "exec", "sysctl", "-qw", &knob]).or_else(|_| {
                    // `ip -n NS exec` is not supported everywhere; fall back to the long form.
                    ip_cmd(&["netns", "exec", ns, "sysctl", "-qw", &knob])
                })?;
            }
            let mac = format_mac(&end.mac);
            ip_cmd(&["-n", ns, "link", "set", &end.ifname, "address", &mac])?;
            let cidr = format!("{}/{PAIR_PREFIX_LEN}", end.ip);
            ip_cmd(&["-n", ns, "addr", "add", &cidr, "dev", &end.ifname])?;
            ip_cmd(&["-n", ns, "link", "set", "lo", "up"])?;
            ip_cmd(&["-n", ns, "link", "set", &end.ifname, "up"])?;
        }
        Ok(pair)
    }
}

impl VethPairNetns {
    /// Put side `a`'s veth end on a new bridge in its namespace (for a VMM that adds its own TAP
    /// to that bridge); the veth end loses its address. Returns (bridge, a free TAP name).
    pub fn add_bridge(&self) -> Result<(String, String), BenchError> {
        let ns = self.a.netns.as_str();
        let stem = &self.a.ifname[..self.a.ifname.len() - 1];
        let bridge = format!("{stem}r");
        ip_cmd(&["-n", ns, "link", "add", &bridge, "type", "bridge"])?;
        ip_cmd(&["-n", ns, "addr", "flush", "dev", &self.a.ifname])?;
        ip_cmd(&["-n", ns, "link", "set", &self.a.ifname, "master", &bridge])?;
        ip_cmd(&["-n", ns, "link", "set", &self.a.ifname, "up"])?;
        ip_cmd(&["-n", ns, "link", "set", &bridge, "up"])?;
        Ok((bridge, format!("{stem}t")))
    }

    /// Turn side `a` into a TAP host: a bridge in `a`'s namespace with the veth end and a new TAP
    /// device as ports (the veth end loses its address). Returns the TAP's name. Everything lives
    /// in the namespace, so it goes away with it on drop.
    pub fn add_bridged_tap(&self) -> Result<String, BenchError> {
        let ns = self.a.netns.as_str();
        let (bridge, tap) = self.add_bridge()?;
        ip_cmd(&["-n", ns, "tuntap", "add", "dev", &tap, "mode", "tap"])?;
        ip_cmd(&["-n", ns, "link", "set", &tap, "master", &bridge])?;
        ip_cmd(&["-n", ns, "link", "set", &tap, "up"])?;
        Ok(tap)
    }
}

/// Counters of one interface as the kernel keeps them (`ip -s link`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounters {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

/// Read `ifname`'s counters inside `netns` (through `ip -j -s link show`).
pub fn link_counters(netns: &str, ifname: &str) -> Result<LinkCounters, BenchError> {
    let out = Command::new("ip")
        .args(["-n", netns, "-j", "-s", "link", "show", "dev", ifname])
        .output()
        .map_err(|e| BenchError::Setup(format!("cannot run `ip` (install iproute2): {e}")))?;
    if !out.status.success() {
        return Err(BenchError::Io(format!(
            "reading counters of {ifname} in {netns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| BenchError::Io(format!("parsing `ip -j -s link` output: {e}")))?;
    let stats = &parsed[0]["stats64"];
    let get = |dir: &str, key: &str| stats[dir][key].as_u64().unwrap_or(0);
    Ok(LinkCounters {
        rx_packets: get("rx", "packets"),
        rx_dropped: get("rx", "dropped"),
        tx_packets: get("tx", "packets"),
        tx_dropped: get("tx", "dropped"),
    })
}

impl Drop for VethPairNetns {
    fn drop(&mut self) {
        for ns in self.created.drain(..) {
            if let Err(e) = ip_cmd(&["netns", "del", &ns]) {
                tracing::warn!("bench testbed cleanup: {e}");
            }
        }
    }
}

/// Move the calling thread into the named network namespace (a handle under /run/netns).
/// Sockets created afterwards by this thread live there; other threads are unaffected.
pub fn enter_netns(netns: &str) -> Result<(), BenchError> {
    let path = format!("{NETNS_RUN_DIR}/{netns}");
    let handle = File::open(&path).map_err(|e| {
        BenchError::Setup(format!(
            "cannot open network namespace {path}: {e} (create it with `ip netns add`)"
        ))
    })?;
    setns(&handle, CloneFlags::CLONE_NEWNET)
        .map_err(|e| BenchError::Setup(format!("setns into {netns} failed: {e} (need root)")))
}

/// Run `work` on a new thread that first enters `netns`; returns the thread's handle.
pub fn spawn_in_netns<T, F>(
    netns: &str,
    name: &str,
    work: F,
) -> Result<thread::JoinHandle<Result<T, BenchError>>, BenchError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, BenchError> + Send + 'static,
{
    let netns = netns.to_string();
    thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            enter_netns(&netns)?;
            work()
        })
        .map_err(|e| BenchError::Setup(format!("cannot spawn thread {name}: {e}")))
}

/// Join a thread started with [`spawn_in_netns`], turning a panic into an error.
pub fn join<T>(handle: thread::JoinHandle<Result<T, BenchError>>) -> Result<T, BenchError> {
    handle
        .join()
        .map_err(|_| BenchError::Setup("a bench worker thread panicked".into()))?
}
