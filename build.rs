//! Build script: compiles the XDP steering program (bpf/steer.bpf.c) with clang and generates its
//! libbpf-rs skeleton into OUT_DIR (included by src/net/steer.rs).

use std::{env, path::PathBuf};

use libbpf_cargo::SkeletonBuilder;

const STEER_SRC: &str = "bpf/steer.bpf.c";

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let out = out_dir.join("steer.skel.rs");
    SkeletonBuilder::new()
        .source(STEER_SRC)
        // The object file is embedded by src/net/steer.rs (include_bytes!) and loaded at run time.
        .obj(out_dir.join("steer.bpf.o"))
        // Debian keeps asm/types.h under the multiarch include directory.
        .clang_args(["-I/usr/include/x86_64-linux-gnu", "-Wall", "-O2"])
        .build_and_generate(&out)
        .unwrap_or_else(|e| {
            panic!("building {STEER_SRC} failed (needs clang and libelf-dev): {e:#}")
        });
    println!("cargo:rerun-if-changed={STEER_SRC}");
}
