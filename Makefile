# The README's two commands: `make demo` and `make test`. Both create (or reuse) the project's
# environment in .venv from nothing but Python 3.11 and git.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= cpu,dev
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test lint format bench clean

# The C++ sources too: pip compiles the CRF's mean field (keras_deeplab/crf_mean_field.cpp) into the package.
$(STAMP): pyproject.toml keras_deeplab/crf_mean_field.cpp keras_deeplab/crf_mean_field_kernels.h
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/keras-deeplab demo --out runs/demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) scripts/check_layers.py
	$(PY) -m pytest -n 2 --dist worksteal --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(PY) benchmarks/forward.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info keras_deeplab/*.so
