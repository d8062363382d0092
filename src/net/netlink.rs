//! Links, addresses and network namespaces through rtnetlink (no `ip` child processes): add a
//! veth pair, bridge or persistent TAP; set a link up, its MTU or its bridge; add an IPv4 address;
//! read a link's index, MAC, MTU, queues, kind, bridge, promiscuity and counters; delete a link;
//! create and delete named namespaces the way iproute2 does (`/run/netns/NAME`).
//!
//! A [`Netlink`] handle is a blocking rtnetlink socket. A netlink socket belongs to the namespace
//! it was created in, so [`Netlink::open_in`] creates it on a short-lived thread that enters the
//! target namespace: the calling thread never changes namespace.

use std::{
    fs::File,
    io,
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsFd, AsRawFd},
    os::unix::process::CommandExt,
    path::Path,
    process::Command,
};

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE,
    NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{
        BridgeStpState, InfoBridge, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags,
        LinkInfo, LinkMessage,
    },
    AddressFamily, RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sched::{setns, unshare, CloneFlags},
};

/// Where iproute2 (and this module) keep the handles of named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";
/// The calling thread's own network namespace.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";
/// The TUN/TAP clone device.
const TUN_DEVICE: &str = "/dev/net/tun";
/// Receive buffer for one batch of netlink replies.
const RECV_BUFFER_LEN: usize = 64 * 1024;

/// What went wrong talking to the kernel about links, addresses or namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening an rtnetlink socket: {0} (the kernel must have netlink; run as root)")]
    Socket(#[source] io::Error),
    #[error("network namespace {name:?}: {context}: {source} ({hint})")]
    Netns {
        name: String,
        context: &'static str,
        source: io::Error,
        hint: &'static str,
    },
    #[error("no interface {name:?} in this network namespace: check the name with `ip link`")]
    NoSuchLink { name: String },
    #[error("{what}: {source} ({hint})")]
    Request {
        what: String,
        source: io::Error,
        hint: &'static str,
    },
    #[error("{what}: the kernel's reply could not be read: {detail}")]
    Reply { what: String, detail: String },
}

/// What a user can do about `errno` from a link/address request.
fn hint_for(errno: Option<i32>) -> &'static str {
    match errno {
        Some(libc::EPERM) | Some(libc::EACCES) => "needs CAP_NET_ADMIN: run as root",
        Some(libc::EEXIST) => "one of that name already exists: delete it first",
        Some(libc::ENODEV) => "no such interface: check the name with `ip link`",
        Some(libc::EOPNOTSUPP) => {
            "the kernel lacks that link type: load its module (veth, bridge, tun)"
        }
        Some(libc::ERANGE) | Some(libc::EINVAL) => {
            "a value is out of range for this device (MTU, queue count, name)"
        }
        _ => "see the kernel log (`dmesg`)",
    }
}

fn request_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> NetlinkError {
    let what = what.into();
    move |source| NetlinkError::Request {
        hint: hint_for(source.raw_os_error()),
        what,
        source,
    }
}

fn netns_err(
    name: &str,
    context: &'static str,
    hint: &'static str,
) -> impl FnOnce(io::Error) -> NetlinkError {
    let name = name.to_string();
    move |source| NetlinkError::Netns {
        name,
        context,
        source,
        hint,
    }
}

/// A handle on a network namespace (an open `/run/netns/NAME` or `/proc/.../ns/net`).
#[derive(Debug)]
pub struct Netns {
    name: String,
    file: File,
}

impl Netns {
    /// The calling thread's namespace.
    pub fn current() -> Result<Self, NetlinkError> {
        let file = File::open(THREAD_NETNS).map_err(netns_err(
            "(current)",
            "opening /proc/thread-self/ns/net",
            "is /proc mounted?",
        ))?;
        Ok(Self {
            name: "(current)".into(),
            file,
        })
    }

    /// The named namespace `/run/netns/NAME`.
    pub fn named(name: &str) -> Result<Self, NetlinkError> {
        let file = File::open(Path::new(NETNS_RUN_DIR).join(name)).map_err(netns_err(
            name,
            "opening its handle under /run/netns",
            "create it first (`ip netns add`); needs root",
        ))?;
        Ok(Self {
            name: name.to_string(),
            file,
        })
    }

