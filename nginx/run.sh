#!/usr/bin/env bash
# Start nginx in the foreground as a caching edge in front of one or more origins.
# usage: nginx/run.sh ORIGIN[,ORIGIN...] LISTEN_PORT PREFIX_DIR
#   ORIGIN is host:port; several make a fleet (tracks hashed onto origins, failover).
#   HLS_ORIGIN_SIGNING_KEY set: nginx checks signed links itself (secure_link) and
#   refuses unsigned stream URLs; give the origins the same key.
set -euo pipefail
origins=${1:?origin host:port[,host:port...]}
listen=${2:?listen port}
prefix=${3:?prefix directory (state, cache and logs)}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$prefix/cache"
prefix=$(cd "$prefix" && pwd)

servers=""
IFS=, read -ra list <<< "$origins"
for origin in "${list[@]}"; do
  # An origin that fails is left alone for 10 s, its tracks served by the next one.
  servers+="        server $origin max_fails=1 fail_timeout=10s;"$'\n'
done
printf '%s' "$servers" > "$prefix/origins.conf"

key=${HLS_ORIGIN_SIGNING_KEY:-}
if [ -n "$key" ]; then
  if ! [[ $key =~ ^[A-Za-z0-9._~+=-]+$ ]]; then
    echo "HLS_ORIGIN_SIGNING_KEY: use letters, digits and ._~+=- only (it is written into nginx.conf)" >&2
    exit 2
  fi
  sed -e "s|@KEY@|$key|" "$here/signed-links.conf.template" > "$prefix/links.conf"
  chmod 600 "$prefix/links.conf"
else
  echo "        # Open links: no signing key." > "$prefix/links.conf"
fi

sed -e "s|@USER@|$(id -un)|" -e "s|@PREFIX@|$prefix|g" -e "s|@LISTEN@|127.0.0.1:$listen|" \
    -e "s|^@ORIGINS@$|        include $prefix/origins.conf;|" \
    -e "s|^@LINKS@$|        include $prefix/links.conf;|" \
    "$here/hls-origin.conf.template" > "$prefix/nginx.conf"
exec nginx -p "$prefix" -c "$prefix/nginx.conf"
