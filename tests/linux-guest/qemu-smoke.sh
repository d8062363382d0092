#!/usr/bin/env bash
# Smoke test of the lancet Linux guest under QEMU/KVM (independent of lancet's own VMM): boots
# .cache/linux-guest/{vmlinux|bzImage} with QEMU's pcnet (Am79C970A) model on a tap inside a network
# namespace this script creates, waits for pcnet32 to report the chip and the link, then pings the guest from
# the namespace. Prints the serial lines that matter and the timings (start -> driver line, -> first reply).
#
# Usage: qemu-smoke.sh [vmlinux|bzImage] [extra kernel args...]   (root; needs qemu-system-x86, iproute2, ping)
# Environment: LINUX_GUEST_OUT (default <repo>/.cache/linux-guest), SMOKE_TIMEOUT (s, default 120), SMOKE_MEM (MiB, 256),
#              SMOKE_PINGS (replies wanted, default 10), SMOKE_LOG (serial log path, default a temp file),
#              SMOKE_CPU (QEMU -cpu; default: the first of qemu64 with the features this machine cannot emulate
#              removed, then the same without +xsaveerptr, that QEMU starts with here: tests/qemu-cpu.sh).
# Exit status 0 only if the driver line, link up and the ping replies were all seen.
set -euo pipefail

die() { echo "qemu-smoke: FAIL: $*" >&2; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${LINUX_GUEST_OUT:-$repo/.cache/linux-guest}
image=${1:-vmlinux}
shift || true
extra_args=("$@")
timeout_s=${SMOKE_TIMEOUT:-120}
pings_wanted=${SMOKE_PINGS:-10}

[ "$(id -u)" = 0 ] || die "run as root (creates a network namespace and a tap)"
[ -r /dev/kvm ] || die "/dev/kvm missing: this test needs KVM"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found: apt-get install qemu-system-x86"
case $image in vmlinux | bzImage) ;; *) die "image must be vmlinux or bzImage, not '$image'" ;; esac
for f in "$image" initramfs.cpio; do
	[ -s "$out/$f" ] || die "$out/$f missing: run 'make linux-guest' first"
done

# Unique names per run (<= 15 chars), 10.x addresses derived from the PID so parallel runs do not collide.
tag=$(($$ % 10000))
ns=lt-qs$tag
tap=lt-qt$tag
subnet=10.$((200 + $$ % 50)).$(($$ % 250 + 1))
host_ip=$subnet.1
guest_ip=$subnet.2
mac=52:54:00:12:34:$(printf '%02x' $(($$ % 256)))

serial_log=${SMOKE_LOG:-$(mktemp /tmp/lt-qemu-smoke.XXXXXX.log)}
qemu_pid=
cleanup() {
	if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
		kill "$qemu_pid" 2>/dev/null || true
		wait "$qemu_pid" 2>/dev/null || true
	fi
	ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" tuntap add dev "$tap" mode tap
ip -n "$ns" addr add "$host_ip/24" dev "$tap"
ip -n "$ns" link set "$tap" up

# shellcheck source=../qemu-cpu.sh
. "$here/../qemu-cpu.sh"
cpu=${SMOKE_CPU:-$(qemu_cpu_pick "qemu64,+xsaveerptr$LANCET_QEMU_CPU_HIDE" "qemu64$LANCET_QEMU_CPU_HIDE")} ||
	die "no QEMU CPU model starts under this host's KVM (see above)"
echo "qemu-smoke: -cpu $cpu"

cmdline="console=ttyS0 earlyprintk=serial,ttyS0 noxsave clearcpuid=cx16,smap,smep,fsgsbase,popcnt"
# No `acpi=off`: the kernel is built without ACPI, so it would only print "Unknown kernel command line
# parameters" and hand it to /init.
cmdline+=" ip=$guest_ip::$host_ip:255.255.255.0::eth0:off rdinit=/init"
[ ${#extra_args[@]} -eq 0 ] || cmdline+=" ${extra_args[*]}"

echo "qemu-smoke: booting $out/$image, namespace $ns ($host_ip), guest $guest_ip, serial log $serial_log"
echo "qemu-smoke: cmdline: $cmdline"
start_ns=$(date +%s%N)
# QEMU runs inside the namespace so its tap is the namespace's; -no-reboot turns a guest panic into an exit.
ip netns exec "$ns" qemu-system-x86_64 -enable-kvm -M pc -m "${SMOKE_MEM:-256}" -smp 1 \
	-cpu "$cpu" \
	-kernel "$out/$image" -initrd "$out/initramfs.cpio" -append "$cmdline" \
	-display none -serial "file:$serial_log" -monitor none -no-reboot \
	-netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" -device "pcnet,netdev=n0,mac=$mac" &
qemu_pid=$!

elapsed_ms() { echo $((($(date +%s%N) - start_ns) / 1000000)); }
# wait_for REGEX: until the serial log has a line matching REGEX; prints the time in ms.
wait_for() {
	while ! grep -qE -- "$1" "$serial_log" 2>/dev/null; do
		kill -0 "$qemu_pid" 2>/dev/null || die "QEMU exited before '$1' appeared (log: $serial_log)"
		[ "$(elapsed_ms)" -lt $((timeout_s * 1000)) ] || die "no '$1' within ${timeout_s}s (log: $serial_log)"
		sleep 0.2
	done
	elapsed_ms
}

t_driver=$(wait_for 'pcnet32: PCnet/PCI II 79C970A')
t_link=$(wait_for 'eth0: link up')
t_ipcfg=$(wait_for 'IP-Config: Complete|device=eth0')

# Ping until the first reply (the kernel answers as soon as IP-Config is done, before /init runs).
first_reply=
while [ -z "$first_reply" ]; do
	[ "$(elapsed_ms)" -lt $((timeout_s * 1000)) ] || die "no ping reply within ${timeout_s}s (log: $serial_log)"
	kill -0 "$qemu_pid" 2>/dev/null || die "QEMU exited before the guest answered (log: $serial_log)"
	if ip netns exec "$ns" ping -c 1 -W 1 "$guest_ip" >/dev/null 2>&1; then first_reply=$(elapsed_ms); fi
done
# Replies take seconds while the kernel finishes its late init (freeing init memory, write-protecting
# rodata: emulated ring 0); once /init runs they settle. Measure the settled RTTs (bounded count and time).
t_init=$(wait_for 'Run /init as init process')
sleep 1
ping_out=$(ip netns exec "$ns" ping -c "$pings_wanted" -i "${SMOKE_PING_INTERVAL:-0.2}" -W 5 "$guest_ip" || true)
received=$(sed -nE 's/.* ([0-9]+) received.*/\1/p' <<<"$ping_out")

echo "--- serial lines that matter ---"
grep -E 'Linux version|Command line|Unknown kernel|MPTABLE|IOAPIC|APIC|IRQ|pcnet32|eth0|IP-Config|Run /init|Kernel panic|BUG|Oops|WARNING' "$serial_log" || true
echo "--- ping ---"
if [ -n "${SMOKE_VERBOSE:-}" ]; then echo "$ping_out"; else tail -n 3 <<<"$ping_out"; fi
echo "--- timings (ms from QEMU start) ---"
echo "driver line: $t_driver   link up: $t_link   IP-Config: $t_ipcfg   first ping reply: $first_reply   /init: $t_init"

[ "${received:-0}" -ge $((pings_wanted / 2)) ] || die "only ${received:-0} of $pings_wanted pings answered"
echo "qemu-smoke: PASS ($image)"
