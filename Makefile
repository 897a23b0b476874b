# Quick start: `make demo` and `make test` on a fresh machine with Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench fuzz soak reference install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/detpipe demo $(if $(OUTPUT),--output $(OUTPUT)) $(if $(DETECTOR),--detector $(DETECTOR)) $(if $(RECEIVERS),--receivers $(RECEIVERS))

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

fuzz: $(STAMP)
	DETPIPE_FUZZ_CASES=20000 $(BIN)/python -m pytest tests/fuzz tests/integration/test_device_fuzz.py

soak: $(STAMP)
	DETPIPE_SOAK_SERIES=50 $(BIN)/python -m pytest -s tests/integration/test_soak.py

# The README's device reference tables, rewritten from the device classes (a test fails when they drift).
reference: $(STAMP)
	$(BIN)/python -m detpipe.devices.reference_tables README.md

clean:
	rm -rf $(VENV) detpipe-demo .pytest_cache
