#!/usr/bin/env bash
# Prometheus for `make run`: Debian's server with monitoring/prometheus.yml, one scrape target per API
# worker (each worker serves /metrics on JAIKOD_METRICS_PORT + its index) and the repo's alert rules.
# Data under $JAIKOD_HOME/prometheus; UI and HTTP API on $PROMETHEUS_ADDR (default 127.0.0.1:9090).
set -euo pipefail
HOME_DIR=${JAIKOD_HOME:-var}
ADDR=${PROMETHEUS_ADDR:-127.0.0.1:9090}
BASE=${JAIKOD_METRICS_PORT:-9101}
WORKERS=${JAIKOD_WORKERS:-1}
if ! command -v prometheus >/dev/null 2>&1; then
  echo "prometheus: not installed (scripts/install.sh installs Debian's package as root); the console's charts stay empty"
  exec sleep infinity
fi
mkdir -p "$HOME_DIR/prometheus/data"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
targets=$(for i in $(seq 0 $((WORKERS - 1))); do printf '"127.0.0.1:%d",' $((BASE + i)); done)
sed -e "s|@TARGETS@|[${targets%,}]|" -e "s|@RULES@|$ROOT/monitoring/alerts.yml|" \
  "$ROOT/monitoring/prometheus.yml" > "$HOME_DIR/prometheus/prometheus.yml"
promtool check config "$HOME_DIR/prometheus/prometheus.yml" >/dev/null
exec prometheus --config.file="$HOME_DIR/prometheus/prometheus.yml" \
  --storage.tsdb.path="$HOME_DIR/prometheus/data" --storage.tsdb.retention.time=7d \
  --web.listen-address="$ADDR" --log.level=warn
