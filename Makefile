# The commands the README and CI use. `make run` and `make test` each install everything first.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test install deps lint typecheck test-pure test-integration bench-core bench-kafka bench-worker bench-quality bench-sql bench-peers bench-latency bench-store bench-webhooks bench-gateway bench-soak bench-scaling clean

run: install                 ## install, then run the whole stack with the simulator
	$(BIN)/oddstream up

test: install lint typecheck ## install, lint, type-check, then every test tier (real Kafka, real ClickHouse)
	$(BIN)/pytest

install: deps $(BIN)/.installed
	$(BIN)/oddstream broker fetch

deps:
	@infra/deps.sh

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

lint:
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck:
	$(BIN)/mypy .

test-pure: install
	$(BIN)/pytest -m pure

test-integration: install
	$(BIN)/pytest -m integration

bench-core: install        ## pure core throughput vs bare baselines (not a test)
	$(BIN)/python -m benchmarks.core

bench-kafka: install       ## consume+decode from a real broker vs bare aiokafka+fastavro (not a test)
	$(BIN)/python -m benchmarks.kafka_decode

bench-worker: install      ## analytics worker events/s vs bare aiokafka+fastavro, same run (not a test)
	$(BIN)/python -m benchmarks.worker

bench-quality: install     ## model and alert quality vs the simulator's ground truth, models' us/event (not a test)
	$(BIN)/python -m benchmarks.quality

bench-scaling: install     ## one and two worker processes on one backlog: speed-up, broker CPU share, rebalance pauses (not a test)
	$(BIN)/python -m benchmarks.scaling

bench-soak: install        ## 2M simulated events through the worker and store: RSS and snapshot sizes stay flat, windows exact (not a test)
	$(BIN)/python -m benchmarks.soak

bench-peers: install $(VENV)-peers/.installed  ## the Faust worker next to Quix Streams and Bytewax, one backlog (not a test)
	$(BIN)/python -m benchmarks.peers

$(VENV)-peers/.installed: benchmarks/peers/requirements.txt
	$(PYTHON) -m venv $(VENV)-peers
	$(VENV)-peers/bin/pip install -q --upgrade pip
	$(VENV)-peers/bin/pip install -q -r benchmarks/peers/requirements.txt
	touch $@

bench-webhooks: install    ## the dispatcher's deliveries/s next to a bare signed HTTP loop, same receiver (not a test)
	$(BIN)/python -m benchmarks.webhooks

bench-gateway: install     ## the gateway's deliveries/s, memory per connection and latency next to a bare websockets.broadcast server (not a test)
	$(BIN)/python -m benchmarks.gateway

bench-latency: install     ## every role running: send -> WebSocket / ClickHouse latency per rate, highest sustained rate (not a test)
	$(BIN)/python -m benchmarks.latency

bench-store: install       ## the store's sink rows/s next to a raw chDB insert of the same rows, same run (not a test)
	$(BIN)/python -m benchmarks.store

bench-sql: install         ## the store's sink rate while an analyst's heavy query runs vs without (not a test)
	$(BIN)/python -m benchmarks.sql_isolation

clean:
	rm -rf $(VENV) $(VENV)-peers .oddstream .pytest_cache .mypy_cache .ruff_cache
