#!/usr/bin/env bash
# The s390x assets of tests/foreign.rs: a Debian bookworm s390x rootfs and a
# kernel cross-compiled with kernel-s390x.config (QEMU's s390-ccw-virtio
# machine: virtio over CCW, the SCLP console). foreign-lib.sh does the work
# and says what each asset holds.
#
# Usage: build-s390x.sh CACHE_ROOT ASSET_DIR (run by build.sh). Writes
# CACHE_ROOT/s390x-<hash of this script, foreign-lib.sh and
# kernel-s390x.config>, linked as ASSET_DIR/s390x.
set -euo pipefail

name=s390x
kernel_arch=s390
cross=s390x-linux-gnu-
qemu_package=qemu-system-misc
image=bzImage
elf_machine="0 22"
loader=usr/lib/ld64.so.1
# shellcheck source=foreign-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/foreign-lib.sh"
build_foreign_assets
