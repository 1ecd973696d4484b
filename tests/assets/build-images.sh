#!/usr/bin/env bash
# Builds the disk images of vmtest's image-target tests from Debian packages,
# without loop devices, mounts or any privilege beyond root:
#   debian-bios.raw    raw, MBR, syslinux on a FAT boot partition, ext4 root
#   debian-uefi.qcow2  qcow2, GPT, systemd-boot on an EFI system partition,
#                      the same ext4 root
# Both hold one Debian bookworm system (systemd, udev, qemu-guest-agent,
# linux-image-amd64 with its initramfs) whose console is ttyS0. docs/images.md
# explains each step as a recipe.
#
# Usage: build-images.sh CACHE_ROOT ASSET_DIR (run by build.sh). The images
# are cached in CACHE_ROOT/images-<hash of this script> and linked as
# ASSET_DIR/images.
set -euo pipefail

cache_root="$1"
asset_dir="$2"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log_name=build-images.sh
# shellcheck source=lib.sh
source "$here/lib.sh"
out="$cache_root/images-$(asset_key "${BASH_SOURCE[0]}")"

suite=bookworm
disk_size=2G
boot_mib=256          # the FAT partition: kernel and initramfs live there
boot_start=2048       # sectors: partitions start at 1 MiB
fs_uuid=7f3ad2a6-6d8e-4d1f-9a53-5c7e0b1e2c11
cmdline="root=UUID=$fs_uuid rw console=ttyS0 quiet systemd.show_status=1"

# The root filesystem: a minimal Debian that boots with systemd and starts
# qemu-guest-agent when its virtio-serial port appears (Debian's udev rule
# does that; it needs no network). Documentation, manuals, locales and kernel
# modules for hardware a VM never has are left out to keep the image small.
build_rootfs() {
    local root="$1" files="$2"
    # Files put into the rootfs before the packages are installed.
    mkdir -p "$files/etc/initramfs-tools/conf.d" "$files/etc/initramfs-tools/hooks" \
        "$files/etc/systemd/system"
    # The initramfs only has to find the root disk: MODULES=list and this
    # hook make it about 7 MB instead of 35 (unpacking is slow without KVM).
    echo MODULES=list > "$files/etc/initramfs-tools/conf.d/vmtest"
    cat > "$files/etc/initramfs-tools/hooks/vmtest" <<'HOOK'
#!/bin/sh
[ "$1" = prereqs ] && exit 0
. /usr/share/initramfs-tools/hook-functions
manual_add_modules virtio_pci virtio_blk ext4 crc32c_generic
HOOK
    chmod 755 "$files/etc/initramfs-tools/hooks/vmtest"
    # e2scrub_reap scans for LVM snapshots at boot: seconds under TCG, no use here.
    ln -s /dev/null "$files/etc/systemd/system/e2scrub_reap.service"
    echo vmtest-debian > "$files/etc/hostname"
    echo "UUID=$fs_uuid / ext4 rw,errors=remount-ro 0 0" > "$files/etc/fstab"
    local excludes=()
    for path in /usr/share/doc /usr/share/man /usr/share/locale '/lib/modules/*/kernel/sound' \
        '/lib/modules/*/kernel/drivers/'{gpu,media,infiniband,net/wireless}; do
        excludes+=("--dpkgopt=path-exclude=$path/*")
    done
    # As root mmdebstrap uses chroot; as a user, a user namespace (unshare).
    # The hooks' $1 (the rootfs) is mmdebstrap's to expand.
    # shellcheck disable=SC2016
    mmdebstrap --variant=minbase \
        --include=systemd,systemd-sysv,udev,dbus,kmod,qemu-guest-agent,linux-image-amd64,initramfs-tools,e2fsprogs \
        "${excludes[@]}" \
        --essential-hook="cp -a '$files/.' \"\$1/\"" \
        --customize-hook='chroot "$1" passwd -d root' \
        --customize-hook='rm -f "$1/etc/machine-id"; touch "$1/etc/machine-id"' \
        "$suite" "$root" >&2
}

# The ext4 root partition, filled from the rootfs directory by mkfs itself.
make_root_fs() {
    local root="$1" file="$2" mib="$3"
    mkfs.ext4 -q -F -L vmtest-root -U "$fs_uuid" -d "$root" "$file" "${mib}M"
}

# A FAT partition image holding the kernel and initramfs.
make_boot_fs() {
    local root="$1" file="$2"
    rm -f "$file"
    # -h: the partition's offset in sectors, which syslinux's boot sector uses.
    mkfs.vfat -F 32 -n VMTEST-BOOT -h "$boot_start" -C "$file" $((boot_mib * 1024)) >/dev/null
    local kernel initrd
    kernel="$(readlink -f "$root/vmlinuz")"
    initrd="$(readlink -f "$root/initrd.img")"
    mcopy -i "$file" "$kernel" ::/vmlinuz
    mcopy -i "$file" "$initrd" ::/initrd.img
}

