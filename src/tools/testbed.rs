//! Network namespaces (`lt-*`) with veth pairs and bridges for `make run`, benchmarks and tests.
//! Everything created is removed on drop; nothing it did not create is touched.
//!
//! Topology of one [`Testbed`] (interface names are fixed because they live inside the testbed's
//! own namespaces; namespace names are unique per process and instance):
//!
//! ```text
//!  host namespace (lt-..h)                          peer namespace (lt-..p)
//!  [lt-br0 10.77.0.1/24] (with_bridge)
//!     |  (lt-tap0, made by the TAP backend)
//!  lt-nic (10.77.0.1/24 without bridge) <== veth ==> lt-peer 10.77.0.2/24
//! ```
//! The VM is meant to use [`Testbed::VM_IP`] and [`Testbed::VM_MAC`].

use std::{
    fs::File,
    io,
    marker::PhantomData,
    net::Ipv4Addr,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use nix::sched::{setns, CloneFlags};

use crate::net::netlink::{Netlink, NetlinkError, Netns, VethOptions};
use crate::net::{TapBackend, TapConfig, XdpBackend, XdpConfig, XdpMode};

/// Which namespace of a testbed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Holds the bridged NIC (and the bridge): where the VMM opens its backend.
    Host,
    /// The rest of the LAN: the other end of the veth pair.
    Peer,
}

/// Errors of the testbed.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("{context}: {source} (testbeds need root)")]
    Io { context: String, source: io::Error },
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> TestbedError {
    let context = context.into();
    move |source| TestbedError::Io { context, source }
}

/// How to build a [`Testbed`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TestbedConfig {
    /// Up to 2 characters of a hint put in the namespace names (e.g. the test's initials).
    pub name_prefix: String,
    /// Create the bridge `lt-br0` in the host namespace with the NIC enslaved (TAP path); the
    /// host address then sits on the bridge.
    pub with_bridge: bool,
    /// MTU of both veth ends (default 1500).
    pub mtu: Option<u32>,
    /// RX and TX queues of both veth ends (`numrxqueues`/`numtxqueues`; default: the kernel's 1).
    pub queues: Option<u32>,
}

/// Counter making namespace names unique within a process.
static INSTANCE: AtomicU32 = AtomicU32::new(0);
/// One marker file per live testbed (`<host ns>` containing `<pid> <peer ns>`), so the namespaces
/// of a test process that was killed before its Drop ran are removed by the next testbed.
const MARKER_DIR: &str = "/run/lancet-testbed";

/// Remove the namespaces of testbeds whose process is gone (only ones recorded by this code).
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(MARKER_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let mut words = text.split_whitespace();
        let (Some(pid), Some(peer_ns)) = (words.next(), words.next()) else {
            continue;
        };
        let host_ns = entry.file_name().to_string_lossy().into_owned();
        let alive = pid
            .parse::<u32>()
            .map(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
            .unwrap_or(true);
        let ours = |ns: &str| ns.starts_with("lt-") && !ns.contains('/');
        if alive || !ours(&host_ns) || !ours(peer_ns) {
            continue;
        }
        for ns in [host_ns.as_str(), peer_ns] {
            let _ = Netns::delete(ns);
        }
        let _ = std::fs::remove_file(entry.path());
    }
}

/// Two network namespaces joined by a veth pair; removed (with everything in them) on drop.
#[derive(Debug)]
pub struct Testbed {
    host_ns: String,
    peer_ns: String,
    with_bridge: bool,
}

impl Testbed {
    /// The bridged NIC, in the host namespace.
    pub const NIC: &'static str = "lt-nic";
    /// The peer's end of the veth pair, in the peer namespace.
    pub const PEER_NIC: &'static str = "lt-peer";
    /// The bridge in the host namespace (with_bridge only).
    pub const BRIDGE: &'static str = "lt-br0";
    /// A name for the TAP device in the host namespace.
    pub const TAP: &'static str = "lt-tap0";
    /// The host's address (on the NIC, or on the bridge).
    pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    /// The peer's address.
    pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
    /// The address meant for the VM.
    pub const VM_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
    /// The MAC meant for the VM (locally administered).
    pub const VM_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    /// Prefix length of the testbed subnet.
    pub const PREFIX_LEN: u8 = 24;

