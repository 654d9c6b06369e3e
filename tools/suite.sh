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
# Each stage says how long it took: the whole run must stay under 15 minutes.
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

# A stage's #waits specs (pacing, stalls, timeouts, Retry-After: mostly
# asleep) run in the background beside the rest of the stage, so that their
# waiting costs no wall time; finish_waits reads them back as a stage of
# their own.  start_waits NAME COMMAND...
start_waits() {
    w_name=$1
    shift
    w_log=$(mktemp)
    in_background "$w_name" "$w_log" "$@"
    w_pid=$!
}

finish_waits() {
    wait "$w_pid"
    run_specs "$w_name (ran beside the stage above)" sh -c 'cat "$1"; tail -n 1 "$1" | grep -qx "exit 0"' sh "$w_log"
    rm -f "$w_log"
}

# Both builds first: stages that run side by side must not build the same file.
make -s LUA=lua5.4 build >/dev/null && make -s LUA=luajit build >/dev/null
# Specs that mostly wait (#waits: pacing, stalls, timeouts, the 300-call
# runs) run beside the rest of the first stage, on Lua 5.4 too.
# The fleet specs (3 nginx, Redis, paced for half a minute: mostly idle)
# run beside the first two stages.
fleet_log=$(mktemp)
in_background "fleet specs" "$fleet_log" sh spec/run.sh --tags=fleet
fleet_pid=$!
start_waits "waiting specs (lua5.4)" sh spec/run.sh --tags=waits --exclude-tags=fleet,prism,oom
run_specs "specs (lua5.4)" make -s LUA=lua5.4 test-specs SPEC_ARGS=--exclude-tags=waits,fleet,prism,oom
finish_waits
# Slow specs (big bodies, pacing) run in the first stage only, and so do the
# nginx specs: nginx always loads the LuaJIT build, so the first stage has
# already run them on LuaJIT.
start_waits "waiting specs (luajit)" env LUA=luajit sh spec/run.sh --tags=waits --exclude-tags=slow,prism,nginx,oom,fleet
run_specs "specs (luajit)" make -s LUA=luajit test-specs SPEC_ARGS=--exclude-tags=waits,slow,prism,nginx,oom,fleet
finish_waits
wait "$fleet_pid"
run_specs "fleet specs (ran beside the stages above)" sh -c 'cat "$1"; tail -n 1 "$1" | grep -qx "exit 0"' sh "$fleet_log"
run_specs "MijnKlantportaal calls through Prism (OpenAPI)" make -s test-prism
make -s build-asan >/dev/null
start_waits "waiting specs under ASan/UBSan" make -s test-asan \
    "ASAN_ARGS=--tags=waits --exclude-tags=toolchain,soak,nginx,slow,prism,oom"
run_specs "specs under ASan/UBSan" make -s test-asan ASAN_ARGS=--exclude-tags=waits,toolchain,soak,nginx,slow,prism,oom
finish_waits
# lint and the fuzzers (one process each) run beside valgrind (one process)
checks_log=$(mktemp)
in_background "lint and fuzz" "$checks_log" sh -c 'status=0
    make -s lint || { echo "lint failed"; status=1; }
    make -s fuzz FUZZ_TIME=20 || { echo "fuzz failed"; status=1; }
    exit $status'
checks_pid=$!
# valgrind leaves the #waits specs to ASan: under valgrind they are no
# longer asleep, and ASan has judged the same paths of the core
run_specs "specs under valgrind" make -s test-valgrind VALGRIND_ARGS=--exclude-tags=waits,toolchain,nginx,slow,prism,oom,children
run_specs "allocation failures during transfers (ASan)" make -s test-oom
wait "$checks_pid"
stage_start "lint and fuzz (ran beside valgrind)"
cat "$checks_log"
# each counts as one test, as when they ran as stages of their own
for check in lint fuzz; do
    if grep -qx "$check failed" "$checks_log"; then
        failed=$((failed + 1))
        failed_stages="$failed_stages $check"
    else
        passed=$((passed + 1))
    fi
done
stage_end "lint and fuzz (ran beside valgrind)"
rm -f "$fleet_log" "$checks_log"

echo
[ -n "$failed_stages" ] && echo "failed stages:$failed_stages"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
