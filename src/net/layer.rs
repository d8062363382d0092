//! Layers around a [`Backend`]: one concern each (anti-spoofing [`super::spoof`], capture and stats
//! publishing [`super::vmnet`]), written as a small [`Layer`] of hooks. [`Layered`] puts a layer on a
//! backend and is the only place that forwards the [`Backend`] contract to the backend below, so
//! a layer states only what it adds.
//!
//! Order of the hooks on a frame the VM sends: the outer layer sees it first; a layer that refuses
//! it ([`Layer::on_tx`] returns `false`) keeps it from every layer below and from the wire (not
//! committed: the backend lends the same buffer again for the next frame).

use std::os::fd::RawFd;

use super::{local::LocalStats, xdp::MirrorStats, Backend, BackendStats, FrameTx, NetError};

/// What one layer adds around the backend `B` below it. Every hook has a default that adds nothing.
pub trait Layer<B: ?Sized>: Send {
    /// Whether [`Layer::on_tx`] wants to see transmitted frames (false: it is not called and the
    /// lent buffer is not looked up again).
    fn inspects_tx(&self) -> bool {
        false
    }
    /// A frame the VM committed (exactly its committed bytes); `false` drops it.
    fn on_tx(&mut self, _frame: &[u8]) -> bool {
        true
    }
    /// Whether [`Layer::on_rx`] wants to see received frames.
    fn inspects_rx(&self) -> bool {
        false
    }
    /// A frame received for the VM, before the model sees it.
    fn on_rx(&mut self, _frame: &[u8]) {}
    /// After the backend below reaped its completions (periodic work of the layer).
    fn after_reap(&mut self, _inner: &mut B) {}
    /// Add this layer's counters (e.g. its drops by reason) to the backend's.
    fn add_stats(&self, _stats: &mut BackendStats) {}
}

/// The backend `inner` with `layer` around it; itself a [`Backend`], so layers stack.
#[derive(Debug)]
pub struct Layered<B, L> {
    inner: B,
    layer: L,
}

impl<B, L> Layered<B, L> {
    /// Put `layer` around `inner`.
    pub fn wrap(inner: B, layer: L) -> Self {
        Self { inner, layer }
    }

    /// The backend below.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The backend below, mutable.
    pub fn inner_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    /// Take the layer off.
    pub fn into_inner(self) -> B {
        self.inner
    }

    /// The layer.
    pub fn layer(&self) -> &L {
        &self.layer
    }

    /// The layer, mutable.
    pub fn layer_mut(&mut self) -> &mut L {
        &mut self.layer
    }
}

impl<B: Backend, L: Layer<B>> FrameTx for Layered<B, L> {
    fn link_up(&self) -> bool {
        self.inner.link_up()
    }

    fn tx_buffer(&mut self) -> Option<&mut [u8]> {
        self.inner.tx_buffer()
    }

    fn tx_commit(&mut self, len: usize) {
        if self.layer.inspects_tx() {
            // The backends lend the same buffer again until it is committed. Only the committed
            // bytes are shown; a length beyond the buffer is the backend's to count (oversize).
            let Self { inner, layer } = self;
            let pass = inner
                .tx_buffer()
                .and_then(|buf| buf.get(..len))
                .map_or(true, |frame| layer.on_tx(frame));
            if !pass {
                return;
            }
        }
        self.inner.tx_commit(len);
    }

    fn tx_flush(&mut self) {
        self.inner.tx_flush();
    }
}

