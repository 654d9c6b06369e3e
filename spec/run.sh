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
exec busted --lua="$interp" "$@"
