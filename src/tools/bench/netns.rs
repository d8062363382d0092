//! The bench's view of the shared testbed ([`crate::tools::testbed::Testbed`]: two `lt-*` namespaces
//! joined by a veth pair, removed on drop) as two addressed ends; running code inside a namespace;
//! reading interface counters.

use std::net::Ipv4Addr;
use std::thread;

use super::packet::Mac;
use super::BenchError;
pub use crate::net::netlink::LinkCounters;
use crate::net::netlink::{add_persistent_tap, Netlink, Netns};
use crate::tools::testbed::{Side, Testbed, TestbedConfig};

/// One end of the veth pair: its namespace, interface and addresses.
#[derive(Debug, Clone)]
pub struct VethEnd {
    pub netns: String,
    pub ifname: String,
    pub mac: Mac,
    pub ip: Ipv4Addr,
}

/// A [`Testbed`] seen as two ends: `a` is the host side (`lt-nic`, where the path under test
/// sits; a port of the bridge `lt-br0` when bridged), `b` the peer side (`lt-peer`, where the
/// bench's client, generator and counter run). IPv6 is off in both (no neighbour-discovery noise
/// in the counts). Everything is deleted on drop.
#[derive(Debug)]
pub struct VethPairNetns {
    pub a: VethEnd,
    pub b: VethEnd,
    bed: Testbed,
}

impl VethPairNetns {
    /// The endpoint of a device under test that is end `a` itself (its MAC and address), seen
    /// from the peer on end `b`.
    pub fn endpoint_at_a(&self) -> super::Endpoint {
        super::Endpoint {
            peer_netns: self.b.netns.clone(),
            peer_ifname: self.b.ifname.clone(),
            peer_mac: self.b.mac,
            peer_ip: self.b.ip,
            dut_mac: self.a.mac,
            dut_ip: self.a.ip,
            echo_port: super::packet::ECHO_PORT,
        }
    }
}

fn setup_err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(e.to_string())
}

impl VethPairNetns {
    /// A plain pair (the host end `lt-nic` has 10.77.0.1/24, the peer 10.77.0.2/24). `tag` (its
    /// first two characters) goes into the namespace names, which are unique per process.
    pub fn create(tag: &str) -> Result<Self, BenchError> {
        Self::build(tag, false)
    }

    /// A pair whose host end is a port of the bridge `lt-br0` (which holds 10.77.0.1/24): the
    /// TAP paths' topology.
    pub fn create_bridged(tag: &str) -> Result<Self, BenchError> {
        Self::build(tag, true)
    }

    fn build(tag: &str, with_bridge: bool) -> Result<Self, BenchError> {
        let bed = Testbed::new(TestbedConfig {
            name_prefix: tag.to_string(),
            with_bridge,
            ..Default::default()
        })
        .map_err(setup_err)?;
        let end = |side: Side, ifname: &str, ip: Ipv4Addr| -> Result<VethEnd, BenchError> {
            Ok(VethEnd {
                netns: bed.ns_name(side).to_string(),
                ifname: ifname.to_string(),
                mac: bed.mac_of(side, ifname).map_err(setup_err)?,
                ip,
            })
        };
        let a = end(Side::Host, Testbed::NIC, Testbed::HOST_IP)?;
        let b = end(Side::Peer, Testbed::PEER_NIC, Testbed::PEER_IP)?;
        Ok(VethPairNetns { a, b, bed })
    }

    /// A UDP flow from end `a` to the discard port of end `b` (source port 40000).
    pub fn discard_flow_a_to_b(&self) -> super::packet::UdpFlow {
        super::packet::UdpFlow {
            src_mac: self.a.mac,
            dst_mac: self.b.mac,
            src_ip: self.a.ip,
            dst_ip: self.b.ip,
            src_port: 40000,
            dst_port: super::packet::DISCARD_PORT,
        }
    }

    /// The bridge of a [`VethPairNetns::create_bridged`] pair.
    pub fn bridge(&self) -> Option<&'static str> {
        self.bed.has_bridge().then_some(Testbed::BRIDGE)
    }

    /// Add a TAP device (`lt-tap0`) to the bridge, for a VMM that opens an existing TAP (QEMU).
    /// Returns its name.
    pub fn add_bridged_tap(&self) -> Result<String, BenchError> {
        let bridge = self.bridge().ok_or_else(|| {
            BenchError::Setup(
                "a TAP needs a bridged testbed (VethPairNetns::create_bridged)".into(),
            )
        })?;
        let tap = Testbed::TAP;
        let netns = Netns::named(&self.a.netns).map_err(setup_err)?;
        netns.run(|| add_persistent_tap(tap)).map_err(setup_err)?;
        let netlink = Netlink::open_in(&netns).map_err(setup_err)?;
        netlink.set_master(tap, bridge).map_err(setup_err)?;
        netlink.set_up(tap).map_err(setup_err)?;
        Ok(tap.to_string())
    }
}

/// Read `ifname`'s counters inside `netns` (through rtnetlink).
pub fn link_counters(netns: &str, ifname: &str) -> Result<LinkCounters, BenchError> {
    let link = Netlink::open_named(netns)
        .and_then(|netlink| netlink.link(ifname))
        .map_err(|e| BenchError::Io(format!("reading counters of {ifname} in {netns}: {e}")))?;
    Ok(link.counters)
}

/// Move the calling thread into the named network namespace ([`crate::net::netns::enter_netns`],
/// with the bench's error type).
pub fn enter_netns(netns: &str) -> Result<(), BenchError> {
    crate::net::netns::enter_netns(netns).map_err(|e| BenchError::Setup(e.to_string()))
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

/// TX checksum offload turned off on an interface (`ethtool -K IF tx off` inside its namespace)
/// while this guard lives; turned back on when it drops. A Linux peer on a veth otherwise leaves
/// its TCP checksums to the "hardware" (CHECKSUM_PARTIAL), and the AF_XDP path delivers such
/// segments to the guest unfinished, so the guest drops them as corrupt.
pub struct TxChecksumOffloadOff {
    netns: String,
    ifname: String,
}

fn ethtool_tx(netns: &str, ifname: &str, state: &str) -> Result<(), BenchError> {
    let out = Netns::named(netns)
        .and_then(|ns| ns.command("ethtool"))
        .map_err(setup_err)?
        .args(["-K", ifname, "tx", state])
        .output()
        .map_err(|e| BenchError::Setup(format!("cannot run ethtool (install ethtool): {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BenchError::Setup(format!(
            "`ethtool -K {ifname} tx {state}` in {netns} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl TxChecksumOffloadOff {
    pub fn new(netns: &str, ifname: &str) -> Result<Self, BenchError> {
        ethtool_tx(netns, ifname, "off")?;
        Ok(TxChecksumOffloadOff {
            netns: netns.to_string(),
            ifname: ifname.to_string(),
        })
    }
}

impl Drop for TxChecksumOffloadOff {
    fn drop(&mut self) {
        let _ = ethtool_tx(&self.netns, &self.ifname, "on");
    }
}
