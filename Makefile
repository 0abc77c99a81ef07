# The commands users type. Every target installs what it needs first (make setup is idempotent).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
# DeepSpeed ranks: one per GPU when there are GPUs, else 2 CPU ranks (gloo, one thread each).
RANKS ?= $(shell n=$$(nvidia-smi -L 2>/dev/null | grep -c GPU); echo $$(( n > 0 ? n : 2 )))
PRESET ?= digits_hideprompt
OUT ?= output/$(PRESET)
ARGS ?=
PYTEST_ARGS ?=

SEEDS ?= 42 40 44

.PHONY: setup test test-fast demo results compare train pretrain probe lint clean distclean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	@# DeepSpeed compiles its CPU communication op on first use (~30 s): pay it here, once.
	$(PY) -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()" >/dev/null 2>&1 || true
	@touch $(STAMP)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup  ## everything but the minutes-long end-to-end runs
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

pretrain: setup  ## the embedded backbone (cached; a no-op when done)
	$(PY) -m train.pretrain

probe: pretrain  ## linear probe of the embedded backbone vs a random one on Split-Digits
	$(PY) -m train.probe --pixels
	$(PY) -m train.probe --random
	$(PY) -m train.probe

demo: pretrain  ## train → results on the embedded benchmark (export/serve join when they exist)
	rm -rf output/demo
	$(VENV)/bin/deepspeed --num_gpus $(RANKS) train/main.py digits_hideprompt --output_dir output/demo

results: pretrain  ## the README's results table: digits_hideprompt at the reference's seeds
	for seed in $(SEEDS); do rm -rf output/results/seed$$seed; \
	  $(VENV)/bin/deepspeed --num_gpus $(RANKS) train/main.py digits_hideprompt --seed $$seed \
	    --output_dir output/results/seed$$seed || exit 1; done
	$(PY) -m train.results_table $(addprefix output/results/seed,$(SEEDS))

COMPARE ?= joint hideprompt hidelora sprompt dualprompt l2p continual_lora

compare: pretrain  ## every method on Split-Digits, same backbone and seeds → the README's comparison table
	for m in $(COMPARE); do for seed in $(SEEDS); do rm -rf output/compare/$$m/seed$$seed; \
	  $(VENV)/bin/deepspeed --num_gpus $(RANKS) train/main.py digits_$$m --seed $$seed \
	    --output_dir output/compare/$$m/seed$$seed || exit 1; done; done
	$(PY) -m train.results_table --by-preset $(foreach m,$(COMPARE),$(addprefix output/compare/$(m)/seed,$(SEEDS)))

train: setup  ## make train PRESET=cifar100_hideprompt_5e ARGS="--data-path ./datasets"
	$(VENV)/bin/deepspeed --num_gpus $(RANKS) train/main.py $(PRESET) --output_dir $(OUT) $(ARGS)

lint: setup
	$(VENV)/bin/ruff check train export serve tests

clean:
	rm -rf output .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
