# Two commands a newcomer needs: `make quickstart` and `make test`.
# Both create .venv if missing and install the project (with its C++ ops) into it.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch and torchvision are pinned to the releases this kind of machine keeps on local disk;
# an unpinned torch would pull a multi-GB CUDA build. Override on other machines:
#   make test TORCH_SPEC="torch torchvision"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# torch guesses CUDA_HOME from nvcc on PATH, which is wrong on some machines; the toolkit root is right.
CUDA_HOME ?= $(firstword $(wildcard /usr/local/cuda) $(wildcard /usr/local/cuda-*))
export CUDA_HOME

STAMP := $(VENV)/.distill-installed
# --no-compile: pip would compile serially, tests included; compileall below does it in parallel without the tests.
# The bytecode must be written at install time: with PYTHONDONTWRITEBYTECODE=1 (set in many containers) Python
# never writes it, and every tool start would recompile torch's modules (seconds each time).
SITE = $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
SOURCES := pyproject.toml setup.py $(wildcard distill/csrc/*.* distill/csrc/*/*.*)

.PHONY: install quickstart test docs lint cuda-check clean

install: $(STAMP)

$(STAMP): $(SOURCES)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile --upgrade "pip>=23" "setuptools>=77,<81" wheel ninja
	$(PY) -m pip install -q --no-compile $(TORCH_SPEC)
	$(PY) -m pip install -q --no-compile --no-build-isolation -e ".[dev]"
	$(PY) -m compileall -q -j0 -x '/(tests?|testing/_internal)/' "$(SITE)" distill tools
	@touch $(STAMP)

quickstart: install
	$(PY) tools/quickstart.py

# layers (import-linter contracts in pyproject.toml), formatting and the docs site (strict: a broken link, a
# missing page or a stale docstring fails) are checked before the tests
test: install cuda-check
	$(VENV)/bin/lint-imports
	$(PY) -m ruff format --check -q distill tools tests benchmarks
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict -q
	$(PY) -m pytest -q tests

# The documentation site (mkdocs.yml: the README, INSTALL, GETTING_STARTED, docs/, an API reference from the
# docstrings) into build/site; open build/site/index.html. Builds offline in seconds.
docs: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# Compiles the CUDA kernels with nvcc (nothing runs them here); skipped with a notice without nvcc.
cuda-check: install
	$(PY) -m distill.ops.build cuda-check

lint: install
	$(PY) -m ruff check distill tools tests benchmarks
	$(PY) -m ruff format --check distill tools tests benchmarks
	$(VENV)/bin/lint-imports

clean:
	rm -rf build *.egg-info distill/*.so .pytest_cache
