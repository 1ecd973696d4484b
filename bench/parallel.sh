#!/usr/bin/env bash
# Measures what running targets at once buys: 8 kernel targets running
# `true` (one vCPU, 512 MiB each) with `-j 2` against `-j 1`, alternating the
# two in one run so machine noise hits both alike.
#
#   bench/parallel.sh [KERNEL] [RUNS] [JOBS]
#
# Prints each run, the medians and the ratio (-j JOBS wall time / -j 1 wall
# time). KERNEL defaults to the test kernel that tests/assets/build.sh builds.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kernel="${1:-${VMTEST_ASSETS:-$HOME/.cache/vmtest-assets/current}/kernel/bzImage}"
runs="${2:-5}"
jobs="${3:-2}"
[ -f "$kernel" ] || { echo "no kernel at $kernel: run tests/assets/build.sh" >&2; exit 1; }

cargo build --release --quiet --manifest-path "$here/Cargo.toml"
vmtest="$here/target/release/vmtest"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for i in $(seq 8); do
    printf '[[target]]\nname = "t%s"\nkernel = "%s"\ncommand = "true"\n[target.vm]\nnum_cpus = 1\nmemory = "512M"\n\n' \
        "$i" "$kernel"
done > "$work/vmtest.toml"

. "$here/bench/lib.sh"

run_jobs() {
    "$vmtest" -c "$work/vmtest.toml" -j "$1" >/dev/null 2>&1
}

echo "8 targets of $kernel, $runs runs each, alternating -j 1 and -j $jobs"
: > "$work/one"
: > "$work/many"
for i in $(seq "$runs"); do
    one=$(elapsed run_jobs 1)
    many=$(elapsed run_jobs "$jobs")
    echo "$one" >> "$work/one"
    echo "$many" >> "$work/many"
    printf 'run %2d: -j 1 %.2fs  -j %s %.2fs\n' "$i" "$one" "$jobs" "$many"
done
m1=$(median < "$work/one")
mj=$(median < "$work/many")
printf 'median: -j 1 %.2fs  -j %s %.2fs  ratio %.2f\n' "$m1" "$jobs" "$mj" "$(echo "$mj / $m1" | bc -l)"
