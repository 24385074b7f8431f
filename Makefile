# Fresh machine: `make run` (app on the bundled model and samples) or `make test` (whole test suite).
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: run test test-fast lint format system-deps install bench pretrain model-card screenshots wheel clean

system-deps:
	@bash scripts/install_system_deps.sh

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	SAM2_BUILD_CUDA=0 $(PY) -m pip install -q --no-build-isolation sam2==1.1.0  # SAM2 models (see pyproject)
	$(PY) -m pip install -q -e ".[test,dev]"
	touch $(STAMP)

install: system-deps $(STAMP)

run: install
	$(VENV)/bin/infosam app --samples

# one pytest process per core (at most 4; each test runs one torch thread, see tests/conftest.py), a test file's
# tests kept in one process (module fixtures built once)
XDIST := -n auto --maxprocesses 4 --dist loadfile

test: install lint
	$(PY) -m pytest $(XDIST)

# the inner loop: no lint, no test marked slow (over ~3 s each: torchrun, full trainings, subprocesses, big
# parity checks); under a third of `make test`'s time. `make test` runs every test.
test-fast: $(STAMP)
	$(PY) -m pytest $(XDIST) -m "not slow"

# ruff (lint + format check), the import contracts ([tool.importlinter]) and mypy on the core ([tool.mypy])
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# a wheel and an sdist in dist/ (they carry the bundled model, its card and the sample images)
wheel: $(STAMP)
	$(PY) -m build --no-isolation --outdir dist .

bench: install
	$(PY) benchmarks/bench_predict.py --json benchmarks/results/predict.json
	$(PY) benchmarks/bench_train.py --json benchmarks/results/train.json
	$(PY) benchmarks/bench_app_responsiveness.py --json benchmarks/results/app_responsiveness.json

pretrain: install
	$(VENV)/bin/infosam pretrain --out runs/pretrain

model-card: install
	$(PY) scripts/evaluate_tiny_model.py --write-card

screenshots: install
	$(PY) scripts/take_screenshots.py --out docs/screenshots

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache
