//! Guest RAM: one anonymous mapping from guest-physical 0, registered with KVM as slot 0. The range
//! above RAM (PCI MMIO, the Lance's BAR1 at 0xfebf0000) has no slot, so accesses there exit as MMIO.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::error::{kvm_err, Result, VmmError};

/// Smallest guest RAM accepted (the test guest needs 32 MiB plus boot structures).
pub const MIN_MEM_BYTES: u64 = 16 << 20;
/// Largest guest RAM: RAM must end below the 32-bit PCI hole at 0xc000_0000.
pub const MAX_MEM_BYTES: u64 = 3 << 30;

/// Allocates `size` bytes of guest RAM at guest-physical 0.
pub fn create_guest_memory(size: u64) -> Result<GuestMemoryMmap> {
    if !(MIN_MEM_BYTES..=MAX_MEM_BYTES).contains(&size) || size % 4096 != 0 {
        return Err(VmmError::MemorySize(size));
    }
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size as usize)])
        .map_err(|e| VmmError::MemoryAlloc(e.to_string()))
}

/// Registers every region of `mem` with KVM, one slot each.
pub fn register_guest_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<()> {
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|_| VmmError::GuestMemory {
                what: "mapping guest RAM",
                addr: region.start_addr().0,
            })?;
        let desc = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the host range belongs to `mem`, which the caller keeps alive (cloned into every
        // thread) for as long as the VM exists; KVM only accesses it while the VM runs.
        unsafe { vm.set_user_memory_region(desc) }
            .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(())
}

/// Why a size (`--mem`, `--serial-max-mb` ...) could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("unknown size suffix in '{0}' (use K, M or G)")]
    Suffix(String),
    #[error("'{0}' is not a size (e.g. 256M)")]
    NotANumber(String),
    #[error("size '{0}' is too large")]
    TooLarge(String),
}

/// Parses a size such as `256M`, `1G`, `65536K` or a plain byte count.
pub fn parse_size(text: &str) -> std::result::Result<u64, SizeError> {
    let t = text.trim();
    let (digits, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(SizeError::Suffix(text.to_string())),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| SizeError::NotANumber(text.to_string()))?;
    n.checked_mul(mult)
        .ok_or_else(|| SizeError::TooLarge(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("M").is_err());
    }

    #[test]
    fn memory_size_is_bounded() {
        assert!(create_guest_memory(1 << 20).is_err());
        assert!(create_guest_memory(4 << 30).is_err());
        assert!(create_guest_memory(64 << 20).is_ok());
    }
}
