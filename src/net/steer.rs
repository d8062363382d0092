//! Loads the XDP steering program (bpf/steer.bpf.c), attaches it to a NIC through a bpf_link (so it
//! disappears with the process, also after kill -9), registers VMs in its maps and reads its
//! per-CPU verdict counters.
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
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
};

use libbpf_rs::{libbpf_sys, MapCore, MapFlags, MapHandle, Object, ObjectBuilder};
use serde::Serialize;

use super::{
    format_mac, nic, pin,
    rulemaps::{RuleMaps, MAP_VM_NAMES},
    NetError,
};

/// The compiled steering program (built by build.rs from bpf/steer.bpf.c).
const STEER_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/steer.bpf.o"));
/// Name of the XDP program inside the object.
const PROGRAM_NAME: &str = "lancet_steer";
/// XSKMAP slots (VMs) one attachment serves; `MAX_VMS` in bpf/steer.bpf.c.
pub const MAX_VMS: u32 = 64;

/// Map names in bpf/steer.bpf.c.
const MAP_XSKS: &str = "xsks";
const MAP_VM_MACS: &str = "vm_macs";
const MAP_VM_IPV4: &str = "vm_ipv4";
const MAP_VM_IPV6: &str = "vm_ipv6";
const MAP_VERDICTS: &str = "verdicts";
const MAP_PORTS: &str = "ports";

/// The `queue` of a VM served through a veth port ([`super::port`]) instead of a NIC queue: its
/// `slot` indexes the `ports` DEVMAP, not the XSKMAP (`PORT_QUEUE` in bpf/steer.bpf.c).
pub const PORT_QUEUE: u32 = u32::MAX;

/// Indexes of the `verdicts` per-CPU array (`enum verdict` in bpf/steer.bpf.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Verdict {
    /// Unicast to a registered VM MAC, redirected to its socket.
    ToVm = 0,
    /// ARP request for a registered VM IPv4 address, redirected.
    ToVmArp = 1,
    /// IPv6 neighbour solicitation for a registered VM address, redirected.
    ToVmNs = 2,
    /// Passed to the host stack.
    ToHost = 3,
    /// For a VM whose XSKMAP slot holds no socket: dropped.
    DropNoSocket = 4,
    /// For a VM, but received on a queue its socket is not bound to: dropped.
    DropWrongQueue = 5,
    /// A rule sent it to a VM, redirected.
    RuleToVm = 6,
    /// A rule passed it to the host.
    RulePass = 7,
    /// A rule dropped it.
    RuleDrop = 8,
    /// A rule mirrored it (to the VM, tagged for a host copy).
    RuleMirror = 9,
}

/// Number of verdict counters.
const VERDICT_COUNT: u32 = 10;

/// How the program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
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

/// Value of `vm_macs`, `vm_ipv4`, `vm_ipv6` (`struct vm_slot` in bpf/steer.bpf.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VmSlot {
    slot: u32,
    queue: u32,
}

impl VmSlot {
    fn to_bytes(self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&self.slot.to_ne_bytes());
        out[4..].copy_from_slice(&self.queue.to_ne_bytes());
        out
    }
}

/// Key of `vm_macs`: the MAC in the low 6 bytes of a zeroed 8-byte key.
fn mac_key(mac: [u8; 6]) -> [u8; 8] {
    let mut key = [0u8; 8];
    key[..6].copy_from_slice(&mac);
    key
}

/// One VM as the steering program knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRegistration {
    /// XSKMAP slot of the VM's socket (below [`MAX_VMS`]).
    pub slot: u32,
    /// The NIC queue the VM's socket is bound to.
    pub queue: u32,
    /// The VM's unicast MAC.
    pub mac: [u8; 6],
    /// IPv4 addresses whose ARP requests go to the VM.
    pub ipv4: Vec<Ipv4Addr>,
    /// IPv6 addresses whose neighbour solicitations go to the VM.
    pub ipv6: Vec<Ipv6Addr>,
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

