#!/usr/bin/env bash
# The Flink job's virtualenv and Kafka connector: scripts/flink_venv.sh [VENV]
#   installs deploy/flink/requirements.txt into VENV (default .venv-flink at the repository root, ignored)
#   and fetches the connector jar (deploy/jvm/flink/pom.xml -> .jvm/flink/lib). Idempotent: returns at once
#   when VENV is newer than the requirements. Exits 3 when java or mvn is missing (callers skip), 4 when
#   Maven Central does not serve the jar. Prints the venv's python.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
REQ="$ROOT/deploy/flink/requirements.txt"
VENV="${1:-$ROOT/.venv-flink}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
STAMP="$VENV/.installed"
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9  # one install at a time (make test starts one in the background; the test fixture waits for it)
bash "$ROOT/scripts/jvm_engine.sh" fetch flink >/dev/null
if [[ ! -f "$STAMP" || "$REQ" -nt "$STAMP" ]]; then
  echo "flink: installing $REQ into $VENV" >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -r "$REQ"
  touch "$STAMP"
fi
echo "$VENV/bin/python"
