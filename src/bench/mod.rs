//! `lancet bench`: measures the AF_XDP path, the TAP path, QEMU's pcnet + TAP and a raw AF_XDP
//! socket side by side (echo RTT percentiles, receive and transmit rates) and reports the ratios.

pub mod gen;
pub mod netns;
pub mod packet;
pub mod raw_xsk;
pub mod rtt;

/// Errors of the bench; each message says what failed and what to check.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BenchError {
    #[error("bench set-up: {0}")]
    Setup(String),
    #[error("bench I/O: {0}")]
    Io(String),
    #[error("bench configuration: {0}")]
    Config(String),
    #[error("path {path}: {reason}")]
    Path { path: String, reason: String },
}

/// Pin the calling thread to one CPU; returns whether it worked (the bench runs on anyway).
pub fn pin_current_thread(cpu: usize) -> bool {
    affinity::set_thread_affinity([cpu]).is_ok()
}
