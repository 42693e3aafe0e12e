#!/usr/bin/env bash
# Make sure a Redis server answers at $1 (default redis://127.0.0.1:6379/0). If none answers, install
# Debian's redis-server when missing and start one on loopback with its data dir under $2.
set -euo pipefail
URL=${1:-redis://127.0.0.1:6379/0}
DATA=${2:-var/redis}
hostport=${URL#*://}; hostport=${hostport%%/*}; hostport=${hostport##*@}; hostport=${hostport%%,*}
HOST=${hostport%%:*}; PORT=${hostport##*:}; [ "$PORT" = "$hostport" ] && PORT=6379
ping() {
  if command -v redis-cli >/dev/null 2>&1; then
    redis-cli -h "$HOST" -p "$PORT" ping 2>/dev/null | grep -q PONG
  else
    (exec 3<>"/dev/tcp/$HOST/$PORT" && printf 'PING\r\n' >&3 && timeout 2 head -c 5 <&3 | grep -q PONG) 2>/dev/null
  fi
}
# redis-cli (Debian's redis-tools, a dependency of redis-server) creates the test suite's Redis Cluster
if ! command -v redis-cli >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "redis: installing Debian's redis-tools (redis-cli)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq redis-tools >/dev/null; } || echo "redis: redis-tools not installed" >&2
fi
if ping; then echo "redis: answering at $HOST:$PORT"; exit 0; fi
case "$URL" in *+cluster://*) echo "redis: no node of the Redis Cluster $URL answers (this script starts single servers only)" >&2; exit 1;; esac
case "$HOST" in 127.*|localhost|::1) ;; *) echo "redis: nothing answers at $URL and it is not loopback" >&2; exit 1;; esac
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis: installing Debian's redis-server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi
mkdir -p "$DATA"
DATA=$(cd "$DATA" && pwd)
redis-server --daemonize yes --bind 127.0.0.1 --port "$PORT" --dir "$DATA" \
  --appendonly yes --logfile "$DATA/redis.log" --pidfile "$DATA/redis.pid"
for _ in $(seq 1 100); do ping && { echo "redis: started on $HOST:$PORT (data in $DATA)"; exit 0; }; sleep 0.1; done
echo "redis: failed to start, see $DATA/redis.log" >&2
exit 1
