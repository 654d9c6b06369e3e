#!/bin/sh
# tools/fuzz.sh SECONDS TARGET...: runs each libFuzzer target from a copy of
# its seed corpus and prints its executions per second.
set -u
seconds=$1
shift
status=0
for target in "$@"; do
    work=$(mktemp -d)
    cp fuzz/corpus/"$target"/* "$work"/
    log="$work/log"
    if build/fuzz/fuzz_"$target" -max_total_time="$seconds" -print_final_stats=1 "$work" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "fuzz $target: ok, $runs runs in ${seconds}s ($((runs / seconds)) exec/s)"
    else
        echo "fuzz $target: FAILED"
        tail -n 40 "$log"
        status=1
    fi
    rm -rf "$work"
done
exit $status
