//! The BPF ABI on the Rust side: the libbpf-cargo skeletons build.rs generates from
//! bpf/steer.bpf.c, bpf/port.bpf.c and bpf/bridge.bpf.c, and what user space takes from them.
//! Every struct, enum and constant shared with the programs is defined once, in
//! bpf/lancet_common.h; the skeletons' `types` modules are those definitions as the compiler wrote
//! them into the objects' BTF. The constants below are read from there, and the map key/value
//! types are the generated ones, so a header change user space does not follow fails to compile.

#![allow(missing_docs)]

/// The steering program's skeleton (bpf/steer.bpf.c).
#[allow(clippy::undocumented_unsafe_blocks, clippy::all)]
pub mod steer_skel {
    include!(concat!(env!("OUT_DIR"), "/steer.skel.rs"));
}

/// The veth port programs' skeleton (bpf/port.bpf.c).
#[allow(clippy::undocumented_unsafe_blocks, clippy::all)]
pub mod port_skel {
    include!(concat!(env!("OUT_DIR"), "/port.skel.rs"));
}

/// The local bridge programs' skeleton (bpf/bridge.bpf.c).
#[allow(clippy::undocumented_unsafe_blocks, clippy::all)]
pub mod bridge_skel {
    include!(concat!(env!("OUT_DIR"), "/bridge.skel.rs"));
}

use std::mem::{offset_of, size_of};

use libbpf_rs::{MapCore, MapFlags, MapHandle, MapMut};

use super::NetError;

pub use bridge_skel::types::{br_config, br_counter, br_port};
pub use port_skel::types::port_drop;
use steer_skel::types::{flow_ipflag, flow_vlan, lancet_limit, mirror_meta, vm_queue};
pub use steer_skel::types::{
    flow_key, ipv6_key, rule_action_kind, rule_cfg, rule_entry, rule_mask, rule_text, verdict,
    vm_name, vm_name_entry, vm_slot,
};

/// VMs (XSKMAP slots) one NIC serves.
pub const MAX_VMS: u32 = lancet_limit::MAX_VMS.0;
/// Masks one rule table holds.
pub const RULE_MAX_MASKS: u32 = lancet_limit::RULE_MAX_MASKS.0;
/// Rule tables (double buffering).
pub const RULE_TABLES: u32 = lancet_limit::RULE_TABLES.0;
/// Rule ids are below this (hit counters).
pub const RULE_MAX_IDS: u32 = lancet_limit::RULE_MAX_IDS.0;
/// Bits of the rule id in a rank.
pub const RULE_ID_BITS: u32 = lancet_limit::RULE_ID_BITS.0;
/// Hash entries of both rule tables together.
pub const RULE_MAX_ENTRIES: u32 = lancet_limit::RULE_MAX_ENTRIES.0;
/// Bytes of a stored rule text, NUL included.
pub const RULE_TEXT_LEN: usize = size_of::<rule_text>();
/// Bytes of a VM name in `vm_names`, NUL padding included.
pub const VM_NAME_LEN: usize = size_of::<vm_name>();
/// The `queue` of a VM that owns every RX queue of a multi-queue NIC: one AF_XDP socket per
/// queue (sharing one UMEM) sits in the XSKMAP slot of that queue's number, and the program
/// redirects to slot `rx_queue_index`.
pub const ALL_QUEUES: u32 = vm_queue::ALL_QUEUES.0;
/// The `queue` of a VM served through a veth port ([`super::port`]) instead of a NIC queue: its
/// `slot` indexes the `ports` DEVMAP, not the XSKMAP.
pub const PORT_QUEUE: u32 = vm_queue::PORT_QUEUE.0;
/// The XDP metadata word in front of a mirrored frame.
pub const MIRROR_META_MAGIC: u32 = mirror_meta::MIRROR_META_MAGIC.0;
/// `flow_key.vlan` bit of a tagged frame.
pub const VLAN_PRESENT: u16 = flow_vlan::VLAN_PRESENT.0 as u16;
/// `flow_key.ipflags`: IPv4 or IPv6.
pub const IPFLAG_IP: u8 = flow_ipflag::IPFLAG_IP.0 as u8;
/// `flow_key.ipflags`: IPv6.
pub const IPFLAG_V6: u8 = flow_ipflag::IPFLAG_V6.0 as u8;
/// `flow_key.ipflags`: IPv6 whose extension header chain the program did not parse (more than 6
/// headers, truncated, ESP...): the frame has no transport, so no rule with a protocol or ports
/// matches it (a rule on `ip6` alone still does).
pub const IPFLAG_NO_L4: u8 = flow_ipflag::IPFLAG_NO_L4.0 as u8;

// The narrowing casts above lose nothing.
const _: () = assert!(flow_vlan::VLAN_PRESENT.0 <= u16::MAX as u32);
const _: () = assert!(flow_ipflag::IPFLAG_NO_L4.0 <= u8::MAX as u32);
// A rank is prio << RULE_ID_BITS | id.
const _: () = assert!(1 << RULE_ID_BITS == RULE_MAX_IDS);
// The rule table sizes follow the header's limits.
const _: () = assert!(size_of::<rule_cfg>() == (1 + RULE_TABLES as usize) * size_of::<u32>());

