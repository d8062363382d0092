//! Loads the XDP steering program (bpf/steer.bpf.c), attaches it to a NIC through a bpf_link (so it
//! disappears with the process, also after kill -9), registers VMs in its maps and reads its
//! per-CPU verdict counters.
//!
//! Registrations are owned ([`Registration`]): a VM's MAC and addresses are inserted only where no
//! entry exists, an existing entry is taken over only from a VM that is gone (its owner lock,
//! [`owner`], is free) and refused when a running VM has it; the guard removes exactly the entries
//! it inserted, each only while it still holds its value. Slot choice and insertion happen under
//! the pin directory's lock, so VMs starting at once on one NIC never collide.
//!
//! Broadcast and multicast: a VM gets the ARP requests for its IPv4 addresses and the neighbour
//! solicitations for its IPv6 addresses (the MAC's link-local one included); every other broadcast
//! or multicast frame goes to the host only. XDP cannot hand one frame to both the host and a
//! socket, so a VM that needs the host's broadcasts (DHCP) would get copies from a packet socket
//! on the NIC (a second, slow path for broadcast only); that is not built here. The maps are keyed
//! by MAC / IP with a slot as value: an XSKMAP slot for a VM whose socket sits on a NIC queue, or
//! (queue [`PORT_QUEUE`]) an index of the `ports` DEVMAP for a VM served through a veth port
//! ([`super::port`]) because another VM holds the queue.

use std::{
    io,
    mem::MaybeUninit,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
};

use libbpf_rs::{
    libbpf_sys,
    skel::{OpenSkel, SkelBuilder},
    MapCore, MapFlags, MapHandle,
};
use serde::Serialize;

pub use super::abi::{ALL_QUEUES, MAX_VMS, PORT_QUEUE};
use crate::frame::MacAddr;

use super::{
    abi::{
        self, mac_key, percpu_u64_sum,
        steer_skel::{SteerSkel, SteerSkelBuilder},
        verdict, vm_slot,
    },
    nic,
    owner::{self, OwnerLock, OwnerRecord},
    pin,
    rulemaps::{RuleMaps, MAP_VM_NAMES},
    NetError,
};

/// Pin names (= map names in bpf/steer.bpf.c), for opening the maps another process pinned; a
/// program this process loads gives its maps through the skeleton's fields.
const MAP_XSKS: &str = "xsks";
const MAP_VM_MACS: &str = "vm_macs";
const MAP_VM_IPV4: &str = "vm_ipv4";
const MAP_VM_IPV6: &str = "vm_ipv6";
const MAP_VERDICTS: &str = "verdicts";
const MAP_PORTS: &str = "ports";

/// Indexes of the `verdicts` per-CPU array (`enum verdict` in bpf/lancet_common.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Verdict {
    /// Unicast to a registered VM MAC, redirected to its socket.
    ToVm = verdict::VERDICT_TO_VM.0,
    /// ARP request for a registered VM IPv4 address, redirected.
    ToVmArp = verdict::VERDICT_TO_VM_ARP.0,
    /// IPv6 neighbour solicitation for a registered VM address, redirected.
    ToVmNs = verdict::VERDICT_TO_VM_NS.0,
    /// Passed to the host stack.
    ToHost = verdict::VERDICT_TO_HOST.0,
    /// For a VM whose XSKMAP slot holds no socket: dropped.
    DropNoSocket = verdict::VERDICT_DROP_NO_SOCKET.0,
    /// For a VM, but received on a queue its socket is not bound to: dropped.
    DropWrongQueue = verdict::VERDICT_DROP_WRONG_QUEUE.0,
    /// A rule sent it to a VM, redirected.
    RuleToVm = verdict::VERDICT_RULE_TO_VM.0,
    /// A rule passed it to the host.
    RulePass = verdict::VERDICT_RULE_PASS.0,
    /// A rule dropped it.
    RuleDrop = verdict::VERDICT_RULE_DROP.0,
    /// A rule mirrored it (to the VM, tagged for a host copy).
    RuleMirror = verdict::VERDICT_RULE_MIRROR.0,
}

// Every counter has its variant (the last one is the last counter).
const _: () = assert!(Verdict::RuleMirror as u32 + 1 == verdict::VERDICT_COUNT.0);

/// How the program is attached (`lancet run --xdp-mode`, `lancet nic attach --mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum XdpMode {
    /// Driver (native) mode; fails when the driver has no XDP support.
    Native,
    /// Generic (skb) mode: works on every device, slower.
    Generic,
    /// Native when the driver supports it, generic otherwise.
    #[default]
    Auto,
}

/// The per-verdict counters of the steering program, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SteerCounters {
    /// Unicast frames redirected to a VM socket.
    pub to_vm: u64,
    /// ARP requests redirected to a VM socket.
    pub to_vm_arp: u64,
    /// Neighbour solicitations redirected to a VM socket.
    pub to_vm_ns: u64,
    /// Frames passed to the host stack.
    pub to_host: u64,
    /// Frames for a VM with no socket in its slot, dropped.
    pub drop_no_socket: u64,
    /// Frames for a VM that arrived on another queue than its socket's, dropped.
    pub drop_wrong_queue: u64,
    /// Frames a rule sent to a VM.
    pub rule_to_vm: u64,
    /// Frames a rule passed to the host.
    pub rule_pass: u64,
    /// Frames a rule dropped.
    pub rule_drop: u64,
    /// Frames a rule mirrored.
    pub rule_mirror: u64,
}

/// Slot and queue of a registration that has not claimed its slot yet.
const UNCLAIMED: u32 = u32::MAX - 1;
const _: () = assert!(UNCLAIMED != ALL_QUEUES && UNCLAIMED != PORT_QUEUE);
/// Tries to insert an entry that others keep changing before giving up.
const INSERT_ATTEMPTS: u32 = 8;

