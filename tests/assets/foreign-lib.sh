# Shared steps of the foreign-architecture asset scripts (build-arm64.sh,
# build-s390x.sh), sourced by them; their cache keys hash this file too.
# Each script sets, before sourcing:
#   name         the asset's name: arm64, s390x (also Debian's arch name)
#   kernel_arch  the kernel's ARCH: arm64, s390
#   cross        the cross-compiler prefix, e.g. aarch64-linux-gnu- (its
#                Debian packages are gcc- and binutils-aarch64-linux-gnu)
#   qemu_package the Debian package with qemu-system-<arch>
#   image        the kernel image below arch/$kernel_arch/boot: Image, bzImage
#   elf_machine  e_machine of the arch's ELF files as two bytes in file
#                order: "183 0" (aarch64), "0 22" (s390x, big-endian)
#   loader       the dynamic loader's path in the rootfs
#   extra_packages  more Debian packages for the rootfs (may be empty)
# and is called as `SCRIPT CACHE_ROOT ASSET_DIR`. It writes
# CACHE_ROOT/$name-<hash>/{rootfs,kernel/{$image,release,config}} and links
# it as ASSET_DIR/$name.
#
# The rootfs: Debian bookworm with bash, coreutils, util-linux (mount) and
# qemu-guest-agent, made with mmdebstrap's extract variant: packages are
# unpacked and no maintainer script runs, so nothing foreign executes on the
# host. The /usr merge and the directories and files those scripts would
# create are made here.
# Scripts may add packages in `extra_packages` (arm64 adds Debian's own
# kernel, linux-image-arm64, whose drivers are modules, and busybox-static,
# which vmtest's initramfs for a foreign modular kernel runs).
# The kernel: linux-source-6.1 cross-compiled from tinyconfig plus
# kernel-$name.config, with virtio and 9p built in. About 6 minutes on 2 cores.
# docs/architectures.md explains each step as a recipe.

cache_root="$1"
asset_dir="$2"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
script="$here/build-$name.sh"
fragment="$here/kernel-$name.config"
log_name="build-$name.sh"
# shellcheck source=lib.sh
source "$here/lib.sh"
out="$cache_root/$name-$(key_functions="build_kernel build_kernel_in" \
    asset_key "$script" "$here/foreign-lib.sh" "$fragment")"

# Fails unless $1 is an ELF file of the guest's architecture.
require_guest_elf() {
    local file="$1" magic machine
    [ -f "$file" ] || { log "missing $file"; return 1; }
    magic="$(head -c 4 "$file" | od -An -c | tr -d ' ')"
    machine="$(od -An -tu1 -j18 -N2 "$file" | xargs)"
    [ "$magic" = "177ELF" ] && [ "$machine" = "$elf_machine" ] \
        || { log "$file is not an ELF file for $name (e_machine bytes: $machine)"; return 1; }
}

build_rootfs() {
    local root="$1" include
    include="base-files,base-passwd,bash,coreutils,dash,util-linux,mount,qemu-guest-agent"
    [ -n "${extra_packages:-}" ] && include="$include,$extra_packages"
    mmdebstrap --arch "$name" --variant=extract --include="$include" bookworm "$root" >&2
    # bookworm merges /usr in usr-is-merged's maintainer script, which the
    # extract variant does not run: move /bin, /sbin and /lib into /usr and
    # leave links, as the merge would.
    local dir
    for dir in bin sbin lib; do
        [ -L "$root/$dir" ] && continue
        mkdir -p "$root/usr/$dir"
        if [ -e "$root/$dir" ]; then
            cp -a --no-clobber "$root/$dir/." "$root/usr/$dir/"
            rm -rf "${root:?}/$dir"
        fi
        ln -s "usr/$dir" "$root/$dir"
    done
    # What base-files' and base-passwd's maintainer scripts would create.
    mkdir -p "$root"/{tmp,proc,sys,dev,run,mnt,root,etc}
    chmod 1777 "$root/tmp"
    [ -e "$root/etc/passwd" ] || cp "$root/usr/share/base-passwd/passwd.master" "$root/etc/passwd"
    [ -e "$root/etc/group" ] || cp "$root/usr/share/base-passwd/group.master" "$root/etc/group"
    # Check what vmtest and the tests rely on.
    local path
    for path in bin sbin lib; do
        [ "$(readlink "$root/$path")" = "usr/$path" ] || { log "$root/$path is not a link to usr/$path"; return 1; }
    done
    for path in tmp proc sys dev run mnt; do
        [ -d "$root/$path" ] || { log "$root/$path is not a directory"; return 1; }
    done
    for path in usr/bin/bash usr/bin/sh usr/bin/mount usr/bin/mkdir usr/bin/ln usr/bin/cat usr/sbin/qemu-ga \
        "usr/lib/${cross%-}/libglib-2.0.so.0" "$loader"; do
        require_guest_elf "$(realpath "$root/$path")"
    done
}

# Builds what is missing from the cache and links the result.
build_foreign_assets() {
    apt_install mmdebstrap "$qemu_package" "gcc-${cross%-}" "binutils-${cross%-}" \
        linux-source-6.1 make bc flex bison libssl-dev libelf-dev xz-utils
    mkdir -p "$out"
    if [ ! -f "$out/rootfs/usr/sbin/qemu-ga" ]; then
        log "making the $name rootfs"
        rm -rf "$out/rootfs.tmp" "$out/rootfs"
        build_rootfs "$out/rootfs.tmp"
        mv "$out/rootfs.tmp" "$out/rootfs"
    fi
    if [ ! -f "$out/kernel/$image" ]; then
        rm -rf "$out/kernel.tmp"
        build_kernel 6.1 "$kernel_arch" "$cross" "$image" "$out/kernel.tmp" "$fragment"
        mv "$out/kernel.tmp" "$out/kernel"
    fi
    log "$name kernel $(cat "$out/kernel/release") at $out/kernel/$image, rootfs at $out/rootfs"
    ln -sfn "$out" "$asset_dir/$name"
}