/// The steering program loaded and attached to one NIC. Dropping it detaches the program (closing
/// the bpf_link) unless the link is pinned ([`Steering::pin_link`], `lancet nic attach`); the
/// kernel does the same when the process dies.
#[derive(Debug)]
pub struct Steering {
    ifname: String,
    mode: XdpMode,
    link: OwnedFd,
    xsks: MapHandle,
    vm_macs: MapHandle,
    vm_ipv4: MapHandle,
    vm_ipv6: MapHandle,
    verdicts: MapHandle,
    ports: MapHandle,
    rules: RuleMaps,
    /// The pin state (see [`super::pin`]).
    pinning: Pinning,
    /// The pin directory (when pinned).
    pin_dir: Option<std::path::PathBuf>,
    /// Keeps the program loaded (the link holds it too); `None` when reusing a pinned link.
    _object: Option<Object>,
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

/// The id of the XDP program attached to `ifindex` in any mode, 0 when none.
pub fn attached_program_id(ifindex: u32) -> Result<u32, NetError> {
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
        let open = |name: &str| -> Result<MapHandle, NetError> {
            MapHandle::from_pinned_path(dir.join(name)).map_err(bpf_err(format!(
                "opening pinned map {}",
                dir.join(name).display()
            )))
        };
        let mode = match xdp_attach_mode(nic::ifindex(ifname)?)? {
            Some(m) => m,
            None => XdpMode::Auto,
        };
        Ok(Self {
            ifname: ifname.to_string(),
            mode,
            link,
            xsks: open(MAP_XSKS)?,
            vm_macs: open(MAP_VM_MACS)?,
            vm_ipv4: open(MAP_VM_IPV4)?,
            vm_ipv6: open(MAP_VM_IPV6)?,
            verdicts: open(MAP_VERDICTS)?,
            ports: open(MAP_PORTS)?,
            rules: RuleMaps::from_fn(ifname, &open, Some(dir.to_path_buf()))?,
            pinning,
            pin_dir: Some(dir.to_path_buf()),
            _object: None,
        })
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
        let mut open = ObjectBuilder::default()
            .open_memory(STEER_OBJECT)
            .map_err(bpf_err("opening the embedded XDP steering object"))?;
        if let Some(dir) = pin_dir {
            for mut map in open.maps_mut() {
                let name = map.name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue; // .rodata / .bss: internal
                }
                map.set_pin_path(dir.join(&name))
                    .map_err(bpf_err(format!("setting the pin path of map {name:?}")))?;
            }
        }
        let object = open.load().map_err(|e| match pin_dir {
            Some(dir) => NetError::Bpf {
                context: format!(
                    "loading the XDP steering program with the maps pinned in {} (if they are from another lancet version, run `lancet nic detach {ifname}`)",
                    dir.display()
                ),
                source: e,
            },
            None => bpf_err("loading the XDP steering program into the kernel")(e),
        })?;
        let handle = |name: &str| -> Result<MapHandle, NetError> {
            let map = object.maps().find(|m| m.name() == name).ok_or_else(|| {
                NetError::InvalidConfig(format!("steering object has no map {name:?}"))
            })?;
            MapHandle::try_from(&map).map_err(bpf_err(format!("opening map {name:?}")))
        };
        let (xsks, vm_macs, vm_ipv4, vm_ipv6, verdicts, ports) = (
            handle(MAP_XSKS)?,
            handle(MAP_VM_MACS)?,
            handle(MAP_VM_IPV4)?,
            handle(MAP_VM_IPV6)?,
            handle(MAP_VERDICTS)?,
            handle(MAP_PORTS)?,
        );
        let rules = RuleMaps::from_fn(ifname, &handle, pin_dir.map(|d| d.to_path_buf()))?;
        let prog_fd = object
            .progs()
            .find(|p| p.name() == PROGRAM_NAME)
            .ok_or_else(|| {
                NetError::InvalidConfig(format!("steering object has no program {PROGRAM_NAME:?}"))
            })?
            .as_fd()
            .as_raw_fd();
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
            xsks,
            vm_macs,
            vm_ipv4,
            vm_ipv6,
            verdicts,
            ports,
            rules,
            pinning: if pin_dir.is_some() {
                Pinning::MapsOwned
            } else {
                Pinning::None
            },
            pin_dir: pin_dir.map(|d| d.to_path_buf()),
            _object: Some(object),
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
        &self.rules
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

    /// Register a VM: its MAC, ARP and neighbour-solicitation targets steer to `vm.slot`.
    /// Fails with [`NetError::MacInUse`] when the MAC is the NIC's own or already registered.
    pub fn register_vm(&self, vm: &VmRegistration) -> Result<(), NetError> {
        if vm.slot >= MAX_VMS {
            return Err(NetError::InvalidConfig(format!(
                "XSKMAP slot {} out of range (max {})",
                vm.slot,
                MAX_VMS - 1
            )));
        }
        if nic::mac(&self.ifname)? == vm.mac {
            return Err(NetError::MacInUse {
                mac: format_mac(vm.mac),
                ifname: self.ifname.clone(),
                by: "the NIC itself",
            });
        }
        let value = VmSlot {
            slot: vm.slot,
            queue: vm.queue,
        }
        .to_bytes();
        self.vm_macs
            .update(&mac_key(vm.mac), &value, MapFlags::NO_EXIST)
            .map_err(|e| {
                if e.kind() == libbpf_rs::ErrorKind::AlreadyExists {
                    NetError::MacInUse {
                        mac: format_mac(vm.mac),
                        ifname: self.ifname.clone(),
                        by: "another VM",
                    }
                } else {
                    bpf_err("registering the VM MAC")(e)
                }
            })?;
        for ip in &vm.ipv4 {
            self.vm_ipv4
                .update(&ip.octets(), &value, MapFlags::ANY)
                .map_err(bpf_err("registering a VM IPv4 address"))?;
        }
        for ip in &vm.ipv6 {
            self.vm_ipv6
                .update(&ip.octets(), &value, MapFlags::ANY)
                .map_err(bpf_err("registering a VM IPv6 address"))?;
        }
        Ok(())
    }

