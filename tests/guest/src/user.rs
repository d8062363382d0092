//! Ring 3 side of the ring-3 -> ring-0 request ABI: `int3` with %rax = request number and %rdi =
//! argument (1 = print a NUL-terminated string, 2 = exit with a code, 3 = wait for an interrupt).

use core::arch::asm;

use crate::ring0::{EXIT_FAILURE, REQ_EXIT, REQ_PRINT, REQ_WAIT_IRQ};

#[inline(always)]
fn request(number: u64, argument: u64) -> u64 {
    let result: u64;
    // SAFETY: ring 0 handles int3 from ring 3 (DPL-3 gate) and preserves every register but %rax.
    unsafe { asm!("int3", inout("rax") number => result, in("rdi") argument, options(nostack)) };
    result
}

/// Prints a NUL-terminated line on the serial console (ring 0 writes it).
pub fn print_cstr(text: &[u8]) {
    debug_assert!(text.last() == Some(&0));
    request(REQ_PRINT, text.as_ptr() as u64);
}

/// Ends the VM with `code`.
pub fn exit(code: u8) -> ! {
    request(REQ_EXIT, u64::from(code));
    // The exit request never returns; spin if a broken VMM resumes us anyway.
    #[allow(clippy::empty_loop)]
    loop {}
}

/// Sleeps in ring 0 (`sti; hlt`) until the NIC interrupt stub has run (returns at once if it
/// already ran since the last wait).
pub fn wait_for_interrupt() {
    request(REQ_WAIT_IRQ, 0);
}

/// Prints `lancet-guest: error <text>` and exits with status 2.
pub fn fail(text: &str) -> ! {
    let mut line = crate::fmt::Line::new();
    line.text("error ").text(text);
    line.print();
    exit(EXIT_FAILURE)
}

/// Reads the time-stamp counter (allowed in ring 3: CR4.TSD is clear).
#[inline(always)]
pub fn rdtsc() -> u64 {
    let low: u32;
    let high: u32;
    // SAFETY: rdtsc only reads the counter.
    unsafe {
        asm!("rdtsc", out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags))
    };
    (u64::from(high) << 32) | u64::from(low)
}