/// One VM's entries in the steering maps, owned: made by [`Steering::begin_registration`], it
/// holds the VM's owner lock ([`owner`]) and records exactly the entries it inserted. Entries are
/// inserted only where no entry exists (BPF_NOEXIST); an existing one is taken over only when no
/// live VM owns it, else refused. Dropping it removes exactly its entries, each only while it
/// still holds this VM's value, so another VM's entries (and socket slot) are never touched.
#[derive(Debug)]
pub struct Registration {
    ifname: String,
    /// [`Steering::owner_key`].
    key: String,
    /// The pin directory, locked around changes that check owners.
    lock_dir: Option<std::path::PathBuf>,
    value: vm_slot,
    mac: [u8; 6],
    vm_macs: MapHandle,
    vm_ipv4: MapHandle,
    vm_ipv6: MapHandle,
    xsks: MapHandle,
    ports: MapHandle,
    vm_names: MapHandle,
    /// What this registration inserted (and removes on drop).
    mac_inserted: bool,
    ipv4: Vec<Ipv4Addr>,
    ipv6: Vec<Ipv6Addr>,
    socket_set: bool,
    /// XSKMAP slots (= queue numbers) this registration filled for an [`ALL_QUEUES`] VM.
    queue_sockets: Vec<u32>,
    /// Declared last: the owner file goes after the entries.
    owner: OwnerLock,
}

/// Whose an existing map entry is.
enum EntryOwner {
    /// This registration's.
    Mine,
    /// A running VM's (described for the error message).
    Live(String),
    /// Nobody running: a dead VM left it.
    Stale,
}

impl Registration {
    /// This VM's owner token (its `vm_names` `pid` and veth port name number).
    pub fn token(&self) -> u32 {
        self.owner.token()
    }

    /// The slot claimed (`None` before [`Registration::claim`]).
    pub fn slot(&self) -> Option<(u32, u32)> {
        (self.value.slot != UNCLAIMED).then_some((self.value.slot, self.value.queue))
    }

    /// Take `slot` on `queue` (or `ports` slot `slot` with [`PORT_QUEUE`]) and steer the VM's MAC
    /// to it. Refuses a MAC a live VM has registered.
    pub fn claim(&mut self, slot: u32, queue: u32) -> Result<(), NetError> {
        if slot >= MAX_VMS {
            return Err(NetError::InvalidConfig(format!(
                "XSKMAP slot {slot} out of range (max {})",
                MAX_VMS - 1
            )));
        }
        if self.slot().is_some() {
            return Err(NetError::InvalidConfig(
                "the VM's slot is already claimed".into(),
            ));
        }
        self.value = vm_slot { slot, queue };
        self.owner.write(&OwnerRecord {
            token: self.owner.token(),
            key: self.key.clone(),
            slot,
            queue,
            mac: self.mac,
        })?;
        let key = mac_key(self.mac);
        match self.insert(&self.vm_macs, &key)? {
            None => {
                self.mac_inserted = true;
                Ok(())
            }
            Some(by) => Err(NetError::MacInUse {
                mac: MacAddr(self.mac).to_string(),
                ifname: self.ifname.clone(),
                by,
            }),
        }
    }

    /// Steer ARP requests (IPv4) or neighbour solicitations (IPv6) for `ip` to this VM; refused
    /// when a running VM has it. Takes the pin directory lock (for addresses learned while the VM
    /// runs).
    pub fn add_ip(&mut self, ip: IpAddr) -> Result<(), NetError> {
        let _lock = self.lock()?;
        self.add_ip_locked(ip)
    }

    /// [`Registration::add_ip`] for a caller that holds the pin directory lock.
    pub fn add_ip_locked(&mut self, ip: IpAddr) -> Result<(), NetError> {
        let (what, map, known, key) = match ip {
            IpAddr::V4(v4) => (
                "IPv4",
                &self.vm_ipv4,
                self.ipv4.contains(&v4),
                v4.octets().to_vec(),
            ),
            IpAddr::V6(v6) => (
                "IPv6",
                &self.vm_ipv6,
                self.ipv6.contains(&v6),
                v6.octets().to_vec(),
            ),
        };
        if known {
            return Ok(());
        }
        match self.insert(map, &key)? {
            None => {
                match ip {
                    IpAddr::V4(v4) => self.ipv4.push(v4),
                    IpAddr::V6(v6) => self.ipv6.push(v6),
                }
                Ok(())
            }
            Some(by) => Err(NetError::AddressInUse {
                what,
                addr: ip.to_string(),
                ifname: self.ifname.clone(),
                by,
            }),
        }
    }

    /// Put the VM's AF_XDP socket `xsk_fd` into its XSKMAP slot (a queue VM).
    pub fn set_socket(&mut self, xsk_fd: RawFd) -> Result<(), NetError> {
        let fd = u32::try_from(xsk_fd)
            .map_err(|_| NetError::InvalidConfig(format!("bad socket fd {xsk_fd}")))?;
        self.set_slot(false, fd, "inserting the AF_XDP socket into the XSKMAP")
    }

