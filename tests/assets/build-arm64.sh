#!/usr/bin/env bash
# The arm64 assets of tests/foreign.rs: a Debian bookworm arm64 rootfs and a
# kernel cross-compiled with kernel-arm64.config (QEMU's virt machine: its
# generic PCIe host, PL011 console, PL031 clock). foreign-lib.sh does the
# work and says what each asset holds.
#
# Usage: build-arm64.sh CACHE_ROOT ASSET_DIR (run by build.sh). Writes
# CACHE_ROOT/arm64-<hash of this script, foreign-lib.sh and
# kernel-arm64.config>, linked as ASSET_DIR/arm64.
set -euo pipefail

name=arm64
kernel_arch=arm64
cross=aarch64-linux-gnu-
qemu_package=qemu-system-arm
image=Image
elf_machine="183 0"
loader=usr/lib/ld-linux-aarch64.so.1
extra_packages=linux-image-arm64,busybox-static
# shellcheck source=foreign-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/foreign-lib.sh"
build_foreign_assets
