#!/bin/sh
# Installs the Debian packages given as arguments when any is missing.
# As root it runs apt-get; otherwise it names what to install and fails.
# With --check first it only names what is missing and fails, even as root
# (a build says what it lacks; `make deps` is what installs).
set -u
check=""
if [ "${1:-}" = "--check" ]; then
    check=yes
    shift
fi
missing=""
for pkg in "$@"; do
    # (a package named twice, as the Lua the build is for may be, is said once)
    case " $missing " in *" $pkg "*) continue ;; esac
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)
    case "$status" in
        *" installed") ;;
        *) missing="$missing $pkg" ;;
    esac
done
[ -z "$missing" ] && exit 0
if [ -n "$check" ] || [ "$(id -u)" -ne 0 ]; then
    echo "fileapi: missing Debian packages:$missing" >&2
    echo "fileapi: install them with: sudo apt-get install -y$missing" >&2
    exit 1
fi
echo "fileapi: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || exit 1
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null || exit 1
