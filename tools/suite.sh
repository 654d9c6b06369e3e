#!/bin/sh
# The whole test run of `make test`: lint, the specs, the specs again under
# ASan/UBSan and under valgrind, and the fuzz smoke.  Every stage runs even
# when one fails; the last line adds up "N passed, N failed" over all of them
# (lint and each fuzz target count as one test each).
set -u
cd "$(dirname "$0")/.."
passed=0
failed=0
failed_stages=""

count_line() {
    sed -n 's/^\([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed.*$/\1 \2/p' "$1" | tail -n 1
}

# A stage with no test counts of its own is one test, judged by its exit code.
# Each stage says how long it took: the whole run must stay under 10 minutes.
stage_start() {
    echo "== $1"
    started=$(date +%s)
}

stage_end() {
    echo "   ($1: $(( $(date +%s) - started )) s)"
}

# Starts a stage in the background, its output to a file that ends with its
# time and "exit N" (read back through run_check or run_specs).
in_background() {
    bg_name=$1
    bg_log=$2
    shift 2
    (
        bg_started=$(date +%s)
        "$@" >"$bg_log" 2>&1
        bg_rc=$?
        echo "   ($bg_name: $(( $(date +%s) - bg_started )) s)" >>"$bg_log"
        echo "exit $bg_rc" >>"$bg_log"
    ) &
}

run_check() {
    name=$1
    shift
    stage_start "$name"
    if "$@"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failed_stages="$failed_stages $name"
    fi
    stage_end "$name"
}

run_specs() {
    name=$1
    shift
    stage_start "$name"
    log=$(mktemp)
    "$@" >"$log" 2>&1
    rc=$?
    cat "$log"
    stage_end "$name"
    counts=$(count_line "$log")
    rm -f "$log"
    if [ -z "$counts" ]; then
        failed=$((failed + 1))
        failed_stages="$failed_stages $name"
        return
    fi
    set -- $counts
    passed=$((passed + $1))
    failed=$((failed + $2))
    if [ "$2" -gt 0 ] || [ "$rc" -ne 0 ]; then
        failed_stages="$failed_stages $name"
        [ "$2" -eq 0 ] && failed=$((failed + 1))
    fi
}

# Both builds first: stages that run side by side must not build the same file.
make -s LUA=lua5.4 build >/dev/null && make -s LUA=luajit build >/dev/null
# The long paced specs (#paced: 300 calls at 30 per 3 s, mostly asleep) run
# beside the first stage.
paced_log=$(mktemp)
in_background "paced specs" "$paced_log" sh spec/run.sh --tags=paced
paced_pid=$!
run_specs "specs (lua5.4)" make -s LUA=lua5.4 test-specs SPEC_ARGS=--exclude-tags=paced,fleet,prism,oom
wait "$paced_pid"
run_specs "paced specs (ran beside the lua5.4 stage)" sh -c 'cat "$1"; tail -n 1 "$1" | grep -qx "exit 0"' sh "$paced_log"
# The fleet specs (3 nginx, Redis, paced for half a minute: mostly idle)
# run beside the LuaJIT stage.
fleet_log=$(mktemp)
in_background "fleet specs" "$fleet_log" sh spec/run.sh --tags=fleet
fleet_pid=$!
# Slow specs (big bodies, pacing) run in the first stage only, and so do the
# nginx specs: nginx always loads the LuaJIT build, so the first stage has
# already run them on LuaJIT.
run_specs "specs (luajit)" make -s LUA=luajit test-specs SPEC_ARGS=--exclude-tags=slow,prism,nginx,oom,fleet
wait "$fleet_pid"
run_specs "fleet specs (ran beside the LuaJIT stage)" sh -c 'cat "$1"; tail -n 1 "$1" | grep -qx "exit 0"' sh "$fleet_log"
run_specs "MijnKlantportaal calls through Prism (OpenAPI)" make -s test-prism
# The fuzzers are bounded by time, not by work: they run beside the ASan
# stage, and lint beside the valgrind one (both single-threaded).
fuzz_log=$(mktemp)
in_background fuzz "$fuzz_log" make -s fuzz FUZZ_TIME=20
fuzz_pid=$!
run_specs "specs under ASan/UBSan" make -s test-asan
wait "$fuzz_pid"
run_check "fuzz (ran beside the ASan stage)" sh -c 'cat "$1"; tail -n 1 "$1" | grep -qx "exit 0"' sh "$fuzz_log"
lint_log=$(mktemp)
in_background lint "$lint_log" make -s lint
lint_pid=$!
run_specs "specs under valgrind" make -s test-valgrind
wait "$lint_pid"
run_check "lint (ran beside the valgrind stage)" sh -c 'cat "$1"; tail -n 1 "$1" | grep -qx "exit 0"' sh "$lint_log"
run_specs "allocation failures during transfers (ASan)" make -s test-oom
rm -f "$paced_log" "$fleet_log" "$fuzz_log" "$lint_log"

echo
[ -n "$failed_stages" ] && echo "failed stages:$failed_stages"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
