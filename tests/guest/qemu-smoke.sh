#!/usr/bin/env bash
# QEMU smoke test of the lancet test guest: boots target/guest/release/lancet-guest under
# qemu-system-x86_64 -enable-kvm with QEMU's pcnet on a tap inside a private network namespace,
# and checks the programs from the peer side of the tap.
#
#   tests/guest/qemu-smoke.sh [CASE...]     CASE = echo:poll echo:irq sink:poll sink:irq blast:poll blast:irq
#                                          error:nonic error:cmdline hostile (default: all)
# Environment: GUEST (image path), SMOKE_CPU (QEMU -cpu; default: probed by tests/qemu-cpu.sh), FRAMES (sink/blast frame count, default 10000),
#              ECHO_COUNT (UDP echo round trips, default 200), BOOT_TIMEOUT (s, default 120).
# Run as root from the repository root after `make guest`. Cleans up QEMU and the namespace on exit.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
GUEST=${GUEST:-target/guest/release/lancet-guest}
FRAMES=${FRAMES:-10000}
ECHO_COUNT=${ECHO_COUNT:-200}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-120}
NS=lt-gq$$
TAP=lt-gt$$
PEER_IP=10.77.0.1
GUEST_IP=10.77.0.2
GUEST_MAC=52:54:00:12:34:56
WORK=$(mktemp -d /tmp/lt-guest-smoke.XXXXXX)
QEMU_PID=""
COUNTER_PID=""
failures=0