impl<B: Backend, L: Layer<B>> Backend for Layered<B, L> {
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
        if !self.layer.inspects_rx() {
            return self.inner.recv_batch(max, deliver);
        }
        let Self { inner, layer } = self;
        inner.recv_batch(max, &mut |frame| {
            layer.on_rx(frame);
            deliver(frame);
        })
    }

    fn reap(&mut self) {
        self.inner.reap();
        self.layer.after_reap(&mut self.inner);
    }

    fn stats(&self) -> BackendStats {
        let mut stats = self.inner.stats();
        self.layer.add_stats(&mut stats);
        stats
    }

    fn rx_pending(&mut self) -> Option<bool> {
        self.inner.rx_pending()
    }

    fn local_stats(&self) -> Option<LocalStats> {
        self.inner.local_stats()
    }

    fn mirror_stats(&self) -> Option<MirrorStats> {
        self.inner.mirror_stats()
    }

    fn steer_address(&mut self, ip: std::net::IpAddr) -> Result<(), NetError> {
        self.inner.steer_address(ip)
    }

    fn unsteer_address(&mut self, ip: std::net::IpAddr) {
        self.inner.unsteer_address(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lends one buffer, records committed frames, delivers `rx` on receive.
    #[derive(Default)]
    struct Recorder {
        buf: Vec<u8>,
        sent: Vec<Vec<u8>>,
        rx: Vec<Vec<u8>>,
    }

    impl FrameTx for Recorder {
        fn tx_buffer(&mut self) -> Option<&mut [u8]> {
            self.buf.resize(64, 0);
            Some(&mut self.buf)
        }
        fn tx_commit(&mut self, len: usize) {
            self.sent.push(self.buf[..len].to_vec());
        }
    }

    impl Backend for Recorder {
        fn kind(&self) -> &'static str {
            "recorder"
        }
        fn poll_fd(&self) -> RawFd {
            -1
        }
        fn recv_batch(
            &mut self,
            max: usize,
            deliver: &mut dyn FnMut(&[u8]),
        ) -> Result<usize, NetError> {
            let n = self.rx.len().min(max);
            for frame in self.rx.drain(..n) {
                deliver(&frame);
            }
            Ok(n)
        }
        fn reap(&mut self) {}
        fn stats(&self) -> BackendStats {
            BackendStats {
                tx_frames: self.sent.len() as u64,
                ..BackendStats::default()
            }
        }
    }

    /// Refuses frames that start with 0xff and counts them as `tx_error`.
    #[derive(Default)]
    struct Refuse(u64);

    impl<B: ?Sized> Layer<B> for Refuse {
        fn inspects_tx(&self) -> bool {
            true
        }
        fn on_tx(&mut self, frame: &[u8]) -> bool {
            let pass = frame.first() != Some(&0xff);
            self.0 += u64::from(!pass);
            pass
        }
        fn add_stats(&self, stats: &mut BackendStats) {
            stats.drops.tx_error += self.0;
        }
    }

    /// Records what it sees each way and counts reaps.
    #[derive(Default)]
    struct Watch {
        tx: Vec<Vec<u8>>,
        rx: Vec<Vec<u8>>,
        reaps: usize,
    }

    impl<B: ?Sized> Layer<B> for Watch {
        fn inspects_tx(&self) -> bool {
            true
        }
        fn on_tx(&mut self, frame: &[u8]) -> bool {
            self.tx.push(frame.to_vec());
            true
        }
        fn inspects_rx(&self) -> bool {
            true
        }
        fn on_rx(&mut self, frame: &[u8]) {
            self.rx.push(frame.to_vec());
        }
        fn after_reap(&mut self, _inner: &mut B) {
            self.reaps += 1;
        }
    }

    fn send(b: &mut impl Backend, frame: &[u8]) {
        b.tx_buffer().unwrap()[..frame.len()].copy_from_slice(frame);
        b.tx_commit(frame.len());
    }

    #[test]
    fn layers_stack_outer_first_and_add_their_counters() {
        let recorder = Recorder {
            rx: vec![vec![7; 3]],
            ..Recorder::default()
        };
        let mut stack = Layered::wrap(Layered::wrap(recorder, Refuse::default()), Watch::default());
        send(&mut stack, &[1, 2, 3]);
        send(&mut stack, &[0xff, 2]);
        send(&mut stack, &[4]);
        // The outer layer saw every frame (exactly the committed bytes); the refused one never
        // reached the backend.
        assert_eq!(stack.layer().tx, [vec![1, 2, 3], vec![0xff, 2], vec![4]]);
        assert_eq!(stack.inner().inner().sent, [vec![1, 2, 3], vec![4]]);
        let stats = stack.stats();
        assert_eq!((stats.tx_frames, stats.drops.tx_error), (2, 1));
        assert_eq!(stack.kind(), "recorder");

        let mut got = Vec::new();
        assert_eq!(
            stack.recv_batch(8, &mut |f| got.push(f.to_vec())).unwrap(),
            1
        );
        assert_eq!(got, [vec![7; 3]]);
        assert_eq!(stack.layer().rx, got);
        stack.reap();
        assert_eq!(stack.layer().reaps, 1);
    }
}
