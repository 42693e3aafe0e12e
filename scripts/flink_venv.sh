#!/usr/bin/env bash
# The Flink job's virtualenv and Kafka connector: scripts/flink_venv.sh [VENV]
#   installs deploy/flink/requirements.txt into VENV (default .venv-flink at the repository root, ignored)
#   and fetches the connector jar (deploy/jvm/flink/pom.xml -> .jvm/flink/lib). Idempotent: returns at once
#   when VENV is newer than the requirements. Exits 3 when java or mvn is missing (callers skip), 4 when
#   Maven Central does not serve the jar. Prints the venv's python.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:-$ROOT/.venv-flink}"
source "$ROOT/scripts/_side_venv.sh"
side_venv_lock "$VENV"
bash "$ROOT/scripts/jvm_engine.sh" fetch flink >/dev/null
side_venv_install "$VENV" "$ROOT/deploy/flink/requirements.txt"
echo "$VENV/bin/python"
