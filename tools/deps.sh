#!/bin/sh
# Installs the Debian packages given as arguments when any is missing.
# As root it runs apt-get; otherwise it names what to install and fails.
set -u
missing=""
for pkg in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)
    case "$status" in
        *" installed") ;;
        *) missing="$missing $pkg" ;;
    esac
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "fileapi: missing Debian packages:$missing" >&2
    echo "fileapi: install them with: sudo apt-get install -y$missing" >&2
    exit 1
fi
echo "fileapi: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || exit 1
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null || exit 1
