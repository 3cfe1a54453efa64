#!/usr/bin/env bash
# Installs what hark needs and is missing: Debian packages through apt-get,
# then the npm packages from package-lock.json through `npm ci`.
#
# Usage: scripts/install-deps.sh build|run|test
#   build  compilers, C libraries and cmocka
#   run    build, plus Node.js and the npm packages (the demo page serves
#          phoenix.js from node_modules)
#   test   run, plus clang, Chromium and redis-server for the test suites
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-test}

packages=(cmake make gcc pkg-config libuv1-dev node-llhttp libjansson-dev libssl-dev libcmocka-dev libhiredis-dev)
case "$profile" in
  build) ;;
  run) packages+=(nodejs) ;;
  test) packages+=(nodejs chromium clang libclang-rt-14-dev redis-server) ;;
  *) echo "install-deps: unknown profile '$profile'; use build, run or test" >&2; exit 2 ;;
esac

missing=()
for package in "${packages[@]}"; do
  # Node.js may come from another source than Debian (e.g. NodeSource); any
  # working node and npm will do.
  if [ "$package" = nodejs ] && command -v node >/dev/null && command -v npm >/dev/null; then
    continue
  fi
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$package")
done
if [ "$profile" != build ] && ! command -v npm >/dev/null; then missing+=(npm); fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: run as root to install ${missing[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# npm ci only when node_modules does not match the lock file, since it
# deletes and reinstalls everything.
if [ "$profile" != build ]; then
  stamp=node_modules/.hark-lock-stamp
  if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
    echo "install-deps: npm ci"
    npm ci --no-audit --no-fund
    cp package-lock.json "$stamp"
  fi
fi
