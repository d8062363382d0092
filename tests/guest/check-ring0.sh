#!/usr/bin/env bash
# Checks the guest's ring-0 code (the entry and everything between __ring0_start and __ring0_end)
# for SSE/AVX instructions and for calls that leave that range: ring 0 runs through an
# instruction emulator on the target machine, so it must stay small and scalar.
#   tests/guest/check-ring0.sh [IMAGE]      (default target/guest/release/lancet-guest)
set -euo pipefail
image=${1:-target/guest/release/lancet-guest}
start=0x$(nm "$image" | awk '$3 == "pvh_start32" {print $1}')
end=0x$(nm "$image" | awk '$3 == "__ring0_end" {print $1}')
listing=$(objdump -d --no-show-raw-insn --start-address="$start" --stop-address="$end" "$image")
status=0
if grep -E '%[xy]mm[0-9]' <<<"$listing"; then
    echo "check-ring0: SSE/AVX register use in ring-0 code (above)" >&2
    status=1
fi
# Direct calls/jumps must stay inside [start, end); the only indirect call is the iretq helper.
while read -r target; do
    if ((target < start || target >= end)); then
        printf 'check-ring0: ring-0 code calls 0x%x outside the ring-0 range\n' "$target" >&2
        status=1
    fi
done < <(grep -oE '\s(call|jmp|j[a-z]+)\s+[0-9a-f]+ <' <<<"$listing" | awk '{print "0x"$2}')
lines=$(grep -cE '^\s+[0-9a-f]+:' <<<"$listing")
echo "check-ring0: $lines ring-0 instructions in [$start, $end), no SSE, no calls outside: $([[ $status == 0 ]] && echo ok || echo FAILED)"
exit "$status"
