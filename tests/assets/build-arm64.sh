#!/usr/bin/env bash
# The arm64 assets of tests/foreign.rs, from Debian packages only:
#   rootfs/   a Debian bookworm arm64 root filesystem with bash, coreutils,
#             util-linux (mount) and qemu-guest-agent, made with mmdebstrap's
#             extract variant: packages are unpacked, no maintainer script
#             runs, so nothing foreign executes on the host. The /usr merge
#             and the directories maintainer scripts would create are made
#             here.
#   kernel/   Image, release, config: linux-source-6.1 cross-compiled for
#             arm64 from tinyconfig plus kernel-arm64.config (virtio PCI,
#             PL011 console, 9p all built in: vmtest builds initramfs images
#             for the host's architecture only). About 6 minutes on 2 cores.
# docs/architectures.md explains each step as a recipe.
#
# Usage: build-arm64.sh CACHE_ROOT ASSET_DIR (run by build.sh). Writes
# CACHE_ROOT/arm64-<hash of this script and kernel-arm64.config>, linked as
# ASSET_DIR/arm64.
set -euo pipefail

cache_root="$1"
asset_dir="$2"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fragment="$here/kernel-arm64.config"
key="$(cat "${BASH_SOURCE[0]}" "$fragment" | sha256sum | cut -c1-16)"
out="$cache_root/arm64-$key"

log() { echo "build-arm64.sh: $*" >&2; }

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

apt_install mmdebstrap qemu-system-arm gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu \
    linux-source-6.1 make bc flex bison libssl-dev libelf-dev xz-utils

# Fails unless $1 is an arm64 (EM_AARCH64 = 183) ELF file.
require_arm64_elf() {
    local file="$1" magic machine
    [ -f "$file" ] || { log "missing $file"; return 1; }
    magic="$(head -c 4 "$file" | od -An -c | tr -d ' ')"
    machine="$(od -An -tu2 -j18 -N2 "$file" | tr -d ' ')"
    [ "$magic" = "177ELF" ] && [ "$machine" = 183 ] || { log "$file is not an arm64 ELF file"; return 1; }
}

build_rootfs() {
    local root="$1"
    mmdebstrap --arch arm64 --variant=extract \
        --include=base-files,base-passwd,bash,coreutils,dash,util-linux,mount,qemu-guest-agent \
        bookworm "$root" >&2
    # bookworm merges /usr in usr-is-merged's maintainer script, which the
    # extract variant does not run: move /bin, /sbin and /lib into /usr and
    # leave links, as the merge would.
    local dir
    for dir in bin sbin lib; do
        [ -L "$root/$dir" ] && continue
        mkdir -p "$root/usr/$dir"
        if [ -e "$root/$dir" ]; then
            cp -a --no-clobber "$root/$dir/." "$root/usr/$dir/"
            rm -rf "${root:?}/$dir"
        fi
        ln -s "usr/$dir" "$root/$dir"
    done
    # What base-files' and base-passwd's maintainer scripts would create.
    mkdir -p "$root"/{tmp,proc,sys,dev,run,mnt,root,etc}
    chmod 1777 "$root/tmp"
    [ -e "$root/etc/passwd" ] || cp "$root/usr/share/base-passwd/passwd.master" "$root/etc/passwd"
    [ -e "$root/etc/group" ] || cp "$root/usr/share/base-passwd/group.master" "$root/etc/group"
    # Check what vmtest and the tests rely on.
    local path
    for path in bin sbin lib; do
        [ "$(readlink "$root/$path")" = "usr/$path" ] || { log "$root/$path is not a link to usr/$path"; return 1; }
    done
    for path in tmp proc sys dev run mnt; do
        [ -d "$root/$path" ] || { log "$root/$path is not a directory"; return 1; }
    done
    for path in usr/bin/bash usr/bin/sh usr/bin/mount usr/bin/mkdir usr/bin/ln usr/bin/cat usr/sbin/qemu-ga \
        usr/lib/aarch64-linux-gnu/libglib-2.0.so.0; do
        require_arm64_elf "$(realpath "$root/$path")"
    done
    [ -e "$root/lib/ld-linux-aarch64.so.1" ] || { log "no dynamic loader /lib/ld-linux-aarch64.so.1"; return 1; }
}

build_kernel() {
    local dest="$1" work
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' RETURN
    log "cross-building the arm64 test kernel in $work (about 6 minutes on 2 cores)"
    tar -C "$work" -xf /usr/src/linux-source-6.1.tar.xz
    local src="$work/linux-source-6.1"
    local make=(make -C "$src" -s ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-)
    "${make[@]}" tinyconfig >&2
    ARCH=arm64 "$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$fragment" >&2
    "${make[@]}" olddefconfig >&2
    # Every line of the fragment must have survived olddefconfig, or the
    # kernel would silently lack something the tests rely on.
    local line
    while IFS= read -r line; do
        case "$line" in ''|'#'*) continue ;; esac
        grep -qxF "$line" "$src/.config" || { log "config fragment line lost: $line"; return 1; }
    done < "$fragment"
    "${make[@]}" -j"$(nproc)" Image >&2
    mkdir -p "$dest"
    cp "$src/arch/arm64/boot/Image" "$dest/Image"
    "${make[@]}" kernelrelease > "$dest/release"
    cp "$src/.config" "$dest/config"
}

mkdir -p "$out"
if [ ! -f "$out/rootfs/usr/sbin/qemu-ga" ]; then
    log "making the arm64 rootfs"
    rm -rf "$out/rootfs.tmp" "$out/rootfs"
    build_rootfs "$out/rootfs.tmp"
    mv "$out/rootfs.tmp" "$out/rootfs"
fi
if [ ! -f "$out/kernel/Image" ]; then
    rm -rf "$out/kernel.tmp"
    build_kernel "$out/kernel.tmp"
    mv "$out/kernel.tmp" "$out/kernel"
fi
log "arm64 kernel $(cat "$out/kernel/release") at $out/kernel/Image, rootfs at $out/rootfs"
ln -sfn "$out" "$asset_dir/arm64"
