//! The project's own tools, not the product: the network namespaces (`lt-*`) that `make run`, the
//! benchmarks and the tests build ([`testbed`]), `lancet demo` ([`demo`]), `lancet bench`
//! ([`bench`]) and the in-process null guest the backend tests and benchmarks drive ([`null_guest`]). They drive the library (`lance`, `net`, `vmm`) from outside, as a user would; nothing
//! in the library depends on them.

pub mod bench;
pub mod demo;
pub mod guest_cmdline;
pub mod null_guest;
pub mod testbed;
