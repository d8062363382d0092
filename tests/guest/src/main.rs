//! lancet-guest: a freestanding x86-64 test guest for lancet (and QEMU). It boots through its PVH
//! entry, does the privileged set-up in ring 0 (emulated, so kept tiny), then runs an Am79C970A
//! driver and the echo / sink / blast / ping / TCP (smoltcp) program in ring 3, reaching the NIC only through its MMIO
//! BAR. The ABI (command line, console lines, exit port, ring-3 requests) is in
//! /work/briefs/guest-abi.md and the README of this directory.
#![no_std]
#![no_main]
#![deny(clippy::undocumented_unsafe_blocks)]

use lancet_guest::{clock, cmdline, net};

mod boot;
mod fmt;
mod hostile;
mod lance;
mod prog;
mod ring0;
mod stack;
mod tcp;
mod user;

/// Ring-3 entry point; `ring0::ring0_main` irets here with the boot information.
pub extern "C" fn user_main(info: &ring0::BootInfo) -> ! {
    prog::run(info)
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    let cs: u16;
    // SAFETY: reading CS has no side effects.
    unsafe {
        core::arch::asm!("mov {0:x}, cs", out(reg) cs, options(nomem, nostack, preserves_flags))
    };
    if cs & 3 == 3 {
        user::fail("panic in ring 3")
    } else {
        ring0::ring0_fail(b"panic in ring 0")
    }
}
