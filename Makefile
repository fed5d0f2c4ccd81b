# Two commands do all the set-up on a fresh machine:
#   make demo   train SimCLR on the built-in dataset and compare k-NN with baselines
#   make test   run the test suite (installing Debian's chromium first, when missing and
#               apt-get can, for the HTML report's browser test; it skips without one)
# Both create (or reuse) the virtual environment in $(VENV). torch is installed
# pinned when absent (an unpinned torch would pull gigabytes of CUDA packages);
# the package itself only asks for torch>=2.4.
VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.nolabel-installed

.PHONY: demo test install chromium bench-cifar clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nolabel demo --out runs/demo

test: $(STAMP) chromium
	$(PY) -m pytest -q

# Debian's chromium for the HTML report's browser test, when missing and apt-get can run;
# never fails (the test then skips and says why)
chromium:
	@sh scripts/ensure_chromium.sh

clean:
	rm -rf runs .pytest_cache
