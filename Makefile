# Quick start: `make demo` and `make test` each set up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
NVCC ?= nvcc
CUDA_ARCHS := -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90

.PHONY: demo test test-fast lint cuda-check ops clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU build of torch; a bare `torch` requirement would pull a multi-GB CUDA build
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,viewer,weights,bench]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/ad3d demo --out runs/demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

# ruff: lint and format (line length 120, configured in pyproject.toml)
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check ad3d tests benchmarks
	$(VENV)/bin/ruff format --check ad3d tests benchmarks

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

# Compile every CUDA source with nvcc (object files only: no GPU needed).
cuda-check:
	@mkdir -p build/cuda-check
	@for f in cuda_ops/*.cu; do \
	  echo "nvcc $$f"; \
	  $(NVCC) -std=c++17 -O3 -fmad=false $(CUDA_ARCHS) -c $$f -o build/cuda-check/$$(basename $$f .cu).o || exit 1; \
	done

ops: $(VENV)/.installed
	$(PY) -m ad3d.ops build

clean:
	rm -rf build runs
