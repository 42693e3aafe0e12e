# JaiKod Intelligence Layer — two commands on a fresh Debian machine (Python 3.11, root):
#   make run    install into .venv, make sure Redis answers, build the demo world, train, register,
#               materialize and serve
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

.PHONY: run test soak bench lint redis install world nightly serve clean

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh "$(PYTHON)" "$(VENV)"
	touch $(STAMP)

install: $(STAMP)

redis:
	bash scripts/ensure_redis.sh "$(JAIKOD_REDIS_URL)" "$(JAIKOD_HOME)/redis"

run: install redis
	$(JAIKOD) world build --size $(WORLD_SIZE) --seed 7 --out "$(JAIKOD_HOME)/lake" --start-date $(START_DATE)
	$(JAIKOD) batch nightly --lake "$(JAIKOD_HOME)/lake"
	$(JAIKOD) batch text-heads
	$(JAIKOD) batch vision-heads --lake "$(JAIKOD_HOME)/lake"
	$(JAIKOD) serve

test: install redis
	bash scripts/run_tests.sh

# heavier reliability runs: the OpenAPI fuzz with 500 cases per operation, then the 10-minute soak
# (flat memory) and the overload / slow-Redis figures (bench/results/reliability*.json)
soak: install redis
	FUZZ_EXAMPLES=500 $(PY) -m pytest tests/reliability -q
	$(PY) -m bench.bench_reliability --soak-s 600

bench: install redis
	$(PY) -m bench

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) var .pytest_cache
