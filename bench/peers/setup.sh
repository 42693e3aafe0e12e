#!/usr/bin/env bash
# The peers' virtualenvs of the benchmark suite (issue 16): bench/peers/setup.sh NAME [VENV]
# installs bench/peers/NAME.txt into VENV (default .venv-NAME at the repository root, ignored by git).
# Idempotent: nothing happens when VENV is newer than the requirements file. Never the service's venv.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
NAME="${1:?usage: setup.sh feast|trees [VENV]}"
REQ="$ROOT/bench/peers/$NAME.txt"
VENV="${2:-$ROOT/.venv-$NAME}"
PYTHON="${PYTHON:-python3.11}"
STAMP="$VENV/.installed"
[[ -f "$REQ" ]] || { echo "no requirements file $REQ" >&2; exit 2; }
if [[ -f "$STAMP" && "$STAMP" -nt "$REQ" ]]; then exit 0; fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -r "$REQ"
touch "$STAMP"
