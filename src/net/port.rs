//! Veth ports: how a second (third, ...) VM shares a NIC queue that another VM's AF_XDP socket
//! already holds. AF_XDP binds one UMEM per (NIC, queue), and a veth has one RX queue that
//! cannot be steered, so such a VM gets its own veth pair in the NIC's namespace:
//!
//! ```text
//!   wire -> NIC --steering program: bpf_redirect_map(ports, slot)--> peer end (lt-p<pid>n<slot>b)
//!        ==veth==> port end (lt-p<pid>n<slot>a) --lancet_port_rx--> the VM's XSK (own UMEM)
//!   VM's XSK --sendto on the port end--> ==veth==> peer end --lancet_port_tx (generic XDP):
//!        bpf_redirect_map(port_out, 0)--> NIC xmit -> wire
//! ```
//!
//! The port end runs its program in native mode: veth accepts frames redirected into its peer
//! (ndo_xdp_xmit) only while the receiving end has an XDP program. The peer end runs its program in
//! generic mode, so the redirect to the NIC goes through the NIC's ordinary xmit path and needs no
//! XDP support from the NIC's own peer. Both ends have IPv6 disabled and no address, so the host
//! stack sends nothing through the port. The pair is deleted on drop; a pair left by a killed
//! process is deleted by the next VMM on that NIC ([`VethPort::remove_stale`]).
//!
//! The VM's process, UMEM, anti-spoofing and counters stay its own; the rules and MAC steering
//! reach it through its registrations (queue [`PORT_QUEUE`], slot = its `ports` index).

use std::{
    io,
    mem::MaybeUninit,
    os::fd::{AsFd, AsRawFd, OwnedFd, RawFd},
};

use libbpf_rs::{
    skel::{OpenSkel, SkelBuilder},
    MapCore, MapFlags, MapHandle, MapMut, ProgramMut,
};

use super::{
    abi::{percpu_u64_sum, port_drop, port_skel::PortSkelBuilder},
    netlink::{Netlink, Netns, VethOptions},
    nic,
    steer::{create_link, XdpMode, VETH_NATIVE_XDP_MAX_MTU},
    NetError,
};

pub use super::abi::{ALL_QUEUES, PORT_QUEUE};

/// Frames the port programs dropped (summed over CPUs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PortDrops {
    /// Frames for the VM while its socket was not in the port's XSKMAP.
    pub rx_no_socket: u64,
    /// Frames the VM sent that could not be redirected to the NIC.
    pub tx_no_nic: u64,
}

/// Name of the port end of VM port `slot` made by the VM with owner token `pid` (at most 15
/// characters: tokens have at most 7 digits, slots 2).
pub fn port_ifname(pid: u32, slot: u32) -> String {
    format!("lt-p{pid}n{slot}a")
}

/// Name of the peer end.
pub fn peer_ifname(pid: u32, slot: u32) -> String {
    format!("lt-p{pid}n{slot}b")
}

pub(super) fn disable_ipv6(ifname: &str) -> Result<(), NetError> {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    match std::fs::write(&path, "1") {
        Ok(()) => Ok(()),
        // No IPv6 in this kernel: nothing to disable.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::io(format!("writing {path}"), e)),
    }
}

fn bpf_err(context: &str) -> impl FnOnce(libbpf_rs::Error) -> NetError + '_ {
    move |source| NetError::Bpf {
        context: context.to_string(),
        source,
    }
}

/// One VM's veth port (see the module docs). Dropping it deletes the pair.
#[derive(Debug)]
pub struct VethPort {
    port: String,
    /// The network namespace the pair lives in (drop may run on a thread in another one).
    netns: Netns,
    peer_ifindex: u32,
    xsk: MapHandle,
    drops: MapHandle,
    /// The links hold the programs (the skeleton's object is closed after the attach).
    _rx_link: OwnedFd,
    _tx_link: OwnedFd,
}

