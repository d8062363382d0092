//! Loading a guest into RAM: the kernel image (PVH ELF or bzImage), command line, initrd, the memory
//! map, the MP table, and the CPU state each boot protocol enters with.
//!
//! Guest-physical layout (below 1 MiB; the image is loaded at 1 MiB and up):
//! | range | content |
//! |---|---|
//! | 0x0500 | GDT (null, -, code 0x10, data 0x18, TSS 0x20) |
//! | 0x0540 | empty IDT |
//! | 0x6000 | PVH `hvm_start_info`, module list, memory map |
//! | 0x7000 | Linux zero page (`boot_params`) |
//! | 0x9000..0xc000 | identity page tables for the 64-bit bzImage entry (first 1 GiB, 2 MiB pages) |
//! | 0x20000 | kernel command line |
//! | 0x9fc00..0x100000 | reserved: MP table (guests scan the last KiB below 640 KiB) |

pub mod bzimage;
pub mod mptable;
pub mod pvh;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::error::{Result, VmmError};

pub const GDT_ADDR: u64 = 0x500;
pub const IDT_ADDR: u64 = 0x540;
pub const PVH_INFO_ADDR: u64 = 0x6000;
pub const PVH_MODLIST_ADDR: u64 = 0x6040;
pub const PVH_MEMMAP_ADDR: u64 = 0x6100;
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xa000;
pub const PD_ADDR: u64 = 0xb000;
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Longest command line accepted, NUL excluded.
pub const CMDLINE_MAX: usize = 4095;
/// Start of the reserved area that holds the MP table.
pub const EBDA_START: u64 = 0x9fc00;
/// First byte above the legacy area: the kernel is loaded here.
pub const HIGH_MEMORY_START: u64 = 0x10_0000;
/// Highest address (exclusive) an initrd may end at (Linux's `initrd_addr_max` default).
pub const INITRD_ADDR_MAX: u64 = 0x3800_0000;

/// GDT selectors the boot protocols expect (Linux __BOOT_CS / __BOOT_DS).
pub const BOOT_CS: u16 = 0x10;
pub const BOOT_DS: u16 = 0x18;
pub const BOOT_TSS: u16 = 0x20;

/// e820 / PVH memory map entry types.
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// One memory map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRange {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// The memory map every guest sees: low RAM, the reserved EBDA/BIOS hole, RAM from 1 MiB.
pub fn memory_map(mem_size: u64) -> Vec<MemoryRange> {
    vec![
        MemoryRange {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        MemoryRange {
            addr: EBDA_START,
            size: HIGH_MEMORY_START - EBDA_START,
            kind: E820_RESERVED,
        },
        MemoryRange {
            addr: HIGH_MEMORY_START,
            size: mem_size - HIGH_MEMORY_START,
            kind: E820_RAM,
        },
    ]
}

/// Where and how the boot vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootEntry {
    /// PVH: 32-bit protected mode, paging off, %ebx = `hvm_start_info`.
    Pvh { entry: u64, start_info: u64 },
    /// Linux 64-bit boot protocol: long mode, identity paging, %rsi = zero page.
    Linux64 { entry: u64, zero_page: u64 },
}

/// What to boot.
#[derive(Clone, Debug)]
pub struct BootSpec {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub cpus: u8,
}

/// The kind of a kernel file, from its magic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    Elf,
    BzImage,
}

