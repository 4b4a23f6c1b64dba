# Two commands for a fresh machine: `make demo` and `make test`. `make check` is the part of
# `make test` that needs no stack: ruff, mypy and the unit tests.
# Both set everything up first and are idempotent: the venv, the jars and the
# Postgres cluster are reused on a second run.

PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
DOCS_STAMP := $(VENV)/.docs-installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: promtool demo check test faults faults-full bench bench-quick lint docs venv stack-up stack-down clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]' --config-settings editable_mode=compat
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(VENV)/bin/ecst demo

# promtool (Debian's prometheus package) checks and unit-tests deploy/monitoring/ecst-rules.yaml in the unit
# tests; installed once, when missing (apt-get, as root; the package's Prometheus service is not started).
promtool:
	@command -v promtool >/dev/null || { \
	  test "$$(id -u)" = 0 || { echo "promtool not found: run 'sudo apt-get install prometheus', then re-run" >&2; exit 1; }; \
	  echo "installing promtool (apt-get install prometheus)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus >/dev/null 2>&1 || { \
	    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus >/dev/null; }; }
	@promtool --version | head -1

# Lint, types and the unit tests: no stack.
check: venv promtool
	$(VENV)/bin/ruff check ecst tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest tests/unit

# `check`, then the integration tests on the real stack: together pyproject's pytest testpaths.
test: check
	$(VENV)/bin/pytest tests/integration --durations=20

# The fault suite on the real local stack; writes docs/reliability.md and .json.
faults: venv
	$(VENV)/bin/pytest tests/faults --durations=5

faults-full: venv
	ECST_FAULTS_SIZE=full $(VENV)/bin/pytest tests/faults

# The benchmark harness on the local stack (benchmarks/harness.py, about 45 minutes): writes
# docs/benchmarks.md, docs/bench-charts/*.png, docs/benchmarks.json and docs/benchmarks-raw.json.
bench: venv
	$(VENV)/bin/python -m benchmarks.harness

# The same at CI size, into .bench/quick/: the figures mean nothing, the harness cannot rot.
bench-quick: venv
	$(VENV)/bin/python -m benchmarks.harness --quick

lint: venv
	$(VENV)/bin/ruff check ecst tests benchmarks

# The documentation site (mkdocs.yml, docs/) into .site/; not part of `make test`.
$(DOCS_STAMP): $(STAMP)
	$(VENV)/bin/pip install -q -e '.[test,docs]' --config-settings editable_mode=compat
	rm -f $(VENV)/.docs-installed-*
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(VENV)/bin/mkdocs build --strict -d .site

stack-up: venv
	$(VENV)/bin/ecst stack up

stack-down: venv
	$(VENV)/bin/ecst stack down

clean: stack-down
	rm -rf .ecst
