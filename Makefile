# One virtual environment, pinned by constraints.txt. `make check` is the main job, `make demo` the quick look, `make test` the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= test,torch,hf,openai,jax

.PHONY: install check demo test lint bench clean parity-thorough

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	# the book's own code as a package, for check-book's corpus tests (its metadata pins an old NumPy)
	$(PY) -m pip install -q --no-deps -c constraints.txt llms-from-scratch
	touch $@

check: install
	$(VENV)/bin/npgpt check

demo: install
	$(VENV)/bin/npgpt demo

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

# two workers (pytest-xdist), one BLAS/OpenMP thread each: two workers of two threads on two cores
# thrash (426 s against 246 s measured); the 15 slowest tests are listed at the end of every run
test: lint
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --durations=15

bench: install
	$(PY) -m benchmarks

# never `runs/`: `npgpt train` saves users' runs there; only the demo's own output goes
clean:
	rm -rf $(VENV) runs/demo .pytest_cache .ruff_cache .hypothesis

parity-thorough: install
	HYPOTHESIS_PROFILE=thorough $(PY) -m pytest -q tests/parity