    /// Put the VM's AF_XDP socket `xsk_fd` bound to NIC queue `queue` into XSKMAP slot `queue`
    /// (a VM that claimed [`ALL_QUEUES`]: the program redirects to slot `rx_queue_index`). The
    /// slot is this VM's: it claimed every queue under the pin directory lock, after checking no
    /// live VM sits on the NIC's queues.
    pub fn set_queue_socket(&mut self, queue: u32, xsk_fd: RawFd) -> Result<(), NetError> {
        if self.slot().map(|(_, q)| q) != Some(ALL_QUEUES) {
            return Err(NetError::InvalidConfig(
                "claim every queue (ALL_QUEUES) before adding per-queue sockets".into(),
            ));
        }
        if queue >= MAX_VMS {
            return Err(NetError::InvalidConfig(format!(
                "NIC queue {queue} is above the {MAX_VMS} XSKMAP slots (the slot is the queue \
                 number): reduce the NIC's RX queues (ethtool -L {} combined {MAX_VMS})",
                self.ifname
            )));
        }
        let fd = u32::try_from(xsk_fd)
            .map_err(|_| NetError::InvalidConfig(format!("bad socket fd {xsk_fd}")))?;
        self.xsks
            .update(&queue.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
            .map_err(bpf_err(format!(
                "inserting the AF_XDP socket of queue {queue} into the XSKMAP"
            )))?;
        if !self.queue_sockets.contains(&queue) {
            self.queue_sockets.push(queue);
        }
        Ok(())
    }

    /// Point the VM's `ports` slot at `ifindex` (the peer end of its veth port; a port VM).
    pub fn set_port(&mut self, ifindex: u32) -> Result<(), NetError> {
        self.set_slot(
            true,
            ifindex,
            "inserting the VM's veth port into the `ports` DEVMAP",
        )
    }

    fn set_slot(&mut self, port: bool, value: u32, what: &str) -> Result<(), NetError> {
        let Some((slot, _)) = self.slot() else {
            return Err(NetError::InvalidConfig("claim a slot first".into()));
        };
        let map = if port { &self.ports } else { &self.xsks };
        map.update(&slot.to_ne_bytes(), &value.to_ne_bytes(), MapFlags::ANY)
            .map_err(bpf_err(what))?;
        self.socket_set = true;
        Ok(())
    }

    fn lock(&self) -> Result<super::rulemaps::DirLock, NetError> {
        super::rulemaps::DirLock::take(self.lock_dir.as_deref()).map_err(|e| match e {
            super::rulemaps::FilterError::Net(n) => n,
            other => NetError::InvalidConfig(other.to_string()),
        })
    }

    /// Insert `key` -> this VM's value unless an entry exists (BPF_NOEXIST); an entry of a dead VM
    /// is taken over. `Some(owner)`: a live VM has it, nothing changed.
    fn insert(&self, map: &MapHandle, key: &[u8]) -> Result<Option<String>, NetError> {
        let value = abi::bytes(&self.value);
        for _ in 0..INSERT_ATTEMPTS {
            match map.update(key, value, MapFlags::NO_EXIST) {
                Ok(()) => return Ok(None),
                Err(e) if e.kind() == libbpf_rs::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(bpf_err("registering a VM steering entry")(e)),
            }
            let Some(old) = map.lookup(key, MapFlags::ANY).ok().flatten() else {
                continue; // removed meanwhile: insert again
            };
            match self.owner_of(&old) {
                EntryOwner::Mine => return Ok(None),
                EntryOwner::Live(by) => return Ok(Some(by)),
                EntryOwner::Stale => {
                    // Only if it still holds the dead VM's value.
                    if map.lookup(key, MapFlags::ANY).ok().flatten().as_deref() == Some(&old[..]) {
                        match map.update(key, value, MapFlags::EXIST) {
                            Ok(()) => return Ok(None),
                            // Removed meanwhile: insert again.
                            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => {}
                            Err(e) => {
                                return Err(bpf_err("taking over a dead VM's steering entry")(e))
                            }
                        }
                    }
                }
            }
        }
        Err(NetError::InvalidConfig(format!(
            "a steering entry of {:?} kept changing while registering the VM: try again",
            self.ifname
        )))
    }

    /// Who owns an entry whose value is `old`.
    fn owner_of(&self, old: &[u8]) -> EntryOwner {
        if old == abi::bytes(&self.value) {
            return EntryOwner::Mine;
        }
        if self.key.is_empty() {
            // Maps of this process alone: whatever is there is a live registration of it.
            return EntryOwner::Live("another VM of this process".into());
        }
        let held_by = |r: &OwnerRecord| {
            let value = vm_slot {
                slot: r.slot,
                queue: r.queue,
            };
            abi::bytes(&value) == old
        };
        let live = owner::list()
            .into_iter()
            .find(|(r, live)| *live && r.key == self.key && held_by(r));
        match live {
            Some((r, _)) => {
                let name = self
                    .vm_names
                    .keys()
                    .filter_map(|k| {
                        let v = self.vm_names.lookup(&k, MapFlags::ANY).ok().flatten()?;
                        let pid = abi::from_bytes::<abi::vm_name_entry>(&v)?.pid;
                        let end = k.iter().position(|b| *b == 0).unwrap_or(k.len());
                        (pid == r.token).then(|| String::from_utf8_lossy(&k[..end]).into_owned())
                    })
                    .next();
                EntryOwner::Live(match name {
                    Some(n) => format!(
                        "the running VM {n:?} (MAC {}, owner {})",
                        MacAddr(r.mac),
                        r.token
                    ),
                    None => format!("a running VM (MAC {}, owner {})", MacAddr(r.mac), r.token),
                })
            }
            None => EntryOwner::Stale,
        }
    }
}

impl Registration {
    /// Delete `key` from `map` only while it holds this VM's value (never another VM's entry).
    fn remove_if_mine(&self, map: &MapHandle, key: &[u8]) {
        let mine = abi::bytes(&self.value);
        if map.lookup(key, MapFlags::ANY).ok().flatten().as_deref() == Some(mine) {
            let _ = map.delete(key);
        }
    }

