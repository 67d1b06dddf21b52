# LiveRec. `make` (or `make help`) lists the targets. A fresh clone needs no manual
# step: every target that runs Python first installs the locked environment.

VENV ?= .venv
PY := $(VENV)/bin/python
LIVEREC := $(VENV)/bin/liverec
STAMP := $(VENV)/.installed
# uv may have been installed with `pip install --user` (see the stamp recipe).
export PATH := $(HOME)/.local/bin:$(PATH)

SIZE ?= default
PYTEST_ARGS ?=
BENCH_ARGS ?=
LINT_PATHS := features training service liverec.py tests

.DEFAULT_GOAL := help
.PHONY: help install protos protos-check protos-baseline lint format test test-hours test-integration \
	data train serve demo bench mlflow-ui clean

help: ## Show this list of targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' \
		$(MAKEFILE_LIST)

$(STAMP): pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --user uv || pip install uv
	UV_PROJECT_ENVIRONMENT=$(VENV) uv sync --frozen --extra dev
	@touch $@

install: $(STAMP) ## Create the venv and install the project from uv.lock (dev extras included)

protos: $(STAMP) ## Regenerate service/generated from protos/ (commit the result)
	PY=$(PY) scripts/gen_protos.sh generate

protos-check: $(STAMP) ## Fail if service/generated is stale against protos/
	PY=$(PY) scripts/gen_protos.sh check

protos-baseline: $(STAMP) ## Snapshot the contract for compatibility checks (only when cutting a release)
	PY=$(PY) scripts/gen_protos.sh baseline

lint: $(STAMP) ## ruff check, ruff format --check and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy $(LINT_PATHS)

format: $(STAMP) ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# pytest exits 5 when it collects nothing: a suite that runs nothing is a failure.
test: $(STAMP) ## Run the tests (pytest -q; pytest-timeout fails a hang)
	@echo "$(PY) -m pytest -q $(PYTEST_ARGS)"
	@$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5); that is a failure." >&2; fi; \
	exit $$rc

test-hours: $(STAMP) ## The tests with the clock moved to other hours (HOURS="+3h +9h +15h +21h")
	$(PY) scripts/test_hours.py $(HOURS) -- -x --ignore=tests/integration $(PYTEST_ARGS) tests

test-integration: $(STAMP) ## Run tests/integration against real Redis/PostgreSQL
	$(PY) -m pytest -q tests/integration $(PYTEST_ARGS)

data: $(STAMP) ## Simulate a world (SIZE=default) and build, apply and materialize its features
	$(LIVEREC) simulate --size $(SIZE) && $(LIVEREC) features build && \
		$(LIVEREC) features apply && $(LIVEREC) features materialize

train: $(STAMP) ## Train, evaluate and register the models in MLflow
	$(LIVEREC) train

serve: $(STAMP) ## Serve gRPC on :50051; simulates, builds features and trains first if missing
	$(LIVEREC) prepare --size $(SIZE)
	$(LIVEREC) serve

demo: $(STAMP) ## The main job: simulate+train if needed, serve, replay a stream live, show answers (SIZE=tiny for seconds)
	$(LIVEREC) demo --size $(SIZE)

bench: $(STAMP) ## Run the benchmark (BENCH_ARGS=--smoke for a quick run)
	$(LIVEREC) bench $(BENCH_ARGS)

mlflow-ui: $(STAMP) ## Open the MLflow UI on http://127.0.0.1:5000
	$(VENV)/bin/mlflow ui --host 127.0.0.1 --port 5000 \
		--backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}

clean: ## Remove caches and build output (keeps the venv, data, models and MLflow store)
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
