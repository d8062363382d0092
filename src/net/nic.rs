//! Small helpers for one network interface in the current thread's network namespace: index, MTU,
//! MAC, flags, bringing it up, enslaving it to a bridge, and the kernel-reverted membership that
//! makes a NIC accept a VM's unicast MAC (a packet socket: closed, or killed, means reverted).

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use super::{
    netlink::{Netlink, NetlinkError},
    NetError,
};

/// `SIOCBRADDIF`: add an interface (by index) to a bridge. Not exported by libc for Linux.
const SIOCBRADDIF: libc::c_ulong = 0x89a2;
/// `PACKET_MR_UNICAST`: add a unicast address to the NIC's filter. Not exported by libc for Linux.
const PACKET_MR_UNICAST: libc::c_int = 3;
/// `IFF_PROMISC` in the interface flags.
pub const IFF_PROMISC: u32 = libc::IFF_PROMISC as u32;
/// `IFF_UP` in the interface flags.
pub const IFF_UP: u32 = libc::IFF_UP as u32;
/// `IFF_RUNNING` in the interface flags: operationally up (carrier).
pub const IFF_RUNNING: u32 = libc::IFF_RUNNING as u32;

/// The index of `ifname`, or [`NetError::InterfaceNotFound`].
pub fn ifindex(ifname: &str) -> Result<u32, NetError> {
    let not_found = || NetError::InterfaceNotFound {
        ifname: ifname.to_string(),
    };
    let name = CString::new(ifname).map_err(|_| not_found())?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(not_found());
    }
    Ok(index)
}

/// An `ifreq` with its name set, or [`NetError::InterfaceNotFound`] when the name does not fit.
fn ifreq_for(ifname: &str) -> Result<libc::ifreq, NetError> {
    let bytes = ifname.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(NetError::InterfaceNotFound {
            ifname: ifname.to_string(),
        });
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

/// A throwaway datagram socket to issue interface ioctls on.
fn ioctl_socket() -> Result<OwnedFd, NetError> {
    // SAFETY: plain socket(2) call; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(NetError::io(
            "creating an ioctl socket",
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Issue `request` on `ifname` with `req`; maps ENODEV to [`NetError::InterfaceNotFound`].
fn ifreq_ioctl(
    ifname: &str,
    request: libc::c_ulong,
    req: &mut libc::ifreq,
    what: &str,
) -> Result<(), NetError> {
    let sock = ioctl_socket()?;
    // SAFETY: `req` is a valid ifreq for this request, living across the call.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), request as _, req as *mut libc::ifreq) };
    if ret < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENODEV) {
            return Err(NetError::InterfaceNotFound {
                ifname: ifname.to_string(),
            });
        }
        return Err(NetError::io(format!("{what} of {ifname:?}"), err));
    }
    Ok(())
}

/// `ETHTOOL_GCHANNELS`: read a NIC's channel (queue) counts (linux/ethtool.h).
const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// `struct ethtool_channels` (linux/ethtool.h): the command, then the maximum and current counts.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

/// How many RX queues `ifname` has active: its RX-only plus combined channels (ethtool
/// `ETHTOOL_GCHANNELS`), at least 1; 1 when the driver does not report channels (EOPNOTSUPP).
pub fn rx_queue_count(ifname: &str) -> Result<u32, NetError> {
    let mut channels = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..Default::default()
    };
    let mut req = ifreq_for(ifname)?;
    // The kernel writes the counts through this pointer during the ioctl below; `channels`
    // outlives the call.
    req.ifr_ifru.ifru_data = (&mut channels as *mut EthtoolChannels).cast();
    match ifreq_ioctl(
        ifname,
        libc::SIOCETHTOOL,
        &mut req,
        "reading the channel counts",
    ) {
        Ok(()) => Ok((channels.rx_count + channels.combined_count).max(1)),
        Err(NetError::Io { source, .. }) if source.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            Ok(1)
        }
        Err(e) => Err(e),
    }
}

/// The MTU of `ifname`.
pub fn mtu(ifname: &str) -> Result<u32, NetError> {
    let mut req = ifreq_for(ifname)?;
    ifreq_ioctl(ifname, libc::SIOCGIFMTU, &mut req, "reading the MTU")?;
    // SAFETY: SIOCGIFMTU filled the `ifru_mtu` member.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(u32::try_from(mtu).unwrap_or(0))
}

/// The hardware (MAC) address of `ifname`.
pub fn mac(ifname: &str) -> Result<[u8; 6], NetError> {
    let mut req = ifreq_for(ifname)?;
    ifreq_ioctl(
        ifname,
        libc::SIOCGIFHWADDR,
        &mut req,
        "reading the MAC address",
    )?;
    // SAFETY: SIOCGIFHWADDR filled the `ifru_hwaddr` member.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(data.iter()) {
        *dst = *src as u8;
    }
    Ok(mac)
}

/// The interface flags (`IFF_*`) of `ifname`.
pub fn flags(ifname: &str) -> Result<u32, NetError> {
    let mut req = ifreq_for(ifname)?;
    ifreq_ioctl(ifname, libc::SIOCGIFFLAGS, &mut req, "reading the flags")?;
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    Ok(u32::from(flags as u16))
}