    /// Stop steering ARP requests / neighbour solicitations for `ip` to this VM (an address it
    /// no longer uses); an address this registration did not add is left alone.
    pub fn remove_ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => {
                if let Some(at) = self.ipv4.iter().position(|a| *a == v4) {
                    self.ipv4.swap_remove(at);
                    self.remove_if_mine(&self.vm_ipv4, &v4.octets());
                }
            }
            IpAddr::V6(v6) => {
                if let Some(at) = self.ipv6.iter().position(|a| *a == v6) {
                    self.ipv6.swap_remove(at);
                    self.remove_if_mine(&self.vm_ipv6, &v6.octets());
                }
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.mac_inserted {
            self.remove_if_mine(&self.vm_macs, &mac_key(self.mac));
        }
        for ip in &self.ipv4 {
            self.remove_if_mine(&self.vm_ipv4, &ip.octets());
        }
        for ip in &self.ipv6 {
            self.remove_if_mine(&self.vm_ipv6, &ip.octets());
        }
        // The slot was claimed under the pin directory lock: it is this VM's alone.
        if let (true, Some((slot, queue))) = (self.socket_set, self.slot()) {
            let map = if queue == PORT_QUEUE {
                &self.ports
            } else {
                &self.xsks
            };
            let _ = map.delete(&slot.to_ne_bytes());
        }
        for queue in &self.queue_sockets {
            let _ = self.xsks.delete(&queue.to_ne_bytes());
        }
    }
}

/// Why the steering object could not be opened or loaded.
enum LoadError {
    Open(libbpf_rs::Error),
    PinPath(String, libbpf_rs::Error),
    Load(libbpf_rs::Error),
    Handles(NetError),
}

impl LoadError {
    fn into_net(self, ifname: &str, pin_dir: Option<&std::path::Path>) -> NetError {
        match (self, pin_dir) {
            (LoadError::Open(e), _) => bpf_err("opening the embedded XDP steering object")(e),
            (LoadError::PinPath(name, e), _) => {
                bpf_err(format!("setting the pin path of map {name:?}"))(e)
            }
            (LoadError::Load(e), Some(dir)) => NetError::Bpf {
                context: format!(
                    "loading the XDP steering program with the maps pinned in {} (if they are from another lancet version, run `lancet nic detach {ifname}`)",
                    dir.display()
                ),
                source: e,
            },
            (LoadError::Load(e), None) => {
                bpf_err("loading the XDP steering program into the kernel")(e)
            }
            (LoadError::Handles(e), _) => e,
        }
    }
}

/// The IPv6 link-local address a guest derives from its MAC (modified EUI-64), so neighbour
/// solicitations for it reach the VM without configuration.
pub fn link_local_from_mac(mac: [u8; 6]) -> Ipv6Addr {
    let mut addr = [0u8; 16];
    addr[0] = 0xfe;
    addr[1] = 0x80;
    addr[8] = mac[0] ^ 0x02;
    addr[9] = mac[1];
    addr[10] = mac[2];
    addr[11] = 0xff;
    addr[12] = 0xfe;
    addr[13] = mac[3];
    addr[14] = mac[4];
    addr[15] = mac[5];
    Ipv6Addr::from(addr)
}

/// The steering program's maps, as descriptors: taken from a loaded skeleton's fields, or opened
/// by pin path (maps another process pinned).
#[derive(Debug)]
struct SteerMaps {
    xsks: MapHandle,
    vm_macs: MapHandle,
    vm_ipv4: MapHandle,
    vm_ipv6: MapHandle,
    verdicts: MapHandle,
    ports: MapHandle,
    rules: RuleMaps,
}

impl SteerMaps {
    /// The maps of a loaded skeleton (it may be dropped after: the descriptors keep them).
    fn from_skel(
        ifname: &str,
        skel: &SteerSkel<'_>,
        pin_dir: Option<&std::path::Path>,
    ) -> Result<Self, NetError> {
        let maps = &skel.maps;
        Ok(Self {
            xsks: abi::map_handle(&maps.xsks)?,
            vm_macs: abi::map_handle(&maps.vm_macs)?,
            vm_ipv4: abi::map_handle(&maps.vm_ipv4)?,
            vm_ipv6: abi::map_handle(&maps.vm_ipv6)?,
            verdicts: abi::map_handle(&maps.verdicts)?,
            ports: abi::map_handle(&maps.ports)?,
            rules: RuleMaps::from_skel(ifname, maps, pin_dir.map(|d| d.to_path_buf()))?,
        })
    }

    /// The maps pinned in `dir` (by their map names).
    fn pinned(ifname: &str, dir: &std::path::Path) -> Result<Self, NetError> {
        let open = |name: &str| -> Result<MapHandle, NetError> {
            MapHandle::from_pinned_path(dir.join(name)).map_err(bpf_err(format!(
                "opening pinned map {}",
                dir.join(name).display()
            )))
        };
        Ok(Self {
            xsks: open(MAP_XSKS)?,
            vm_macs: open(MAP_VM_MACS)?,
            vm_ipv4: open(MAP_VM_IPV4)?,
            vm_ipv6: open(MAP_VM_IPV6)?,
            verdicts: open(MAP_VERDICTS)?,
            ports: open(MAP_PORTS)?,
            rules: RuleMaps::from_fn(ifname, &open, Some(dir.to_path_buf()))?,
        })
    }
}

/// The steering program just loaded from its skeleton: its maps and a descriptor of its program.
/// The skeleton's object is closed; the program lives while this descriptor does (and while a link
/// attaches it).
struct Loaded {
    maps: SteerMaps,
    prog: OwnedFd,
}

/// The steering program loaded and attached to one NIC. Dropping it detaches the program (closing
/// the bpf_link) unless the link is pinned ([`Steering::pin_link`], `lancet nic attach`); the
/// kernel does the same when the process dies.
#[derive(Debug)]
pub struct Steering {
    ifname: String,
    mode: XdpMode,
    link: OwnedFd,
    maps: SteerMaps,
    /// The pin state (see [`super::pin`]).
    pinning: Pinning,
    /// The pin directory (when pinned).
    pin_dir: Option<std::path::PathBuf>,
}

/// How a [`Steering`] relates to bpffs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pinning {
    /// Nothing pinned (tests, embedded use).
    None,
    /// Maps pinned by this process or shared with the other `lancet run`s on the NIC (each holds
    /// the program's link): removed on drop by the last one, when no other live VM is registered.
    MapsOwned,
    /// Program, link and maps pinned (`nic attach`, or reused by a `lancet run`): left in place.
    Persistent,
}