# Writes partition images into a sparse disk file at their offsets.
write_partitions() {
    local disk="$1" boot="$2" rootfs="$3" root_start="$4"
    dd if="$boot" of="$disk" bs=1M seek=$((boot_start / 2048)) conv=notrunc,sparse status=none
    dd if="$rootfs" of="$disk" bs=1M seek=$((root_start / 2048)) conv=notrunc,sparse status=none
}

# BIOS: an MBR with syslinux's boot code, an active FAT partition with
# syslinux installed through mtools, and the ext4 root.
build_bios() {
    local root="$1" rootfs="$2" disk="$3" work="$4"
    local root_start=$((boot_start + boot_mib * 2048))
    rm -f "$disk"
    truncate -s "$disk_size" "$disk"
    printf 'label: dos\n%s,%s,c,*\n%s,,83\n' "$boot_start" $((boot_mib * 2048)) "$root_start" \
        | sfdisk -q "$disk"
    dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" bs=440 count=1 conv=notrunc status=none
    make_boot_fs "$root" "$work/boot.vfat"
    printf 'DEFAULT debian\nTIMEOUT 0\nPROMPT 0\nSERIAL 0 115200\nLABEL debian\n  LINUX /vmlinuz\n  INITRD /initrd.img\n  APPEND %s\n' \
        "$cmdline" > "$work/syslinux.cfg"
    mcopy -i "$work/boot.vfat" "$work/syslinux.cfg" ::/syslinux.cfg
    syslinux --install "$work/boot.vfat"
    write_partitions "$disk" "$work/boot.vfat" "$rootfs" "$root_start"
}

# UEFI: a GPT with an EFI system partition holding systemd-boot as the
# removable-media loader (EFI/BOOT/BOOTX64.EFI, found without NVRAM entries)
# and one loader entry, and the same ext4 root.
build_uefi() {
    local root="$1" rootfs="$2" disk="$3" work="$4"
    local root_start=$((boot_start + boot_mib * 2048))
    rm -f "$disk"
    truncate -s "$disk_size" "$disk"
    printf 'label: gpt\n%s,%s,U\n%s,,L\n' "$boot_start" $((boot_mib * 2048)) "$root_start" \
        | sfdisk -q "$disk"
    make_boot_fs "$root" "$work/esp.vfat"
    local esp="$work/esp.vfat"
    mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries
    mcopy -i "$esp" /usr/lib/systemd/boot/efi/systemd-bootx64.efi ::/EFI/BOOT/BOOTX64.EFI
    printf 'default debian.conf\ntimeout 0\n' > "$work/loader.conf"
    printf 'title Debian\nlinux /vmlinuz\ninitrd /initrd.img\noptions %s\n' "$cmdline" > "$work/debian.conf"
    mcopy -i "$esp" "$work/loader.conf" ::/loader/loader.conf
    mcopy -i "$esp" "$work/debian.conf" ::/loader/entries/debian.conf
    write_partitions "$disk" "$esp" "$rootfs" "$root_start"
}

build_all() {
    local dest="$1"
    work="$(mktemp -d)"
    # --one-file-system: should mmdebstrap die with /proc mounted in the
    # rootfs, the host's files are not touched.
    trap 'rm -rf --one-file-system "$work"' EXIT
    mkdir -p "$dest"
    local started=$SECONDS
    log "bootstrapping Debian $suite into $work/root"
    build_rootfs "$work/root" "$work/files"
    log "rootfs done after $((SECONDS - started)) s ($(du -sm "$work/root" | cut -f1) MiB)"
    # The root partition fills the disk after the boot partition, less 1 MiB
    # for GPT's backup header.
    local disk_mib=$(( $(numfmt --from=iec "$disk_size") / 1048576 ))
    local root_mib=$((disk_mib - 1 - boot_mib - 1))
    make_root_fs "$work/root" "$work/root.ext4" "$root_mib"
    log "ext4 root done after $((SECONDS - started)) s"
    build_bios "$work/root" "$work/root.ext4" "$dest/debian-bios.raw" "$work"
    build_uefi "$work/root" "$work/root.ext4" "$work/debian-uefi.raw" "$work"
    qemu-img convert -O qcow2 "$work/debian-uefi.raw" "$dest/debian-uefi.qcow2"
    cat "$work/root/etc/os-release" > "$dest/os-release"
    log "images done after $((SECONDS - started)) s"
}

apt_install mmdebstrap mtools dosfstools syslinux syslinux-common systemd-boot-efi fdisk \
    e2fsprogs ovmf qemu-utils

if [ ! -f "$out/debian-uefi.qcow2" ]; then
    rm -rf "$out.tmp"
    build_all "$out.tmp"
    rm -rf "$out"
    mv "$out.tmp" "$out"
fi
log "images at $out"
ln -sfn "$out" "$asset_dir/images"
