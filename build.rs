//! Build script: compiles the XDP programs (bpf/steer.bpf.c, the NIC's steering program, and
//! bpf/port.bpf.c, the per-VM veth port programs, bpf/bridge.bpf.c, the local bridge's TC programs) with clang and generates their libbpf-rs
//! skeletons into OUT_DIR (the objects are embedded by src/net/steer.rs and src/net/port.rs).

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
            // The object file is embedded (include_bytes!) and loaded at run time.
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
