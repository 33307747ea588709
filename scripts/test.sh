#!/usr/bin/env bash
# Quick start, command 2: set the machine up (idempotent), then lint, format check,
# type check, unit tests and integration tests (real runc + CRIU, as root).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { printf '==> %s\n' "$*"; }
bash scripts/bootstrap.sh
say "lint (eslint)"
npx eslint .
say "format (prettier --check)"
npx prettier --check . >/dev/null || { npx prettier --check .; exit 1; }
say "type check (tsc --noEmit)"
npx tsc -p tsconfig.json --noEmit
say "unit and integration tests (node:test)"
exec node scripts/run-tests.mjs all
