//! Guarded, counting guest memory, a strict interrupt line and a credit-limited backend for the
//! Lance model's property and fuzz tests: two RAM regions with a gap (accesses into it must fail
//! cleanly), every access counted and the largest remembered, so a test can bound the work one
//! call does.

use std::cell::Cell;

use lancet::frame::{FrameTx, MAX_FRAME_LEN};
use lancet::lance::IrqLine;
use vm_memory::bitmap::BS;
use vm_memory::guest_memory::GuestMemorySliceIterator;
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

/// Low RAM, then a guard gap with no memory, then a second region.
pub const LOW: (u64, usize) = (0, 0x1_0000);
pub const HIGH: (u64, usize) = (0x2_0000, 0x1_0000);

/// The two regions with the gap between them.
pub fn guarded_memory() -> GuestMemoryMmap<()> {
    GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(LOW.0), LOW.1),
        (GuestAddress(HIGH.0), HIGH.1),
    ])
    .unwrap()
}

/// Guest memory that counts every access the model makes and remembers the largest one.
pub struct CountingMem {
    pub inner: GuestMemoryMmap<()>,
    pub accesses: Cell<u64>,
    pub largest: Cell<usize>,
}

impl CountingMem {
    pub fn new(inner: GuestMemoryMmap<()>) -> Self {
        Self {
            inner,
            accesses: Cell::new(0),
            largest: Cell::new(0),
        }
    }
}

impl GuestMemory for CountingMem {
    type PhysicalMemory = GuestMemoryMmap<()>;
    type Bitmap = ();

    fn check_range(&self, addr: GuestAddress, count: usize, access: Permissions) -> bool {
        GuestMemory::check_range(&self.inner, addr, count, access)
    }

    fn get_slices<'a>(
        &'a self,
        addr: GuestAddress,
        count: usize,
        access: Permissions,
    ) -> vm_memory::GuestMemoryResult<impl GuestMemorySliceIterator<'a, BS<'a, ()>>> {
        self.accesses.set(self.accesses.get() + 1);
        self.largest.set(self.largest.get().max(count));
        GuestMemory::get_slices(&self.inner, addr, count, access)
    }
}

/// An interrupt line that insists on being told only about changes.
#[derive(Default)]
pub struct Irq {
    level: bool,
}

impl Irq {
    /// The line's level now.
    pub fn level(&self) -> bool {
        self.level
    }
}

impl IrqLine for Irq {
    fn set_level(&mut self, asserted: bool) {
        assert_ne!(self.level, asserted, "the line is only told about changes");
        self.level = asserted;
    }
}

/// A backend that lends a buffer `credits` times, then reports it busy; every committed frame
/// must fit `MAX_FRAME_LEN`.
pub struct Sink {
    pub buf: Vec<u8>,
    pub credits: u32,
    pub link: bool,
    pub committed: u64,
}

impl Sink {
    /// A 2048-byte buffer, `credits` loans, the link `link`.
    pub fn new(credits: u32, link: bool) -> Self {
        Self {
            buf: vec![0; 2048],
            credits,
            link,
            committed: 0,
        }
    }
}

impl FrameTx for Sink {
    fn link_up(&self) -> bool {
        self.link
    }
    fn tx_buffer(&mut self) -> Option<&mut [u8]> {
        if self.credits == 0 {
            return None;
        }
        self.credits -= 1;
        Some(&mut self.buf)
    }
    fn tx_commit(&mut self, len: usize) {
        assert!(len <= MAX_FRAME_LEN, "a {len}-byte frame");
        self.committed += 1;
    }
}
