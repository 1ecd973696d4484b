#!/usr/bin/env bash
# Kernels built from tinyconfig plus exactly minimal.config, the options the
# README lists, for linux-source-6.1 and linux-source-6.12: they prove that
# vmtest needs nothing more (no DEVTMPFS_MOUNT, no debugfs, no IPv6).
#
# Usage: build-minimal-kernels.sh CACHE_ROOT ASSET_DIR (run by build.sh).
# Writes CACHE_ROOT/minimal-<version>-<key>/{bzImage,vmlinux,release,config},
# linked as ASSET_DIR/minimal-<version>.
set -euo pipefail

cache_root="$1"
asset_dir="$2"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log_name=build-minimal-kernels.sh
# shellcheck source=lib.sh
source "$here/lib.sh"

apt_install linux-source-6.1 linux-source-6.12 build-essential flex bison bc libelf-dev libssl-dev \
    xz-utils cpio
for version in 6.1 6.12; do
    cached_kernel "minimal-$version" "$version" x86 "" bzImage "$asset_dir" "$here/minimal.config"
done
