#!/usr/bin/env bash
# Measures the warm start of image targets: a cold run (`vmtest --cold`,
# which boots the image) against a warm run (which restores the state the
# first run saved), alternating the two in one run so machine noise hits
# both alike, for the BIOS and the UEFI test image.
#
#   bench/image-warm.sh [RUNS]
#
# Both run `true` with the test images from tests/assets/build.sh and the
# tests' machine (1 vCPU, 4G), with the release build and a private cache of
# saved states. Prints each run (wall time, and vmtest's boot phase: QEMU's
# start to the guest agent's answer), the medians and the warm/cold ratio.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
images="${VMTEST_ASSETS:-$HOME/.cache/vmtest-assets/current}/images"
runs="${1:-5}"
for image in debian-bios.raw debian-uefi.qcow2; do
    [ -f "$images/$image" ] || { echo "no $image in $images: run tests/assets/build.sh" >&2; exit 1; }
done

cargo build --release --quiet --manifest-path "$here/Cargo.toml"
vmtest="$here/target/release/vmtest"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export VMTEST_WARM_DIR="$work/warm" VMTEST_NO_UI=1

. "$here/bench/lib.sh"

# A project directory with one image target; $3 is extra target keys.
project() {
    local name="$1" image="$2" extra="$3"
    mkdir -p "$work/$name"
    printf '[[target]]\nname = "%s"\nimage = "%s"\ncommand = "true"\n%s\n[target.vm]\nnum_cpus = 1\n' \
        "$name" "$image" "$extra" > "$work/$name/vmtest.toml"
}

# Runs vmtest in project $1 (more flags after it); prints the wall time and
# the boot phase from the verdict line, and fails if the target did not pass.
timed_run() {
    local dir="$work/$1" start end boot
    shift
    start=$(date +%s.%N)
    (cd "$dir" && "$vmtest" "$@") > "$work/out" 2>&1 || { cat "$work/out" >&2; return 1; }
    end=$(date +%s.%N)
    boot=$(sed -n 's/^--- PASS .*boot \([0-9.]*\)s.*/\1/p' "$work/out")
    echo "$(echo "$end - $start" | bc) ${boot:-0}"
}

# Alternates cold and warm runs of project $1; prints each run, the medians
# and the ratio.
compare_warm() {
    local name="$1" i cold warm cold_wall cold_boot warm_wall warm_boot
    echo "$name: $runs runs each, alternating"
    timed_run "$name" > /dev/null # the first run saves the state
    : > "$work/cold"
    : > "$work/warm-times"
    for i in $(seq "$runs"); do
        cold=$(timed_run "$name" --cold)
        warm=$(timed_run "$name")
        echo "$cold" >> "$work/cold"
        echo "$warm" >> "$work/warm-times"
        read -r cold_wall cold_boot <<< "$cold"
        read -r warm_wall warm_boot <<< "$warm"
        printf 'run %2d: cold %.2fs (boot %.2fs)  warm %.2fs (boot %.2fs)\n' \
            "$i" "$cold_wall" "$cold_boot" "$warm_wall" "$warm_boot"
    done
    local mc mw mbc mbw
    mc=$(cut -d' ' -f1 < "$work/cold" | median)
    mw=$(cut -d' ' -f1 < "$work/warm-times" | median)
    mbc=$(cut -d' ' -f2 < "$work/cold" | median)
    mbw=$(cut -d' ' -f2 < "$work/warm-times" | median)
    printf 'median: cold %.2fs (boot %.2fs)  warm %.2fs (boot %.2fs)  warm/cold %.2f\n' \
        "$mc" "$mbc" "$mw" "$mbw" "$(echo "$mw / $mc" | bc -l)"
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
project bios "$images/debian-bios.raw" ""
project uefi "$images/debian-uefi.qcow2" "uefi = true"
compare_warm bios
compare_warm uefi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
