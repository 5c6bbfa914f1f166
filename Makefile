# Two entry points: `make demo` and `make test`. Both create or refresh .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/python -m pipelines.demo

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check vit3d pipelines tests benchmarks

clean:
	rm -rf $(VENV) outputs runs
