#!/usr/bin/env bash
# The two one-line changes the lancet guest needs in Debian's linux-source-6.1 (see machine.md, KVM part):
#  1. arch/x86/kernel/alternative.c: do not call int3_selftest() -- this machine's ring-0 instruction
#     emulator cannot run the int3 the self test raises (`if (0)` keeps the function referenced, so no
#     unused-function warning).
#  2. arch/x86/kernel/fpu/core.c: fpu__drop() must not execute `fwait` in ring 0 (the emulator cannot);
#     it becomes a `nop`, keeping the exception-table label intact.
# Usage: source-edits.sh KERNEL_SOURCE_DIR. Applies both edits to a pristine tree and fails loudly (non-zero
# exit, message on stderr) if either pattern is not found exactly once or the result is not as expected.
set -euo pipefail

die() { echo "source-edits.sh: ERROR: $*" >&2; exit 1; }

src=${1:?usage: source-edits.sh KERNEL_SOURCE_DIR}
[ -d "$src/arch/x86" ] || die "$src does not look like a Linux source tree (no arch/x86)"

# edit FILE PATTERN REPLACEMENT: the extended regex PATTERN must match exactly one line of FILE;
# that line is replaced by REPLACEMENT (a fixed string) and the change is then checked.
edit() {
	local file=$src/$1 pattern=$2 replacement=$3 count
	[ -f "$file" ] || die "$1 is missing from the kernel source"
	count=$(grep -cE -- "$pattern" "$file" || true)
	[ "$count" = 1 ] || die "$1: expected exactly 1 line matching '$pattern', found $count (kernel source changed? update tests/linux-guest/source-edits.sh)"
	local tmp=$file.lancet-tmp
	PAT="$pattern" REP="$replacement" awk '$0 ~ ENVIRON["PAT"] { print ENVIRON["REP"]; next } { print }' "$file" >"$tmp"
	mv "$tmp" "$file"
	grep -qF -- "$replacement" "$file" || die "$1: replacement did not land"
	! grep -qE -- "$pattern" "$file" || die "$1: pattern '$pattern' still present after the edit"
	echo "source-edits.sh: edited $1"
}

# The call site only (the definition reads "static noinline void __init int3_selftest(void)").
edit arch/x86/kernel/alternative.c \
	'^[[:space:]]+int3_selftest\(\);[[:space:]]*$' \
	'	if (0) /* lancet: skipped, the nested KVM ring-0 emulator cannot run its int3 */ int3_selftest();'

edit arch/x86/kernel/fpu/core.c \
	'^[[:space:]]+asm volatile\("1: fwait\\n"[[:space:]]*$' \
	'		asm volatile("1: nop\n" /* lancet: no fwait, the ring-0 emulator cannot run it */'
