#!/bin/sh
# Installs Prism (npm @stoplight/prism-cli), the OpenAPI proxy the
# conformance stage puts in front of the mock, into a folder outside the
# checkout, and prints the path of its command.  Needs node and npm (Debian's
# nodejs and npm packages when the machine has none).
#
# The version is pinned, and so are the Prism parts it would otherwise take
# at their newest: from 5.15 prism-http needs @faker-js/faker 10, an ES
# module Debian 12's Node 18 cannot require() ("ERR_REQUIRE_ESM"), so an
# unpinned install fails on a fresh Debian 12 whatever worked elsewhere.
set -u
version=5.14.2
dir=${FILEAPI_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/fileapi}/prism-$version
bin=$dir/node_modules/.bin/prism
if [ ! -x "$bin" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        sh "$(dirname "$0")/deps.sh" nodejs npm >&2 || exit 1
    fi
    mkdir -p "$dir" || exit 1
    cat >"$dir/package.json" <<JSON || exit 1
{
  "private": true,
  "dependencies": { "@stoplight/prism-cli": "$version" },
  "overrides": {
    "@stoplight/prism-http": "5.12.0",
    "@stoplight/prism-http-server": "5.12.2",
    "@stoplight/prism-core": "5.8.0"
  }
}
JSON
    echo "fileapi: installing Prism $version into $dir" >&2
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error >&2 || exit 1
fi
echo "$bin"
