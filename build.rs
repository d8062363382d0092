//! Build script: compiles the BPF programs (bpf/steer.bpf.c, the NIC's steering program;
//! bpf/port.bpf.c, the per-VM veth port programs; bpf/bridge.bpf.c, the local bridge's TC
//! programs; all three include the shared ABI, bpf/lancet_common.h) with clang and generates
//! their libbpf-rs skeletons into OUT_DIR. src/net/abi.rs includes the skeletons: they embed the
//! objects, and their `types` modules (from the objects' BTF) are the Rust side of the ABI.

use std::{env, path::PathBuf};

use libbpf_cargo::SkeletonBuilder;

/// (source, object and skeleton stem)
const PROGRAMS: [(&str, &str); 3] = [
    ("bpf/steer.bpf.c", "steer"),
    ("bpf/port.bpf.c", "port"),
    ("bpf/bridge.bpf.c", "bridge"),
];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for (src, stem) in PROGRAMS {
        SkeletonBuilder::new()
            .source(src)
            // The skeleton embeds the object file; it is loaded at run time.
            .obj(out_dir.join(format!("{stem}.bpf.o")))
            // Debian keeps asm/types.h under the multiarch include directory.
            .clang_args(["-I/usr/include/x86_64-linux-gnu", "-Wall", "-O2"])
            .build_and_generate(out_dir.join(format!("{stem}.skel.rs")))
            .unwrap_or_else(|e| {
                panic!("building {src} failed (needs clang and libelf-dev): {e:#}")
            });
        println!("cargo:rerun-if-changed={src}");
    }
    println!("cargo:rerun-if-changed=bpf/lancet_common.h");
}
