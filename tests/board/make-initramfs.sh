#!/usr/bin/env bash
# Builds the emulated board's boot files (tests/integration/emulated_board.rs boots them with
# qemu-system-aarch64 -M virt -cpu cortex-a72):
#   OUT/vmlinuz      Debian's arm64 kernel (PL061 GPIO and PL011 UARTs built in, vivid a module)
#   OUT/initrd.gz    busybox, the vivid module and its dependencies, the cross-built vigil with
#                    its shared libraries, boards/qemu-virt.toml and the bundle it names, and
#                    tests/board/init as /init
#
#   tests/board/make-initramfs.sh VIGIL_AARCH64_BINARY OUT_DIR
#
# The kernel and busybox .debs are downloaded once with apt-get (the machine needs arm64 as a
# foreign architecture: .ci/setup-host --arm) into VIGIL_BOARD_CACHE (default ~/.cache/vigil-board).
set -euo pipefail
vigil_bin=$(realpath "$1")
out=$(mkdir -p "$2" && realpath "$2")
repo=$(cd "$(dirname "$0")/../.." && pwd)
cache="${VIGIL_BOARD_CACHE:-$HOME/.cache/vigil-board}"
mkdir -p "$cache/debs"

# The newest 6.1 kernel image the arm64 metapackage points at, and busybox.
kernel_pkg=$(apt-cache depends linux-image-arm64:arm64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[ -n "$kernel_pkg" ] || { echo "make-initramfs: no linux-image-arm64:arm64 in apt (run .ci/setup-host --arm)" >&2; exit 1; }
for pkg in "$kernel_pkg" busybox-static:arm64; do
  name=${pkg%%:*}
  ls "$cache/debs/${name}_"*_arm64.deb >/dev/null 2>&1 || (cd "$cache/debs" && apt-get download -q "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  ls "$cache/debs/${name}_"*_arm64.deb >/dev/null
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg -x "$(ls "$cache/debs/${kernel_pkg%%:*}_"*_arm64.deb | tail -1)" "$work/kernel"
dpkg -x "$(ls "$cache/debs/busybox-static_"*_arm64.deb | tail -1)" "$work/busybox"
kver=$(ls "$work/kernel/lib/modules")
cp "$work/kernel/boot/vmlinuz-$kver" "$out/vmlinuz"

root="$work/root"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,run,lib,etc,vigil/boards,vigil/models}
cp "$work/busybox/bin/busybox" "$root/bin/busybox"

# vivid and what it depends on, found through each module's `depends=` entry.
mods="$work/kernel/lib/modules/$kver"
declare -A wanted=()
want() {
  local name=$1 path dep
  [ -n "${wanted[$name]:-}" ] && return
  path=$(find "$mods/kernel" -name "$name.ko" -o -name "${name//-/_}.ko" | head -1)
  [ -n "$path" ] || { echo "make-initramfs: module $name not found in $kver" >&2; exit 1; }
  wanted[$name]=$path
  for dep in $(aarch64-linux-gnu-strings "$path" | sed -n 's/^depends=//p' | tr ',' ' '); do want "$dep"; done
}
want vivid
for name in "${!wanted[@]}"; do
  rel=${wanted[$name]#"$work/kernel/"}
  mkdir -p "$root/$(dirname "$rel")"
  cp "${wanted[$name]}" "$root/$rel"
done
cp "$mods"/modules.{order,builtin} "$root/lib/modules/$kver/" 2>/dev/null || true

# vigil, stripped, with the loader and libraries it links (the cross toolchain's glibc).
aarch64-linux-gnu-strip -o "$root/vigil/vigil" "$vigil_bin"
sysroot=/usr/aarch64-linux-gnu/lib
for lib in $(aarch64-linux-gnu-readelf -d "$vigil_bin" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p') ld-linux-aarch64.so.1; do
  cp -L "$sysroot/$lib" "$root/lib/$lib"
done

# The profile and the bundle it names, laid out as in the repository so its relative path holds.
cp "$repo/boards/qemu-virt.toml" "$root/vigil/boards/"
bundle=$(sed -n 's/^bundle *= *"\.\.\/models\/\([^"]*\)".*/\1/p' "$repo/boards/qemu-virt.toml")
mkdir -p "$root/vigil/models/$bundle"
(cd "$repo/models/$bundle" && cp -r --parents $(ls | grep -v '^samples$') "$root/vigil/models/$bundle/")
cp "$repo/tests/board/init" "$root/init"
chmod +x "$root/init"

(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1 > "$out/initrd.gz")
echo "make-initramfs: kernel $kver, initrd $(du -h "$out/initrd.gz" | cut -f1) in $out"
