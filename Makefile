# Two commands do everything: `make run` and `make test`. Both set the project up first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test bench setup clean

$(STAMP): pyproject.toml setup.py $(wildcard emu/_fast_*.c emu/_fast_*.h)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/armmu compare || [ $$? -eq 1 ]    # 1: it ran and found violations (a result, not a failure)

test: $(STAMP)
	$(PY) -m pytest -n 2 tests

bench: $(STAMP)
	$(PY) benchmarks/bench_emulator.py
	$(PY) benchmarks/bench_tlbi.py

clean:
	rm -rf $(VENV) build *.egg-info
