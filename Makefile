# sessrec developer commands. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help install test test-all demo paper clean

help:  ## list the commands
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# pip --quiet still prints one warning per package missing from each local file:// index of the machine's
# pip configuration ("WARNING: Location 'file:///.../<pkg>/' is ignored: ..."), dozens per install. Only
# those lines are dropped: errors and other warnings still show, and the exit status stays pip's.
PIP_NOISE := ^WARNING: Location '.*' is ignored
PIP_FILTER = 2>$(VENV)/.pip-stderr; status=$$?; grep -v "$(PIP_NOISE)" $(VENV)/.pip-stderr >&2; \
	rm -f $(VENV)/.pip-stderr; exit $$status

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip $(PIP_FILTER)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]' $(PIP_FILTER)
	touch $(STAMP)

install: $(STAMP)  ## create the project virtualenv (.venv) with sessrec and its test tools

test: $(STAMP)  ## run the default (fast) test suite
	$(PY) -m pytest -q

test-all: $(STAMP)  ## run every test, the slow ones included
	$(PY) -m pytest -q -m ''

demo: $(STAMP)  ## bundled synthetic data end to end: baselines, GRU4Rec, then p-RNN vs ID only vs item-kNN (~1.5 min)
	bash scripts/demo.sh $(PY)

# The p-RNN paper's table: `make paper` (synthetic data, generated when missing) or `make paper PAPER=movielens`
# (MovieLens latest-small from $(MOVIELENS), prepared when missing). Finished runs are skipped on rerun;
# W&B runs are written offline unless WANDB_MODE=online.
PAPER ?= synthetic
MOVIELENS ?= ../shared/data/movielens-latest-small/ml-latest-small
PAPER_DATA_synthetic := data/synthetic/prepared/meta.json
PAPER_DATA_movielens := data/movielens/features/properties.parquet

paper: $(STAMP) $(PAPER_DATA_$(PAPER))  ## train and evaluate the p-RNN paper's table (PAPER=synthetic|movielens)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m sessrec experiment --config configs/paper/$(PAPER).yaml

data/synthetic/prepared/meta.json:
	$(PY) -m sessrec generate --out data/synthetic/raw --overwrite
	$(PY) -m sessrec prepare data/synthetic/raw/events.tsv --format gru4rec --out data/synthetic/prepared --overwrite

data/movielens/features/properties.parquet:
	$(PY) -m sessrec prepare $(MOVIELENS)/ratings.csv --format movielens --test-days 180 --valid-days 180 \
		--out data/movielens/prepared --overwrite
	$(PY) -m sessrec extract movielens $(MOVIELENS) --out data/movielens/features

clean:  ## remove the virtualenv and demo outputs
	rm -rf $(VENV) runs data/synthetic
