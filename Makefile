# The verbs a person types. `make run` and `make test` work on a fresh machine.
PY ?= python3
PIP ?= $(PY) -m pip
TEST_WORKERS ?= 2
MAIN_JOB = -m scenario=quickstart service=faiss,fileio concurrency=1,4 duration_s=10 warmup_s=2

.PHONY: install deps-system deps-standins deps-test run test test-fast bench lint ui clean containers \
	server-start server-stop server-status

install:            ## benchflow with every driver family
	$(PIP) install -q -e '.[all]'

deps-system:        ## servers and tools the tests run for real (Debian packages)
	./scripts/install-system-deps.sh

deps-standins:      ## CPU stand-ins for vLLM and Triton (llama.cpp, PyTriton), perf_analyzer
	PY=$(PY) ./scripts/install-standins.sh

deps-test: deps-system deps-standins
	$(PIP) install -q -e '.[all,dev,standins]'

run:                ## installs the core and runs the main job: a short sweep over embedded services
	$(PIP) install -q -e .
	$(PY) -m benchflow $(MAIN_JOB)

test: deps-test     ## the whole test suite, against real servers (two workers: CI's 2 cores)
	$(PY) -m pytest -q -ra -n $(TEST_WORKERS) --dist loadgroup

test-fast:          ## the suite without reinstalling anything
	$(PY) -m pytest -q -ra -x

bench: install deps-standins  ## measured figures, one table (bench/out/results.md)
	$(PY) -m bench

containers:         ## Apptainer images of vLLM and Triton (a login-node step; containers/*.sif)
	./containers/build.sh

lint:
	ruff check . && ruff format --check .

# The team's tracking server (docs/operations.md). SERVER_ARGS: e.g.
#   SERVER_ARGS="--host 0.0.0.0 --backend-store-uri postgresql://mlflow@db:5432/mlflow --artifacts-destination s3://bench"
SERVER_ARGS ?= --embedded-db
server-start:       ## MLflow tracking server on PostgreSQL (default: a throwaway one)
	$(PY) -m benchflow server start $(SERVER_ARGS)

server-stop:
	$(PY) -m benchflow server stop

server-status:
	$(PY) -m benchflow server status

ui:                 ## the MLflow UI on the embedded default store
	$(PY) -m mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000

clean:
	rm -rf results reports mlruns mlflow.db bench/out .pytest_cache
