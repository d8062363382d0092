//! Shared test support: a Rust re-enactment of the Linux pcnet32 driver and recording stand-ins
//! for the interrupt line and the backend. Include with `mod support;` from a test file.
#![allow(dead_code)]

pub mod bench;
pub mod guarded;
pub mod pcnet32;
pub mod peer;
pub mod tap_bed;
pub mod victim;
