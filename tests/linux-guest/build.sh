#!/usr/bin/env bash
# Builds the small Linux 6.1 guest that boots under this machine's nested KVM (issue 4, "Guests" item 1):
# Debian's linux-source-6.1 + source-edits.sh, `make tinyconfig` + lancet.config, plus an initramfs whose
# /init (init.S) spins in ring 3 without ever making a system call.
#
# Outputs (stable paths, under $LINUX_GUEST_OUT, default <repo>/.cache/linux-guest):
#   vmlinux          uncompressed ELF with the PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)
#   bzImage          the same kernel in Linux boot protocol form
#   initramfs.cpio   newc archive holding /init and /dev/console
#
# Cached: the key hashes the kernel source package version and every input file here; an unchanged key with
# all outputs present returns at once. The unpacked source tree is kept and rebuilt incrementally.
# Environment: LINUX_GUEST_OUT (output dir), LINUX_GUEST_JOBS (make -j, default 2),
#              LINUX_SOURCE_TARBALL (default /usr/src/linux-source-6.1.tar.xz).
set -euo pipefail

die() { echo "linux-guest: ERROR: $*" >&2; exit 1; }
log() { echo "linux-guest: $*"; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${LINUX_GUEST_OUT:-$repo/.cache/linux-guest}
jobs=${LINUX_GUEST_JOBS:-2}
tarball=${LINUX_SOURCE_TARBALL:-/usr/src/linux-source-6.1.tar.xz}
src=$out/src
fragment=$here/lancet.config
edits=$here/source-edits.sh
init_src=$here/init.S
outputs=(vmlinux bzImage initramfs.cpio)

[ -f "$tarball" ] || die "$tarball not found: install the Debian package linux-source-6.1 (\`make linux-guest\` does)"
for tool in make gcc bc flex bison cpio xz sha256sum objdump readelf awk; do
	command -v "$tool" >/dev/null || die "'$tool' not found: install the kernel build packages (\`make linux-guest\` does)"
done

mkdir -p "$out"
# One build at a time per output directory (parallel `make` invocations would trample the tree).
exec 9>"$out/.lock"
flock 9

pkg_version=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || true)
[ -n "$pkg_version" ] || pkg_version="unpackaged:$(stat -c '%s:%Y' "$tarball")"

hash_of() { { printf '%s\n' "$pkg_version"; cat "$@"; } | sha256sum | cut -d' ' -f1; }
build_key=$(hash_of "$fragment" "$edits" "$init_src" "$here/build.sh")
src_key=$(hash_of "$edits")

all_outputs_present() {
	local f
	for f in "${outputs[@]}"; do [ -s "$out/$f" ] || return 1; done
}
if [ "$(cat "$out/build.key" 2>/dev/null)" = "$build_key" ] && all_outputs_present; then
	log "up to date ($out, key ${build_key:0:12}, linux-source-6.1 $pkg_version)"
	exit 0
fi
rm -f "$out/build.key"

start=$(date +%s)

# --- 1. pristine source + the two edits (redone only when the package or the edits change) ---------------
if [ "$(cat "$src/.lancet-src-key" 2>/dev/null)" != "$src_key" ]; then
	log "unpacking $tarball into $src"
	rm -rf "$src"
	mkdir -p "$src"
	tar -xJf "$tarball" -C "$src" --strip-components=1
	"$edits" "$src" || die "the kernel source edits did not apply (see above)"
	echo "$src_key" >"$src/.lancet-src-key"
fi

# Reproducible version string: the source tarball's date, not the build time.
build_timestamp=$(date -u -R -d "@$(stat -c %Y "$tarball")")
kmake() {
	make -C "$src" ARCH=x86_64 KBUILD_BUILD_USER=lancet KBUILD_BUILD_HOST=lancet \
		KBUILD_BUILD_TIMESTAMP="$build_timestamp" "$@"
}

# --- 2. configuration: tinyconfig + fragment, then check every requested option -------------------------
log "configuring: tinyconfig + $(basename "$fragment")"
kmake -s tinyconfig >/dev/null
(cd "$src" && ARCH=x86_64 scripts/kconfig/merge_config.sh -m .config "$fragment" >/dev/null)
kmake -s olddefconfig >/dev/null

missing=()
while IFS= read -r line; do
	if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
		grep -qxF -- "$line" "$src/.config" || missing+=("$line (got: $(grep -E "^(# )?${BASH_REMATCH[1]}[= ]" "$src/.config" || echo 'absent'))")
	elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
		! grep -qE "^${BASH_REMATCH[1]}=" "$src/.config" || missing+=("$line (got: $(grep -E "^${BASH_REMATCH[1]}=" "$src/.config"))")
	fi
done <"$fragment"
if [ ${#missing[@]} -gt 0 ]; then
	printf 'linux-guest: ERROR: option not as requested in .config: %s\n' "${missing[@]}" >&2
	die "the kernel configuration lacks required options (a dependency is missing from $(basename "$fragment")?)"
fi
log "configuration checked: every option of $(basename "$fragment") is set as requested"

# --- 3. kernel ------------------------------------------------------------------------------------------
log "building vmlinux and bzImage with -j$jobs (cold: a few minutes)"
kmake -s -j"$jobs" vmlinux bzImage ||
	die "the kernel build failed (see above; rerun with LINUX_GUEST_JOBS=1 for a readable log)"
[ -s "$src/vmlinux" ] && [ -s "$src/arch/x86/boot/bzImage" ] || die "the kernel build produced no vmlinux/bzImage"
# PVH entry: an ELF note named "Xen" of type XEN_ELFNOTE_PHYS32_ENTRY (18).
readelf -n "$src/vmlinux" | grep -E '^\s*Xen\s' | grep -qE '0x00000012|PHYS32_ENTRY' ||
	die "vmlinux has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): is CONFIG_PVH=y?"

# --- 4. /init and the initramfs ---------------------------------------------------------------------------
tmp=$(mktemp -d "$out/.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
gcc -nostdlib -static -no-pie -Wl,--build-id=none -o "$tmp/init" "$init_src" || die "building /init from $init_src failed"
if objdump -d "$tmp/init" | grep -qE '\s(syscall|sysenter|int|int3|into)\b'; then
	die "/init contains a system-call instruction; it must never make one (see $init_src)"
fi
cat >"$tmp/initramfs.list" <<EOF
dir /dev 0755 0 0
nod /dev/console 0600 0 0 c 5 1
file /init $tmp/init 0755 0 0
EOF
[ -x "$src/usr/gen_init_cpio" ] || kmake -s usr/gen_init_cpio
"$src/usr/gen_init_cpio" "$tmp/initramfs.list" >"$tmp/initramfs.cpio" || die "gen_init_cpio failed"

# --- 5. publish atomically ------------------------------------------------------------------------------
cp "$src/vmlinux" "$tmp/vmlinux"
cp "$src/arch/x86/boot/bzImage" "$tmp/bzImage"
cp "$src/.config" "$out/config"
for f in "${outputs[@]}"; do mv -f "$tmp/$f" "$out/$f"; done
echo "$build_key" >"$out/build.key"

log "done in $(($(date +%s) - start)) s: $out/{vmlinux,bzImage,initramfs.cpio} ($(du -h "$out/bzImage" | cut -f1) bzImage)"
