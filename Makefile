# Two entry points for a fresh machine: `make demo` (the default pipeline) and `make test`.
# Both install from constraints.txt, the lock of every package version the suite passed with;
# `make lock` regenerates it from the newest releases inside pyproject.toml's ranges.
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
CORES ?= $(shell nproc)
LOCK := constraints.txt
LOCK_VENV := .lock-venv
# The CPU wheel; an unpinned torch would pull the multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: demo test install lock clean-results

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch goes first: every later resolve then keeps the installed CPU build.
$(VENV)/.installed: $(BIN)/activate pyproject.toml $(LOCK)
	$(BIN)/pip install -q -c $(LOCK) "$(TORCH)"
	$(BIN)/pip install -q -c $(LOCK) -e ".[test]"
	touch $@

install: $(VENV)/.installed

# The rules call `moequant`; the venv's bin goes first on PATH so they find this install
# without anything activated.
demo: install
	PATH="$(BIN):$$PATH" $(BIN)/snakemake --profile profiles/default --cores $(CORES)

test: install
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest -q

# Resolve the newest releases inside pyproject's ranges in a throwaway venv, run the suite
# on them, and only then write the lock (torch's local build label dropped, so the same
# lock serves a CUDA build of that version).
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q --upgrade pip
	$(LOCK_VENV)/bin/pip install -q "$(TORCH)"
	$(LOCK_VENV)/bin/pip install -q -e ".[test,workflow]"
	PATH="$(abspath $(LOCK_VENV))/bin:$$PATH" $(LOCK_VENV)/bin/python -m pytest -q -p no:cacheprovider \
	    --deselect tests/test_environment.py::test_lock_matches_the_running_environment_and_python
	( echo "# Lock: every package the suite passed with (regenerate: make lock). Python $$($(LOCK_VENV)/bin/python -c 'import platform; print(platform.python_version())')."; \
	  $(LOCK_VENV)/bin/pip freeze --exclude-editable | sed -E 's/^(torch==[^+]*)\+.*/\1/' ) > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf $(LOCK_VENV)

clean-results:
	rm -rf results logs benchmarks
