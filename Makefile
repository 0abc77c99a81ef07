# The commands users type. Every target installs what it needs first (make setup is idempotent).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
# DeepSpeed ranks: one per GPU when there are GPUs, else 2 CPU ranks (gloo, one thread each).
RANKS ?= $(shell n=$$(nvidia-smi -L 2>/dev/null | grep -c GPU); echo $$(( n > 0 ? n : 2 )))
# The DeepSpeed launcher; MASTER_PORT (its default 29500) when another run on this machine holds that port.
MASTER_PORT ?= 29500
DEEPSPEED = $(VENV)/bin/deepspeed --master_port $(MASTER_PORT) --num_gpus $(RANKS)
PRESET ?= digits_hideprompt
OUT ?= output/$(PRESET)
ARGS ?=
PYTEST_ARGS ?=

SEEDS ?= 42 40 44

.PHONY: setup protos serve serve-bench test test-fast demo demo-folder results compare routers train pretrain probe export learn-next bench lint clean distclean fsl

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	@# DeepSpeed compiles its CPU communication op on first use (~30 s): pay it here, once.
	$(PY) -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()" >/dev/null 2>&1 || true
	$(PY) -m serve.protos  # gRPC stubs from protos/ with the installed grpcio-tools (git-ignored serve/_stubs/)
	@touch $(STAMP)

protos: setup  ## regenerate serve/_stubs/ from protos/*.proto (the server also does it when they are stale)
	$(PY) -m serve.protos

test: setup  ## the whole suite; it ends with its 20 slowest tests (CI keeps well under 30 min)
	$(PY) -m pytest --durations=20 $(PYTEST_ARGS)

test-fast: setup  ## everything but the minutes-long end-to-end runs
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

pretrain: setup  ## the embedded backbone (cached; a no-op when done)
	$(PY) -m train.pretrain

probe: pretrain  ## linear probe of the embedded backbone vs a random one on Split-Digits
	$(PY) -m train.probe --pixels
	$(PY) -m train.probe --random
	$(PY) -m train.probe

DEMO_PORT ?= 18001
DEMO_METRICS_PORT ?= 18002

demo: pretrain  ## train tasks 1-3 → export → serve → learn tasks 4, 5 under client load (hot swaps) → accuracy
	rm -rf output/demo
	$(PY) -m benchmarks.loop_demo --workdir output/demo --ranks $(RANKS) --port $(DEMO_PORT) \
	  --metrics-port $(DEMO_METRICS_PORT)

FOLDER_DEMO_OUT ?= output/demo-folder

demo-folder: pretrain  ## your own classes: Split-Digits as PNG class folders → train 4 task folders → serve → learn a 5th folder under load (make learn-next DATA=...) → served accuracy per class name
	rm -rf $(FOLDER_DEMO_OUT)
	$(PY) -m benchmarks.folder_demo --workdir $(FOLDER_DEMO_OUT) --ranks $(RANKS) $(ARGS)

results: pretrain  ## the README's results table: digits_hideprompt at the reference's seeds
	for seed in $(SEEDS); do rm -rf output/results/seed$$seed; \
	  $(DEEPSPEED) train/main.py digits_hideprompt --seed $$seed \
	    --output_dir output/results/seed$$seed || exit 1; done
	$(PY) -m train.results_table $(addprefix output/results/seed,$(SEEDS))

COMPARE ?= joint hideprompt hidelora sprompt dualprompt l2p continual_lora

routers: pretrain  ## task routers (mlp = reference, lda, ncm, ensemble) × answer scope, seeds $(SEEDS), on Split-Digits and on it as PNG class folders → docs/routing.md's tables
	for seed in $(SEEDS); do rm -rf output/routers/digits/seed$$seed; \
	  $(DEEPSPEED) train/main.py digits_hideprompt --router ensemble --seed $$seed \
	    --output_dir output/routers/digits/seed$$seed || exit 1; done
	$(PY) -m benchmarks.routers $(addprefix output/routers/digits/seed,$(SEEDS)) --json output/routers/digits.json
	rm -rf output/routers/folders && $(PY) -m benchmarks.digit_folders output/routers/folders
	for seed in $(SEEDS); do rm -rf output/routers/folder/seed$$seed; \
	  $(DEEPSPEED) train/main.py folder_hideprompt --data-path output/routers/folders --router ensemble \
	    --seed $$seed --output_dir output/routers/folder/seed$$seed || exit 1; done
	$(PY) -m benchmarks.routers $(addprefix output/routers/folder/seed,$(SEEDS)) --json output/routers/folder.json

compare: pretrain  ## every method on Split-Digits, same backbone and seeds → the README's comparison table
	for m in $(COMPARE); do for seed in $(SEEDS); do rm -rf output/compare/$$m/seed$$seed; \
	  $(DEEPSPEED) train/main.py digits_$$m --seed $$seed \
	    --output_dir output/compare/$$m/seed$$seed || exit 1; done; done
	$(PY) -m train.results_table --by-preset $(foreach m,$(COMPARE),$(addprefix output/compare/$(m)/seed,$(SEEDS)))

