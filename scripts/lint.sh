#!/usr/bin/env bash
# Lint, format and types, as CI runs them (the tools come with the [dev] extra). Fails on any finding.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "lint: ruff check"
ruff check .
echo "lint: ruff format --check"
ruff format --check .
echo "lint: mypy (scripts/typecheck.sh)"
bash scripts/typecheck.sh