fn bpf_err(context: impl Into<String>) -> impl FnOnce(libbpf_rs::Error) -> NetError {
    let context = context.into();
    move |source| {
        if source.kind() == libbpf_rs::ErrorKind::PermissionDenied {
            NetError::PermissionDenied { what: context }
        } else {
            NetError::Bpf { context, source }
        }
    }
}

/// What the kernel reports about the XDP programs attached to `ifindex` (`bpf_xdp_query`).
fn xdp_query(ifindex: u32) -> Result<libbpf_sys::bpf_xdp_query_opts, NetError> {
    let mut opts = libbpf_sys::bpf_xdp_query_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_xdp_query_opts>() as libbpf_sys::size_t,
        ..Default::default()
    };
    // SAFETY: `opts` is a valid, sized bpf_xdp_query_opts living across the call.
    let ret = unsafe { libbpf_sys::bpf_xdp_query(ifindex as i32, 0, &mut opts) };
    if ret < 0 {
        return Err(NetError::io(
            "querying the XDP program of the NIC",
            io::Error::from_raw_os_error(-ret),
        ));
    }
    Ok(opts)
}

/// The id of the XDP program attached to `ifindex` in any mode, 0 when none.
pub fn attached_program_id(ifindex: u32) -> Result<u32, NetError> {
    let opts = xdp_query(ifindex)?;
    Ok([
        opts.prog_id,
        opts.drv_prog_id,
        opts.skb_prog_id,
        opts.hw_prog_id,
    ]
    .into_iter()
    .find(|&id| id != 0)
    .unwrap_or(0))
}

impl Steering {
    /// Load the program and attach it to `ifname` (in the calling thread's network namespace).
    /// Refuses when another XDP program is attached. Nothing is pinned.
    pub fn attach(ifname: &str, mode: XdpMode) -> Result<Self, NetError> {
        Self::load_and_attach(ifname, mode, None)
    }

    /// Like [`Steering::attach`] with the maps pinned under `/sys/fs/bpf/lancet/<ifname>/` so
    /// `lancet filter` and `lancet stats` reach them. When a pinned link (`lancet nic attach`)
    /// already attaches lancet's program to `ifname`, that program and its maps are reused.
    pub fn attach_pinned(ifname: &str, mode: XdpMode) -> Result<Self, NetError> {
        let ifindex = nic::ifindex(ifname)?;
        let dir = pin::ensure_pin_dir(ifname)?;
        let link_path = dir.join(pin::LINK_PIN);
        if let Some(link) = pin::open_pinned(&link_path)? {
            let info = pin::link_info(&link)?;
            if info.ifindex == ifindex && attached_program_id(ifindex)? == info.prog_id {
                return Self::reuse(ifname, link, &dir, Pinning::Persistent);
            }
            // A link pinned for an interface that is gone (or another namespace's): stale.
            tracing::warn!(path = %link_path.display(), "removing a stale pinned XDP link");
            std::fs::remove_file(&link_path)
                .map_err(|e| NetError::io(format!("removing {}", link_path.display()), e))?;
        }
        if let Some(joined) = Self::join(ifname, ifindex, &dir)? {
            return Ok(joined);
        }
        match Self::load_and_attach(ifname, mode, Some(&dir)) {
            // Another `lancet run` attached it meanwhile: join that one.
            Err(NetError::XdpProgramPresent {
                prog_id,
                ifname: name,
            }) => match Self::join(ifname, ifindex, &dir)? {
                Some(joined) => Ok(joined),
                None => Err(NetError::XdpProgramPresent {
                    ifname: name,
                    prog_id,
                }),
            },
            other => other,
        }
    }

    /// Join the program another `lancet run` on this NIC attached with a link of its own (its
    /// maps pinned in `dir`): holding an fd of that link keeps the program attached while any
    /// VM on the NIC runs. `None` when no such program is attached.
    fn join(ifname: &str, ifindex: u32, dir: &std::path::Path) -> Result<Option<Self>, NetError> {
        let present = attached_program_id(ifindex)?;
        if present == 0 || !dir.join(MAP_VM_NAMES).exists() {
            return Ok(None);
        }
        if !pin::prog_uses_pinned_map(present, &dir.join(MAP_VM_MACS))? {
            return Ok(None); // another program, or maps left by another program
        }
        match pin::find_xdp_link(ifindex, present)? {
            Some(link) => Self::reuse(ifname, link, dir, Pinning::MapsOwned).map(Some),
            None => Ok(None),
        }
    }

    /// Use the program a pinned `link` attaches, with the maps pinned in `dir`.
    fn reuse(
        ifname: &str,
        link: OwnedFd,
        dir: &std::path::Path,
        pinning: Pinning,
    ) -> Result<Self, NetError> {
        let mode = match xdp_attach_mode(nic::ifindex(ifname)?)? {
            Some(m) => m,
            None => XdpMode::Auto,
        };
        Ok(Self {
            ifname: ifname.to_string(),
            mode,
            link,
            maps: SteerMaps::pinned(ifname, dir)?,
            pinning,
            pin_dir: Some(dir.to_path_buf()),
        })
    }