/// A generated map key or value that is plain bytes: `#[repr(C)]`, made of integers and integer
/// arrays only, without implicit padding (checked by [`plain!`]), so every byte pattern of its size
/// is a valid value and every byte of a value is initialised.
///
/// # Safety
/// Implement only through [`plain!`], which checks the padding.
pub unsafe trait Plain: Copy + Default {}

/// The size of the field `f` picks out of a `T` (for the padding checks).
const fn field_size<T, F>(_f: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// Implement [`Plain`] for a generated struct, after checking at compile time that its fields
/// (all of them listed) fill it without padding.
macro_rules! plain {
    ($($t:ty { $($f:ident),* $(,)? })*) => {$(
        const _: () = assert!(size_of::<$t>() == 0 $(+ field_size(|v: &$t| &v.$f))*);
        // SAFETY: `$t` is a generated #[repr(C)] struct of integers and integer arrays whose
        // listed fields fill its size (asserted above): no padding, no invalid bit pattern.
        unsafe impl Plain for $t {}
    )*};
}

plain! {
    vm_slot { slot, queue }
    ipv6_key { addr }
    flow_key { tag, vlan, ethertype, dst_mac, src_mac, src_ip, dst_ip, sport, dport, proto, ipflags, pad }
    rule_mask { mask, best_rank, pad }
    rule_entry { rank, action, slot, queue }
    rule_cfg { table, mask_count }
    rule_text { text }
    vm_name { name }
    vm_name_entry { slot, queue, pid, mac, pad }
    br_port { ifindex, pid }
    br_config { nic_ifindex, nic_mac, pad }
}

/// The bytes of a map key or value, as the map calls take them.
pub fn bytes<T: Plain>(value: &T) -> &[u8] {
    // SAFETY: `T: Plain` has no padding, so all size_of::<T>() bytes behind the reference are
    // initialised; the slice borrows `value` and lives no longer.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

/// The bytes of a map key or value, to fill in place.
pub fn bytes_mut<T: Plain>(value: &mut T) -> &mut [u8] {
    // SAFETY: as in `bytes`; and every byte pattern written through the slice leaves a valid
    // `T: Plain`. The slice borrows `value` mutably and lives no longer.
    unsafe { std::slice::from_raw_parts_mut((value as *mut T).cast::<u8>(), size_of::<T>()) }
}

/// A map key or value from the bytes a map call returned; `None` when the length differs.
pub fn from_bytes<T: Plain>(raw: &[u8]) -> Option<T> {
    if raw.len() != size_of::<T>() {
        return None;
    }
    // SAFETY: `raw` holds exactly size_of::<T>() bytes, any bit pattern is a valid `T: Plain`,
    // and read_unaligned copes with the slice's alignment.
    Some(unsafe { std::ptr::read_unaligned(raw.as_ptr().cast::<T>()) })
}

/// The per-CPU `u64` counter at `index` of a per-CPU array map, summed over the CPUs (0 when the
/// entry cannot be read).
pub fn percpu_u64_sum(map: &impl MapCore, index: u32) -> u64 {
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

/// A descriptor of a loaded skeleton's map that outlives the skeleton.
pub fn map_handle(map: &MapMut<'_>) -> Result<MapHandle, NetError> {
    MapHandle::try_from(map).map_err(|source| NetError::Bpf {
        context: format!("duplicating the handle of map {:?}", map.name()),
        source,
    })
}

/// Key of `vm_macs` and `br_macs`: the MAC in the low 6 bytes of a zeroed 8-byte key
/// (`lancet_mac_key` in bpf/lancet_common.h).
pub fn mac_key(mac: [u8; 6]) -> [u8; 8] {
    let mut key = [0u8; 8];
    key[..6].copy_from_slice(&mac);
    key
}

/// Byte offsets of the `struct flow_key` fields (rules are compiled into flow keys as bytes).
pub mod key {
    use super::{flow_key, offset_of};

    /// Table << 8 | mask id (host order).
    pub const TAG: usize = offset_of!(flow_key, tag);
    /// VLAN_PRESENT | VID (host order).
    pub const VLAN: usize = offset_of!(flow_key, vlan);
    /// Ethertype after the VLAN tag (network order).
    pub const ETHERTYPE: usize = offset_of!(flow_key, ethertype);
    /// Destination MAC.
    pub const DST_MAC: usize = offset_of!(flow_key, dst_mac);
    /// Source MAC.
    pub const SRC_MAC: usize = offset_of!(flow_key, src_mac);
    /// Source IP (IPv4 in the first 4 bytes).
    pub const SRC_IP: usize = offset_of!(flow_key, src_ip);
    /// Destination IP.
    pub const DST_IP: usize = offset_of!(flow_key, dst_ip);
    /// TCP/UDP source port (network order).
    pub const SPORT: usize = offset_of!(flow_key, sport);
    /// TCP/UDP destination port (network order).
    pub const DPORT: usize = offset_of!(flow_key, dport);
    /// IP protocol.
    pub const PROTO: usize = offset_of!(flow_key, proto);
    /// IPFLAG_* bits.
    pub const IPFLAGS: usize = offset_of!(flow_key, ipflags);
}
