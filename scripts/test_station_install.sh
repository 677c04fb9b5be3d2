#!/usr/bin/env bash
# The station install, tested as installed. A venv WITHOUT system site-packages gets the base package
# (`pip install .`, not editable; no [train]: no torch, matplotlib or tqdm) with the [review,test] extras only,
# and runs tests/edge and tests/calibration against it from a copy of the tests outside the checkout, so
# nothing of the checkout can be imported. The fixtures that need torch (the small bundles, the tiny image sets)
# are built first by the full venv's python and handed over as files (ONEN_TEST_FIXTURES).
# Usage: bash scripts/test_station_install.sh [pytest args]   (PYTHON: the full venv's python, default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/onen-station-test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

echo "station: building the torch-made fixtures with $PY"
"$PY" -m tests.support.build_fixtures "$WORK/fixtures" >/dev/null

echo "station: a venv without system site-packages, with onen-inspect[review,test] installed from $REPO"
"$PY" -m venv "$WORK/venv"
VPY=$WORK/venv/bin/python
# (pip's notes on this machine's configured index folders that hold no such package are left out)
"$VPY" -m pip install -q --disable-pip-version-check "$REPO[review,test]" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

for module in torch matplotlib tqdm; do
  if "$VPY" -c "import $module" >/dev/null 2>&1; then
    echo "station: FAILED: '$module' is importable in the station venv; the base install must not pull it in" >&2
    exit 1
  fi
done

# the tests, the example configs they read and the pytest settings, outside the checkout
RUN=$WORK/run
mkdir -p "$RUN/tests"
cp -r tests/conftest.py tests/support tests/edge tests/calibration "$RUN/tests/"
cp -r examples pyproject.toml "$RUN/"
cd "$RUN"
"$VPY" - <<'EOF'
import sysconfig
from pathlib import Path

import onen.edge

site = Path(sysconfig.get_paths()["purelib"]).resolve()
where = Path(onen.edge.__file__).resolve()
assert site in where.parents, f"onen.edge comes from {where}, not from the station venv's {site}"
print(f"station: onen.edge from {where.parent}")
EOF
echo "station: running tests/edge and tests/calibration"
ONEN_TEST_FIXTURES=$WORK/fixtures "$VPY" -m pytest -q -p no:cacheprovider tests/edge tests/calibration "$@"
