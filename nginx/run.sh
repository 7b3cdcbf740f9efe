#!/usr/bin/env bash
# Start nginx in the foreground as a caching proxy in front of an origin.
# usage: nginx/run.sh ORIGIN_HOST:PORT LISTEN_PORT PREFIX_DIR
set -euo pipefail
origin=${1:?origin host:port}
listen=${2:?listen port}
prefix=${3:?prefix directory (state, cache and logs)}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$prefix/cache"
prefix=$(cd "$prefix" && pwd)
sed -e "s|@USER@|$(id -un)|" -e "s|@PREFIX@|$prefix|g" \
    -e "s|@LISTEN@|127.0.0.1:$listen|" -e "s|@ORIGIN@|$origin|" \
    "$here/hls-origin.conf.template" > "$prefix/nginx.conf"
exec nginx -p "$prefix" -c "$prefix/nginx.conf"
