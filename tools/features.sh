#!/bin/sh
# tools/features.sh FILE: finds the build's optional parts (the fleet's store
# needs hiredis and libcrypto) and writes their compiler and linker flags to
# FILE as shell assignments, read by the build's recipe.  It runs when the
# build does, so whatever `make deps` installed just before counts, and it
# rewrites FILE only when the flags changed: what depends on FILE is rebuilt
# when the features changed and left alone when they did not.
set -u
file=$1
pc=${PKG_CONFIG:-pkg-config}
cflags=""
libs=""
missing=""
if $pc --exists hiredis 2>/dev/null; then
    cflags="-DFA_HAVE_HIREDIS $($pc --cflags hiredis)"
    libs="$($pc --libs hiredis)"
else
    missing="$missing libhiredis-dev"
fi
if $pc --exists libcrypto 2>/dev/null; then
    cflags="$cflags -DFA_HAVE_CRYPTO $($pc --cflags libcrypto)"
    libs="$libs $($pc --libs libcrypto)"
else
    missing="$missing libssl-dev"
fi
squash() { echo "$1" | tr -s ' ' | sed 's/^ //; s/ $//'; }
new="STORE_CFLAGS='$(squash "$cflags")'
STORE_LIBS='$(squash "$libs")'"
[ -f "$file" ] && [ "$(cat "$file")" = "$new" ] && exit 0
mkdir -p "$(dirname "$file")" || exit 1
printf '%s\n' "$new" >"$file.$$" && mv -f "$file.$$" "$file" || exit 1
if [ -n "$missing" ]; then
    echo "fileapi: $(dirname "$file") is built without fileapi.store's hiredis or libcrypto" \
        "(install$missing, or run make deps as root, and build again)" >&2
fi
exit 0
