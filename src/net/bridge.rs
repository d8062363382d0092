//! The local bridge of an AF_XDP NIC (bpf/bridge.bpf.c): what the XDP fast path cannot carry.
//! An XSK only receives from the XDP hook of its own device, and AF_XDP transmits with
//! `dev_direct_xmit` (no TC egress, no packet sockets), so the host that owns the NIC, the other
//! VMs on it and broadcast/multicast copies are served through one TAP device per VM, its *local
//! link* `lt-h<pid>n<idx>`, which this module creates and the VMM reads and writes:
//!
//! ```text
//!   VM --(VMM: dst = host, another VM, or group)--> tap --TC ingress lancet_br_tap-->
//!        host: bpf_redirect(NIC, INGRESS) | VM: bpf_redirect(its tap) | group: clones to both
//!   host stack --NIC TC egress lancet_br_egress--> VM's tap (unicast, not on the wire) / clones (group)
//!   wire --XDP_PASS--> NIC TC ingress lancet_br_ingress --> clones of group frames to every tap
//!   VM's tap egress --read by the VMM--> the guest (the Lance address filter decides)
//! ```
//!
//! Maps are pinned with the NIC's steering maps (`br_*` in the pin directory). One pair of NIC
//! programs serves every VM: a VMM joins the pair another one attached (taking an fd of its tcx
//! link, like [`super::steer::Steering`] does for XDP), all under the pin directory's flock, so a
//! group frame is copied once per VM. The tap is not persistent: it disappears with the process,
//! and the map entries of a dead process are swept by the next VM.

use std::{
    io,
    mem::MaybeUninit,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
};

use libbpf_rs::{
    libbpf_sys,
    skel::{OpenSkel, SkelBuilder},
    MapCore, MapFlags, MapHandle, MapMut, ProgramMut,
};
use serde::Serialize;

use crate::frame::MAC_LEN;

use super::{
    abi::{
        self, br_config, br_counter, br_port, bridge_skel::BridgeSkelBuilder, mac_key,
        percpu_u64_sum, MAX_VMS,
    },
    nic, pin, port,
    rulemaps::{DirLock, FilterError},
    tap::{TapBackend, TapConfig},
    NetError,
};

/// Pin name of `br_macs` (= its map name in bpf/bridge.bpf.c): how a joining VM finds the tcx
/// links of the NIC's programs; the loaded maps come from the skeleton's fields.
const MAP_MACS: &str = "br_macs";
/// Name of the local link (tap) of VM `idx` made by process `pid` (at most 15 characters).
pub fn tap_ifname(pid: u32, idx: u32) -> String {
    format!("lt-h{pid}n{idx}")
}

/// The NIC-wide counters of the bridge programs (summed over CPUs; shared by every VM on the NIC).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct BridgeCounters {
    /// Unicast frames from a VM injected into the NIC's receive path (to the host).
    pub vm_to_host: u64,
    /// Unicast frames from a VM delivered to another VM on the NIC.
    pub vm_to_vm: u64,
    /// Broadcast/multicast frames from a VM (copied to the host and the other VMs).
    pub vm_group: u64,
    /// Unicast frames from the host delivered to a VM (not on the wire).
    pub host_to_vm: u64,
    /// Broadcast/multicast frames from the host (copied to every VM, and on the wire).
    pub host_group: u64,
    /// Broadcast/multicast frames from the wire copied to every VM.
    pub wire_group: u64,
    /// Copies made of group frames (one per receiving VM or host).
    pub group_copies: u64,
    /// A VM's local frame for no local address (stale view of the VMM): dropped.
    pub drop_no_dest: u64,
    /// Redirects or clones the kernel refused (a tap gone, MTU): dropped.
    pub drop_redirect: u64,
}

/// One VM's place on the local bridge: its tap, its map entries, the links it holds.
#[derive(Debug)]
pub struct Bridge {
    /// The VM's owner token (what the maps record as `pid`).
    owner: u32,
    tap: TapBackend,
    tap_ifindex: u32,
    idx: u32,
    mac: [u8; 6],
    nic_mac: [u8; 6],
    macs: MapHandle,
    taps: MapHandle,
    counters: MapHandle,
    /// tcx links: this VM's tap ingress, and the NIC's ingress/egress (own or joined); they
    /// hold the programs (the skeleton's object is closed once they are attached).
    _links: Vec<OwnedFd>,
}

