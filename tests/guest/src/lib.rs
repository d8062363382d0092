//! The test guest's pure logic, shared by the freestanding binary and host unit tests: the
//! command line parser, the TSC clock and the frame parsing / building code.
#![cfg_attr(not(test), no_std)]

pub mod clock;
pub mod cmdline;
pub mod net;
