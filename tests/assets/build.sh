#!/usr/bin/env bash
# Builds the assets vmtest's VM tests boot, from Debian packages only, and
# installs the host packages they need. Safe to run again: every asset is
# cached under ${VMTEST_ASSETS_CACHE:-~/.cache/vmtest-assets}/<key>, where the
# key hashes this script and the kernel config fragment, so a second run only
# checks the cache.
#
# Prints the asset directory on its last line of stdout; tests find it through
# VMTEST_ASSETS (or the same default path).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${VMTEST_ASSETS_CACHE:-$HOME/.cache/vmtest-assets}"
key="$(cat "$here/build.sh" "$here/kernel.config" | sha256sum | cut -c1-16)"
out="$cache_root/$key"

log() { echo "build.sh: $*" >&2; }

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    # Debian's qemu-system-x86 wants Debian's own qemu-utils; a newer one from
    # backports would otherwise block the install.
    local qver
    qver="$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')"
    local pinned=()
    for pkg in "${missing[@]}"; do
        case "$pkg" in
            qemu-utils|qemu-block-extra) pinned+=("$pkg=$qver") ;;
            *) pinned+=("$pkg") ;;
        esac
    done
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --allow-downgrades \
        "${pinned[@]}" >&2
}

apt_install qemu-system-x86 qemu-utils qemu-block-extra qemu-guest-agent \
    linux-source-6.1 build-essential flex bison bc libelf-dev libssl-dev xz-utils cpio
# tests/reports.rs checks vmtest's JUnit XML with a real consumer, Python's junitparser
# (Debian's package where pip refuses to install into the system Python).
python3 -c 'import junitparser' 2>/dev/null || pip install --quiet junitparser || apt_install python3-junitparser

build_kernel() {
    local dest="$1" work
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' RETURN
    log "building the test kernel in $work (about 4 minutes on 2 cores)"
    tar -C "$work" -xf /usr/src/linux-source-6.1.tar.xz
    local src="$work/linux-source-6.1"
    make -C "$src" -s tinyconfig >&2
    "$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$here/kernel.config" >&2
    make -C "$src" -s olddefconfig >&2
    # Every line of the fragment must have survived olddefconfig, or the
    # kernel would silently lack something the tests rely on.
    local line
    while IFS= read -r line; do
        case "$line" in ''|'#'*) continue ;; esac
        grep -qxF "$line" "$src/.config" || { log "config fragment line lost: $line"; return 1; }
    done < "$here/kernel.config"
    make -C "$src" -s -j"$(nproc)" bzImage >&2
    mkdir -p "$dest"
    cp "$src/arch/x86/boot/bzImage" "$dest/bzImage"
    make -C "$src" -s kernelrelease > "$dest/release"
    cp "$src/.config" "$dest/config"
}

if [ ! -f "$out/kernel/bzImage" ]; then
    rm -rf "$out/kernel.tmp"
    build_kernel "$out/kernel.tmp"
    mv "$out/kernel.tmp" "$out/kernel"
fi
log "kernel $(cat "$out/kernel/release") at $out/kernel/bzImage"

# A stable name for the newest build, so tests and users need no key.
ln -sfn "$key" "$cache_root/current"

# Further assets come from build-*.sh beside this script, in name order. Each
# caches its own output in "$cache_root/<name>-<hash of its script>" and links
# it into the asset directory as "$cache_root/current/<name>".
for part in "$here"/build-*.sh; do
    [ -e "$part" ] || continue
    log "running $(basename "$part")"
    bash "$part" "$cache_root" "$cache_root/current" >&2
done
echo "$cache_root/current"
