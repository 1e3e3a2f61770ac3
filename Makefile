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

# Generated code is committed; this rebuilds it byte for byte.
gen: $(STAMP)
	rm -rf gen && mkdir -p gen
	$(PY) -m grpc_tools.protoc -Iprotos -I$(GAPI_INC) -I$(PROTO_INC) \
	  --python_out=gen --grpc_python_out=gen \
	  --plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy --mypy_out=gen \
	  --plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc --mypy_grpc_out=gen \
	  --include_imports --include_source_info --descriptor_set_out=gen/ghostllm.pb \
	  $(PROTOS) > /dev/null
	touch gen/ghostllm/v1/__init__.py

gen-check: $(STAMP)
	rm -rf /tmp/ghostllm-gen-check && cp -r gen /tmp/ghostllm-gen-check
	$(MAKE) --no-print-directory gen
	diff -r /tmp/ghostllm-gen-check gen > /dev/null || { echo "gen/ is stale: run 'make gen' and commit"; \
	  rm -rf gen && cp -r /tmp/ghostllm-gen-check gen; exit 1; }

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: $(STAMP) gen-check lint
	$(VENV)/bin/pytest -q

run: $(STAMP)
	$(VENV)/bin/ghostllm serve

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
