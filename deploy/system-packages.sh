#!/usr/bin/env bash
# Installs the Debian packages the tests and `make cluster` run for real, when missing:
# redis-server (the Redis store, several replicas), nginx (the balancer in front of them),
# chromium and chromium-driver (the web monitor's browser tests, driven by Selenium), nodejs
# and npm (the MCP tests' second client, the official TypeScript SDK).
# With package names as arguments, only those (`make cluster`: redis-server nginx).
# The tests and `make cluster` start their own instances on loopback ports.
set -euo pipefail
wanted=("$@")
[ ${#wanted[@]} -eq 0 ] && wanted=(redis-server nginx chromium chromium-driver nodejs npm)
present() {  # the command a package brings is on this machine
  case "$1" in
    redis-server) command -v redis-server ;;
    nginx) command -v nginx || [ -x /usr/sbin/nginx ] ;;
    chromium) command -v chromium ;;
    chromium-driver) command -v chromedriver ;;
    nodejs) command -v node ;;
    npm) command -v npm ;;
    *) dpkg -s "$1" ;;
  esac >/dev/null 2>&1
}
missing=()
for package in "${wanted[@]}"; do
  present "$package" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "needs ${missing[*]}: run 'sudo apt-get install ${missing[*]}' (or this script as root)" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
