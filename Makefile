# GhostLLM: `make run` starts the stack, `make test` checks everything.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTO_INC = $(shell $(PY) -c "import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), '_proto'))")
GAPI_INC = $(shell $(PY) -c "import google.api, os; print(os.path.dirname(os.path.dirname(list(google.api.__path__)[0])))")
PROTOS := $(wildcard protos/ghostllm/v1/*.proto)

.PHONY: install run test lint gen gen-check bench clean lock

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Pin the whole dependency tree after a change to pyproject.toml.
lock: $(STAMP)
	{ echo "# Every package, transitively, at the version CI and benchmarks were run with."; \
	  echo "# Regenerate after changing pyproject.toml: make lock"; \
	  $(PY) -m pip freeze --exclude-editable | grep -v '^ghostllm'; } > constraints.txt

# $(call protoc,DIR): the stubs, their type stubs and the descriptor set Envoy loads, into DIR.
protoc = $(PY) -m grpc_tools.protoc -Iprotos -I$(GAPI_INC) -I$(PROTO_INC) \
	  --python_out=$(1) --grpc_python_out=$(1) \
	  --plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy --mypy_out=$(1) \
	  --plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc --mypy_grpc_out=$(1) \
	  --include_imports --include_source_info --descriptor_set_out=$(1)/ghostllm.pb \
	  $(PROTOS) > /dev/null && touch $(1)/ghostllm/v1/__init__.py

# Generated code is committed; this rebuilds it byte for byte.
gen: $(STAMP)
	rm -rf gen && mkdir -p gen
	$(call protoc,gen)

# Generates into a temporary directory and compares: gen/ itself is never written.
gen-check: $(STAMP)
	@out=$$(mktemp -d) && trap 'rm -rf "$$out"' EXIT && $(call protoc,$$out) && \
	  { diff -r -x __pycache__ gen "$$out" > /dev/null || { echo "gen/ is stale: run 'make gen' and commit"; exit 1; }; }

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

test: $(STAMP) gen-check lint
	$(VENV)/bin/pytest -q

run: $(STAMP)
	$(VENV)/bin/ghostllm serve

bench: $(STAMP)
	$(PY) -m bench

# The fidelity matrix: every provider adapter x feature x mode, through Envoy, against the emulators.
fidelity: $(STAMP)
	$(PY) -m tests.fidelity

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
