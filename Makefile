# tei-reconciler: `make run` and `make test` work on a machine with nothing but Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STATE ?= tei-state.toml
PROTO_OUT := tei_reconciler/protos
PYTEST_ARGS ?= -n 2  # two workers (pytest-xdist); PYTEST_ARGS= runs serially

.PHONY: install run test check lint typecheck layers bench proto clean

install: $(STAMP)

# Reinstall only when the project's metadata changed; a no-op otherwise.
$(STAMP): pyproject.toml
	@echo "installing tei-reconciler and its dependencies into $(VENV) (the first time takes a few minutes)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar off -e '.[dev]'
	touch $(STAMP)

# The quick start: a copy of examples/quickstart.toml becomes the editable state file.
run: install
	test -f $(STATE) || cp examples/quickstart.toml $(STATE)
	$(BIN)/tei-reconciler run --state $(STATE)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check tei_reconciler tests bench
	$(BIN)/ruff format --check tei_reconciler tests bench

typecheck: install
	$(BIN)/mypy

layers: install
	$(BIN)/lint-imports

check: lint typecheck layers test

bench: install
	$(BIN)/python -m bench

proto: install
	rm -rf $(PROTO_OUT)/tei $(PROTO_OUT)/tei_multiplexer
	PATH=$(BIN):$$PATH $(BIN)/python -m grpc_tools.protoc -I proto --python_out=$(PROTO_OUT) \
		--grpc_python_out=$(PROTO_OUT) --mypy_out=$(PROTO_OUT) --mypy_grpc_out=$(PROTO_OUT) \
		proto/tei/v1/tei.proto proto/tei_multiplexer/v1/multiplexer.proto
	for d in tei tei/v1 tei_multiplexer tei_multiplexer/v1; do touch $(PROTO_OUT)/$$d/__init__.py; done
	sed -i -E 's/^from (tei|tei_multiplexer)\.v1 import/from tei_reconciler.protos.\1.v1 import/' \
		$(PROTO_OUT)/*/v1/*.py $(PROTO_OUT)/*/v1/*.pyi

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
