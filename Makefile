# Two entry points for a fresh machine: `make demo` (the default pipeline) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= $(shell nproc)

.PHONY: demo test install clean-results

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch goes first and pinned: an unpinned resolve pulls the multi-GB CUDA build.
$(VENV)/.installed: $(BIN)/activate pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/snakemake --profile profiles/default --cores $(CORES)

test: install
	$(BIN)/python -m pytest -q

clean-results:
	rm -rf results logs benchmarks