impl VethPort {
    /// Create the pair for port `slot` of the VM with owner token `token` ([`super::owner`]:
    /// unique among running VMs, so the names are too) in the calling thread's namespace, attach
    /// the port programs and point the peer end's program at `nic`.
    pub fn create(nic_name: &str, slot: u32, token: u32) -> Result<Self, NetError> {
        let (port, peer) = (port_ifname(token, slot), peer_ifname(token, slot));
        let nic_index = nic::ifindex(nic_name)?;
        let mtu = nic::mtu(nic_name)?;
        let netlink = Netlink::open()?;
        // A pair of this name can only be left by a dead VM that had this token.
        if netlink.exists(&port)? {
            netlink.delete(&port)?;
        }
        let netns = Netns::current()?;
        let veth = VethOptions {
            mtu: Some(mtu),
            ..Default::default()
        };
        netlink.add_veth(&port, &peer, &veth)?;
        // From here on the guard deletes the pair on every error path.
        let mut guard = PairGuard(Some(port.clone()));
        for end in [&port, &peer] {
            disable_ipv6(end)?;
            nic::set_up(end)?;
        }
        let mut storage = MaybeUninit::uninit();
        let skel = PortSkelBuilder::default()
            .open(&mut storage)
            .map_err(bpf_err("opening the embedded port object"))?
            .load()
            .map_err(bpf_err("loading the veth port programs into the kernel"))?;
        let map = |m: &MapMut<'_>| MapHandle::try_from(m).map_err(bpf_err("opening a port map"));
        let (xsk, out, drops) = (
            map(&skel.maps.port_xsk)?,
            map(&skel.maps.port_out)?,
            map(&skel.maps.port_drops)?,
        );
        out.update(&0u32.to_ne_bytes(), &nic_index.to_ne_bytes(), MapFlags::ANY)
            .map_err(bpf_err("pointing the veth port at the NIC"))?;
        let port_index = nic::ifindex(&port)?;
        let peer_index = nic::ifindex(&peer)?;
        let attach = |prog: &ProgramMut<'_>, ifname: &str, ifindex: u32, mode: XdpMode| {
            create_link(prog.as_fd().as_raw_fd(), ifindex, mode).map_err(|e| {
                if e.raw_os_error() == Some(libc::ERANGE) {
                    NetError::MtuTooLarge {
                        ifname: nic_name.to_string(),
                        mtu: nic::mtu(nic_name).unwrap_or(0),
                        max: VETH_NATIVE_XDP_MAX_MTU,
                        reason: "a second VM's veth port (native XDP on veth) allows",
                    }
                } else {
                    NetError::io(
                        format!(
                            "attaching {} to the veth port end {ifname:?}",
                            prog.name().to_string_lossy()
                        ),
                        e,
                    )
                }
            })
        };
        // On the port end (towards the VM's socket) and the peer end (towards the NIC).
        let rx_link = attach(
            &skel.progs.lancet_port_rx,
            &port,
            port_index,
            XdpMode::Native,
        )?;
        let tx_link = attach(
            &skel.progs.lancet_port_tx,
            &peer,
            peer_index,
            XdpMode::Generic,
        )?;
        guard.disarm();
        Ok(Self {
            port,
            netns,
            peer_ifindex: peer_index,
            xsk,
            drops,
            _rx_link: rx_link,
            _tx_link: tx_link,
        })
    }

    /// The end the VM's AF_XDP socket binds to (queue 0).
    pub fn port_ifname(&self) -> &str {
        &self.port
    }

    /// The ifindex the NIC's steering program redirects the VM's frames to.
    pub fn peer_ifindex(&self) -> u32 {
        self.peer_ifindex
    }

    /// Put the VM's AF_XDP socket behind the port end.
    pub fn set_socket(&self, xsk_fd: RawFd) -> Result<(), NetError> {
        let fd = u32::try_from(xsk_fd)
            .map_err(|_| NetError::InvalidConfig(format!("bad socket fd {xsk_fd}")))?;
        self.xsk
            .update(&0u32.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
            .map_err(bpf_err(
                "inserting the AF_XDP socket into the port's XSKMAP",
            ))
    }

    /// Frames the port programs dropped.
    pub fn drops(&self) -> PortDrops {
        let read = |index: port_drop| -> u64 { percpu_u64_sum(&self.drops, index.0) };
        PortDrops {
            rx_no_socket: read(port_drop::PORT_DROP_RX_NO_SOCKET),
            tx_no_nic: read(port_drop::PORT_DROP_TX_NO_NIC),
        }
    }

    /// Delete the pair a killed VM with owner token `pid` left for port `slot` (in the calling
    /// thread's namespace), if it is still there.
    pub fn remove_stale(pid: u32, slot: u32) {
        let port = port_ifname(pid, slot);
        let removed = Netlink::open().and_then(|netlink| {
            if netlink.exists(&port)? {
                netlink.delete(&port)?;
            }
            Ok(())
        });
        if let Err(e) = removed {
            tracing::warn!(error = %e, port, "removing a stale veth port");
        }
    }
}

impl Drop for VethPort {
    fn drop(&mut self) {
        // The socket is made inside the pair's namespace; the caller's thread stays where it is.
        let removed = Netlink::open_in(&self.netns).and_then(|netlink| netlink.delete(&self.port));
        if let Err(e) = removed {
            tracing::warn!(error = %e, port = %self.port, "removing the veth port");
        }
    }
}

/// Deletes a half-made pair when [`VethPort::create`] fails.
struct PairGuard(Option<String>);

impl PairGuard {
    /// The pair is complete: keep it.
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for PairGuard {
    fn drop(&mut self) {
        if let Some(port) = &self.0 {
            let _ = Netlink::open().and_then(|netlink| netlink.delete(port));
        }
    }
}