/// Value of `br_macs` and `br_taps`.
fn port_value(ifindex: u32, pid: u32) -> br_port {
    br_port { ifindex, pid }
}

/// An entry of `br_macs` or `br_taps`: (ifindex, pid).
fn parse_port(v: &[u8]) -> Option<(u32, u32)> {
    abi::from_bytes::<br_port>(v).map(|p| (p.ifindex, p.pid))
}

/// A free `br_taps` entry.
const FREE_PORT: br_port = br_port { ifindex: 0, pid: 0 };

/// Whether the VM whose owner token is `token` still runs (its owner lock is held: see
/// [`super::owner`]; a pid would be wrong across pid namespaces).
fn owner_alive(token: u32) -> bool {
    token != 0 && super::owner::is_live(token)
}

fn bpf_err(context: &str) -> impl FnOnce(libbpf_rs::Error) -> NetError + '_ {
    move |source| NetError::Bpf {
        context: context.to_string(),
        source,
    }
}

/// Create a tcx link of `prog_fd` on `ifindex` (`attach_type` BPF_TCX_INGRESS or _EGRESS).
fn tcx_link(prog_fd: RawFd, ifindex: u32, attach_type: u32) -> Result<OwnedFd, io::Error> {
    let opts = libbpf_sys::bpf_link_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as libbpf_sys::size_t,
        ..Default::default()
    };
    // SAFETY: `opts` is a valid, sized bpf_link_create_opts; the fds are plain integers here.
    let ret = unsafe { libbpf_sys::bpf_link_create(prog_fd, ifindex as i32, attach_type, &opts) };
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret));
    }
    // SAFETY: `ret` is a fresh link descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(ret) })
}

