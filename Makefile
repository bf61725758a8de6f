# Two entry points for a newcomer: `make demo` and `make test`.
# Each creates the virtual environment it needs in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,postgres]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(BIN)/dispatch demo

test: venv
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) demo-output subscribers.db subscribers.db-wal subscribers.db-shm
