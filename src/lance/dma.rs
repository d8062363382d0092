//! The chip's view of guest memory for one descriptor ring during one call: a direct
//! `VolatileSlice` over the ring when it lies inside one region (no region lookup per
//! descriptor access), else range-checked lookups through the `GuestMemory` trait.

use vm_memory::bitmap::BS;
use vm_memory::guest_memory::GuestMemorySliceIterator;
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions, VolatileSlice};

pub(super) struct RingMem<'a, M: GuestMemory + ?Sized> {
    mem: &'a M,
    base: u64,
    view: Option<VolatileSlice<'a, BS<'a, M::Bitmap>>>,
}

impl<'a, M: GuestMemory + ?Sized> RingMem<'a, M> {
    /// Map `bytes` of ring at `base`; falls back to lookups when the ring is not one region.
    pub(super) fn new(mem: &'a M, base: u64, bytes: usize) -> Self {
        let view = mem
            .get_slices(GuestAddress(base), bytes, Permissions::ReadWrite)
            .ok()
            .and_then(|slices| slices.stop_on_error().ok())
            .and_then(|mut slices| slices.next())
            .filter(|slice| slice.len() == bytes);
        RingMem { mem, base, view }
    }

    /// Offset of `addr..addr+len` inside the view, if it lies inside.
    fn offset(
        &self,
        addr: u64,
        len: usize,
    ) -> Option<(&VolatileSlice<'a, BS<'a, M::Bitmap>>, usize)> {
        let view = self.view.as_ref()?;
        let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        (off.checked_add(len)? <= view.len()).then_some((view, off))
    }

    pub(super) fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        match self.offset(addr, buf.len()) {
            Some((view, off)) => view.read_slice(buf, off).is_ok(),
            None => self.mem.read_slice(buf, GuestAddress(addr)).is_ok(),
        }
    }

    pub(super) fn write(&self, addr: u64, buf: &[u8]) -> bool {
        match self.offset(addr, buf.len()) {
            Some((view, off)) => view.write_slice(buf, off).is_ok(),
            None => self.mem.write_slice(buf, GuestAddress(addr)).is_ok(),
        }
    }
}