    /// Open the steering skeleton, pin its maps under `pin_dir` (reusing maps pinned there) and
    /// load it.
    fn open_and_load(ifname: &str, pin_dir: Option<&std::path::Path>) -> Result<Loaded, LoadError> {
        let mut storage = MaybeUninit::uninit();
        let mut open = SteerSkelBuilder::default()
            .open(&mut storage)
            .map_err(LoadError::Open)?;
        if let Some(dir) = pin_dir {
            for mut map in open.open_object_mut().maps_mut() {
                let name = map.name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue; // .rodata / .bss: internal
                }
                map.set_pin_path(dir.join(&name))
                    .map_err(|e| LoadError::PinPath(name, e))?;
            }
        }
        let skel = open.load().map_err(LoadError::Load)?;
        let prog = skel
            .progs
            .lancet_steer
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| {
                LoadError::Handles(NetError::io(
                    "duplicating the steering program descriptor",
                    e,
                ))
            })?;
        let maps = SteerMaps::from_skel(ifname, &skel, pin_dir).map_err(LoadError::Handles)?;
        Ok(Loaded { maps, prog })
    }

    fn load_and_attach(
        ifname: &str,
        mode: XdpMode,
        pin_dir: Option<&std::path::Path>,
    ) -> Result<Self, NetError> {
        let ifindex = nic::ifindex(ifname)?;
        let present = attached_program_id(ifindex)?;
        if present != 0 {
            return Err(NetError::XdpProgramPresent {
                ifname: ifname.to_string(),
                prog_id: present,
            });
        }
        let loaded = match (Self::open_and_load(ifname, pin_dir), pin_dir) {
            (Ok(loaded), _) => loaded,
            // No program is attached to the NIC, so no VM uses these pins: they are left by a
            // lancet build whose maps differ, or by a dead namespace whose inode number a new
            // one reuses. Replace them rather than refuse every VM on this NIC.
            (Err(LoadError::Load(first)), Some(dir)) => {
                tracing::warn!(
                    dir = %dir.display(),
                    error = %first,
                    "maps pinned here do not fit this lancet's steering program and no program is attached to {ifname}: replacing them"
                );
                pin::clear_dir(dir)?;
                Self::open_and_load(ifname, pin_dir).map_err(|e| e.into_net(ifname, pin_dir))?
            }
            (Err(e), _) => return Err(e.into_net(ifname, pin_dir)),
        };
        let prog_fd = loaded.prog.as_raw_fd();
        let (link, mode) = match mode {
            XdpMode::Auto => match create_link(prog_fd, ifindex, XdpMode::Native) {
                Ok(link) => (link, XdpMode::Native),
                Err(e) if is_unsupported(&e) => (
                    create_link(prog_fd, ifindex, XdpMode::Generic)
                        .map_err(|e| attach_error(ifname, ifindex, e))?,
                    XdpMode::Generic,
                ),
                Err(e) => return Err(attach_error(ifname, ifindex, e)),
            },
            other => (
                create_link(prog_fd, ifindex, other)
                    .map_err(|e| attach_error(ifname, ifindex, e))?,
                other,
            ),
        };
        Ok(Self {
            ifname: ifname.to_string(),
            mode,
            link,
            maps: loaded.maps,
            pinning: if pin_dir.is_some() {
                Pinning::MapsOwned
            } else {
                Pinning::None
            },
            pin_dir: pin_dir.map(|d| d.to_path_buf()),
        })
    }

    /// Pin the bpf_link (`lancet nic attach`): the program stays attached after this process
    /// exits, until `lancet nic detach`.
    pub fn pin_link(&mut self) -> Result<(), NetError> {
        if self.pinning == Pinning::None {
            return Err(NetError::InvalidConfig(
                "pin_link needs a Steering made by attach_pinned".into(),
            ));
        }
        let Some(path) = self.pin_dir.as_ref().map(|d| d.join(pin::LINK_PIN)) else {
            return Err(NetError::InvalidConfig("no pin directory".into()));
        };
        if self.pinning == Pinning::MapsOwned {
            pin::pin_fd(&self.link, &path)?;
        }
        self.pinning = Pinning::Persistent;
        Ok(())
    }

    /// The pin directory, when pinned.
    pub fn pin_dir(&self) -> Option<&std::path::Path> {
        self.pin_dir.as_deref()
    }

    /// How this steering is pinned.
    pub fn pinning(&self) -> Pinning {
        self.pinning
    }

    /// The rule maps (filter rules, VM names, hit counters).
    pub fn rules(&self) -> &RuleMaps {
        &self.maps.rules
    }

    /// The XDP program's id.
    pub fn prog_id(&self) -> Result<u32, NetError> {
        Ok(pin::link_info(&self.link)?.prog_id)
    }

    /// The mode the program was attached in (never `Auto`).
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// The bpf_link descriptor (closing it detaches the program).
    pub fn link_fd(&self) -> RawFd {
        self.link.as_raw_fd()
    }

    /// The name of this steering's pin directory: what owner files ([`owner`]) record to say which
    /// maps a registration is in ("" when not pinned: the maps are this process's alone).
    pub fn owner_key(&self) -> String {
        self.pin_dir
            .as_ref()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The live registrations on these maps (other VMs, and this process's own).
    pub fn live_owners(&self) -> Vec<OwnerRecord> {
        let key = self.owner_key();
        if key.is_empty() {
            return Vec::new();
        }
        owner::list()
            .into_iter()
            .filter(|(r, live)| *live && r.key == key)
            .map(|(r, _)| r)
            .collect()
    }

    /// Start registering a VM with MAC `mac`: become a live owner (the token names its veth port
    /// and its `vm_names` entry). Nothing is in the maps until [`Registration::claim`]. Call with
    /// the pin directory locked ([`RuleMaps::lock`]) so slot choice and claim are atomic.
    pub fn begin_registration(&self, mac: [u8; 6]) -> Result<Registration, NetError> {
        if nic::mac(&self.ifname)? == mac {
            return Err(NetError::MacInUse {
                mac: MacAddr(mac).to_string(),
                ifname: self.ifname.clone(),
                by: "the NIC itself".into(),
            });
        }
        let dup = |m: &MapHandle, what: &str| {
            MapHandle::try_from(m).map_err(bpf_err(format!("duplicating the {what} map handle")))
        };
        let key = self.owner_key();
        let record = OwnerRecord {
            token: 0,
            key: key.clone(),
            slot: UNCLAIMED,
            queue: UNCLAIMED,
            mac,
        };
        Ok(Registration {
            ifname: self.ifname.clone(),
            key,
            lock_dir: self.pin_dir.clone(),
            value: vm_slot {
                slot: UNCLAIMED,
                queue: UNCLAIMED,
            },
            mac,
            vm_macs: dup(&self.maps.vm_macs, MAP_VM_MACS)?,
            vm_ipv4: dup(&self.maps.vm_ipv4, MAP_VM_IPV4)?,
            vm_ipv6: dup(&self.maps.vm_ipv6, MAP_VM_IPV6)?,
            xsks: dup(&self.maps.xsks, MAP_XSKS)?,
            ports: dup(&self.maps.ports, MAP_PORTS)?,
            vm_names: self.maps.rules.vms_handle()?,
            mac_inserted: false,
            ipv4: Vec::new(),
            ipv6: Vec::new(),
            socket_set: false,
            queue_sockets: Vec::new(),
            owner: OwnerLock::acquire(&record)?,
        })
    }

    /// Remove what VMs whose process died left on these maps: their MAC and IP entries (unless a
    /// live VM uses the same slot), their `ports` slot, their name and their veth port. Call with
    /// the pin directory locked ([`RuleMaps::lock`]).
    pub fn sweep_stale(&self) {
        let key = self.owner_key();
        if key.is_empty() {
            return;
        }
        let live = self.live_owners();
        let claimed =
            |slot: u32, queue: u32| live.iter().any(|r| r.slot == slot && r.queue == queue);
        let names = self.maps.rules.vms();
        for stale in owner::take_stale(&key) {
            let r = &stale.record;
            if r.slot != UNCLAIMED && !claimed(r.slot, r.queue) {
                self.remove_slot_entries(r.slot, r.queue);
            }
            for name in names.iter().filter(|n| n.pid == r.token) {
                self.maps.rules.forget_vm(&name.name);
            }
            if r.queue == PORT_QUEUE {
                super::port::VethPort::remove_stale(r.token, r.slot);
            }
            stale.remove();
        }
        // Names whose owner left no owner file (or an older lancet registered them).
        for stale in self.maps.rules.stale_vms() {
            if !claimed(stale.slot, stale.queue) {
                self.remove_slot_entries(stale.slot, stale.queue);
            }
            self.maps.rules.forget_vm(&stale.name);
            if stale.queue == PORT_QUEUE {
                super::port::VethPort::remove_stale(stale.pid, stale.slot);
            }
        }
    }

    /// Delete every MAC, IPv4 and IPv6 entry steering to (`slot`, `queue`), and the `ports` slot
    /// of a port VM: what a dead VM with that slot left.
    fn remove_slot_entries(&self, slot: u32, queue: u32) {
        let entry = vm_slot { slot, queue };
        let value = abi::bytes(&entry);
        for map in [&self.maps.vm_macs, &self.maps.vm_ipv4, &self.maps.vm_ipv6] {
            let keys: Vec<Vec<u8>> = map
                .keys()
                .filter(|k| {
                    map.lookup(k, MapFlags::ANY)
                        .ok()
                        .flatten()
                        .is_some_and(|v| v == value)
                })
                .collect();
            for k in keys {
                let _ = map.delete(&k);
            }
        }
        if queue == PORT_QUEUE {
            let _ = self.maps.ports.delete(&slot.to_ne_bytes());
        }
    }

    /// Remove what a VM whose process died left in the maps (MAC and IP entries, port, name),
    /// unless a live VM now uses its slot.
    pub fn forget_vm(&self, vm: &super::rulemaps::VmName) {
        if !self
            .live_owners()
            .iter()
            .any(|r| r.slot == vm.slot && r.queue == vm.queue)
        {
            self.remove_slot_entries(vm.slot, vm.queue);
        }
        self.maps.rules.forget_vm(&vm.name);
    }

    /// The NIC this program is attached to.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The verdict counters summed over CPUs.
    pub fn counters(&self) -> SteerCounters {
        read_verdicts(&self.maps.verdicts)
    }
}

/// The `verdicts` map of the program pinned for `ifname`, summed over CPUs.
pub fn pinned_counters(ifname: &str) -> Result<SteerCounters, NetError> {
    let path = pin::pin_dir(ifname)?.join(MAP_VERDICTS);
    let map = MapHandle::from_pinned_path(&path)
        .map_err(bpf_err(format!("opening pinned map {}", path.display())))?;
    Ok(read_verdicts(&map))
}

/// Sum a `verdicts` per-CPU array.
fn read_verdicts(verdicts: &MapHandle) -> SteerCounters {
    {
        let read = |index: Verdict| -> u64 { percpu_u64_sum(verdicts, index as u32) };
        SteerCounters {
            to_vm: read(Verdict::ToVm),
            to_vm_arp: read(Verdict::ToVmArp),
            to_vm_ns: read(Verdict::ToVmNs),
            to_host: read(Verdict::ToHost),
            drop_no_socket: read(Verdict::DropNoSocket),
            drop_wrong_queue: read(Verdict::DropWrongQueue),
            rule_to_vm: read(Verdict::RuleToVm),
            rule_pass: read(Verdict::RulePass),
            rule_drop: read(Verdict::RuleDrop),
            rule_mirror: read(Verdict::RuleMirror),
        }
    }
}

/// The steering program loaded but attached nowhere: for BPF_PROG_TEST_RUN measurements
/// (benches/filter.rs) and tests of the program logic without a NIC.
#[derive(Debug)]
pub struct DetachedProgram {
    rules: RuleMaps,
    prog: OwnedFd,
}

impl DetachedProgram {
    /// Load the program and its (fresh, unpinned) maps.
    pub fn load() -> Result<Self, NetError> {
        let loaded = Steering::open_and_load("(detached)", None)
            .map_err(|e| e.into_net("(detached)", None))?;
        Ok(Self {
            rules: loaded.maps.rules,
            prog: loaded.prog,
        })
    }

    /// The rule maps.
    pub fn rules(&self) -> &RuleMaps {
        &self.rules
    }

    /// Run the program `repeat` times on `frame` in the kernel (BPF_PROG_TEST_RUN); returns the
    /// XDP action and the mean time per run.
    pub fn test_run(
        &mut self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, std::time::Duration), NetError> {
        let mut opts = libbpf_sys::bpf_test_run_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as libbpf_sys::size_t,
            data_in: frame.as_ptr().cast(),
            data_size_in: u32::try_from(frame.len())
                .map_err(|_| NetError::InvalidConfig("the test frame is too long".into()))?,
            repeat: i32::try_from(repeat.max(1)).unwrap_or(i32::MAX),
            ..Default::default()
        };
        // SAFETY: `opts` is a sized bpf_test_run_opts whose data_in points at `frame`, valid for
        // data_size_in bytes across the call; no output buffers are given (data_out is null), so
        // the kernel writes only the fields of `opts`.
        let ret = unsafe { libbpf_sys::bpf_prog_test_run_opts(self.prog.as_raw_fd(), &mut opts) };
        if ret < 0 {
            return Err(NetError::io(
                "BPF_PROG_TEST_RUN of the steering program",
                io::Error::from_raw_os_error(-ret),
            ));
        }
        Ok((
            opts.retval,
            std::time::Duration::from_nanos(u64::from(opts.duration)),
        ))
    }
}

