//! Routes the C libraries' own messages (libbpf's and libxdp's: "skipping unrecognized data
//! section", dispatcher fallbacks, ...) into `tracing` at debug level, so a user's terminal stays
//! quiet unless asked (`LANCET_LOG=libbpf=debug,libxdp=debug`). Installed once per process by
//! whatever first loads a BPF program or opens a socket.

use std::ffi::{c_char, c_int};
use std::sync::Once;

use libbpf_rs::PrintLevel;

/// `tracing` targets of the two libraries.
const LIBBPF_TARGET: &str = "libbpf";
const LIBXDP_TARGET: &str = "libxdp";

/// Installs both print callbacks (idempotent).
pub fn route_library_logs() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        libbpf_rs::set_print(Some((PrintLevel::Debug, libbpf_message)));
        // SAFETY: libxdp_message has exactly the libxdp_print_fn_t signature, is a plain function
        // (valid for the whole process) and only reads its arguments; libxdp stores the pointer.
        unsafe {
            libxdp_sys::libxdp_set_print(Some(libxdp_message));
        }
    });
}

fn libbpf_message(level: PrintLevel, message: String) {
    let message = message.trim_end();
    match level {
        PrintLevel::Debug => tracing::trace!(target: LIBBPF_TARGET, "{message}"),
        PrintLevel::Info | PrintLevel::Warn => tracing::debug!(target: LIBBPF_TARGET, "{message}"),
    }
}

unsafe extern "C" fn libxdp_message(
    level: libxdp_sys::libxdp_print_level,
    format: *const c_char,
    args: *mut libxdp_sys::__va_list_tag,
) -> c_int {
    if format.is_null() {
        return 0;
    }
    // SAFETY: libxdp passes a valid NUL-terminated printf format and the va_list of its
    // arguments, which vsprintf_raw consumes once with vsnprintf (as the C side would).
    let Ok(bytes) = (unsafe { vsprintf::vsprintf_raw(format, args) }) else {
        return 0;
    };
    let message = String::from_utf8_lossy(&bytes);
    let message = message.trim_end();
    if level == libxdp_sys::libxdp_print_level_LIBXDP_DEBUG {
        tracing::trace!(target: LIBXDP_TARGET, "{message}");
    } else {
        tracing::debug!(target: LIBXDP_TARGET, "{message}");
    }
    0
}
