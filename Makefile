# lancet: every set-up step for a fresh Debian 12 machine (run as root). `make test` and `make run`
# install what they need (apt packages only when missing), build, and run.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Debian packages: build (xsk-rs builds bundled xdp-tools; libbpf-cargo compiles bpf/*.bpf.c) and tests.
APT_PKGS := build-essential pkg-config zlib1g-dev libelf-dev clang llvm m4 libpcap-dev \
            tcpdump ethtool iproute2 iputils-ping arping dnsmasq-base socat netcat-openbsd \
            qemu-system-x86
CARGO ?= cargo
# `make linux-guest`: Debian's Linux 6.1 source and what building it needs.
LINUX_APT_PKGS := linux-source-6.1 build-essential bc flex bison libssl-dev libelf-dev cpio xz-utils
# `make linux-guest-smoke`: boots that guest under QEMU/KVM as a reference (not needed by `make test`).
LINUX_SMOKE_APT_PKGS := qemu-system-x86 iproute2 iputils-ping

.PHONY: help deps build test lint run bench fuzz clean linux-guest linux-guest-smoke guest guest-check guest-smoke

help:
	@echo "make run   - build everything, bring up a demo topology, run a VM bridged over AF_XDP"
	@echo "make test  - install what is missing, then fmt, clippy and every test"
	@echo "make bench - lancet bench: AF_XDP vs TAP vs QEMU pcnet + TAP vs raw AF_XDP, side by side"
	@echo "make fuzz  - random register accesses, string I/O and ring memory against the Lance model and"
	@echo "             the bus dispatch, FUZZ_CASES per driver (default 10 million; FUZZ_SEED to vary)"
	@echo "make linux-guest       - build (cached) the small Linux 6.1 guest into .cache/linux-guest/"
	@echo "make linux-guest-smoke - boot that guest under QEMU/KVM and ping it (reference check)"
	@echo "make guest             - build the freestanding test guest (target/guest/release/lancet-guest)"
	@echo "make guest-smoke       - boot the test guest under QEMU/KVM with QEMU's pcnet (reference check)"

# Idempotent: installs only packages that are missing, so a prepared machine does nothing here.
deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# The test guest image every VM test, the bench and the demo boot (absolute: tests run elsewhere).
export LANCET_GUEST_ELF := $(abspath target/guest/release/lancet-guest)

build: deps guest
	$(CARGO) build --release --all-targets

lint: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings -D clippy::undocumented_unsafe_blocks

# Everything: lint (project and test guest), the guests the end-to-end tests boot, every test.
test: lint guest-check linux-guest
	@mkdir -p target
	set -o pipefail; $(CARGO) test --release 2>&1 | tee target/test.log
	@awk '/^test result:/ {p+=$$4; f+=$$6; i+=$$8} END {printf "tests: %d passed, %d failed, %d skipped\n", p, f, i}' target/test.log

# The demo: a topology in lt-* namespaces, the test guest bridged over AF_XDP, ping + UDP echo.
run: build
	target/release/lancet demo

# Side-by-side comparison (AF_XDP vs TAP vs QEMU pcnet + TAP vs raw AF_XDP): table, JSON, plots.
bench: build
	target/release/lancet bench --json target/bench/report.json --out target/bench

# tests/fuzz_lance.rs with many cases (`make test` runs it with its default of 20 000 per driver).
FUZZ_CASES ?= 10000000
fuzz: deps
	FUZZ_CASES=$(FUZZ_CASES) $(CARGO) test --release --test fuzz_lance -- --nocapture

clean:
	$(CARGO) clean

# Cached: returns at once when the kernel package, config fragment, source edits, init and build script are
# unchanged. Outputs: .cache/linux-guest/{vmlinux,bzImage,initramfs.cpio}.
linux-guest:
	@$(MAKE) --no-print-directory deps APT_PKGS="$(LINUX_APT_PKGS)"
	tests/linux-guest/build.sh

linux-guest-smoke: linux-guest
	@$(MAKE) --no-print-directory deps APT_PKGS="$(LINUX_SMOKE_APT_PKGS)"
	tests/linux-guest/qemu-smoke.sh vmlinux
	tests/linux-guest/qemu-smoke.sh bzImage

# The freestanding test guest (tests/guest, its own Cargo package): a static ELF64 with a PVH note.
GUEST_ARGS := --manifest-path tests/guest/Cargo.toml --target-dir target/guest
GUEST_IMAGE := target/guest/release/lancet-guest

guest:
	$(CARGO) build --release $(GUEST_ARGS)

# Lint and unit-test the guest's pure logic on the host; check ring-0 code has no SSE.
guest-check: guest
	$(CARGO) fmt --check --manifest-path tests/guest/Cargo.toml
	$(CARGO) clippy --release $(GUEST_ARGS) --all-targets -- -D warnings
	$(CARGO) test --release $(GUEST_ARGS)
	tests/guest/check-ring0.sh $(GUEST_IMAGE)

# Boots the guest under QEMU/KVM with QEMU's pcnet on a tap in a private namespace (root).
guest-smoke: deps guest
	tests/guest/qemu-smoke.sh
