#!/usr/bin/env bash
# Type-checks the four layers with mypy under their installed names (onen.edge, onen.train, ...).
# The folders sit at the top of the repository and setup.py maps them into the `onen` namespace; mypy
# does not follow setuptools' editable import hook, so a link tree build/typecheck/onen/<layer> -> <layer>
# gives it the real names. Settings (strict on edge and calibration) live in pyproject.toml's [tool.mypy].
# Extra arguments go to mypy, e.g. `scripts/typecheck.sh --no-incremental`.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/typecheck/onen
mkdir -p "$tree"
for layer in edge train calibration benchmarks; do
  ln -sfn "../../../$layer" "$tree/$layer"
done
exec "${PYTHON:-python3}" -m mypy "$@"
