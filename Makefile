# sparsekit developer entry points. Every target creates/uses .venv and is safe to rerun.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv data demo test lint bench-tickets bench-slt bench-deploy bench-structured clean

# native engine sources (distribution sparsekit-engine in engine/, module sparsekit_engine._native):
# editing them re-runs the editable install of the engine (incremental rebuild in engine/build/)
ENGINE_SRC := engine/pyproject.toml engine/CMakeLists.txt $(wildcard engine/native/*.cpp engine/native/*.h engine/native/*.inc)

$(STAMP): pyproject.toml $(ENGINE_SRC)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(PY) -m pip install -q torch torchvision
	# the engine first (sparsekit depends on sparsekit-engine, which is not on PyPI: pip takes it from here),
	# built without isolation so its CMake tree (engine/build/) is reused by rebuilds and the wheel test
	$(PY) -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" "setuptools>=77"
	$(PY) -m pip install -q --no-build-isolation -e ./engine
	$(PY) -m pip install -q -e ".[dev]"
	# the optional runtimes, so their tests run here and in CI (skipped with a reason when absent)
	$(PY) -m pip install -q openvino "mnn>=3.6" || echo "optional runtimes openvino/mnn not installed: their tests skip"
	touch $(STAMP)

venv: $(STAMP)

data:
	@bash scripts/get_data.sh

demo: $(STAMP) data
	$(PY) examples/demo.py $(DEMO_ARGS)

test: $(STAMP) test-native
	$(PY) -m pytest -q -x --durations=15

.PHONY: test-native test-aarch64
# standalone kernel parity test (engine/native/tests, no Python): every x86 kernel variant this CPU runs vs a scalar
# reference; incremental build in engine/build/native-tests/
test-native:
	$(MAKE) --no-print-directory -C engine/native/tests run

# the same test cross-compiled for aarch64 (baseline + NEON variants) and run under qemu-aarch64; installs
# g++-aarch64-linux-gnu and qemu-user with apt-get when run as root, else prints "SKIP: ..." and passes
test-aarch64:
	bash scripts/test_aarch64.sh

lint: $(STAMP)
	$(PY) -m ruff check sparsekit tests
	$(VENV)/bin/lint-imports  # import contracts in .importlinter (layers; methods/masking never import bench)

bench-tickets: $(STAMP) data
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) benchmarks/bench_tickets.py $(BENCH_TICKETS_ARGS)

bench-slt: $(STAMP) data
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) benchmarks/bench_slt.py $(BENCH_SLT_ARGS)

bench-deploy: $(STAMP) data
	$(PY) benchmarks/bench_deploy.py

# channel tickets under MAC / latency budgets: accuracy (resnet20, 3 seeds at 0.25) and ORT speed
bench-structured: $(STAMP) data
	$(PY) benchmarks/bench_structured.py $(BENCH_STRUCTURED_ARGS)

clean:
	rm -rf .demo .bench runs

.PHONY: bench-engine
# sparse-cpu vs ONNX Runtime (dense) over sparsities; BENCH_ENGINE_ARGS=--quick for a short run;
# --record writes docs/benchmarks.md (bench-engine section) and README.md (engine-summary)
bench-engine: $(STAMP)
	$(PY) benchmarks/bench_engine.py --record $(BENCH_ENGINE_ARGS)

.PHONY: bench-sweep
# the deployment frontier (sparsekit sweep): cts/magnitude 80-98 % on sparse-cpu, magnitude-channel MACs
# 0.5/0.25 on ORT, dense on every runtime; BENCH_SWEEP_ARGS="--models lenet300,resnet20" adds resnet20
bench-sweep: $(STAMP) data
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) benchmarks/bench_sweep.py $(BENCH_SWEEP_ARGS)
