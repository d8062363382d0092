//! lancet: a hosted VMM network path. An emulated AMD PCnet-PCI II (Am79C970A) whose descriptor rings
//! are bridged to AF_XDP socket queues (or, as the classic baseline, a TAP device on a Linux bridge).
//!
//! Data flows one way through each part:
//! - [`frame`]: the vocabulary the model and the host side share (`FrameTx`, MAC addresses).
//! - [`lance`]: the chip model. Pure: no syscalls, no threads. Guest memory through vm-memory.
//! - [`net`]: the host side of the wire: the [`net::Backend`] trait, the AF_XDP and TAP backends,
//!   the XDP steering program's loader.
//! - [`vmm`]: the machine around the chip: KVM, guest memory, buses, boot, serial, the I/O thread.
//! - [`tools`]: the project's tools, not the product: the `lt-*` test namespaces
//!   ([`tools::testbed`]), `lancet demo` and `lancet bench` (the side-by-side comparison of the
//!   AF_XDP, TAP, QEMU and raw XSK paths).

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod frame;
pub mod lance;
pub mod net;
pub mod tools;
pub mod vmm;