    /// Create the namespaces, the veth pair, the bridge (if asked) and the addresses.
    pub fn new(cfg: TestbedConfig) -> Result<Self, TestbedError> {
        let n = INSTANCE.fetch_add(1, Ordering::Relaxed) % 256;
        let prefix: String = cfg
            .name_prefix
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(2)
            .collect();
        let base = format!("lt-{prefix}{:x}{n:02x}", std::process::id());
        let bed = Self {
            host_ns: format!("{base}h"),
            peer_ns: format!("{base}p"),
            with_bridge: cfg.with_bridge,
        };
        sweep_stale();
        std::fs::create_dir_all(MARKER_DIR).map_err(io_err(format!("creating {MARKER_DIR}")))?;
        let marker = format!("{} {}", std::process::id(), bed.peer_ns);
        std::fs::write(format!("{MARKER_DIR}/{}", bed.host_ns), marker)
            .map_err(io_err("writing the testbed marker"))?;
        // From here on, Drop removes whatever was created.
        let host = Netns::create(&bed.host_ns)?;
        let peer = Netns::create(&bed.peer_ns)?;
        let (h, p) = (Netlink::open_in(&host)?, Netlink::open_in(&peer)?);
        h.add_veth(
            Self::NIC,
            Self::PEER_NIC,
            &VethOptions {
                mtu: Some(cfg.mtu.unwrap_or(1500)),
                queues: cfg.queues,
                peer_netns: Some(&peer),
            },
        )?;
        for (side, netlink) in [(Side::Host, &h), (Side::Peer, &p)] {
            bed.disable_ipv6(side)?;
            netlink.set_up("lo")?;
        }
        if cfg.with_bridge {
            h.add_quiet_bridge(Self::BRIDGE)?;
            h.set_master(Self::NIC, Self::BRIDGE)?;
            h.add_address(Self::BRIDGE, Self::HOST_IP, Self::PREFIX_LEN)?;
            h.set_up(Self::BRIDGE)?;
        } else {
            h.add_address(Self::NIC, Self::HOST_IP, Self::PREFIX_LEN)?;
        }
        h.set_up(Self::NIC)?;
        p.add_address(Self::PEER_NIC, Self::PEER_IP, Self::PREFIX_LEN)?;
        p.set_up(Self::PEER_NIC)?;
        Ok(bed)
    }

    /// The name of a namespace (for `ip netns exec`).
    pub fn ns_name(&self, side: Side) -> &str {
        match side {
            Side::Host => &self.host_ns,
            Side::Peer => &self.peer_ns,
        }
    }

    /// Whether the host namespace has the bridge.
    pub fn has_bridge(&self) -> bool {
        self.with_bridge
    }

    /// Move the current thread into a namespace until the guard drops.
    pub fn enter(&self, side: Side) -> Result<NsGuard, TestbedError> {
        NsGuard::enter(self.ns_name(side))
    }

    /// Move the current thread into the host namespace until the guard drops.
    pub fn enter_host(&self) -> Result<NsGuard, TestbedError> {
        self.enter(Side::Host)
    }

    /// Move the current thread into the peer namespace until the guard drops.
    pub fn enter_peer(&self) -> Result<NsGuard, TestbedError> {
        self.enter(Side::Peer)
    }

    /// Run `f` with the current thread inside a namespace.
    pub fn in_ns<T>(&self, side: Side, f: impl FnOnce() -> T) -> Result<T, TestbedError> {
        let _guard = self.enter(side)?;
        Ok(f())
    }

    /// Run a command inside a namespace (`ip netns exec NS cmd...`) and return its output.
    pub fn run_in(&self, side: Side, cmd: &[&str]) -> Result<Output, TestbedError> {
        let mut args = vec!["netns", "exec", self.ns_name(side)];
        args.extend_from_slice(cmd);
        Command::new("ip")
            .args(&args)
            .output()
            .map_err(io_err(format!("running ip {}", args.join(" "))))
    }

    /// `ping -c count -i 0.2 -W 2 to` from a namespace (its output; success = every reply came).
    pub fn ping(
        &self,
        from: Side,
        to: std::net::Ipv4Addr,
        count: u32,
    ) -> Result<Output, TestbedError> {
        let (count, to) = (count.to_string(), to.to_string());
        self.run_in(from, &["ping", "-c", &count, "-i", "0.2", "-W", "2", &to])
    }

    /// A raw packet socket on `ifname` inside a namespace; usable from any thread afterwards.
    pub fn raw_socket(&self, side: Side, ifname: &str) -> Result<RawSocket, TestbedError> {
        let _guard = self.enter(side)?;
        RawSocket::open(ifname)
    }

    /// The MAC of `ifname` inside a namespace.
    pub fn mac_of(&self, side: Side, ifname: &str) -> Result<[u8; 6], TestbedError> {
        let _guard = self.enter(side)?;
        Ok(crate::net::nic::mac(ifname)?)
    }

    /// The promiscuity count of `ifname` in a namespace (IFLA_PROMISCUITY): unlike the IFF_PROMISC
    /// interface flag it includes what packet sockets requested.
    pub fn promiscuity(&self, side: Side, ifname: &str) -> Result<u64, TestbedError> {
        let _guard = self.enter(side)?;
        Ok(crate::net::nic::link_info(ifname)?.promiscuity)
    }