FSL_OUT ?= output/digits_few_shot_lora

fsl: pretrain  ## few-shot LoRA study on Split-Digits: vanilla → shared → episodes; prints vanilla vs shared
	rm -rf $(FSL_OUT)
	$(DEEPSPEED) train/fsl.py digits_few_shot_lora --train_vanilla \
	  --output_dir $(FSL_OUT) --vanilla_model_output_dir $(FSL_OUT)/vanilla_model \
	  --shared_model_output_dir $(FSL_OUT)/shared_model $(ARGS)
	$(DEEPSPEED) train/fsl.py digits_few_shot_lora --train_shared \
	  --output_dir $(FSL_OUT) --vanilla_model_output_dir $(FSL_OUT)/vanilla_model \
	  --shared_model_output_dir $(FSL_OUT)/shared_model $(ARGS)
	$(DEEPSPEED) train/fsl.py digits_few_shot_lora --train_few_shot \
	  --fs_backbone vanilla shared vanilla+shared --output_dir $(FSL_OUT) \
	  --vanilla_model_output_dir $(FSL_OUT)/vanilla_model --shared_model_output_dir $(FSL_OUT)/shared_model $(ARGS)
	$(PY) -m train.fewshot.results $(FSL_OUT)

train: setup  ## make train PRESET=cifar100_hideprompt_5e ARGS="--data-path ./datasets"
	$(DEEPSPEED) train/main.py $(PRESET) --output_dir $(OUT) $(ARGS)

# Serving (issue #6): make serve BUNDLE=<bundle root> [PORT=8001 METRICS_PORT=8002 SERVE_ARGS="--max-batch-size 32"]
BUNDLE ?= bundles
PORT ?= 8001
METRICS_PORT ?= 8002
SERVE_ARGS ?=
TARGET ?= 127.0.0.1:$(PORT)
BENCH_ARGS ?= --concurrency 8 --duration 10

serve: setup  ## gRPC server (OIP v2 + ContinualClassifier) on PORT, Prometheus on METRICS_PORT
	$(PY) -m serve --bundle $(BUNDLE) --port $(PORT) --metrics-port $(METRICS_PORT) $(SERVE_ARGS)

serve-bench: setup  ## load generator against a running server: throughput and p50/p95/p99
	$(PY) -m serve.client --target $(TARGET) bench $(BENCH_ARGS)

# make export RUN=<output_dir> [OUT=<bundle root>] [TASK=k]: OUT here is the bundle root (default: bundles).
RUN ?= output/$(PRESET)
BUNDLES := $(if $(filter command line,$(origin OUT)),$(OUT),bundles)
EXPORT_ARGS ?=

export: setup  ## a trained run → a new bundle version (parity-checked ONNX graphs + manifest)
	$(PY) -m export $(RUN) --out $(BUNDLES) $(if $(TASK),--task $(TASK)) $(EXPORT_ARGS)

# make learn-next RUN=<run> BUNDLE=<bundle root> [DATA=<folder of <class>/<image>>] [MAX_DROP=5]: the continual
# deployment loop's one step (DATA: that folder's classes are the next task, the model grows to hold them).
MAX_DROP ?= 5
DATA ?=

learn-next: setup  ## train the run's next task (or DATA's classes), then publish it to BUNDLE only if it passes the guard rails
	$(DEEPSPEED) train/next_task.py $(RUN) $(if $(DATA),--task-data $(DATA))
	$(PY) -m export.promote $(RUN) --bundle $(BUNDLE) --max-drop $(MAX_DROP)

# Benchmarks (issue #8): bounded suite → BENCHMARKS.md (committed) + output/bench/benchmarks.json (git-ignored).
BENCH_TIMEOUT_S ?= 1200

bench: pretrain  ## train → export → serve, measured against this machine's limits (≤ 20 min, loopback only)
	timeout $(BENCH_TIMEOUT_S) $(PY) -m benchmarks.suite

# Container images (issue #19, docs/deploy.md): make image [BASE=<base image>] [IMAGE_ARGS="--build-arg ACCELERATOR=cuda"]
# Without BASE: python:3.11-slim if it can be pulled, else a local Debian bookworm base made once (debootstrap).
# Tags: localhost/hidecl-{serve,train}:<digest of their inputs> and :latest; an unchanged image is not rebuilt.
IMAGES ?= serve train
IMAGE_ARGS ?=
.PHONY: image

image:  ## the serve and train container images (podman; bash deploy/podman-setup.sh installs it)
	python3 -m deploy.image $(IMAGES) $(if $(BASE),--base $(BASE)) $(IMAGE_ARGS)

lint: setup
	$(VENV)/bin/ruff check train export serve contract tests benchmarks deploy

clean:
	rm -rf output bundles .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
