# Shared by the bench/*-ratio.sh scripts, which set $kernel, $vmtest, $work,
# $runs and $accel and define `bare` (one bare QEMU boot of $kernel) before
# calling `compare`.

run_vmtest() {
    "$vmtest" -k "$kernel" true >/dev/null 2>&1
}

# Seconds taken by a command.
elapsed() {
    local start end
    start=$(date +%s.%N)
    "$@"
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}

median() {
    sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'
}

# Alternates `bare` and `run_vmtest` $runs times; prints each run, the
# medians and their ratio.
compare() {
    echo "kernel: $kernel ($accel), $runs runs each, alternating"
    : > "$work/bare"
    : > "$work/vmtest"
    local i b v mb mv
    for i in $(seq "$runs"); do
        b=$(elapsed bare)
        v=$(elapsed run_vmtest)
        echo "$b" >> "$work/bare"
        echo "$v" >> "$work/vmtest"
        printf 'run %2d: bare %.2fs  vmtest %.2fs\n' "$i" "$b" "$v"
    done
    mb=$(median < "$work/bare")
    mv=$(median < "$work/vmtest")
    printf 'median: bare %.2fs  vmtest %.2fs  ratio %.2f\n' "$mb" "$mv" "$(echo "$mv / $mb" | bc -l)"
}