/// An fd of the tcx link on `ifindex`/`attach_type` whose program uses the map pinned at
/// `map_path` (another VMM's bridge program); `None` when there is none.
fn find_tcx_link(
    ifindex: u32,
    attach_type: u32,
    map_path: &Path,
) -> Result<Option<OwnedFd>, NetError> {
    let mut prog_ids = [0u32; MAX_VMS as usize];
    let mut link_ids = [0u32; MAX_VMS as usize];
    let mut opts = libbpf_sys::bpf_prog_query_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_prog_query_opts>() as libbpf_sys::size_t,
        prog_ids: prog_ids.as_mut_ptr(),
        link_ids: link_ids.as_mut_ptr(),
        ..Default::default()
    };
    opts.__bindgen_anon_1.count = prog_ids.len() as u32;
    // SAFETY: `opts` is valid and sized; prog_ids/link_ids point at arrays of `count` entries
    // that live across the call.
    let ret = unsafe { libbpf_sys::bpf_prog_query_opts(ifindex as i32, attach_type, &mut opts) };
    if ret < 0 {
        return Err(NetError::io(
            "querying the NIC's TC programs",
            io::Error::from_raw_os_error(-ret),
        ));
    }
    // SAFETY: the kernel wrote the count it filled.
    let n = (unsafe { opts.__bindgen_anon_1.count } as usize).min(prog_ids.len());
    for i in 0..n {
        if link_ids[i] == 0 || !pin::prog_uses_pinned_map(prog_ids[i], map_path)? {
            continue;
        }
        // SAFETY: plain syscall wrapper taking an id.
        let fd = unsafe { libbpf_sys::bpf_link_get_fd_by_id(link_ids[i]) };
        if fd >= 0 {
            // SAFETY: a fresh descriptor owned by nobody else.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    Ok(None)
}

impl Bridge {
    /// Put the VM with `vm_mac` on the local bridge of `nic_name` (in the calling thread's
    /// namespace): create its tap, attach (or join) the NIC's programs, register the MAC. With
    /// `pin_dir` the maps are shared with the other VMs on the NIC; without, this VM is alone.
    /// `owner` is the VM's owner token ([`super::owner::OwnerLock::token`]): what the maps record
    /// and the tap's name is made of.
    pub fn open(
        nic_name: &str,
        vm_mac: [u8; 6],
        owner: u32,
        pin_dir: Option<&Path>,
    ) -> Result<Self, NetError> {
        let _lock = DirLock::take(pin_dir).map_err(|e| match e {
            FilterError::Net(n) => n,
            other => NetError::InvalidConfig(other.to_string()),
        })?;
        let nic_ifindex = nic::ifindex(nic_name)?;
        let nic_mac = nic::mac(nic_name)?;
        let mut storage = MaybeUninit::uninit();
        let mut open = BridgeSkelBuilder::default()
            .open(&mut storage)
            .map_err(bpf_err("opening the embedded bridge object"))?;
        if let Some(dir) = pin_dir {
            for mut map in open.open_object_mut().maps_mut() {
                let name = map.name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                map.set_pin_path(dir.join(&name))
                    .map_err(bpf_err("setting the pin path of a bridge map"))?;
            }
        }
        // The skeleton lives until the programs are attached (the tcx links hold them then).
        let skel = open.load().map_err(bpf_err(
            "loading the local bridge programs (if the pinned br_* maps are from another lancet version, run `lancet nic detach`)",
        ))?;
        let map = |m: &MapMut<'_>| MapHandle::try_from(m).map_err(bpf_err("opening a bridge map"));
        let (macs, taps, cfg, counters) = (
            map(&skel.maps.br_macs)?,
            map(&skel.maps.br_taps)?,
            map(&skel.maps.br_cfg)?,
            map(&skel.maps.br_counters)?,
        );
        let cfg_value = br_config {
            nic_ifindex,
            nic_mac,
            pad: [0; 2],
        };
        cfg.update(&0u32.to_ne_bytes(), abi::bytes(&cfg_value), MapFlags::ANY)
            .map_err(bpf_err("writing the bridge configuration"))?;

        // Entries of VMMs that died (their taps vanished with them).
        let pid = owner;
        let mut free = None;
        for i in 0..MAX_VMS {
            let entry = taps
                .lookup(&i.to_ne_bytes(), MapFlags::ANY)
                .ok()
                .flatten()
                .and_then(|v| parse_port(&v));
            match entry {
                Some((ifindex, owner)) if ifindex != 0 && owner_alive(owner) => {}
                Some((ifindex, _)) => {
                    if ifindex != 0 {
                        let _ =
                            taps.update(&i.to_ne_bytes(), abi::bytes(&FREE_PORT), MapFlags::ANY);
                    }
                    free = free.or(Some(i));
                }
                None => {}
            }
        }
        for key in macs.keys().collect::<Vec<_>>() {
            let owner = macs
                .lookup(&key, MapFlags::ANY)
                .ok()
                .flatten()
                .and_then(|v| parse_port(&v));
            if owner.is_some_and(|(_, p)| !owner_alive(p)) {
                let _ = macs.delete(&key);
            }
        }
        if let Some((_, owner)) = macs
            .lookup(&mac_key(vm_mac), MapFlags::ANY)
            .ok()
            .flatten()
            .and_then(|v| parse_port(&v))
        {
            return Err(NetError::MacInUse {
                mac: crate::frame::MacAddr(vm_mac).to_string(),
                ifname: nic_name.to_string(),
                by: if owner == pid {
                    "this process".to_string()
                } else {
                    "another VM".to_string()
                },
            });
        }
        let idx = free.ok_or_else(|| {
            NetError::InvalidConfig(format!(
                "{nic_name:?} already has {MAX_VMS} VMs on its local bridge"
            ))
        })?;

        let name = tap_ifname(pid, idx);
        let tap = TapBackend::open(&TapConfig::new(name.clone(), None))?;
        port::disable_ipv6(&name)?;
        super::netlink::Netlink::open()?.set_mtu(&name, nic::mtu(nic_name)?)?;
        let tap_ifindex = nic::ifindex(&name)?;

        let mut links = Vec::with_capacity(3);
        let attach = |prog: &ProgramMut<'_>, ifindex: u32, at: u32, what: &str| {
            tcx_link(prog.as_fd().as_raw_fd(), ifindex, at).map_err(|e| {
                let prog = prog.name().to_string_lossy();
                NetError::io(format!("attaching {prog} to {what} (tcx)"), e)
            })
        };
        links.push(attach(
            &skel.progs.lancet_br_tap,
            tap_ifindex,
            libbpf_sys::BPF_TCX_INGRESS,
            &name,
        )?);
        for (prog, at) in [
            (&skel.progs.lancet_br_ingress, libbpf_sys::BPF_TCX_INGRESS),
            (&skel.progs.lancet_br_egress, libbpf_sys::BPF_TCX_EGRESS),
        ] {
            let joined = match pin_dir {
                Some(dir) => find_tcx_link(nic_ifindex, at, &dir.join(MAP_MACS))?,
                None => None,
            };
            links.push(match joined {
                Some(link) => link,
                None => attach(prog, nic_ifindex, at, nic_name)?,
            });
        }
        let value = port_value(tap_ifindex, pid);
        taps.update(&idx.to_ne_bytes(), abi::bytes(&value), MapFlags::ANY)
            .map_err(bpf_err("registering the VM's tap"))?;
        if let Err(e) = macs.update(&mac_key(vm_mac), abi::bytes(&value), MapFlags::NO_EXIST) {
            let _ = taps.update(&idx.to_ne_bytes(), abi::bytes(&FREE_PORT), MapFlags::ANY);
            return Err(bpf_err("registering the VM's MAC on the local bridge")(e));
        }
        tracing::info!(tap = %name, nic = nic_name, "local bridge link open");
        Ok(Self {
            owner,
            tap,
            tap_ifindex,
            idx,
            mac: vm_mac,
            nic_mac,
            macs,
            taps,
            counters,
            _links: links,
        })
    }

    /// The VM's tap (read: frames for the VM; written: the VM's local frames).
    pub fn tap(&mut self) -> &mut TapBackend {
        &mut self.tap
    }

    /// The tap, read-only.
    pub fn tap_ref(&self) -> &TapBackend {
        &self.tap
    }

    /// The tap's ifindex.
    pub fn tap_ifindex(&self) -> u32 {
        self.tap_ifindex
    }

    /// The destinations that are local for this VM: the NIC's own MAC and every other VM's.
    pub fn local_macs(&self) -> Vec<[u8; 6]> {
        let mut out = vec![self.nic_mac];
        for key in self.macs.keys() {
            if let Some(mac) = key.get(..MAC_LEN).and_then(|m| <[u8; 6]>::try_from(m).ok()) {
                if mac != self.mac {
                    out.push(mac);
                }
            }
        }
        out
    }

    /// The NIC-wide bridge counters.
    pub fn counters(&self) -> BridgeCounters {
        let read = |i: br_counter| percpu_u64_sum(&self.counters, i.0);
        BridgeCounters {
            vm_to_host: read(br_counter::BR_VM_TO_HOST),
            vm_to_vm: read(br_counter::BR_VM_TO_VM),
            vm_group: read(br_counter::BR_VM_GROUP),
            host_to_vm: read(br_counter::BR_HOST_TO_VM),
            host_group: read(br_counter::BR_HOST_GROUP),
            wire_group: read(br_counter::BR_WIRE_GROUP),
            group_copies: read(br_counter::BR_COPIES),
            drop_no_dest: read(br_counter::BR_DROP_NO_DEST),
            drop_redirect: read(br_counter::BR_DROP_REDIRECT),
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let pid = self.owner;
        let ours = |v: Option<Vec<u8>>| {
            v.and_then(|v| parse_port(&v))
                .is_some_and(|(_, p)| p == pid)
        };
        let key = mac_key(self.mac);
        if ours(self.macs.lookup(&key, MapFlags::ANY).ok().flatten()) {
            let _ = self.macs.delete(&key);
        }
        let idx = self.idx.to_ne_bytes();
        if ours(self.taps.lookup(&idx, MapFlags::ANY).ok().flatten()) {
            let _ = self
                .taps
                .update(&idx, abi::bytes(&FREE_PORT), MapFlags::ANY);
        }
    }
}
