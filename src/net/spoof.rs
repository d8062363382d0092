//! Anti-spoofing on the transmit path: a VM may only send frames whose source MAC is its own,
//! unless `--allow-spoof`. [`SpoofGuard`] wraps any [`Backend`]: on `tx_commit` it checks the
//! source MAC in the lent buffer and, for a foreign one, does not commit (the buffer is lent again
//! for the next frame) and counts the drop in `tx_spoofed`.

use std::os::fd::RawFd;

use super::{Backend, BackendStats, FrameTx, NetError};

/// Offset and length of the source MAC in an Ethernet header.
const SRC_MAC_OFFSET: usize = 6;
const MAC_LEN: usize = 6;

/// A [`Backend`] that drops frames with a source MAC other than the VM's.
#[derive(Debug)]
pub struct SpoofGuard<B> {
    inner: B,
    mac: [u8; 6],
    allow: bool,
    spoofed: u64,
}

impl<B: Backend> SpoofGuard<B> {
    /// Guard `inner` for a VM whose MAC is `mac`; `allow_spoof` lets every frame through.
    pub fn new(inner: B, mac: [u8; 6], allow_spoof: bool) -> Self {
        Self {
            inner,
            mac,
            allow: allow_spoof,
            spoofed: 0,
        }
    }

    /// Frames dropped for a foreign source MAC.
    pub fn spoofed(&self) -> u64 {
        self.spoofed
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The wrapped backend, mutable.
    pub fn inner_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    /// Unwrap the backend.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Backend> FrameTx for SpoofGuard<B> {
    fn link_up(&self) -> bool {
        self.inner.link_up()
    }

    fn tx_buffer(&mut self) -> Option<&mut [u8]> {
        self.inner.tx_buffer()
    }

    fn tx_commit(&mut self, len: usize) {
        if !self.allow {
            // The backends lend the same buffer again until it is committed.
            let own = self
                .inner
                .tx_buffer()
                .and_then(|buf| buf.get(SRC_MAC_OFFSET..SRC_MAC_OFFSET + MAC_LEN))
                .is_some_and(|src| src == self.mac);
            if !own {
                self.spoofed += 1;
                return;
            }
        }
        self.inner.tx_commit(len);
    }

    fn tx_flush(&mut self) {
        self.inner.tx_flush();
    }
}

impl<B: Backend> Backend for SpoofGuard<B> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn poll_fd(&self) -> RawFd {
        self.inner.poll_fd()
    }

    fn recv_batch(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, NetError> {
        self.inner.recv_batch(max, deliver)
    }

    fn reap(&mut self) {
        self.inner.reap();
    }

    fn stats(&self) -> BackendStats {
        let mut s = self.inner.stats();
        s.drops.tx_spoofed += self.spoofed;
        s
    }
}

/// A boxed backend (what [`super::open_backend`] returns) is a backend, so it can be guarded.
impl FrameTx for Box<dyn Backend> {
    fn link_up(&self) -> bool {
        (**self).link_up()
    }

    fn tx_buffer(&mut self) -> Option<&mut [u8]> {
        (**self).tx_buffer()
    }

    fn tx_commit(&mut self, len: usize) {
        (**self).tx_commit(len)
    }

    fn tx_flush(&mut self) {
        (**self).tx_flush()
    }
}

impl Backend for Box<dyn Backend> {
    fn kind(&self) -> &'static str {
        (**self).kind()
    }

    fn poll_fd(&self) -> RawFd {
        (**self).poll_fd()
    }

    fn recv_batch(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, NetError> {
        (**self).recv_batch(max, deliver)
    }

    fn reap(&mut self) {
        (**self).reap()
    }

    fn stats(&self) -> BackendStats {
        (**self).stats()
    }
}