    /// Create the named namespace `/run/netns/NAME` (as `ip netns add` does: a fresh namespace
    /// bind-mounted onto a file under the shared mount /run/netns) and return a handle on it.
    pub fn create(name: &str) -> Result<Self, NetlinkError> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(NetlinkError::Netns {
                name: name.to_string(),
                context: "checking the name",
                source: io::Error::from(io::ErrorKind::InvalidInput),
                hint: "a namespace name is one path component",
            });
        }
        share_run_dir().map_err(netns_err(
            name,
            "making /run/netns a shared mount",
            "needs root (CAP_SYS_ADMIN)",
        ))?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(netns_err(
                name,
                "creating its handle under /run/netns",
                "a namespace of that name exists: delete it (`ip netns del`) or pick another name",
            ))?;
        let bound = std::thread::scope(|s| {
            s.spawn(|| -> io::Result<()> {
                // Only this short-lived thread moves to the new namespace.
                unshare(CloneFlags::CLONE_NEWNET)?;
                mount(
                    Some(THREAD_NETNS),
                    &path,
                    Some("none"),
                    MsFlags::MS_BIND,
                    None::<&str>,
                )?;
                Ok(())
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace helper thread panicked")))
        });
        if let Err(e) = bound {
            let _ = std::fs::remove_file(&path);
            return Err(netns_err(
                name,
                "creating the namespace",
                "needs root (CAP_SYS_ADMIN)",
            )(e));
        }
        Self::named(name)
    }

    /// Delete the named namespace (as `ip netns del` does). Interfaces in it go when the last
    /// process inside leaves.
    pub fn delete(name: &str) -> Result<(), NetlinkError> {
        let path = Path::new(NETNS_RUN_DIR).join(name);
        // Not mounted (half-made): the unlink below still removes the handle.
        let _ = umount2(&path, MntFlags::MNT_DETACH);
        std::fs::remove_file(&path).map_err(netns_err(
            name,
            "removing its handle under /run/netns",
            "does it exist (`ip netns list`)? needs root",
        ))
    }

    /// The namespace's name (`(current)` for [`Netns::current`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run `work` on a short-lived thread inside this namespace; the caller's thread stays put.
    pub fn run<T: Send>(
        &self,
        work: impl FnOnce() -> Result<T, NetlinkError> + Send,
    ) -> Result<T, NetlinkError> {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
                    netns_err(&self.name, "entering it", "needs root (CAP_SYS_ADMIN)")(e.into())
                })?;
                work()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(netns_err(&self.name, "running work inside it", "a bug")(
                    io::Error::other("helper thread panicked"),
                ))
            })
        })
    }
}

impl Netns {
    /// A command that runs `program` inside this namespace (the child enters it before exec, as
    /// `ip netns exec` does, without remounting /sys). The caller's threads stay where they are.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command, NetlinkError> {
        let fd = self.file.try_clone().map_err(netns_err(
            &self.name,
            "duplicating its handle",
            "too many open files?",
        ))?;
        let mut command = Command::new(program);
        // SAFETY: the closure runs in the forked child before exec and only calls setns(2), which
        // is async-signal-safe; `fd` is owned by the closure, so it is open in the child.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(command)
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Make /run/netns exist and be a shared mount, so namespace handles bind-mounted there are seen
/// by every mount namespace (iproute2's `netns_add` does the same).
fn share_run_dir() -> io::Result<()> {
    std::fs::create_dir_all(NETNS_RUN_DIR)?;
    let shared = || {
        mount(
            Some("none"),
            NETNS_RUN_DIR,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared() {
        Ok(()) => Ok(()),
        // Not a mount point yet: bind it onto itself, then share it.
        Err(nix::errno::Errno::EINVAL) => {
            mount(
                Some(NETNS_RUN_DIR),
                NETNS_RUN_DIR,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )?;
            Ok(shared()?)
        }
        Err(e) => Err(e.into()),
    }
}

/// What [`Netlink::link`] reads about an interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// `IFF_*` flags.
    pub flags: u32,
    pub rx_queues: u32,
    pub tx_queues: u32,
    /// The link kind (`bridge`, `veth`, `tun`, ...); `None` for a plain physical NIC.
    pub kind: Option<String>,
    /// Index of the bridge this link is a port of.
    pub master: Option<u32>,
    /// The promiscuity count (packet-socket requests included, unlike the IFF_PROMISC flag).
    pub promiscuity: u32,
    pub counters: LinkCounters,
}

/// Counters of one interface as the kernel keeps them (IFLA_STATS64).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounters {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

/// Options of a new veth pair.
#[derive(Debug, Default)]
pub struct VethOptions<'a> {
    /// MTU of both ends (the kernel's default otherwise).
    pub mtu: Option<u32>,
    /// RX and TX queues of both ends (the kernel's 1 otherwise).
    pub queues: Option<u32>,
    /// Put the peer end in this namespace (the socket's own otherwise).
    pub peer_netns: Option<&'a Netns>,
}

/// A blocking rtnetlink socket in one network namespace.
pub struct Netlink {
    socket: Socket,
    seq: std::cell::Cell<u32>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").finish_non_exhaustive()
    }
}