/// Offset of the "HdrS" magic in a bzImage.
const BZIMAGE_MAGIC_OFFSET: usize = 0x202;
const BZIMAGE_MAGIC: &[u8; 4] = b"HdrS";
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// Identifies `path` as ELF or bzImage, with errors for a missing file or anything else.
pub fn kernel_format(path: &Path) -> Result<KernelFormat> {
    let mut file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => VmmError::KernelMissing(path.to_path_buf()),
        _ => VmmError::ReadFile {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    let mut head = Vec::with_capacity(BZIMAGE_MAGIC_OFFSET + 4);
    file.by_ref()
        .take((BZIMAGE_MAGIC_OFFSET + 4) as u64)
        .read_to_end(&mut head)
        .map_err(|source| VmmError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
    if head.starts_with(ELF_MAGIC) {
        Ok(KernelFormat::Elf)
    } else if head.get(BZIMAGE_MAGIC_OFFSET..BZIMAGE_MAGIC_OFFSET + 4) == Some(BZIMAGE_MAGIC) {
        Ok(KernelFormat::BzImage)
    } else {
        Err(VmmError::NotAKernel(path.to_path_buf()))
    }
}

/// Loads the kernel, initrd, command line, memory map and MP table; returns the boot entry.
pub fn load_guest(mem: &GuestMemoryMmap, spec: &BootSpec) -> Result<BootEntry> {
    if spec.cmdline.len() > CMDLINE_MAX {
        return Err(VmmError::CmdlineTooLong(spec.cmdline.len()));
    }
    write_bytes(
        mem,
        CMDLINE_ADDR,
        spec.cmdline.as_bytes(),
        "writing the command line",
    )?;
    write_bytes(
        mem,
        CMDLINE_ADDR + spec.cmdline.len() as u64,
        &[0],
        "writing the command line",
    )?;
    mptable::write_mp_table(mem, spec.cpus)?;
    let mem_size = mem.last_addr().0 + 1;
    let map = memory_map(mem_size);
    match kernel_format(&spec.kernel)? {
        KernelFormat::Elf => pvh::load(mem, spec, &map),
        KernelFormat::BzImage => bzimage::load(mem, spec, &map),
    }
}

/// Highest address (exclusive) an initrd may end at in a guest with `mem_bytes` of RAM.
pub fn initrd_limit(mem_bytes: u64) -> u64 {
    mem_bytes.min(INITRD_ADDR_MAX)
}

/// Opens the initrd and checks, from its metadata and before reading a byte, that it is a regular
/// file of at most `limit` bytes (a device such as /dev/zero, a FIFO or a huge file is refused).
/// Returns the open file and its size.
pub fn open_initrd(path: &Path, limit: u64) -> Result<(File, u64)> {
    let read_err = |source| VmmError::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below anyway.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.file_type().is_file() {
        return Err(VmmError::InitrdNotAFile(path.to_path_buf()));
    }
    let size = meta.len();
    if size > limit {
        return Err(VmmError::InitrdTooBig {
            path: path.to_path_buf(),
            size,
            limit,
        });
    }
    Ok((file, size))
}

/// Loads the initrd at the highest page-aligned address that fits; returns (address, size). The
/// size is checked before anything is read, and the file is read straight into guest memory.
pub fn load_initrd(mem: &GuestMemoryMmap, path: &Path, kernel_end: u64) -> Result<(u64, u64)> {
    let top = initrd_limit(mem.last_addr().0 + 1);
    let (mut file, size) = open_initrd(path, top)?;
    let addr = top.saturating_sub(size) & !0xfff;
    if addr < kernel_end.max(HIGH_MEMORY_START) {
        return Err(VmmError::InitrdTooBig {
            path: path.to_path_buf(),
            size,
            limit: top,
        });
    }
    let len = usize::try_from(size).map_err(|_| VmmError::InitrdTooBig {
        path: path.to_path_buf(),
        size,
        limit: top,
    })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, len)
        .map_err(|e| VmmError::KernelLoad {
            path: path.to_path_buf(),
            detail: format!("reading the initrd ({size} bytes) into guest memory: {e}"),
        })?;
    Ok((addr, size))
}

/// Writes `data` at `addr`, mapping failures to an error naming the step.
pub fn write_bytes(
    mem: &GuestMemoryMmap,
    addr: u64,
    data: &[u8],
    what: &'static str,
) -> Result<()> {
    mem.write_slice(data, GuestAddress(addr))
        .map_err(|_| VmmError::GuestMemory { what, addr })
}

/// The boot GDT. `code64` selects a long-mode code segment (bzImage) or a 32-bit one (PVH).
pub fn gdt_entries(code64: bool) -> [u64; 5] {
    let code = if code64 {
        0x00af_9b00_0000_ffff
    } else {
        0x00cf_9b00_0000_ffff
    };
    [0, 0, code, 0x00cf_9300_0000_ffff, 0x0080_8b00_0000_0067]
}

/// Writes the GDT and an empty IDT.
pub fn write_gdt(mem: &GuestMemoryMmap, code64: bool) -> Result<()> {
    for (i, entry) in gdt_entries(code64).iter().enumerate() {
        let addr = GDT_ADDR + 8 * i as u64;
        mem.write_obj(*entry, GuestAddress(addr))
            .map_err(|_| VmmError::GuestMemory {
                what: "writing the GDT",
                addr,
            })?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))
        .map_err(|_| VmmError::GuestMemory {
            what: "writing the IDT",
            addr: IDT_ADDR,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initrd_is_read_into_the_top_of_ram_and_devices_are_refused() {
        let path = std::env::temp_dir().join(format!("lancet-initrd-{}", std::process::id()));
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let (addr, size) = load_initrd(&mem, &path, HIGH_MEMORY_START).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(size, 10_000);
        assert_eq!(addr, ((16 << 20) - 10_000) & !0xfff);
        let mut back = vec![0u8; data.len()];
        mem.read_slice(&mut back, GuestAddress(addr)).unwrap();
        assert_eq!(back, data);
        assert!(matches!(
            load_initrd(&mem, Path::new("/dev/zero"), HIGH_MEMORY_START),
            Err(VmmError::InitrdNotAFile(_))
        ));
    }

    #[test]
    fn kernel_format_errors() {
        let dir = std::env::temp_dir().join(format!("lancet-kfmt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("nope");
        assert!(matches!(
            kernel_format(&missing),
            Err(VmmError::KernelMissing(_))
        ));
        let junk = dir.join("junk");
        std::fs::write(&junk, vec![0u8; 1024]).unwrap();
        let err = kernel_format(&junk).unwrap_err();
        assert!(err.to_string().contains("neither a bzImage"), "{err}");
        let mut bz = vec![0u8; 1024];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        std::fs::write(&junk, &bz).unwrap();
        assert_eq!(kernel_format(&junk).unwrap(), KernelFormat::BzImage);
        std::fs::write(&junk, b"\x7fELF\x02\x01").unwrap();
        assert_eq!(kernel_format(&junk).unwrap(), KernelFormat::Elf);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn memory_map_covers_ram() {
        let map = memory_map(64 << 20);
        assert_eq!(map.iter().map(|r| r.size).sum::<u64>(), 64 << 20);
        assert_eq!(map[1].kind, E820_RESERVED);
    }
}
