#!/bin/sh
# Runs a command with this checkout's modules first on the module paths of
# its Lua: the command's own when it is a Lua interpreter (lua5.1 … lua5.4,
# luajit), else the Lua in $LUA (lua5.4 by default), and the core built for
# that Lua.  Version-specific variables keep the paths away from other Lua
# versions' tools (busted's launcher, luacheck).
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
lua=${LUA:-lua5.4}
case "${1:-}" in
    */*) first=${1##*/} ;;
    *) first=${1:-} ;;
esac
case "$first" in
    lua5.[1-4] | luajit) lua=$first ;;
esac
lpath="$top/lua/?.lua;$top/lua/?/init.lua;$top/spec/support/?.lua;;"
build=${FILEAPI_BUILD:-$top/build/$lua}
case "$build" in /*) ;; *) build="$top/$build" ;; esac
cpath="$build/?.so;;"
case "$lua" in
    lua5.4) export LUA_PATH_5_4="$lpath" LUA_CPATH_5_4="$cpath" ;;
    lua5.3) export LUA_PATH_5_3="$lpath" LUA_CPATH_5_3="$cpath" ;;
    lua5.2) export LUA_PATH_5_2="$lpath" LUA_CPATH_5_2="$cpath" ;;
    *) export LUA_PATH="$lpath" LUA_CPATH="$cpath" ;;
esac
exec "$@"
