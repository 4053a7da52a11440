# The README's commands. Every target creates the virtualenv and installs from scratch if needed.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME := $(CURDIR)/.ml_assets/dagster
export RAY_AUTH_MODE := token

.PHONY: install demo dev test lint bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# pip, not uv: torch==2.13.0 resolves to the CPU build on this machine's disk
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: install  ## the whole graph for the demo tenant on embedded defaults, then a curl to try
	$(BIN)/ml-assets demo

dev: install  ## the Dagster UI on :3000 and the ML Service API on :8000, demo tenant, Ray head
	$(BIN)/ml-assets tenant add demo
	$(BIN)/ml-assets ray up
	@echo "Dagster UI: http://127.0.0.1:3000   ML Service API: http://127.0.0.1:8000/docs"
	$(BIN)/ml-assets serve-api & api=$$!; trap "kill $$api 2>/dev/null" EXIT INT TERM; \
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000; kill $$api

test: install  ## lint, then the suite (starts the servers it needs itself)
	$(BIN)/ruff check .
	$(BIN)/pytest -ra

bench: install
	$(BIN)/python -m bench.run

clean:
	-$(BIN)/ml-assets ray down
	rm -rf .ml_assets