/// Bring `ifname` up (set IFF_UP).
pub fn set_up(ifname: &str) -> Result<(), NetError> {
    let current = flags(ifname)?;
    let mut req = ifreq_for(ifname)?;
    req.ifr_ifru.ifru_flags = (current | IFF_UP) as u16 as libc::c_short;
    ifreq_ioctl(ifname, libc::SIOCSIFFLAGS, &mut req, "bringing up")
}

/// Enslave `port` to the Linux bridge `bridge`.
pub fn bridge_add_port(bridge: &str, port: &str) -> Result<(), NetError> {
    let index = ifindex(port)?;
    let mut req = ifreq_for(bridge)?;
    req.ifr_ifru.ifru_ifindex = index as libc::c_int;
    ifreq_ioctl(
        bridge,
        SIOCBRADDIF,
        &mut req,
        &format!("adding {port:?} to the bridge"),
    )
}

/// How the NIC is made to accept a VM's unicast MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipKind {
    /// Add the MAC to the NIC's unicast filter (the kernel falls back to promiscuous mode when the
    /// driver has no unicast filter).
    Unicast([u8; 6]),
    /// Promiscuous mode.
    Promiscuous,
}

/// A packet socket holding a PACKET_ADD_MEMBERSHIP on a NIC. The kernel drops the membership when
/// the socket closes, also when the process is killed, so the NIC returns to its previous state.
/// The socket is bound to protocol 0: it receives no frames.
#[derive(Debug)]
pub struct Membership {
    _socket: OwnedFd,
}

impl Membership {
    /// Add the membership `kind` on `ifname`.
    pub fn add(ifname: &str, kind: MembershipKind) -> Result<Self, NetError> {
        let index = ifindex(ifname)?;
        // SAFETY: plain socket(2) call; protocol 0 means no frames are delivered to it.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(NetError::io(
                "opening a packet socket for the MAC filter",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: packet_mreq is plain old data; all-zero is a valid value.
        let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mreq.mr_ifindex = index as libc::c_int;
        match kind {
            MembershipKind::Unicast(mac) => {
                mreq.mr_type = PACKET_MR_UNICAST as libc::c_ushort;
                mreq.mr_alen = 6;
                mreq.mr_address[..6].copy_from_slice(&mac);
            }
            MembershipKind::Promiscuous => mreq.mr_type = libc::PACKET_MR_PROMISC as libc::c_ushort,
        }
        // SAFETY: `mreq` is a valid packet_mreq and its size is passed.
        let ret = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                &mreq as *const libc::packet_mreq as *const libc::c_void,
                std::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
            )
        };
        if ret < 0 {
            return Err(NetError::io(
                format!("adding {kind:?} membership on {ifname:?}"),
                io::Error::last_os_error(),
            ));
        }
        Ok(Self { _socket: socket })
    }
}

/// Reads a NIC's link state (IFF_UP and IFF_RUNNING: up with carrier) through a socket opened in
/// the NIC's network namespace, so it keeps working from any thread.
#[derive(Debug)]
pub struct LinkProbe {
    socket: OwnedFd,
    ifname: String,
}

impl LinkProbe {
    /// Open for `ifname` in the calling thread's namespace.
    pub fn new(ifname: &str) -> Result<Self, NetError> {
        ifindex(ifname)?;
        Ok(Self {
            socket: ioctl_socket()?,
            ifname: ifname.to_string(),
        })
    }

    /// Whether the NIC is up and has carrier; false when it cannot be read (e.g. it vanished).
    pub fn is_up(&self) -> bool {
        let Ok(mut req) = ifreq_for(&self.ifname) else {
            return false;
        };
        // SAFETY: `req` is a valid ifreq for SIOCGIFFLAGS, living across the call.
        let ret = unsafe {
            libc::ioctl(
                self.socket.as_raw_fd(),
                libc::SIOCGIFFLAGS as _,
                &mut req as *mut libc::ifreq,
            )
        };
        if ret < 0 {
            return false;
        }
        // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member.
        let flags = u32::from(unsafe { req.ifr_ifru.ifru_flags } as u16);
        flags & IFF_UP != 0 && flags & IFF_RUNNING != 0
    }
}

/// What rtnetlink says about an interface that the ioctls above cannot tell.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkInfo {
    /// The link kind (`bridge`, `veth`, `tun`, ...); `None` for a plain physical NIC.
    pub kind: Option<String>,
    /// The device this one is enslaved to (its bridge), if any.
    pub master: Option<String>,
    /// The promiscuity count (packet-socket requests included, unlike the IFF_PROMISC flag).
    pub promiscuity: u64,
}

/// Kind, master and promiscuity of `ifname` in the calling thread's namespace (through
/// rtnetlink).
pub fn link_info(ifname: &str) -> Result<LinkInfo, NetError> {
    let netlink = Netlink::open()?;
    let link = netlink.link(ifname).map_err(|e| match e {
        NetlinkError::NoSuchLink { .. } => NetError::InterfaceNotFound {
            ifname: ifname.to_string(),
        },
        e => e.into(),
    })?;
    let master = link.master.map(|m| netlink.name_of(m)).transpose()?;
    Ok(LinkInfo {
        kind: link.kind,
        master,
        promiscuity: u64::from(link.promiscuity),
    })
}
