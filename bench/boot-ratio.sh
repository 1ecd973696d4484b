#!/usr/bin/env bash
# Measures vmtest's overhead as a ratio against a bare QEMU boot of the same
# kernel, alternating the two in one run so machine noise hits both alike.
#
#   bench/boot-ratio.sh [KERNEL] [RUNS]
#
# bare:   QEMU with vmtest's machine, CPU, memory and 9p root settings, whose
#         init (busybox) powers the guest off at once.
# vmtest: `vmtest -k KERNEL true`, the release build.
# Prints each run, the medians and their ratio. KERNEL defaults to the test
# kernel that tests/assets/build.sh builds.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kernel="${1:-${VMTEST_ASSETS:-$HOME/.cache/vmtest-assets/current}/kernel/bzImage}"
runs="${2:-9}"
[ -f "$kernel" ] || { echo "no kernel at $kernel: run tests/assets/build.sh" >&2; exit 1; }
busybox="$(command -v busybox || true)"
[ -n "$busybox" ] || { echo "busybox is needed for the bare init: apt install busybox-static" >&2; exit 1; }

cargo build --release --quiet --manifest-path "$here/Cargo.toml"
vmtest="$here/target/release/vmtest"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
printf '#!%s sh\nexec %s poweroff -f\n' "$busybox" "$busybox" > "$work/init"
chmod +x "$work/init"

# The accelerator vmtest would pick (TCG where KVM is absent or broken).
accel=tcg
cpu=max
if [ "${VMTEST_ACCEL:-}" != tcg ] && "$vmtest" -k "$kernel" true 2>&1 >/dev/null | grep -q "using TCG"; then
    accel=tcg
elif [ "${VMTEST_ACCEL:-}" != tcg ] && [ -w /dev/kvm ]; then
    accel=kvm
    cpu=host
fi

bare() {
    qemu-system-x86_64 -nodefaults -no-user-config -display none -no-reboot \
        -machine q35 -accel "$accel" -cpu "$cpu" -smp 2 -m 4G \
        -kernel "$kernel" \
        -append "console=ttyS0 root=vmtest_root rootfstype=9p rootflags=trans=virtio,version=9p2000.L,msize=512000,access=any,cache=mmap rw init=$work/init panic=-1" \
        -serial "file:$work/console.log" \
        -fsdev local,id=root,path=/,security_model=none,multidevs=remap \
        -device virtio-9p-pci,fsdev=root,mount_tag=vmtest_root >/dev/null 2>&1
}

. "$here/bench/lib.sh"
compare
