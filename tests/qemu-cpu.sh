# Sourced by the QEMU smoke scripts: picks the `-cpu` model QEMU can start with on this host.
#
# Some KVM hosts (nested ones among them) refuse an MSR that `-cpu host` makes QEMU set
# (IA32_ARCH_CAPABILITIES: "failed to set MSR 0x10a to 0x69"), and QEMU aborts at start. Each
# candidate is started once, paused (-S), with its monitor on stdin answering `quit`: exit 0 means
# every vCPU register was accepted. Only that refusal tries the next candidate; any other failure
# (no KVM, a broken QEMU) is printed as it is. src/tools/bench/qemu_cpu.rs does the same for `lancet bench`.

# The features lancet's own VM hides by default (src/vmm/cpuid.rs DEFAULT_HIDDEN; a test keeps
# the two equal), as QEMU -cpu flags.
LANCET_HIDDEN_CPU_FEATURES=cx16,xsave,smap,smep,fsgsbase,popcnt
LANCET_QEMU_CPU_HIDE=",-${LANCET_HIDDEN_CPU_FEATURES//,/,-}"

# qemu_cpu_pick CANDIDATE...: prints the first candidate QEMU starts with under KVM; status 1 and
# the reason on stderr if none does.
qemu_cpu_pick() {
	local cpu out
	for cpu in "$@"; do
		if out=$(echo quit | timeout 30 qemu-system-x86_64 -enable-kvm -M pc -cpu "$cpu" -m 16 \
			-display none -nodefaults -S -monitor stdio 2>&1 >/dev/null); then
			echo "$cpu"
			return 0
		fi
		if ! grep -q "failed to set MSR" <<<"$out"; then
			echo "qemu-cpu: QEMU cannot start with -cpu $cpu: ${out:-timed out}" >&2
			return 1
		fi
		echo "qemu-cpu: this host's KVM refuses -cpu $cpu (${out%%$'\n'*}); trying the next model" >&2
	done
	echo "qemu-cpu: this host's KVM refuses every CPU model tried: $*" >&2
	return 1
}