cleanup() {
    if [[ -n "$QEMU_PID" ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
        kill "$QEMU_PID" 2>/dev/null || true
        wait "$QEMU_PID" 2>/dev/null || true
    fi
    if [[ -n "$COUNTER_PID" ]]; then kill "$COUNTER_PID" 2>/dev/null || true; fi
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

[[ -f "$GUEST" ]] || { echo "no guest image at $GUEST: run 'make guest' first" >&2; exit 2; }
command -v qemu-system-x86_64 >/dev/null || { echo "qemu-system-x86_64 missing: apt-get install qemu-system-x86" >&2; exit 2; }
# shellcheck source=../qemu-cpu.sh
. "$here/../qemu-cpu.sh"
# The host's CPU with lancet's feature hiding, or the first fallback this host's KVM accepts.
CPU=${SMOKE_CPU:-$(qemu_cpu_pick "host$LANCET_QEMU_CPU_HIDE" "host,-arch-capabilities$LANCET_QEMU_CPU_HIDE" \
    "qemu64$LANCET_QEMU_CPU_HIDE")} || exit 2
echo "qemu-smoke: -cpu $CPU"

ip netns add "$NS"
ip -n "$NS" link set lo up
ip netns exec "$NS" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
ip -n "$NS" tuntap add dev "$TAP" mode tap
ip -n "$NS" addr add "$PEER_IP/24" dev "$TAP"
# A long queue so a busy host (QEMU reading the tap late) does not drop the sink's frames.
ip -n "$NS" link set "$TAP" txqueuelen 50000 up
nsx() { ip netns exec "$NS" "$@"; }

# boot_guest LOG APPEND [NIC]: starts QEMU in the background (QEMU_PID); NIC=none boots without
# the pcnet device.
boot_guest() {
    local log=$1 append=$2 nic=${3:-pcnet}
    local nic_args=(-netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no"
        -device "pcnet,netdev=n0,mac=$GUEST_MAC,romfile=")
    [[ $nic == none ]] && nic_args=(-nic none)
    # Not through nsx: a function would run in a forked shell, and $! must be QEMU itself.
    ip netns exec "$NS" qemu-system-x86_64 -enable-kvm -M pc -cpu "$CPU" -m 64 -nographic -no-reboot \
        -kernel "$GUEST" -append "$append" \
        -device isa-debug-exit,iobase=0x501 "${nic_args[@]}" >"$log" 2>&1 &
    QEMU_PID=$!
}

# wait_line LOG REGEX SECONDS: waits for a console line; fails if QEMU exits first.
wait_line() {
    local log=$1 regex=$2 deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)); do
        grep -qE "$regex" "$log" && return 0
        kill -0 "$QEMU_PID" 2>/dev/null || { grep -qE "$regex" "$log" && return 0; return 1; }
        sleep 0.2
    done
    return 1
}

# wait_exit SECONDS: waits for QEMU to end and sets EXIT_STATUS to its status ("timeout" if it
# did not end). isa-debug-exit makes QEMU exit with (code << 1) | 1, so guest success is 1.
wait_exit() {
    local deadline=$((SECONDS + $1))
    while ((SECONDS < deadline)) && kill -0 "$QEMU_PID" 2>/dev/null; do sleep 0.2; done
    if kill -0 "$QEMU_PID" 2>/dev/null; then EXIT_STATUS=timeout; return; fi
    EXIT_STATUS=0
    wait "$QEMU_PID" || EXIT_STATUS=$?
    QEMU_PID=""
}

stop_guest() {
    if [[ -n "$QEMU_PID" ]]; then kill "$QEMU_PID" 2>/dev/null || true; wait "$QEMU_PID" 2>/dev/null || true; QEMU_PID=""; fi
}

result() { # CASE OK DETAIL
    if [[ $2 == ok ]]; then echo "PASS $1 $3"; else echo "FAIL $1 $3"; failures=$((failures + 1)); fi
}

show_console() { grep -a "lancet-guest:" "$1" | sed 's/^/    /' || true; }

run_echo() {
    local mode=$1 log=$WORK/echo-$1.log ok=ok detail=""
    boot_guest "$log" "prog=echo mode=$mode ip=$GUEST_IP/24"
    if ! wait_line "$log" "lancet-guest: ready prog=echo" "$BOOT_TIMEOUT"; then
        tail -5 "$log" | sed "s/^/    qemu: /"; stop_guest; result "echo:$mode" fail "(no ready line)"; return
    fi
    show_console "$log"
    nsx ping -c 5 -i 0.2 -W 2 "$GUEST_IP" >"$WORK/ping" 2>&1 || ok=fail
    grep -E "packets transmitted|rtt" "$WORK/ping" | sed 's/^/    /'
    local neigh
    neigh=$(nsx ip neigh show "$GUEST_IP" dev "$TAP")
    echo "    arp: $neigh"
    [[ $neigh == *"$GUEST_MAC"* ]] || ok=fail
    for size in 18 1472; do
        nsx python3 "$here/peer.py" udp-echo "$GUEST_IP" 7 "$ECHO_COUNT" "$size" >"$WORK/udp" 2>&1 || ok=fail
        sed 's/^/    /' "$WORK/udp"
    done
    stop_guest
    result "echo:$mode" "$ok" "$detail"
}

run_sink() {
    local mode=$1 log=$WORK/sink-$1.log
    boot_guest "$log" "prog=sink mode=$mode ip=$GUEST_IP/24 count=$FRAMES"
    if ! wait_line "$log" "lancet-guest: ready prog=sink" "$BOOT_TIMEOUT"; then
        tail -5 "$log" | sed "s/^/    qemu: /"; stop_guest; result "sink:$mode" fail "(no ready line)"; return
    fi
    nsx python3 "$here/peer.py" send "$TAP" "$GUEST_MAC" "$FRAMES" 60 | sed 's/^/    /'
    wait_exit 30
    show_console "$log"
    local status=$EXIT_STATUS
    if [[ $status == 1 ]] && grep -q "lancet-guest: sink frames=$FRAMES " "$log"; then
        result "sink:$mode" ok "(guest counted $FRAMES, exit 0)"
    else
        echo "    peer tap (TX drops are frames QEMU did not read in time):"
        ip -n "$NS" -s link show "$TAP" | sed 's/^/      /'
        stop_guest; result "sink:$mode" fail "(qemu status $status)"
    fi
}

run_blast() {
    local mode=$1 log=$WORK/blast-$1.log
    ip netns exec "$NS" python3 "$here/peer.py" count "$TAP" "$GUEST_MAC" "$FRAMES" $((BOOT_TIMEOUT + 60)) \
        >"$WORK/count" 2>&1 &
    COUNTER_PID=$!
    sleep 0.5
    boot_guest "$log" "prog=blast mode=$mode ip=$GUEST_IP/24 peer=$PEER_IP count=$FRAMES size=64"
    wait_exit $((BOOT_TIMEOUT + 60))
    local status=$EXIT_STATUS
    wait "$COUNTER_PID" || true
    COUNTER_PID=""
    show_console "$log"
    sed 's/^/    /' "$WORK/count"
    if [[ $status == 1 ]] && grep -q "lancet-guest: blast sent=$FRAMES\$" "$log" \
        && grep -q "count frames=$FRAMES\$" "$WORK/count"; then
        result "blast:$mode" ok "(guest sent $FRAMES, peer counted $FRAMES)"
    else
        stop_guest; result "blast:$mode" fail "(qemu status $status)"
    fi
}

# run_error NAME APPEND NIC REGEX: the guest must print an error line and exit with status 2.
run_error() {
    local name=$1 log=$WORK/error-$1.log
    boot_guest "$log" "$2" "$3"
    wait_exit "$BOOT_TIMEOUT"
    show_console "$log"
    # isa-debug-exit: guest code 2 -> QEMU status (2 << 1) | 1 = 5.
    if [[ $EXIT_STATUS == 5 ]] && grep -qE "$4" "$log"; then
        result "error:$name" ok "(error line, exit 2)"
    else
        stop_guest; result "error:$name" fail "(qemu status $EXIT_STATUS)"
    fi
}

run_hostile() {
    local log=$WORK/hostile.log
    boot_guest "$log" "prog=hostile mode=poll"
    wait_exit "$BOOT_TIMEOUT"
    show_console "$log"
    if [[ $EXIT_STATUS == 1 ]] && grep -q "lancet-guest: hostile done" "$log"; then
        result "hostile" ok "(every step done, chip resets cleanly, exit 0)"
    else
        stop_guest; result "hostile" fail "(qemu status $EXIT_STATUS)"
    fi
}

cases=("$@")
((${#cases[@]})) || cases=(echo:poll echo:irq sink:poll sink:irq blast:poll blast:irq error:nonic error:cmdline hostile)
for c in "${cases[@]}"; do
    echo "== $c"
    case $c in
        echo:poll | echo:irq) run_echo "${c#*:}" ;;
        sink:poll | sink:irq) run_sink "${c#*:}" ;;
        blast:poll | blast:irq) run_blast "${c#*:}" ;;
        error:nonic) run_error nonic "prog=echo mode=poll ip=$GUEST_IP/24" none \
            "lancet-guest: error no Am79C970A" ;;
        hostile) run_hostile ;;
        error:cmdline) run_error cmdline "prog=bogus ip=$GUEST_IP/24" pcnet "lancet-guest: error bad cmdline" ;;
        *) echo "unknown case $c" >&2; exit 2 ;;
    esac
done
echo "qemu-smoke: $failures failure(s)"
((failures == 0))
