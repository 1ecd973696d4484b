#!/usr/bin/env bash
# Debian's distribution kernels for tests/distro.rs, whose virtio, 9p and
# console drivers are modules:
#   linux-image-amd64        /boot/vmlinuz-<release> and /lib/modules/<release>
#   linux-image-cloud-amd64  the cloud flavour, which has no 9p at all
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
set -euo pipefail

cache_root="$1"
asset_dir="$2"
key="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"
out="$cache_root/debian-kernels-$key"

log() { echo "build-debian-kernels.sh: $*" >&2; }

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

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
        rel="${ko#/lib/modules/$amd64/}"
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
log "Debian kernels $amd64 and $cloud; compressed modules in $out/modules-xz"
ln -sfn "$out" "$asset_dir/debian-kernels"
