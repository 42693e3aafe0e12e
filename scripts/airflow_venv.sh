#!/usr/bin/env bash
# The Airflow virtualenv: scripts/airflow_venv.sh [VENV]
#   installs deploy/airflow/requirements.txt (with deploy/airflow/constraints.txt) into VENV (default
#   .venv-airflow at the repository root, ignored), apart from the service's .venv so that Airflow's
#   dependencies never touch it. Idempotent: returns at once when VENV is newer than both files. Prints
#   the venv's airflow executable. `make test` starts it in the background; the test fixture waits for it.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:-$ROOT/.venv-airflow}"
source "$ROOT/scripts/_side_venv.sh"
side_venv_lock "$VENV"
side_venv_install "$VENV" "$ROOT/deploy/airflow/requirements.txt" "$ROOT/deploy/airflow/constraints.txt"
echo "$VENV/bin/airflow"