    /// The TAP backend on [`Testbed::TAP`] as a port of [`Testbed::BRIDGE`] (a `with_bridge`
    /// testbed), opened in the host namespace.
    pub fn open_tap(&self) -> Result<TapBackend, TestbedError> {
        let _in_host = self.enter_host()?;
        Ok(TapBackend::open(&TapConfig::new(
            Self::TAP,
            Some(Self::BRIDGE),
        ))?)
    }

    /// The AF_XDP backend on [`Testbed::NIC`] for [`Testbed::VM_MAC`] in native mode, opened in the
    /// host namespace; `edit` adjusts the config first.
    pub fn open_xdp(&self, edit: impl FnOnce(&mut XdpConfig)) -> Result<XdpBackend, TestbedError> {
        let _in_host = self.enter_host()?;
        let mut cfg = XdpConfig::new(Self::NIC, Self::VM_MAC);
        cfg.mode = XdpMode::Native;
        edit(&mut cfg);
        Ok(XdpBackend::open(&cfg)?)
    }

    /// An rtnetlink socket inside a namespace (for links and addresses the test adds itself).
    pub fn netlink(&self, side: Side) -> Result<Netlink, TestbedError> {
        Ok(Netlink::open_named(self.ns_name(side))?)
    }

    /// No IPv6 in the testbed: keeps router solicitations and MLD reports off the wire.
    fn disable_ipv6(&self, side: Side) -> Result<(), TestbedError> {
        let _guard = self.enter(side)?;
        for path in [
            "/proc/sys/net/ipv6/conf/all/disable_ipv6",
            "/proc/sys/net/ipv6/conf/default/disable_ipv6",
        ] {
            // IPv6 may be compiled out; then there is nothing to disable.
            if let Ok(mut f) = File::options().write(true).open(path) {
                io::Write::write_all(&mut f, b"1").map_err(io_err(format!("writing {path}")))?;
            }
        }
        Ok(())
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // Deleting a namespace destroys every interface in it (veth pair, bridge, TAP). A process
        // still inside keeps it alive until it exits; the name is gone either way.
        for ns in [&self.host_ns, &self.peer_ns] {
            if let Err(e) = Netns::delete(ns) {
                tracing::warn!(error = %e, "testbed cleanup");
            }
        }
        let _ = std::fs::remove_file(format!("{MARKER_DIR}/{}", self.host_ns));
    }
}

/// The current thread inside another network namespace; back in the original one on drop.
/// Not `Send`: namespaces are per thread.
#[derive(Debug)]
pub struct NsGuard {
    original: File,
    _not_send: PhantomData<*const ()>,
}

impl NsGuard {
    /// Move the current thread into the named namespace (`/run/netns/NAME`).
    pub fn enter(ns_name: &str) -> Result<Self, TestbedError> {
        let original = File::open("/proc/thread-self/ns/net")
            .map_err(io_err("opening the current network namespace"))?;
        let path = format!("/run/netns/{ns_name}");
        let target = File::open(&path).map_err(io_err(format!("opening {path}")))?;
        setns(target.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| TestbedError::Io {
            context: format!("setns into {ns_name}"),
            source: e.into(),
        })?;
        Ok(Self {
            original,
            _not_send: PhantomData,
        })
    }
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(self.original.as_fd(), CloneFlags::CLONE_NEWNET) {
            tracing::error!(error = %e, "could not return the thread to its network namespace");
        }
    }
}

/// `PACKET_IGNORE_OUTGOING`: do not see our own transmitted frames.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// `ETH_P_ALL` in network byte order, as socket(2) and bind(2) want it.
const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();

