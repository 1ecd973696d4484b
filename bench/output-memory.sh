#!/usr/bin/env bash
# Measures vmtest's peak memory while a guest writes far more output than a
# slow reader takes: the relay must hold the guest back, not buffer.
#
#   bench/output-memory.sh [KERNEL] [SIZE] [DELAY]
#
# The guest runs `head -c SIZE /dev/zero` (default 1G) in a kernel target;
# vmtest's stdout goes to a reader that sleeps DELAY seconds (default 0.01)
# after each read of at most 64 KiB (so at most 6.4 MB/s). Prints the bytes read, the time taken
# and vmtest's peak RSS (VmHWM from /proc, vmtest's own: not QEMU's, which
# /usr/bin/time would fold in). The bar (issue 12) is 64 MB. KERNEL defaults
# to the test kernel that tests/assets/build.sh builds.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kernel="${1:-${VMTEST_ASSETS:-$HOME/.cache/vmtest-assets/current}/kernel/bzImage}"
size="${2:-1G}"
delay="${3:-0.01}"
[ -f "$kernel" ] || { echo "no kernel at $kernel: run tests/assets/build.sh" >&2; exit 1; }

cargo build --release --quiet --manifest-path "$here/Cargo.toml"
vmtest="$here/target/release/vmtest"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkfifo "$work/out"

# The slow reader: counts what it reads, pausing after every read.
python3 -c '
import sys, time
delay, n = float(sys.argv[1]), 0
while True:
    chunk = sys.stdin.buffer.read1(65536)
    if not chunk:
        break
    n += len(chunk)
    time.sleep(delay)
print(n)
' "$delay" < "$work/out" > "$work/read" &
reader=$!

start=$(date +%s.%N)
(cd "$work" && exec "$vmtest" -k "$kernel" "head -c $size /dev/zero") > "$work/out" 2> "$work/stderr" &
pid=$!
peak=0
while kill -0 "$pid" 2>/dev/null; do
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$hwm" ] && [ "$hwm" -gt "$peak" ] && peak=$hwm
    sleep 0.2
done
status=0
wait "$pid" || status=$?
wait "$reader"
end=$(date +%s.%N)

echo "guest output: head -c $size /dev/zero; reader pauses ${delay}s per read of up to 64 KiB"
echo "vmtest exit status: $status"
echo "bytes read by the reader (with vmtest's header and verdict): $(cat "$work/read")"
printf 'time: %.1f s\n' "$(echo "$end - $start" | bc)"
echo "vmtest peak RSS (VmHWM): $((peak / 1024)) MiB ($peak KiB)"
[ "$status" -eq 0 ] || { echo "vmtest failed:" >&2; cat "$work/stderr" >&2; exit 1; }
