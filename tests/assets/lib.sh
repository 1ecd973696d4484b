# Shared steps of the asset scripts (build.sh and build-*.sh), sourced by
# them; every asset's cache key hashes this file too. Functions only: no
# traps, no state that outlives a call (a RETURN trap set in a function stays
# set and fires again when a later function returns, so temporary
# directories are removed by explicit calls instead).
#
# A sourcing script sets `log_name` (the prefix of its log lines) first.
# Cache keys hash what shapes an asset (its script, its config fragments,
# and for kernels the text of the build functions below), not this whole
# file, so a change to the install helpers rebuilds nothing.

log() { echo "${log_name:-assets}: $*" >&2; }

# `sudo` when not root: the scripts install Debian packages.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# apt-get update, once per run of build.sh (the flag file lives in its
# private directory) or once per script when run alone.
apt_update_once() {
    local flag="${VMTEST_ASSETS_APT_FLAG:-}"
    if [ -n "$flag" ] && [ -e "$flag" ]; then return 0; fi
    as_root apt-get update -qq
    if [ -n "$flag" ]; then touch "$flag"; fi
}

# Installs the Debian packages that are not installed yet. Debian's
# qemu-system-* wants Debian's own qemu-utils and qemu-block-extra: a newer
# qemu-utils (from backports) would be removed by the install, so they are
# pinned to the version of qemu-system-x86 and replaced when they differ.
apt_install() {
    local missing=() pkg qver=""
    for pkg in "$@"; do
        case "$pkg" in
            qemu-utils|qemu-block-extra)
                [ -n "$qver" ] || qver="$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')"
                [ "$(dpkg-query -W -f='${Status} ${Version}' "$pkg" 2>/dev/null)" = "install ok installed $qver" ] \
                    || missing+=("$pkg")
                continue ;;
        esac
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    apt_update_once
    local pinned=()
    qver="$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')"
    for pkg in "${missing[@]}"; do
        case "$pkg" in
            qemu-utils|qemu-block-extra) pinned+=("$pkg=$qver") ;;
            *) pinned+=("$pkg") ;;
        esac
    done
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
        --allow-downgrades "${pinned[@]}" >&2
}

# The cache key of an asset: a hash of the files that define it, and of the
# text of `key_functions` (functions of this file that shape it).
asset_key() {
    local functions=()
    read -ra functions <<< "${key_functions:-}"
    { cat "$@"; [ ${#functions[@]} -eq 0 ] || declare -f "${functions[@]}"; } | sha256sum | cut -c1-16
}

# build_kernel VERSION ARCH CROSS IMAGE DEST FRAGMENT...
# Builds linux-source-VERSION (Debian's package) from tinyconfig plus the
# fragments, for the kernel ARCH (x86, arm64, s390) with the cross-compiler
# prefix CROSS (empty for the host), and writes DEST/{IMAGE,vmlinux,release,
# config}. Fails if a fragment line did not survive olddefconfig (the kernel
# would silently lack something the tests rely on).
build_kernel() {
    local version="$1" arch="$2" cross="$3" image="$4" dest="$5"
    shift 5
    local work rc=0
    work="$(mktemp -d)"
    build_kernel_in "$work" "$version" "$arch" "$cross" "$image" "$dest" "$@" || rc=$?
    rm -rf "$work"
    return "$rc"
}

build_kernel_in() {
    local work="$1" version="$2" arch="$3" cross="$4" image="$5" dest="$6"
    shift 6
    log "building linux-source-$version for $arch from tinyconfig + $(basename -a "$@" | xargs) in $work"
    tar -C "$work" -xf "/usr/src/linux-source-$version.tar.xz"
    local src="$work/linux-source-$version"
    local make=(make -C "$src" -s ARCH="$arch")
    [ -n "$cross" ] && make+=(CROSS_COMPILE="$cross")
    "${make[@]}" tinyconfig >&2
    "$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$@" >&2
    "${make[@]}" olddefconfig >&2
    local line fragment lost=0
    for fragment in "$@"; do
        while IFS= read -r line; do
            case "$line" in ''|'#'*) continue ;; esac
            grep -qxF "$line" "$src/.config" || { log "config line lost: $line (from $fragment)"; lost=1; }
        done < "$fragment"
    done
    [ "$lost" -eq 0 ] || return 1
    "${make[@]}" -j"$(nproc)" "$image" >&2
    mkdir -p "$dest"
    cp "$src/arch/$arch/boot/$image" "$dest/$image"
    cp "$src/vmlinux" "$dest/vmlinux"
    "${make[@]}" kernelrelease > "$dest/release"
    cp "$src/.config" "$dest/config"
}

# cached_kernel NAME VERSION ARCH CROSS IMAGE ASSET_DIR FRAGMENT...
# The kernel NAME from the cache, or built into it: CACHE_ROOT/NAME-<key of
# the arguments, the fragments and the build functions>, linked as
# ASSET_DIR/NAME.
cached_kernel() {
    local name="$1" version="$2" arch="$3" cross="$4" image="$5" asset_dir="$6"
    shift 6
    local out key
    key="$(echo "$name $version $arch $cross $image" \
        | key_functions="build_kernel build_kernel_in" asset_key - "$@")"
    out="$cache_root/$name-$key"
    if [ ! -f "$out/$image" ]; then
        rm -rf "$out.tmp"
        build_kernel "$version" "$arch" "$cross" "$image" "$out.tmp" "$@"
        rm -rf "$out"
        mv "$out.tmp" "$out"
    fi
    log "$name: kernel $(cat "$out/release") at $out/$image"
    ln -sfn "$out" "$asset_dir/$name"
}
