//! Linux boot protocol (bzImage): the protected-mode kernel loaded at 1 MiB by linux-loader, a zero
//! page with the setup header, e820 map, command line and initrd, entered at the 64-bit entry point
//! (load address + 0x200) in long mode with identity page tables.

use std::fs::File;

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{BzImage, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{
    load_initrd, BootEntry, BootSpec, MemoryRange, CMDLINE_ADDR, HIGH_MEMORY_START, PDPT_ADDR,
    PD_ADDR, PML4_ADDR, ZERO_PAGE_ADDR,
};
use crate::vmm::error::{Result, VmmError};

/// Offset of the 64-bit entry point from the protected-mode kernel's load address.
const ENTRY_64_OFFSET: u64 = 0x200;
/// `type_of_loader`: undefined boot loader.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// `boot_flag` signature.
const BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// `header` signature "HdrS".
const HEADER_MAGIC: u32 = 0x5372_6448;
/// `loadflags` bit: the kernel is loaded high (at 1 MiB).
const LOADED_HIGH: u8 = 0x01;
/// `loadflags` bit: `heap_end_ptr` is valid.
const CAN_USE_HEAP: u8 = 0x80;
/// End of the setup heap relative to the real-mode code (the conventional value).
const HEAP_END: u16 = 0xfe00;
/// Most e820 entries the zero page holds.
const E820_MAX: usize = 128;
/// Page table entry bits.
const PTE_PRESENT_WRITABLE: u64 = 0x3;
const PDE_HUGE_PAGE: u64 = 0x80;
/// 2 MiB pages.
const HUGE_PAGE_SIZE: u64 = 2 << 20;
const ENTRIES_PER_TABLE: u64 = 512;

pub fn load(mem: &GuestMemoryMmap, spec: &BootSpec, map: &[MemoryRange]) -> Result<BootEntry> {
    let mut file = File::open(&spec.kernel).map_err(|source| VmmError::ReadFile {
        path: spec.kernel.clone(),
        source,
    })?;
    let loaded = BzImage::load(mem, None, &mut file, Some(GuestAddress(HIGH_MEMORY_START)))
        .map_err(|e| VmmError::KernelLoad {
            path: spec.kernel.clone(),
            detail: e.to_string(),
        })?;
    let mut params = boot_params::default();
    if let Some(hdr) = loaded.setup_header {
        params.hdr = hdr;
    }
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.boot_flag = BOOT_FLAG_MAGIC;
    params.hdr.header = HEADER_MAGIC;
    params.hdr.loadflags |= LOADED_HIGH | CAN_USE_HEAP;
    params.hdr.heap_end_ptr = HEAP_END;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = spec.cmdline.len() as u32 + 1;
    if let Some(initrd) = &spec.initrd {
        let (addr, size) = load_initrd(mem, initrd, loaded.kernel_end)?;
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    for (slot, range) in params.e820_table.iter_mut().zip(map.iter().take(E820_MAX)) {
        *slot = boot_e820_entry {
            addr: range.addr,
            size: range.size,
            r#type: range.kind,
        };
    }
    params.e820_entries = map.len().min(E820_MAX) as u8;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_ADDR))
        .map_err(|_| VmmError::GuestMemory {
            what: "writing the zero page",
            addr: ZERO_PAGE_ADDR,
        })?;
    write_identity_page_tables(mem)?;
    Ok(BootEntry::Linux64 {
        entry: loaded.kernel_load.0 + ENTRY_64_OFFSET,
        zero_page: ZERO_PAGE_ADDR,
    })
}

/// PML4 entry 0 -> PDPT entry 0 -> PD with 512 2 MiB pages: the first 1 GiB mapped 1:1.
pub fn write_identity_page_tables(mem: &GuestMemoryMmap) -> Result<()> {
    let err = |addr| VmmError::GuestMemory {
        what: "writing page tables",
        addr,
    };
    mem.write_obj(PDPT_ADDR | PTE_PRESENT_WRITABLE, GuestAddress(PML4_ADDR))
        .map_err(|_| err(PML4_ADDR))?;
    mem.write_obj(PD_ADDR | PTE_PRESENT_WRITABLE, GuestAddress(PDPT_ADDR))
        .map_err(|_| err(PDPT_ADDR))?;
    for i in 0..ENTRIES_PER_TABLE {
        let pde = (i * HUGE_PAGE_SIZE) | PTE_PRESENT_WRITABLE | PDE_HUGE_PAGE;
        mem.write_obj(pde, GuestAddress(PD_ADDR + i * 8))
            .map_err(|_| err(PD_ADDR + i * 8))?;
    }
    Ok(())
}