impl Drop for Steering {
    fn drop(&mut self) {
        // The VM using this steering unregistered its name and dropped its registration before:
        // any live name or owner left is another VM's (of this or another process, named or
        // not), still using the pins.
        let others =
            self.maps.rules.vms().iter().any(|v| !v.is_stale()) || !self.live_owners().is_empty();
        if self.pinning == Pinning::MapsOwned && !others {
            let removed = match &self.pin_dir {
                Some(dir) => pin::remove_dir(dir),
                None => Ok(()),
            };
            if let Err(e) = removed {
                tracing::warn!(error = %e, "removing the pinned maps");
            }
        }
    }
}

/// The mode of the XDP program attached to `ifindex`, `None` when none is.
pub fn xdp_attach_mode(ifindex: u32) -> Result<Option<XdpMode>, NetError> {
    let opts = xdp_query(ifindex)?;
    Ok(if opts.drv_prog_id != 0 {
        Some(XdpMode::Native)
    } else if opts.skb_prog_id != 0 {
        Some(XdpMode::Generic)
    } else {
        None
    })
}

/// Create the XDP bpf_link of `prog_fd` on `ifindex`; returns the errno on failure.
pub(super) fn create_link(
    prog_fd: RawFd,
    ifindex: u32,
    mode: XdpMode,
) -> Result<OwnedFd, io::Error> {
    let flags = match mode {
        XdpMode::Native => libbpf_sys::XDP_FLAGS_DRV_MODE,
        XdpMode::Generic => libbpf_sys::XDP_FLAGS_SKB_MODE,
        XdpMode::Auto => 0,
    };
    let opts = libbpf_sys::bpf_link_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as libbpf_sys::size_t,
        flags,
        ..Default::default()
    };
    // SAFETY: `opts` is a valid, sized bpf_link_create_opts; the fds are plain integers here.
    let ret =
        unsafe { libbpf_sys::bpf_link_create(prog_fd, ifindex as i32, libbpf_sys::BPF_XDP, &opts) };
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret));
    }
    // SAFETY: `ret` is a fresh link descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(ret) })
}

pub(super) fn is_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
    )
}

/// Turn an attach errno into an actionable error.
fn attach_error(ifname: &str, ifindex: u32, err: io::Error) -> NetError {
    match err.raw_os_error() {
        Some(libc::EBUSY) | Some(libc::EEXIST) => NetError::XdpProgramPresent {
            ifname: ifname.to_string(),
            prog_id: attached_program_id(ifindex).unwrap_or(0),
        },
        Some(libc::ERANGE) => NetError::MtuTooLarge {
            ifname: ifname.to_string(),
            mtu: nic::mtu(ifname).unwrap_or(0),
            max: VETH_NATIVE_XDP_MAX_MTU,
            reason:
                "the driver allows with native XDP (on veth the limit applies to the peer's MTU)",
        },
        Some(libc::EOPNOTSUPP) => NetError::NativeUnsupported {
            ifname: ifname.to_string(),
        },
        _ => NetError::io(
            format!("attaching the XDP steering program to {ifname:?}"),
            err,
        ),
    }
}

/// Largest MTU native XDP accepts on veth (measured on this kernel; drivers differ).
pub const VETH_NATIVE_XDP_MAX_MTU: u32 = 3506;