impl Netlink {
    /// A socket in the calling thread's namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        socket.bind_auto().map_err(NetlinkError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Socket)?;
        Ok(Self {
            socket,
            seq: std::cell::Cell::new(1),
        })
    }

    /// A socket in `netns` (made on a short-lived thread inside it).
    pub fn open_in(netns: &Netns) -> Result<Self, NetlinkError> {
        netns.run(Self::open)
    }

    /// A socket in the named namespace `/run/netns/NAME`.
    pub fn open_named(netns: &str) -> Result<Self, NetlinkError> {
        Self::open_in(&Netns::named(netns)?)
    }

    /// Send one request and collect the replies until its ACK (or the end of a dump).
    fn request(
        &self,
        what: &str,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(request_err(format!("{what} (sending)")))?;
        let mut replies = Vec::new();
        let mut recv = vec![0u8; RECV_BUFFER_LEN];
        loop {
            let n = self
                .socket
                .recv(&mut &mut recv[..], 0)
                .map_err(request_err(format!("{what} (receiving)")))?;
            let mut offset = 0;
            while offset < n {
                let bad = |detail: String| NetlinkError::Reply {
                    what: what.to_string(),
                    detail,
                };
                let chunk = &recv[offset..n];
                let len = NetlinkBuffer::new_checked(chunk)
                    .map_err(|e| bad(e.to_string()))?
                    .length() as usize;
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&chunk[..len])
                    .map_err(|e| bad(e.to_string()))?;
                offset += len.max(1).next_multiple_of(4);
                if reply.header.sequence_number != seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(replies),
                            Some(_) => Err(request_err(what)(e.to_io())),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    _ => {}
                }
            }
        }
    }

    /// Send a request that only wants an ACK.
    fn command(
        &self,
        what: &str,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), NetlinkError> {
        self.request(what, message, flags).map(drop)
    }

    /// What the kernel says about `name`.
    pub fn link(&self, name: &str) -> Result<Link, NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        let replies = self
            .request(
                &format!("reading interface {name:?}"),
                RouteNetlinkMessage::GetLink(msg),
                0,
            )
            .map_err(|e| match e {
                NetlinkError::Request { source, .. }
                    if source.raw_os_error() == Some(libc::ENODEV) =>
                {
                    NetlinkError::NoSuchLink {
                        name: name.to_string(),
                    }
                }
                e => e,
            })?;
        let message = replies
            .into_iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })
            .ok_or_else(|| NetlinkError::NoSuchLink {
                name: name.to_string(),
            })?;
        Ok(link_from(&message))
    }

    /// The index of `name`.
    pub fn index(&self, name: &str) -> Result<u32, NetlinkError> {
        Ok(self.link(name)?.index)
    }

    /// Whether `name` exists.
    pub fn exists(&self, name: &str) -> Result<bool, NetlinkError> {
        match self.link(name) {
            Ok(_) => Ok(true),
            Err(NetlinkError::NoSuchLink { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The name of the link with index `index`.
    pub fn name_of(&self, index: u32) -> Result<String, NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        let replies = self.request(
            &format!("reading interface #{index}"),
            RouteNetlinkMessage::GetLink(msg),
            0,
        )?;
        replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })
            .flat_map(|l| &l.attributes)
            .find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })
            .ok_or_else(|| NetlinkError::Reply {
                what: format!("reading interface #{index}"),
                detail: "no name in the reply".into(),
            })
    }

    /// Add the veth pair `name` <-> `peer`.
    pub fn add_veth(&self, name: &str, peer: &str, opts: &VethOptions) -> Result<(), NetlinkError> {
        let common = |attrs: &mut Vec<LinkAttribute>| {
            if let Some(mtu) = opts.mtu {
                attrs.push(LinkAttribute::Mtu(mtu));
            }
            if let Some(q) = opts.queues {
                attrs.push(LinkAttribute::NumRxQueues(q));
                attrs.push(LinkAttribute::NumTxQueues(q));
            }
        };
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer.to_string()));
        common(&mut peer_msg.attributes);
        if let Some(ns) = opts.peer_netns {
            peer_msg
                .attributes
                .push(LinkAttribute::NetNsFd(ns.as_fd().as_raw_fd()));
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        common(&mut msg.attributes);
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.command(
            &format!("adding the veth pair {name:?} <-> {peer:?}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Add the bridge `name` quiet on the wire: no STP, no forward delay, no multicast snooping
    /// (else the bridge joins 224.0.0.106 and floods its IGMP reports to every port).
    pub fn add_quiet_bridge(&self, name: &str) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bridge),
            LinkInfo::Data(InfoData::Bridge(vec![
                InfoBridge::StpState(BridgeStpState::Disabled),
                InfoBridge::ForwardDelay(0),
                InfoBridge::MulticastSnooping(false),
            ])),
        ]));
        self.command(
            &format!("adding the bridge {name:?}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Change `name` with `attributes` and `flags` (under `change_mask`).
    fn set_link(
        &self,
        what: &str,
        name: &str,
        attributes: Vec<LinkAttribute>,
        flags: LinkFlags,
        change_mask: LinkFlags,
    ) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = self.index(name)?;
        msg.header.flags = flags;
        msg.header.change_mask = change_mask;
        msg.attributes = attributes;
        self.command(
            &format!("{what} of {name:?}"),
            RouteNetlinkMessage::SetLink(msg),
            0,
        )
    }

    /// Set `name` administratively up.
    pub fn set_up(&self, name: &str) -> Result<(), NetlinkError> {
        self.set_link(
            "setting the up flag",
            name,
            Vec::new(),
            LinkFlags::Up,
            LinkFlags::Up,
        )
    }

    /// Set the MTU of `name`.
    pub fn set_mtu(&self, name: &str, mtu: u32) -> Result<(), NetlinkError> {
        self.set_link(
            &format!("setting MTU {mtu}"),
            name,
            vec![LinkAttribute::Mtu(mtu)],
            LinkFlags::empty(),
            LinkFlags::empty(),
        )
    }

    /// Make `name` a port of the bridge `master`.
    pub fn set_master(&self, name: &str, master: &str) -> Result<(), NetlinkError> {
        let master_index = self.index(master)?;
        self.set_link(
            &format!("enslaving to {master:?}"),
            name,
            vec![LinkAttribute::Controller(master_index)],
            LinkFlags::empty(),
            LinkFlags::empty(),
        )
    }

    /// Add the IPv4 address `ip/prefix_len` to `name`.
    pub fn add_address(
        &self,
        name: &str,
        ip: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix_len;
        msg.header.index = self.index(name)?;
        msg.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V4(ip)));
        if prefix_len < 31 {
            let host_bits = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
            msg.attributes
                .push(AddressAttribute::Broadcast(Ipv4Addr::from(
                    u32::from(ip) | host_bits,
                )));
        }
        self.command(
            &format!("adding address {ip}/{prefix_len} to {name:?}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Delete the link `name` (both ends of a veth pair).
    pub fn delete(&self, name: &str) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = self.index(name)?;
        self.command(
            &format!("deleting interface {name:?}"),
            RouteNetlinkMessage::DelLink(msg),
            0,
        )
    }
}

