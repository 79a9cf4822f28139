# Every target wraps the `eegfm` command line; `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATASET ?= generic
TASK ?=
ROOT ?=
OUT ?=
WORKERS ?= 1
DEMO_DIR ?= shards/demo
ON ?=
TASKS ?= 64
LAUNCH ?= configs/launch/slurm_4x8_reve_base.yaml
ARGS ?=
DRY ?=
PYTEST_ARGS ?=

.PHONY: help setup lock demo shards tasks merge fixtures test test-gpu golden lint format bench-ingest bench-dryrun bench-train bench-memory bench-eval bench-stream simulate-stream submit-slurm submit-k8s docker clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock requirements-interop.lock
	$(PYTHON) -m venv $(VENV)
	# torch first, alone: with it installed, nothing later can ask pip for another build.
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev]'
	# DeepSpeed ships as source whose build imports torch: build it against this torch, ops compiled on use.
	DS_BUILD_OPS=0 $(BIN)/pip install -q --disable-pip-version-check --no-build-isolation -c requirements.lock deepspeed
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -r requirements-interop.lock
	touch $@

setup: $(STAMP)  ## create .venv with the pinned dependencies

lock:  ## re-resolve the dependencies into requirements.lock (needs network)
	rm -rf /tmp/eegfm-lock && $(PYTHON) -m venv /tmp/eegfm-lock
	/tmp/eegfm-lock/bin/pip install -q torch==2.13.0
	/tmp/eegfm-lock/bin/pip install -q -e '.[dev]'
	DS_BUILD_OPS=0 /tmp/eegfm-lock/bin/pip install -q --no-build-isolation deepspeed
	/tmp/eegfm-lock/bin/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

demo: $(STAMP)  ## the embedded default end to end: generate a small corpus, ingest it, report where things are
	$(BIN)/eegfm demo --out $(DEMO_DIR)

shards: $(STAMP)  ## ingest a corpus: make shards DATASET=tueg | TASK=tuab [ROOT=…] [OUT=…] [WORKERS=N] [ON=slurm TASKS=64] [DRY=1: headers only, report]
ifeq ($(ON)$(if $(DRY),-dry),slurm)  # DRY=1 reads the headers here, even with ON=slurm
	$(BIN)/eegfm submit slurm --ingest --config $(LAUNCH) ingest.dataset=$(DATASET) ingest.tasks=$(TASKS) \
		$(if $(ROOT),ingest.root=$(ROOT)) $(if $(OUT),ingest.out=$(OUT))
else
	$(BIN)/eegfm shards $(if $(TASK),--task $(TASK),--dataset $(DATASET)) $(if $(ROOT),--root $(ROOT)) \
		$(if $(OUT),--out $(OUT)) --workers $(WORKERS) $(if $(DRY),--dry-run)
endif

tasks: $(STAMP)  ## list the labelled tasks (make shards TASK=<name> ingests one)
	$(BIN)/eegfm tasks

test: $(STAMP)  ## the whole test suite (two pytest processes at once: tests/parallel.py)
	$(BIN)/python tests/parallel.py $(PYTEST_ARGS)

golden: $(STAMP)  ## rewrite tests/assets/losses/reve_tiny_cpu.txt (the golden loss curve): only on purpose
	$(BIN)/python tests/golden.py --write

test-gpu: $(STAMP)  ## on a GPU node: DDP, FSDP, DeepSpeed ZeRO-2 train reve_base in bf16, resume exactly; tokens/s, MFU
	$(BIN)/python -m eegfm.pretrain.gpucheck $(ARGS)

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench-ingest: $(STAMP)  ## ingest throughput vs a plain MNE pipeline, and peak memory vs recording length
	$(BIN)/python -m eegfm.ingest.bench

bench-dryrun: $(STAMP)  ## seconds for `eegfm shards --dry-run` over 1,000 EDF headers, one core
	$(BIN)/python -m eegfm.ingest.bench_dryrun

bench-train: $(STAMP)  ## loader windows/s per core, CPU model throughput, GPU tokens/s and MFU (when there is one), memory
	$(BIN)/python -m eegfm.pretrain.bench
	$(BIN)/python -m eegfm.pretrain.bench_memory

bench-memory: $(STAMP)  ## training-step memory against channel count (LUNA vs attention) and window length (Mamba)
	$(BIN)/python -m eegfm.pretrain.bench_memory $(ARGS)

bench-eval: $(STAMP)  ## in-loop probe: embedding windows/s (CPU; reve_base bf16 on a GPU), its share of a reve_base run
	$(BIN)/python -m eegfm.pretrain.bench_eval

bench-stream: $(STAMP)  ## object-store GETs per window trained, one epoch from a real local S3 server (SeaweedFS)
	$(BIN)/python -m pytest -q -s tests/bench_stream_s3.py

simulate-stream: $(STAMP)  ## the epoch plan at REVE's scale (60,000 h, 4 x 8 GPUs), no data: cost, GET/s, mixing
	$(BIN)/eegfm simulate-stream --hours 60000 --gpus 32 --nodes 4 $(ARGS)

submit-slurm: $(STAMP)  ## render and submit a SLURM job: make submit-slurm LAUNCH=configs/launch/….yaml [ARGS="--dry-run k=v"]
	$(BIN)/eegfm submit slurm --config $(LAUNCH) $(ARGS)

submit-k8s: $(STAMP)  ## render, validate and apply a Kubernetes job: make submit-k8s LAUNCH=… [ARGS="--dry-run"]
	$(BIN)/eegfm submit k8s --config $(LAUNCH) $(ARGS)

docker:  ## the training image (needs a Docker engine)
	docker build -f docker/Dockerfile -t eegfm:$$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml) .

clean:
	rm -rf $(VENV) shards/demo
