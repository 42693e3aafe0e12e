#!/usr/bin/env bash
# JVM engines from Maven Central, one small pom each under deploy/jvm/<engine>/pom.xml.
#
#   scripts/jvm_engine.sh fetch <engine>      copy the engine's runtime jars into .jvm/<engine>/lib
#                                             (cached: a second call with the same pom returns at once)
#   scripts/jvm_engine.sh classpath <engine>  print the classpath (fetching first when needed)
#
# JVM_HOME_DIR (default <repo>/.jvm) moves the cache. Needs java (>= 17) and mvn; exits 3 when either is
# missing, 4 when Maven cannot fetch the jars, so callers (test fixtures) can tell "skip" from "bug".
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CMD=${1:-}; ENGINE=${2:-}
[ -n "$CMD" ] && [ -n "$ENGINE" ] || { echo "usage: $0 fetch|classpath <engine>" >&2; exit 2; }
POM="$ROOT/deploy/jvm/$ENGINE/pom.xml"
[ -f "$POM" ] || { echo "jvm: no pom for engine '$ENGINE' ($POM)" >&2; exit 2; }
OUT="${JVM_HOME_DIR:-$ROOT/.jvm}/$ENGINE"
LIB="$OUT/lib"
STAMP="$OUT/.fetched"

fetch() {
  local want
  want=$(sha256sum "$POM" | cut -d' ' -f1)
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -d "$LIB" ]; then
    return 0
  fi
  command -v java >/dev/null 2>&1 || { echo "jvm: java is not installed" >&2; exit 3; }
  command -v mvn >/dev/null 2>&1 || { echo "jvm: mvn is not installed" >&2; exit 3; }
  rm -rf "$LIB.tmp"
  mkdir -p "$OUT"
  echo "jvm: fetching $ENGINE's jars from Maven Central into $LIB" >&2
  if ! mvn -q -B -f "$POM" dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$LIB.tmp" >"$OUT/fetch.log" 2>&1; then
    tail -20 "$OUT/fetch.log" >&2
    echo "jvm: fetching $ENGINE's jars failed (log: $OUT/fetch.log)" >&2
    exit 4
  fi
  rm -rf "$LIB"
  mv "$LIB.tmp" "$LIB"
  echo "$want" >"$STAMP"
}

case "$CMD" in
  fetch) fetch; echo "$LIB" ;;
  classpath) fetch; echo "$LIB/*" ;;
  *) echo "usage: $0 fetch|classpath <engine>" >&2; exit 2 ;;
esac
