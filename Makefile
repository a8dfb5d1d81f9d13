# Two commands: `make book` builds the book, `make test` runs every test. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Run size for notebooks (ci | cpu | gpu); ci keeps a full build and test within minutes on 2 CPU cores.
PRESET ?= ci
export VQVAE_PRESET := $(PRESET)
export MPLBACKEND := Agg

.PHONY: setup book test unit notebooks browser clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -e .
	touch $@

setup: $(VENV)/.installed

book: setup
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

unit: setup
	$(PY) -m pytest -q tests

notebooks: setup
	$(PY) -m pytest -q --nbval-lax notebooks

test: unit notebooks

clean:
	rm -rf _build
