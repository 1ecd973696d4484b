#!/usr/bin/env bash
# Measures how much slower file-heavy work is on vmtest's shared directories
# than on a copy of the same files in guest RAM (tmpfs), in one VM per
# target kind, alternating the two places so machine noise hits both alike.
#
#   bench/share-ratio.sh [KERNEL] [ROUNDS] [IMAGE]
#
# Kernel target (`vmtest -k KERNEL`, the root shared from the host):
#   git      `git status` in a repository of 1,500 small files
#   python   `/usr/bin/python3 -S -B -c 'import json, email.parser, http.client,
#            unittest, asyncio'` from the standard library
#   find     `find` over the standard library (without its test suite)
# Image target (IMAGE, default the test images' debian-bios.raw), the same
# files in the project directory at /mnt/vmtest (no git or Python there):
#   ls       `ls -lR` over the repository
#   read     `cat` of every .py file at the top of the standard library
#   find     as above
# Each workload runs once untimed in each place (the cold run, printed),
# then ROUNDS times alternating share and RAM; prints the medians and the
# ratio share/RAM. SHARE_RATIO_TARGETS picks the targets (default "kernel
# image").
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
assets="${VMTEST_ASSETS:-$HOME/.cache/vmtest-assets/current}"
kernel="${1:-$assets/kernel/bzImage}"
rounds="${2:-3}"
image="${3:-$assets/images/debian-bios.raw}"
[ -f "$kernel" ] || { echo "no kernel at $kernel: run tests/assets/build.sh" >&2; exit 1; }
[ -f "$image" ] || { echo "no image at $image: run tests/assets/build.sh" >&2; exit 1; }
python="$(cd /usr/lib && echo python3.*[0-9] | awk '{print $NF}')"
[ -d "/usr/lib/$python" ] || { echo "no Python standard library under /usr/lib" >&2; exit 1; }

cargo build --release --quiet --manifest-path "$here/Cargo.toml"
vmtest="$here/target/release/vmtest"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
project="$work/project"
mkdir -p "$project"

# The repository: 30 directories of 50 small files, committed.
repo="$project/repo"
mkdir -p "$repo"
for d in $(seq 30); do
    mkdir "$repo/d$d"
    for f in $(seq 50); do echo "file $d/$f" > "$repo/d$d/f$f.txt"; done
done
git -C "$repo" init -q
git -C "$repo" add .
git -C "$repo" -c user.name=bench -c user.email=bench@example.com commit -q -m files

# The image target's copy of the standard library (the kernel target reads
# the host's own through the shared root).
mkdir -p "$project/py/lib"
tar -C /usr/lib --exclude="$python/test" -cf - "$python" | tar -C "$project/py/lib" -xf -

# The guest side: copies the files into a tmpfs, then times each workload
# in both places. Prints `cold|warm NAME share|ram START END` lines.
cat > "$project/guest.sh" <<'EOF'
set -eu
kind="$1" rounds="$2" python="$3" share="$4"
ram=/run/share-ratio
mkdir -p "$ram"
mount -t tmpfs -o size=2G tmpfs "$ram"
cp -a "$share/repo" "$ram/repo"
mkdir -p "$ram/py/lib"
if [ "$kind" = kernel ]; then pyshare=/usr; else pyshare="$share/py"; fi
tar -C "$pyshare/lib" --exclude="$python/test" -cf - "$python" | tar -C "$ram/py/lib" -xf -
# git refreshes the copy's index once (new inodes and times).
git -C "$ram/repo" status >/dev/null 2>&1 || true

w_git() { git -C "$1/repo" status --porcelain; }
w_python() {
    if [ "$1" = "$share" ]; then home=/usr; else home="$1/py"; fi
    PYTHONHOME="$home" /usr/bin/python3 -S -B -c 'import json, email.parser, http.client, unittest, asyncio'
}
w_find() { find "$2/lib/$python" -path "*/$python/test" -prune -o -print; }
w_ls() { ls -lR "$1/repo"; }
w_read() { find "$2/lib/$python" -maxdepth 1 -name '*.py' -type f -exec cat {} +; }

if [ "$kind" = kernel ]; then works="git python find"; else works="ls read find"; fi
run() {
    local label="$1" work="$2" where="$3" base pybase start end
    if [ "$where" = share ]; then base="$share" pybase="$pyshare"; else base="$ram" pybase="$ram/py"; fi
    start=$EPOCHREALTIME
    "w_$work" "$base" "$pybase" >/dev/null 2>&1 || echo "failed: $work in $where" >&2
    end=$EPOCHREALTIME
    echo "$label $work $where $start $end"
}
for work in $works; do
    run cold "$work" share
    run cold "$work" ram
done
for _ in $(seq "$rounds"); do
    for work in $works; do
        run warm "$work" share
        run warm "$work" ram
    done
done
umount "$ram"
EOF

# Medians and ratios of the `warm` lines, with the cold runs beside them.
summarize() {
    local out="$1" name share ram cs cr
    printf '%-8s %10s %10s %7s   %10s %10s %7s\n' work share ram ratio "cold share" "cold ram" ratio
    awk '$1 == "warm" {print $2}' "$out" | awk '!seen[$0]++' > "$work/names"
    while read -r name; do
        share=$(awk -v w="$name" '$1 == "warm" && $2 == w && $3 == "share" {print $5 - $4}' "$out" | median)
        ram=$(awk -v w="$name" '$1 == "warm" && $2 == w && $3 == "ram" {print $5 - $4}' "$out" | median)
        cs=$(awk -v w="$name" '$1 == "cold" && $2 == w && $3 == "share" {print $5 - $4}' "$out")
        cr=$(awk -v w="$name" '$1 == "cold" && $2 == w && $3 == "ram" {print $5 - $4}' "$out")
        printf '%-8s %9.2fs %9.2fs %6.2fx   %9.2fs %9.2fs %6.2fx\n' "$name" "$share" "$ram" \
            "$(echo "$share / $ram" | bc -l)" "$cs" "$cr" "$(echo "$cs / $cr" | bc -l)"
    done < "$work/names"
}

. "$here/bench/lib.sh"

# Both targets in one config; SHARE_RATIO_VM adds lines to each [target.vm]
# (e.g. `share = "9p"`), SHARE_RATIO_KERNEL to the kernel target's table.
cat > "$project/vmtest.toml" <<EOF
[[target]]
name = "kernel"
kernel = "$kernel"
command = "bash $project/guest.sh kernel $rounds $python $project"
${SHARE_RATIO_KERNEL:-}
[target.vm]
${SHARE_RATIO_VM:-}

[[target]]
name = "image"
image = "$image"
command = "bash /mnt/vmtest/guest.sh image $rounds $python /mnt/vmtest"
[target.vm]
${SHARE_RATIO_VM:-}
EOF

for target in ${SHARE_RATIO_TARGETS:-kernel image}; do
    if [ "$target" = kernel ]; then
        echo "kernel target: $kernel, the shared root, $rounds rounds"
    else
        echo "image target: $image, /mnt/vmtest, $rounds rounds"
    fi
    (cd "$project" && "$vmtest" -f "^$target\$") > "$work/$target.out" \
        || { cat "$work/$target.out"; exit 1; }
    summarize "$work/$target.out"
done
