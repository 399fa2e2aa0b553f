# Two commands for a fresh machine:  `make demo` (the quickstart)  and  `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

LABEXT := wolt_jupyter/labextension/package.json
JLPM := PATH="$(abspath $(BIN)):$$PATH" jlpm
LABEXT_SOURCES := $(wildcard labextension/src/*.ts labextension/src/*/*.tsx labextension/style/* labextension/schema/*) labextension/package.json labextension/yarn.lock

.PHONY: demo test test-fast lint docs system-deps labextension labextension-check bench clean cluster-up cluster-down cluster-images

# SKIP_JUPYTER_BUILDER: the demo needs no front end, so no Node build here; `make labextension` builds it.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	SKIP_JUPYTER_BUILDER=1 $(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The JupyterLab extension (TypeScript, built with @jupyter/builder through jlpm), linked into the venv as
# `jupyter labextension develop` would (the editable install skipped building it).
labextension: $(LABEXT)
$(LABEXT): $(STAMP) $(LABEXT_SOURCES)
	bash scripts/install-system-deps.sh build
	cd labextension && PATH="$(abspath $(BIN)):$$PATH" jlpm install --immutable && PATH="$(abspath $(BIN)):$$PATH" jlpm build:prod
	mkdir -p $(VENV)/share/jupyter/labextensions
	rm -rf $(VENV)/share/jupyter/labextensions/wolt-jupyter
	ln -s $(abspath wolt_jupyter/labextension) $(VENV)/share/jupyter/labextensions/wolt-jupyter
	touch $@

# The lab extension's eslint + prettier (check mode) and Jest tests of its model and request layers (a real
# local HTTP server, no browser). Needs labextension/node_modules (`make labextension`); `make test` runs it
# after the build, `make lint` when node_modules exists.
labextension-check: $(STAMP)
	@test -d labextension/node_modules || { echo "labextension/node_modules is missing: run make labextension"; exit 1; }
	cd labextension && $(JLPM) lint:check
	cd labextension && $(JLPM) test

# The quickstart on the embedded defaults: trains, logs, registers with alias `champion`, prints the cards.
demo: $(STAMP)
	$(BIN)/python notebooks/run.py notebooks/01-quickstart.ipynb

# System packages the tests' real servers and browser need (PostgreSQL, Prometheus, Chromium, Node), the
# lab extension, then lint, the documentation site (strict: a broken link fails) and the whole suite (browser
# tests included).
# The cluster tier runs too: `cluster-up` first (cached builds: a warm start takes seconds), down at the end
# whatever pytest said. Every other tier runs on two workers, a test module per worker (module fixtures
# are not started twice): 15m52s instead of 25m51s for the same tests measured here; the cluster tier after,
# alone, since it shares one cluster, with the tests marked `serial` (timing under a full disk).
test: $(STAMP) system-deps $(LABEXT)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy wolt_jupyter
	$(MAKE) labextension-check
	$(MAKE) docs
	$(MAKE) cluster-up
	status=0; \
	$(BIN)/python -m pytest -m "not cluster and not serial" -n 2 --dist loadfile --durations=40 || status=$$?; \
	$(BIN)/python -m pytest -m "serial or cluster" --durations=15 || status=$$?; \
	$(MAKE) cluster-down; exit $$status

# The unit tier (in-process, no server, no subprocess; tests/conftest.py gives each test its tier): the tests a
# developer runs on every change, under 2 minutes on 2 cores. `-m integration`, `e2e`, `browser`, `cluster`
# select the other tiers; `make test` runs them all.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m unit -q -n 2 --durations=10

# A real single-node Kubernetes (etcd, kube-apiserver, controller-manager, scheduler, kubelet, kube-proxy built
# from upstream at pinned versions through the Go module proxy; containerd + runc + CNI from Debian) with the
# runtime image built here from the Dockerfile. Needs root. Prints `export KUBECONFIG=...` last.
cluster-up:
	bash scripts/cluster/install-deps.sh
	python3 scripts/cluster/cluster.py up
	bash scripts/cluster/build-prometheus.sh  # the tier's Prometheus (Kubernetes discovery), built once

cluster-down:
	python3 scripts/cluster/cluster.py down

# rebuild the images from this checkout (cached by content) and import them into the running cluster
cluster-images:
	python3 scripts/cluster/cluster.py images

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy wolt_jupyter
	$(BIN)/ruff format --check .
	if [ -d labextension/node_modules ]; then $(MAKE) labextension-check; fi

# The documentation site into site/ (mkdocs.yml; docs/_hooks.py generates the reference pages from the code).
# --strict: a warning (a broken link or anchor, a page missing from the navigation) fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --site-dir site

system-deps:
	bash scripts/install-system-deps.sh

bench: $(STAMP)
	$(BIN)/python benchmarks/import_time.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache labextension/node_modules labextension/lib wolt_jupyter/labextension site
