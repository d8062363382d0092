/work/wt-perf/tests/guest/target/x86_64-unknown-linux-gnu/debug/deps/lancet_guest-990a3786fe394121.d: src/lib.rs src/cmdline.rs src/net.rs

/work/wt-perf/tests/guest/target/x86_64-unknown-linux-gnu/debug/deps/lancet_guest-990a3786fe394121: src/lib.rs src/cmdline.rs src/net.rs

src/lib.rs:
src/cmdline.rs:
src/net.rs:
