#!/bin/sh
# tools/fresh.sh (`make test-fresh`): the README's two commands on a fresh
# machine.  debootstrap makes a minimal Debian 12 (minbase) in a folder under
# build/, mounted on itself (so that, as on a machine, its / is a mount and
# `unshare -m` works inside), with /proc, /sys and /dev, and this machine's
# way to the network: resolv.conf, apt sources and their proxy, local CA
# certificates and the proxy and CA variables of this environment.  Inside
# it, as root: apt-get install git make ca-certificates, a git clone of this
# checkout's HEAD (committed work only), `make demo`, then `make test`.  It prints both results and their times, keeps the logs in
# build/test-fresh/, and always unmounts and removes the root.  A machine
# that already has the packages hides what this shows (a build that decided
# its features before `deps` ran, a tool only this machine has).  Needs root.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" -ne 0 ]; then
    echo "fileapi: make test-fresh needs root (debootstrap, mounts, chroot)" >&2
    exit 1
fi
suite=bookworm
# The archive this machine installs from (DEBIAN_MIRROR overrides it).
mirror=${DEBIAN_MIRROR:-}
[ -n "$mirror" ] || mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
[ -n "$mirror" ] || mirror=$(sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) bookworm .*/\2/p' /etc/apt/sources.list 2>/dev/null | head -n 1)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
rev=$(git -C "$top" rev-parse HEAD) || exit 1
logs=$top/build/test-fresh
mkdir -p "$logs" || exit 1
root=$(mktemp -d "$top/build/fresh.XXXXXX") || exit 1
chmod 755 "$root" # the chroot's / : nginx's workers (nobody) must get through it

# Every process whose root is the chroot (servers a failed spec left running
# keep its mounts busy).
stop_inside() {
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && kill -s "$1" "${p#/proc/}" 2>/dev/null
    done
    return 0
}

cleanup() {
    trap - EXIT INT TERM HUP
    stop_inside TERM
    sleep 1
    stop_inside KILL
    if mountpoint -q "$root" 2>/dev/null; then
        umount -R "$root" || umount -R -l "$root"
    fi
    if grep -q " $root/" /proc/mounts; then
        echo "fileapi: something is still mounted under $root: left in place" >&2
        return
    fi
    rm -rf --one-file-system "$root"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

elapsed() { echo $(( $(date +%s) - $1 )); }

# Runs a shell command inside the root as a new user's root shell would,
# with nothing from this environment; its output goes to the screen and to
# the log named; its exit status and time go to LOG.rc and LOG.time.
inside() {
    log=$logs/$1
    t0=$(date +%s)
    {
        # shellcheck disable=SC2086
        chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin $network \
            /bin/sh -c "$2" 2>&1
        echo $? >"$log.rc"
    } | tee "$log"
    elapsed "$t0" >"$log.time"
    return "$(cat "$log.rc")"
}

echo "== test-fresh: Debian 12 minbase from $mirror into $root"
t0=$(date +%s)
if ! debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$logs/debootstrap.log" 2>&1; then
    tail -n 20 "$logs/debootstrap.log"
    echo "test-fresh: debootstrap failed (log: build/test-fresh/debootstrap.log)"
    exit 1
fi
echo "   (debootstrap: $(elapsed "$t0") s)"
mount --bind "$root" "$root" || exit 1
mount -t proc proc "$root/proc" || exit 1
mount --rbind /sys "$root/sys" || exit 1
mount --rbind /dev "$root/dev" || exit 1
# unmounting the copies must never reach this machine's own mounts
mount --make-rslave "$root" 2>/dev/null
rm -f "$root/etc/resolv.conf"
cp -L /etc/resolv.conf "$root/etc/resolv.conf" || exit 1
# The same apt sources as this machine, and its way of reaching them
# (proxy, snapshot validity), nothing else.
if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
    rm -f "$root/etc/apt/sources.list"
    cp /etc/apt/sources.list.d/*.sources "$root/etc/apt/sources.list.d/" || exit 1
fi
[ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$root/etc/apt/sources.list"
for f in /etc/apt/apt.conf.d/*; do
    grep -q '^ *Acquire::\(http\|https\|Check-Valid-Until\|Check-Date\)' "$f" 2>/dev/null &&
        cp "$f" "$root/etc/apt/apt.conf.d/"
done
# ca-certificates adds these to the root's bundle when apt-get installs it.
if ls /usr/local/share/ca-certificates/* >/dev/null 2>&1; then
    mkdir -p "$root/usr/local/share/ca-certificates" &&
        cp -r /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/" || exit 1
fi
network=""
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY NODE_EXTRA_CA_CERTS; do
    eval "value=\${$v:-}"
    # shellcheck disable=SC2154
    [ -n "$value" ] && network="$network $v=$value"
done
git -C "$top" bundle create -q "$root/root/fileapi.bundle" HEAD || exit 1

echo "== apt-get install git make ca-certificates; git clone (HEAD $rev)"
inside setup.log 'export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq git make ca-certificates >/dev/null &&
git -c advice.detachedHead=false clone -q /root/fileapi.bundle /root/fileapi && rm /root/fileapi.bundle' || {
    echo "test-fresh: the setup failed"
    exit 1
}

echo "== make demo"
inside demo.log 'cd /root/fileapi && make demo'
demo_rc=$(cat "$logs/demo.log.rc")
echo "== make test"
inside test.log 'cd /root/fileapi && make test'
test_rc=$(cat "$logs/test.log.rc")

counts=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$logs/test.log" | tail -n 1)
stages=$(grep '^failed stages:' "$logs/test.log" | tail -n 1)
echo
echo "test-fresh (Debian 12 minbase, HEAD $rev; logs in build/test-fresh/):"
echo "  make demo: exit $demo_rc in $(cat "$logs/demo.log.time") s"
echo "  make test: exit $test_rc in $(cat "$logs/test.log.time") s: ${counts:-no count line}${stages:+ ($stages)}"
[ "$demo_rc" -eq 0 ] && [ "$test_rc" -eq 0 ]
