#!/usr/bin/env bash
# Prepares this machine for godwit, idempotently: npm dependencies, the build, then
# `godwit setup` (Debian packages: runc, iptables, iproute2, busybox-static, debootstrap,
# gcc; CRIU >= 4.2; godwit's native helpers). Sourced by demo.sh and test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { printf '==> %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "godwit: must run as root (runc, CRIU, mounts and network namespaces need it)" >&2
  exit 1
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "godwit: Node.js 20 and npm are required (this machine kind ships them)" >&2
  exit 1
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
else
  say "npm dependencies are up to date"
fi

say "building godwit (tsc)"
npm run -s build

say "setting up the machine (godwit setup)"
node bin/godwit.js setup
