#!/usr/bin/env bash
# Installs the Debian packages the tests and `make cluster` run for real, when missing:
# redis-server (the Redis store, several replicas), nginx (the balancer in front of them),
# chromium and chromium-driver (the web monitor's browser tests, driven by Selenium), nodejs
# and npm (the MCP tests' second client, the official TypeScript SDK).
# The tests and `make cluster` start their own instances on loopback ports.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "needs ${missing[*]}: run 'sudo apt-get install ${missing[*]}' (or this script as root)" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
