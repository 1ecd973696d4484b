#!/usr/bin/env bash
# virtiofsd, the Rust daemon vmtest starts per VM to share directories over
# virtiofs (vm.share): Debian 12 has no package of it, so it is built from
# crates.io with cargo (about 2.5 minutes on 2 cores). Tests and benchmarks
# point VMTEST_VIRTIOFSD at it.
#
# Usage: build-virtiofsd.sh CACHE_ROOT ASSET_DIR (run by build.sh). Writes
# CACHE_ROOT/virtiofsd-<hash of this script>/virtiofsd, linked as
# ASSET_DIR/virtiofsd.
set -euo pipefail

cache_root="$1"
asset_dir="$2"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log_name=build-virtiofsd.sh
# shellcheck source=lib.sh
source "$here/lib.sh"
version=1.14.0
out="$cache_root/virtiofsd-$(asset_key "${BASH_SOURCE[0]}")"

if [ ! -x "$out/virtiofsd" ]; then
    command -v cargo >/dev/null || { log "cargo is needed to build virtiofsd"; exit 1; }
    apt_install libseccomp-dev libcap-ng-dev pkg-config
    work="$(mktemp -d)"
    log "building virtiofsd $version in $work"
    rc=0
    CARGO_TARGET_DIR="$work/target" cargo install --quiet --locked --root "$work/root" \
        "virtiofsd@$version" >&2 || rc=$?
    if [ "$rc" -eq 0 ]; then
        rm -rf "$out.tmp"
        mkdir -p "$out.tmp"
        cp "$work/root/bin/virtiofsd" "$out.tmp/virtiofsd"
        rm -rf "$out"
        mv "$out.tmp" "$out"
    fi
    rm -rf "$work"
    [ "$rc" -eq 0 ] || exit "$rc"
fi
log "virtiofsd $("$out/virtiofsd" --version | awk '{print $NF}') at $out/virtiofsd"
ln -sfn "$out" "$asset_dir/virtiofsd"
