# Two entry points for a fresh machine (only Python needed): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PIP_INSTALL := $(BIN)/python -m pip install -q -c constraints-cpu.txt

.PHONY: venv demo test lint typecheck pytest system-deps clean gpu-check

$(STAMP): pyproject.toml constraints-cpu.txt plugins/daefr-example-domain/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) -e ".[all]" -e plugins/daefr-example-domain
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	WANDB_MODE=offline $(BIN)/daefr demo --out runs/demo

lint: $(STAMP)
	$(BIN)/ruff check src tests plugins benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# Headless Chromium renders the evaluation report in one test; installed when we can (root + apt-get).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "note: chromium not installed; the report screenshot test will be skipped"; }

# Two workers of one thread each: small networks on 2 cores run faster this way than with a 2-thread pool.
pytest: $(STAMP) system-deps
	WANDB_MODE=offline OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --timeout 1200

test: lint typecheck pytest

# GPU acceptance run (docs/cluster.md, "GPU acceptance check"): GPU tests, full-size bf16 training steps,
# restorer and degradation throughput, DDP over NCCL; figures appended to benchmarks/RESULTS.md ("## GPU").
# Exits 2 with one line when no CUDA device is present. Pass options with GPU_CHECK_ARGS="--only train".
GPU_CHECK_ARGS ?=
gpu-check: $(STAMP)
	WANDB_MODE=disabled $(BIN)/python benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
