#!/bin/sh
# Installs Prism (npm @stoplight/prism-cli), the OpenAPI proxy the
# conformance stage puts in front of the mock, into a folder outside the
# checkout, and prints the path of its command.  Needs node and npm (Debian's
# nodejs and npm packages when the machine has none).
set -u
dir=${FILEAPI_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/fileapi}/prism
bin=$dir/node_modules/.bin/prism
if [ ! -x "$bin" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        sh "$(dirname "$0")/deps.sh" nodejs npm >&2 || exit 1
    fi
    mkdir -p "$dir" || exit 1
    echo "fileapi: installing Prism into $dir" >&2
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error @stoplight/prism-cli >&2 || exit 1
fi
echo "$bin"
