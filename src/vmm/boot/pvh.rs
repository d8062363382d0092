//! PVH boot: an ELF image with a XEN_ELFNOTE_PHYS32_ENTRY note (linux-loader reads it), entered in
//! 32-bit protected mode with %ebx pointing at `hvm_start_info` (command line, memory map, initrd as
//! module 0).

use std::fs::File;

use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{
    load_initrd, BootEntry, BootSpec, MemoryRange, CMDLINE_ADDR, HIGH_MEMORY_START, PVH_INFO_ADDR,
    PVH_MEMMAP_ADDR, PVH_MODLIST_ADDR,
};
use crate::vmm::error::{Result, VmmError};

/// `hvm_start_info.magic`.
pub const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// Version 1: the memory map fields are valid.
const START_INFO_VERSION: u32 = 1;

pub fn load(mem: &GuestMemoryMmap, spec: &BootSpec, map: &[MemoryRange]) -> Result<BootEntry> {
    let mut file = File::open(&spec.kernel).map_err(|source| VmmError::ReadFile {
        path: spec.kernel.clone(),
        source,
    })?;
    let loaded =
        Elf::load(mem, None, &mut file, Some(GuestAddress(HIGH_MEMORY_START))).map_err(|e| {
            VmmError::KernelLoad {
                path: spec.kernel.clone(),
                detail: e.to_string(),
            }
        })?;
    let entry = match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => addr.0,
        _ => return Err(VmmError::NoPvhNote(spec.kernel.clone())),
    };
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: START_INFO_VERSION,
        cmdline_paddr: CMDLINE_ADDR,
        memmap_paddr: PVH_MEMMAP_ADDR,
        memmap_entries: map.len() as u32,
        ..Default::default()
    };
    if let Some(initrd) = &spec.initrd {
        let (addr, size) = load_initrd(mem, initrd, loaded.kernel_end)?;
        let module = hvm_modlist_entry {
            paddr: addr,
            size,
            ..Default::default()
        };
        write(mem, module, PVH_MODLIST_ADDR, "writing the PVH module list")?;
        info.nr_modules = 1;
        info.modlist_paddr = PVH_MODLIST_ADDR;
    }
    for (i, range) in map.iter().enumerate() {
        let entry = hvm_memmap_table_entry {
            addr: range.addr,
            size: range.size,
            type_: range.kind,
            reserved: 0,
        };
        let at = PVH_MEMMAP_ADDR + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
        write(mem, entry, at, "writing the PVH memory map")?;
    }
    write(mem, info, PVH_INFO_ADDR, "writing hvm_start_info")?;
    Ok(BootEntry::Pvh {
        entry,
        start_info: PVH_INFO_ADDR,
    })
}

fn write<T: vm_memory::ByteValued>(
    mem: &GuestMemoryMmap,
    value: T,
    addr: u64,
    what: &'static str,
) -> Result<()> {
    mem.write_obj(value, GuestAddress(addr))
        .map_err(|_| VmmError::GuestMemory { what, addr })
}
