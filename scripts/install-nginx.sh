#!/usr/bin/env bash
# Installs nginx for `cargo bench --bench proxy_load`, where it is missing.
# The benchmark starts its own nginx with its own config; the package's
# service is stopped so nothing else listens.
set -euo pipefail
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
  echo "nginx is installed: $(/usr/sbin/nginx -v 2>&1 || nginx -v 2>&1)"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nginx-light >/dev/null
$sudo service nginx stop >/dev/null 2>&1 || $sudo pkill -x nginx || true
/usr/sbin/nginx -v
