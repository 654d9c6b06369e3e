#!/bin/sh
# Runs the busted suite for the Lua in $LUA (lua5.4 by default) against the
# module built into build/$LUA.  Each spec starts the servers it needs on free
# loopback ports and stops them, also when a test fails.
set -u
cd "$(dirname "$0")/.."
lua=${LUA:-lua5.4}
case "$lua" in
    luajit) interp=luajit ;;
    *) interp=$lua ;;
esac
export LUA_BIN="$interp"
export LUA="$lua"
# Servers the specs start record their pids here; whatever is still running
# when the run ends (a spec died before its teardown) is stopped.
FILEAPI_RUN_DIR=$(mktemp -d)
export FILEAPI_RUN_DIR
# (what a pid file holds, and whether its process is still the one: there)
. spec/support/pid_file.sh
cleanup() {
    for f in "$FILEAPI_RUN_DIR"/*.pid; do
        [ -f "$f" ] || continue
        read -r pid since < "$f"
        [ -n "$since" ] && [ "$(started_at "$pid")" = "$since" ] || continue
        # a server a spec paused (SIGSTOP) must be woken to take the signal
        kill -CONT "$pid" 2>/dev/null && kill "$pid" 2>/dev/null
    done
    rm -rf "$FILEAPI_RUN_DIR"
}
trap cleanup EXIT INT TERM
busted --lua="$interp" "$@"
