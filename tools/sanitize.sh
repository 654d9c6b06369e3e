#!/bin/sh
# tools/sanitize.sh COMMAND...: runs a command whose processes carry the
# ASan/UBSan runtime with a symbolizer that exists.  Debian's runtime looks
# for /usr/bin/llvm-symbolizer-14 (package llvm-14) and, where it is missing,
# every sanitized process prints "WARNING: invalid path to external
# symbolizer!" into output the specs compare: name the one this machine has,
# or turn symbolizing off (reports then show addresses) when there is none.
set -u
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ]; then
    for candidate in llvm-symbolizer-14 llvm-symbolizer; do
        path=$(command -v "$candidate" 2>/dev/null) && [ -f "$path" ] && [ -x "$path" ] && break
        path=""
    done
    if [ -n "$path" ]; then
        export ASAN_SYMBOLIZER_PATH="$path" UBSAN_SYMBOLIZER_PATH="$path" LSAN_SYMBOLIZER_PATH="$path"
    else
        echo "fileapi: no llvm-symbolizer (Debian package llvm-14): sanitizer reports show" \
            "addresses, and suppressions by function name do not apply" >&2
        ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}symbolize=0"
        UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}symbolize=0"
        LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}symbolize=0"
        export ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS
    fi
fi
exec "$@"
