#!/usr/bin/env bash
# Debian's distribution kernels for tests/distro.rs, whose virtio, 9p and
# console drivers are modules:
#   linux-image-amd64        /boot/vmlinuz-<release> and /lib/modules/<release>
#   linux-image-cloud-amd64  the cloud flavour, which has no 9p at all
#   linux-image-6.12-amd64   Debian 12's 6.12 kernel (modules .ko.xz), unpacked
#                            into the cache with dpkg-deb (nothing installed
#                            on the host) and indexed by depmod, as installed
# and a copied module tree for the generic kernel with every module
# compressed to .ko.xz (only the root drivers, their dependencies and
# `dummy`, which the modprobe test loads), indexed by depmod.
#
# Usage: build-debian-kernels.sh CACHE_ROOT ASSET_DIR (run by build.sh).
# Writes CACHE_ROOT/debian-kernels-<hash of this script>, linked as
# ASSET_DIR/debian-kernels, holding:
#   amd64.vmlinuz, amd64.release   the generic kernel's path and release
#   cloud.vmlinuz, cloud.release   the cloud kernel's
#   modules-xz/lib/modules/<release>/   the compressed tree
#   6.12.vmlinuz, 6.12.release     the 6.12 kernel
#   6.12/lib/modules/<release>/    its modules
set -euo pipefail

cache_root="$1"
asset_dir="$2"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log_name=build-debian-kernels.sh
# shellcheck source=lib.sh
source "$here/lib.sh"
out="$cache_root/debian-kernels-$(asset_key "${BASH_SOURCE[0]}")"

apt_install linux-image-amd64 linux-image-cloud-amd64 kmod xz-utils

# The release a metapackage points at: its linux-image-<release> dependency.
release_of() {
    dpkg-query -W -f='${Depends}' "$1" | tr ',' '\n' | sed -n 's/^ *linux-image-\([^ ]*\).*/\1/p' | head -n1
}

amd64="$(release_of linux-image-amd64)"
cloud="$(release_of linux-image-cloud-amd64)"
for release in "$amd64" "$cloud"; do
    [ -f "/boot/vmlinuz-$release" ] || { log "no /boot/vmlinuz-$release"; exit 1; }
    [ -f "/lib/modules/$release/modules.dep" ] || { log "no /lib/modules/$release/modules.dep"; exit 1; }
done

# The compressed tree: rebuilt when the script or the kernel changes.
if [ "$(cat "$out/amd64.release" 2>/dev/null)" != "$amd64" ]; then
    log "compressing the modules of $amd64"
    rm -rf "$out.tmp"
    tree="$out.tmp/modules-xz/lib/modules/$amd64"
    mkdir -p "$tree"
    cp "/lib/modules/$amd64"/modules.{builtin,builtin.modinfo,order} "$tree/"
    for module in virtio_pci virtio_console 9pnet_virtio 9p dummy; do
        modprobe --show-depends -S "$amd64" "$module" | awk '$1 == "insmod" { print $2 }'
    done | sort -u | while read -r ko; do
        rel="${ko#/lib/modules/"$amd64"/}"
        mkdir -p "$tree/$(dirname "$rel")"
        xz --check=crc32 -c "$ko" > "$tree/$rel.xz"
    done
    depmod -b "$out.tmp/modules-xz" "$amd64"
    grep -q '9p.ko.xz:' "$tree/modules.dep" || { log "depmod did not index the .ko.xz files"; exit 1; }
    echo "/boot/vmlinuz-$amd64" > "$out.tmp/amd64.vmlinuz"
    echo "/boot/vmlinuz-$cloud" > "$out.tmp/cloud.vmlinuz"
    echo "$cloud" > "$out.tmp/cloud.release"
    echo "$amd64" > "$out.tmp/amd64.release"
    rm -rf "$out"
    mv "$out.tmp" "$out"
fi
# Debian 12's 6.12 kernel, unpacked from its package without installing it.
if [ ! -f "$out/6.12.release" ]; then
    apt_update_once
    work="$(mktemp -d)"
    ( cd "$work" && apt-get download -q linux-image-6.12-amd64 >&2 )
    meta="$(dpkg-deb -f "$work"/linux-image-6.12-amd64_*.deb Depends)"
    image="$(echo "$meta" | tr ',' '\n' | sed -n 's/^ *\(linux-image-[^ ]*\).*/\1/p' | head -n1)"
    ( cd "$work" && apt-get download -q "$image" >&2 )
    rm -rf "$out/6.12"
    mkdir -p "$out/6.12"
    dpkg-deb -x "$work/${image}"_*.deb "$out/6.12"
    rm -rf "$work"
    release="${image#linux-image-}"
    [ -d "$out/6.12/usr/lib/modules/$release" ] && mkdir -p "$out/6.12/lib" \
        && mv "$out/6.12/usr/lib/modules" "$out/6.12/lib/modules"
    depmod -b "$out/6.12" "$release"
    grep -q '9p.ko.xz:' "$out/6.12/lib/modules/$release/modules.dep" \
        || { log "the 6.12 kernel's modules are not .ko.xz"; exit 1; }
    cp "$out/6.12/boot/vmlinuz-$release" "$out/6.12.vmlinuz"
    echo "$release" > "$out/6.12.release"
fi
log "Debian kernels $amd64, $cloud and $(cat "$out/6.12.release"); compressed modules in $out/modules-xz"
ln -sfn "$out" "$asset_dir/debian-kernels"
