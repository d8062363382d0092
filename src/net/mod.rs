//! The host side of the wire: the [`Backend`] trait that the VMM's I/O thread drives, and its two
//! implementations (AF_XDP with XDP steering: the product; TAP on a Linux bridge: the baseline).
//!
//! INTERFACE CONTRACT (the VMM is written against it):
//!
//! ```ignore
//! pub trait Backend: FrameTx + Send {
//!     fn kind(&self) -> &'static str;                 // "xdp" | "tap"
//!     fn poll_fd(&self) -> RawFd;                     // readable when RX frames are pending
//!     // Hand up to `max` received frames to `deliver`, oldest first; the rest stay queued.
//!     fn recv_batch(&mut self, max: usize, deliver: &mut dyn FnMut(&[u8])) -> Result<usize, NetError>;
//!     fn reap(&mut self);                             // TX completions, fill-ring refill
//!     fn stats(&self) -> BackendStats;                // frames, bytes, drops by reason
//! }
//! ```

pub use crate::lance::FrameTx;
