#!/usr/bin/env bash
# The x86-64 test kernel most VM tests boot: linux-source-6.1 from tinyconfig
# plus minimal.config (what vmtest needs of any kernel) and kernel.config
# (what test suites, splat tests and gdb want on top). Keeps vmlinux for gdb.
#
# Usage: build-kernel.sh CACHE_ROOT ASSET_DIR (run by build.sh). Writes
# CACHE_ROOT/kernel-<key>/{bzImage,vmlinux,release,config}, linked as
# ASSET_DIR/kernel.
set -euo pipefail

cache_root="$1"
asset_dir="$2"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log_name=build-kernel.sh
# shellcheck source=lib.sh
source "$here/lib.sh"

apt_install linux-source-6.1 build-essential flex bison bc libelf-dev libssl-dev xz-utils cpio dwarves
cached_kernel kernel 6.1 x86 "" bzImage "$asset_dir" "$here/minimal.config" "$here/kernel.config"
