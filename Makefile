# sessrec developer commands. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help install test test-all demo clean

help:  ## list the commands
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)  ## create the project virtualenv (.venv) with sessrec and its test tools

test: $(STAMP)  ## run the default (fast) test suite
	$(PY) -m pytest -q

test-all: $(STAMP)  ## run every test, the slow ones included
	$(PY) -m pytest -q -m ''

demo: $(STAMP)  ## generate the bundled synthetic data, prepare it, train and evaluate (end to end)
	bash scripts/demo.sh $(PY)

clean:  ## remove the virtualenv and demo outputs
	rm -rf $(VENV) runs data/synthetic