    /// Remove a VM's entries (its socket slot included).
    pub fn unregister_vm(&self, vm: &VmRegistration) {
        // Missing entries are fine here: removal is idempotent.
        let _ = self.vm_macs.delete(&mac_key(vm.mac));
        for ip in &vm.ipv4 {
            let _ = self.vm_ipv4.delete(&ip.octets());
        }
        for ip in &vm.ipv6 {
            let _ = self.vm_ipv6.delete(&ip.octets());
        }
        if vm.queue == PORT_QUEUE {
            let _ = self.ports.delete(&vm.slot.to_ne_bytes());
        } else {
            let _ = self.xsks.delete(&vm.slot.to_ne_bytes());
        }
    }

    /// Remove what a VM whose process died left in the maps (its MAC entry, port and name).
    pub fn forget_vm(&self, vm: &super::rulemaps::VmName) {
        let _ = self.vm_macs.delete(&mac_key(vm.mac));
        if vm.queue == PORT_QUEUE {
            let _ = self.ports.delete(&vm.slot.to_ne_bytes());
        }
        self.rules.forget_vm(&vm.name);
    }

    /// Put the AF_XDP socket `xsk_fd` into XSKMAP slot `slot`.
    pub fn set_socket(&self, slot: u32, xsk_fd: RawFd) -> Result<(), NetError> {
        let fd = u32::try_from(xsk_fd)
            .map_err(|_| NetError::InvalidConfig(format!("bad socket fd {xsk_fd}")))?;
        self.xsks
            .update(&slot.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
            .map_err(bpf_err("inserting the AF_XDP socket into the XSKMAP"))
    }

    /// Point `ports` slot `slot` at the interface `ifindex` (the peer end of a VM's veth port).
    pub fn set_port(&self, slot: u32, ifindex: u32) -> Result<(), NetError> {
        self.ports
            .update(&slot.to_ne_bytes(), &ifindex.to_ne_bytes(), MapFlags::ANY)
            .map_err(bpf_err(
                "inserting the VM's veth port into the `ports` DEVMAP",
            ))
    }

    /// The NIC this program is attached to.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The verdict counters summed over CPUs.
    pub fn counters(&self) -> SteerCounters {
        read_verdicts(&self.verdicts)
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
        let read = |verdict: Verdict| -> u64 { percpu_u64_sum(verdicts, verdict as u32) };
        debug_assert_eq!(VERDICT_COUNT, Verdict::RuleMirror as u32 + 1);
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
    object: Object,
}

impl DetachedProgram {
    /// Load the program and its (fresh, unpinned) maps.
    pub fn load() -> Result<Self, NetError> {
        let object = ObjectBuilder::default()
            .open_memory(STEER_OBJECT)
            .map_err(bpf_err("opening the embedded XDP steering object"))?
            .load()
            .map_err(bpf_err("loading the XDP steering program into the kernel"))?;
        let handle = |name: &str| -> Result<MapHandle, NetError> {
            let map = object.maps().find(|m| m.name() == name).ok_or_else(|| {
                NetError::InvalidConfig(format!("steering object has no map {name:?}"))
            })?;
            MapHandle::try_from(&map).map_err(bpf_err(format!("opening map {name:?}")))
        };
        let rules = RuleMaps::from_fn("(detached)", &handle, None)?;
        Ok(Self { rules, object })
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
        let prog = self
            .object
            .progs_mut()
            .find(|p| p.name() == PROGRAM_NAME)
            .ok_or_else(|| {
                NetError::InvalidConfig(format!("steering object has no program {PROGRAM_NAME:?}"))
            })?;
        let input = libbpf_rs::ProgramInput {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        };
        let out = prog
            .test_run(input)
            .map_err(bpf_err("BPF_PROG_TEST_RUN of the steering program"))?;
        Ok((out.return_value, out.duration))
    }
}

impl Drop for Steering {
    fn drop(&mut self) {
        // The VM using this steering unregistered its name before: any live name left is
        // another VM's (of this or another process), still using the pins.
        let others = self.rules.vms().iter().any(|v| !v.is_stale());
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

/// The per-CPU `u64` counter at `index` of a per-CPU array map, summed over the CPUs (0 when the
/// entry cannot be read).
pub(crate) fn percpu_u64_sum(map: &impl MapCore, index: u32) -> u64 {
    map.lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY)
        .ok()
        .flatten()
        .map(|cpus| {
            cpus.iter()
                .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()))
                .map(u64::from_ne_bytes)
                .sum()
        })
        .unwrap_or(0)
}
