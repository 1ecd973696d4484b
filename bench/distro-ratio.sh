#!/usr/bin/env bash
# Measures vmtest's overhead on a distribution kernel (whose virtio, 9p and
# console drivers are modules) as a ratio against a bare QEMU boot of the
# same kernel, alternating the two in one run so machine noise hits both
# alike. The issue's bar is 1.4.
#
#   bench/distro-ratio.sh [KERNEL] [RUNS]
#
# bare:   QEMU with vmtest's machine, CPU, memory, console and 9p root
#         device, and a minimal initramfs (static busybox) whose init powers
#         the guest off at once.
# vmtest: `vmtest -k KERNEL true`, the release build, after one warm-up run
#         that fills the initramfs cache (the cache is what later runs use).
# Prints each run, the medians and their ratio. KERNEL defaults to the newest
# /boot/vmlinuz-*-amd64 that is not the cloud flavour.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
newest_generic() {
    local found="" candidate
    for candidate in /boot/vmlinuz-*-amd64; do
        case "$candidate" in *-cloud-*) continue ;; esac
        [ -f "$candidate" ] && found="$candidate"
    done
    echo "$found"
}
kernel="${1:-$(newest_generic)}"
runs="${2:-9}"
[ -f "$kernel" ] || { echo "no kernel at '$kernel': apt install linux-image-amd64" >&2; exit 1; }
busybox="$(command -v busybox || true)"
file -L "$busybox" 2>/dev/null | grep -q 'statically linked' \
    || { echo "a static busybox is needed for the bare initramfs: apt install busybox-static" >&2; exit 1; }

cargo build --release --quiet --manifest-path "$here/Cargo.toml"
vmtest="$here/target/release/vmtest"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/bin" "$work/root/dev"
cp "$busybox" "$work/root/bin/busybox"
printf '#!/bin/busybox sh\nexec /bin/busybox poweroff -f\n' > "$work/root/init"
chmod +x "$work/root/init"
(cd "$work/root" && find . | cpio -o -H newc --quiet) > "$work/bare.cpio"

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
        -kernel "$kernel" -initrd "$work/bare.cpio" \
        -append "console=ttyS0 panic=-1" \
        -serial "file:$work/console.log" \
        -fsdev local,id=root,path=/,security_model=none,multidevs=remap \
        -device virtio-9p-pci,fsdev=root,mount_tag=vmtest_root >/dev/null 2>&1
}

. "$here/bench/lib.sh"
run_vmtest || { echo "vmtest -k $kernel true failed:" >&2; "$vmtest" -k "$kernel" true >&2; exit 1; }
compare
