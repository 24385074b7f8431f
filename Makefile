# Fresh machine: `make run` (app on the bundled model and samples) or `make test` (whole test suite).
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: run test system-deps install bench pretrain model-card screenshots clean

system-deps:
	@bash scripts/install_system_deps.sh

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: system-deps $(STAMP)

run: install
	$(VENV)/bin/infosam app --samples

test: install
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/bench_predict.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_app_responsiveness.py

pretrain: install
	$(VENV)/bin/infosam pretrain --out runs/pretrain

model-card: install
	$(PY) scripts/evaluate_tiny_model.py --write-card

screenshots: install
	$(PY) scripts/take_screenshots.py --out docs/screenshots

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
