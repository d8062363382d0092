//! The test guest's pure logic, shared by the freestanding binary and host unit tests: the
//! command line parser and the frame parsing / building code.
#![cfg_attr(not(test), no_std)]

pub mod cmdline;
pub mod net;
