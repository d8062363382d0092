/work/wt-perf/tests/guest/target/x86_64-unknown-linux-gnu/debug/deps/lancet_guest-d9a1d2e118dc7a96.d: src/lib.rs src/cmdline.rs src/net.rs

/work/wt-perf/tests/guest/target/x86_64-unknown-linux-gnu/debug/deps/liblancet_guest-d9a1d2e118dc7a96.rlib: src/lib.rs src/cmdline.rs src/net.rs

/work/wt-perf/tests/guest/target/x86_64-unknown-linux-gnu/debug/deps/liblancet_guest-d9a1d2e118dc7a96.rmeta: src/lib.rs src/cmdline.rs src/net.rs

src/lib.rs:
src/cmdline.rs:
src/net.rs:
