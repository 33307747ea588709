#!/usr/bin/env bash
# Quick start, command 1: set the machine up (idempotent) and run godwit's main job, the demo.
# Extra arguments go to `godwit demo` (e.g. --memory-mib 256, --json).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh
printf '==> %s\n' "running the demo (godwit demo $*)"
exec node bin/godwit.js demo "$@"