/// An AF_PACKET raw socket bound to one interface: sends and receives whole Ethernet frames.
#[derive(Debug)]
pub struct RawSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl RawSocket {
    /// Open on `ifname` in the current thread's namespace.
    pub fn open(ifname: &str) -> Result<Self, TestbedError> {
        let ifindex = crate::net::nic::ifindex(ifname)? as i32;
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ALL_BE),
            )
        };
        if raw < 0 {
            return Err(io_err("opening a packet socket")(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        // SAFETY: valid int option pointer and size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_IGNORE_OUTGOING,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let bufsize: libc::c_int = 8 << 20;
        // SAFETY: valid int option pointer and size; SO_RCVBUFFORCE needs CAP_NET_ADMIN, fine to fail.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&bufsize as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let sock = Self { fd, ifindex };
        let addr = sock.sockaddr();
        // SAFETY: `addr` is a valid sockaddr_ll of the size passed.
        let ret = unsafe {
            libc::bind(
                sock.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if ret < 0 {
            return Err(io_err(format!("binding a packet socket to {ifname}"))(
                io::Error::last_os_error(),
            ));
        }
        Ok(sock)
    }

    fn sockaddr(&self) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ALL_BE;
        addr.sll_ifindex = self.ifindex;
        addr
    }

    /// Send one whole frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: `frame` is a valid buffer of its length.
        let ret = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receive one frame into `buf` (returns its length), or `None` after `timeout`.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
            if ready < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if ready == 0 {
                return Ok(None);
            }
            // SAFETY: `buf` is a valid writable buffer of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                return Ok(Some(n as usize));
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock && err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
            if left.is_zero() {
                return Ok(None);
            }
        }
    }

    /// Receive frames until one satisfies `pred` (returns it), or `None` after `timeout`.
    pub fn recv_matching(
        &self,
        timeout: Duration,
        pred: impl Fn(&[u8]) -> bool,
    ) -> io::Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(&mut buf, left)? {
                Some(n) if pred(&buf[..n]) => return Ok(Some(buf[..n].to_vec())),
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }
}

/// Builders for the frames tests and benchmarks put on the wire.
pub mod frames {
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// The broadcast MAC.
    pub const BROADCAST: [u8; 6] = [0xff; 6];
    /// An IEEE "local experimental" EtherType: test frames nobody's stack interprets.
    pub const ETHERTYPE_TEST: u16 = 0x88b5;
    /// Ethernet header length.
    pub const ETH_HLEN: usize = 14;

    /// A frame of `len` bytes (at least 22) to `dst` from `src` with EtherType [`ETHERTYPE_TEST`],
    /// carrying `seq` (big endian) after the header and a pattern derived from it after that.
    pub fn test_frame(dst: [u8; 6], src: [u8; 6], seq: u64, len: usize) -> Vec<u8> {
        let len = len.max(ETH_HLEN + 8);
        let mut f = Vec::with_capacity(len);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&ETHERTYPE_TEST.to_be_bytes());
        f.extend_from_slice(&seq.to_be_bytes());
        let mut x = seq as u8;
        while f.len() < len {
            f.push(x);
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        f
    }

    /// The sequence number of a [`test_frame`], if `frame` is one.
    pub fn test_seq(frame: &[u8]) -> Option<u64> {
        if frame.len() < ETH_HLEN + 8 || frame[12..14] != ETHERTYPE_TEST.to_be_bytes() {
            return None;
        }
        Some(u64::from_be_bytes(frame[14..22].try_into().ok()?))
    }

    /// A broadcast ARP request from `sender_mac`/`sender_ip` asking for `target_ip`.
    pub fn arp_request(sender_mac: [u8; 6], sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
        let mut f = Vec::with_capacity(60);
        f.extend_from_slice(&BROADCAST);
        f.extend_from_slice(&sender_mac);
        f.extend_from_slice(&0x0806u16.to_be_bytes());
        f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        f.extend_from_slice(&sender_mac);
        f.extend_from_slice(&sender_ip.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target_ip.octets());
        f.resize(60, 0);
        f
    }

    /// The target IPv4 of an ARP request, if `frame` is one.
    pub fn arp_target(frame: &[u8]) -> Option<Ipv4Addr> {
        if frame.len() < 42 || frame[12..14] != [0x08, 0x06] || frame[20..22] != [0, 1] {
            return None;
        }
        Some(Ipv4Addr::new(frame[38], frame[39], frame[40], frame[41]))
    }

    /// An IPv6 neighbour solicitation for `target` from `src_mac`/`src_ip`, sent to the target's
    /// solicited-node multicast address. The ICMPv6 checksum is left zero (steering ignores it).
    pub fn neighbour_solicitation(src_mac: [u8; 6], src_ip: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
        let t = target.octets();
        let mut dst_ip = [0u8; 16];
        dst_ip[0] = 0xff;
        dst_ip[1] = 0x02;
        dst_ip[11] = 0x01;
        dst_ip[12] = 0xff;
        dst_ip[13..].copy_from_slice(&t[13..]);
        let mut f = Vec::with_capacity(86);
        f.extend_from_slice(&[0x33, 0x33, 0xff, t[13], t[14], t[15]]);
        f.extend_from_slice(&src_mac);
        f.extend_from_slice(&0x86ddu16.to_be_bytes());
        // IPv6 header: version 6, payload 32 (NS 24 + source link-layer option 8), ICMPv6, hop 255.
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 32, 58, 255]);
        f.extend_from_slice(&src_ip.octets());
        f.extend_from_slice(&dst_ip);
        f.extend_from_slice(&[135, 0, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&t);
        f.extend_from_slice(&[1, 1]);
        f.extend_from_slice(&src_mac);
        f
    }
}
