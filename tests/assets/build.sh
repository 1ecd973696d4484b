#!/usr/bin/env bash
# Builds the assets vmtest's VM tests boot, from Debian packages only, and
# installs the host packages they need (through sudo when not root).
#
#   build.sh kernel   QEMU and the x86-64 test kernel only: what the README's
#                     first command needs (under 10 minutes on 2 cores)
#   build.sh [all]    everything the tests boot (see build-*.sh)
#
# Safe to run again: every asset is cached under
# ${VMTEST_ASSETS_CACHE:-~/.cache/vmtest-assets}/<name>-<key>, where the key
# hashes the scripts and config fragments that make it, and linked as
# <cache>/current/<name>. A second run only checks the cache. Prints the
# asset directory (<cache>/current) on its last line of stdout; tests find it
# through VMTEST_ASSETS (or the same default path).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log_name=build.sh
# shellcheck source=lib.sh
source "$here/lib.sh"

mode="${1:-all}"
case "$mode" in
    kernel|all) ;;
    *) echo "usage: build.sh [kernel|all]" >&2; exit 2 ;;
esac

cache_root="${VMTEST_ASSETS_CACHE:-$HOME/.cache/vmtest-assets}"
asset_dir="$cache_root/current"
mkdir -p "$cache_root"
# Older layouts made `current` a link to one asset directory.
[ -L "$asset_dir" ] && rm "$asset_dir"
mkdir -p "$asset_dir"

# One `apt-get update` for all the scripts of this run.
flag_dir="$(mktemp -d)"
trap 'rm -rf "$flag_dir"' EXIT
export VMTEST_ASSETS_APT_FLAG="$flag_dir/apt-updated"

started=$SECONDS
apt_install qemu-system-x86 qemu-utils qemu-block-extra qemu-guest-agent
if [ "$mode" = all ]; then
    # Host tools the tests use besides vmtest: shellcheck for the scripts;
    # for the suites run in guests (tests/suites.rs) Go, clang, bpftool and
    # CPython's own test suite; gdb for the gdb test.
    apt_install shellcheck golang-go clang llvm bpftool libpython3.11-testsuite gdb python3-pip
    # tests/integration/reports.rs checks vmtest's JUnit XML with a real
    # consumer, Python's junitparser (Debian's package where pip refuses to
    # install into the system Python).
    python3 -c 'import junitparser' 2>/dev/null || pip install --quiet junitparser \
        || apt_install python3-junitparser
fi
log "host packages ready after $((SECONDS - started)) s"

# The x86-64 test kernel first, then (for `all`) every other build-*.sh in
# name order. Each caches its own output and links it into $asset_dir.
parts=("$here/build-kernel.sh")
if [ "$mode" = all ]; then
    for part in "$here"/build-*.sh; do
        [ "$part" = "$here/build-kernel.sh" ] || parts+=("$part")
    done
fi
for part in "${parts[@]}"; do
    part_started=$SECONDS
    log "running $(basename "$part")"
    # From a scratch directory: the kernel's merge_config.sh leaves temporary
    # files in the current one.
    ( cd "$flag_dir" && bash "$part" "$cache_root" "$asset_dir" >&2 )
    log "$(basename "$part") done after $((SECONDS - part_started)) s"
done
log "all done after $((SECONDS - started)) s"
echo "$asset_dir"
