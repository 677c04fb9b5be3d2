#!/usr/bin/env bash
# Installs what a fresh machine lacks for training, the daemon and the tests:
# Debian packages (mosquitto broker, ffmpeg for test streams) and the Python package with its extras.
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
# the review page's browser tests drive Debian's Chromium through Playwright (its own download needs the internet)
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v mosquitto_sub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  echo "bootstrap: installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
# The CPU build of torch 2.13.0 lies on this kind of machine's disk; asking for it first keeps pip
# from pulling a multi-GB CUDA build to satisfy the [train] extra.
if ! $PY -c "import torch" >/dev/null 2>&1; then
  echo "bootstrap: installing torch (CPU build)"
  $PY -m pip install -q "torch==2.13.0"
fi
echo "bootstrap: installing onen-inspect with [train,review,dev]"
$PY -m pip install -q --disable-pip-version-check -e ".[train,review,dev]"
echo "bootstrap: ready"
