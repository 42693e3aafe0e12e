#!/usr/bin/env bash
# The whole suite. pytest's exit code 5 (no tests collected) is a failure here too.
set -uo pipefail
.venv/bin/python -m pytest tests "$@"
