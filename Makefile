# drivelab: `make demo` and `make test` set up .venv on a fresh machine, then run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_OUT ?= demo_out

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	SDL_VIDEODRIVER=dummy $(BIN)/drivelab demo --out $(DEMO_OUT)

test: $(STAMP)
	SDL_VIDEODRIVER=dummy $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	SDL_VIDEODRIVER=dummy $(BIN)/python benchmarks/collect.py
	SDL_VIDEODRIVER=dummy $(BIN)/python benchmarks/expert.py
	SDL_VIDEODRIVER=dummy $(BIN)/python benchmarks/trainer.py
	SDL_VIDEODRIVER=dummy $(BIN)/python benchmarks/policy_latency.py

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .ruff_cache