/// The fields of a link message that [`Link`] keeps.
fn link_from(message: &LinkMessage) -> Link {
    let mut link = Link {
        index: message.header.index,
        flags: message.header.flags.bits(),
        ..Default::default()
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::Address(a) => link.mac = a.as_slice().try_into().ok(),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::NumRxQueues(q) => link.rx_queues = *q,
            LinkAttribute::NumTxQueues(q) => link.tx_queues = *q,
            LinkAttribute::Controller(m) => link.master = Some(*m),
            LinkAttribute::Promiscuity(p) => link.promiscuity = *p,
            LinkAttribute::Stats64(s) => {
                link.counters = LinkCounters {
                    rx_packets: s.rx_packets,
                    rx_dropped: s.rx_dropped,
                    tx_packets: s.tx_packets,
                    tx_dropped: s.tx_dropped,
                }
            }
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = Some(kind.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}

/// `TUNSETPERSIST`: keep a TUN/TAP device after its creator closes it. Not exported by libc.
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;

/// Add the persistent TAP device `name` (IFF_TAP | IFF_NO_PI) in the calling thread's namespace,
/// for a VMM that opens an existing TAP (as `ip tuntap add mode tap` does; rtnetlink cannot
/// create TUN/TAP devices). Use [`Netns::run`] for another namespace; delete it with
/// [`Netlink::delete`].
pub fn add_persistent_tap(name: &str) -> Result<(), NetlinkError> {
    let what = || format!("adding the TAP device {name:?}");
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(request_err(what())(io::Error::from_raw_os_error(
            libc::EINVAL,
        )));
    }
    let tun = File::options()
        .read(true)
        .write(true)
        .open(TUN_DEVICE)
        .map_err(request_err(format!("{} (opening {TUN_DEVICE})", what())))?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF takes a pointer to a valid ifreq living across the call.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF as _, &mut req) } < 0 {
        return Err(request_err(what())(io::Error::last_os_error()));
    }
    // SAFETY: TUNSETPERSIST takes an integer argument; `tun` is the open TAP.
    if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETPERSIST as _, 1 as libc::c_ulong) } < 0 {
        return Err(request_err(format!("{} (making it persistent)", what()))(
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}
