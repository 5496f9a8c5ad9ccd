# gestore-retention: developer entry points.
#
#   make demo   build the virtualenv, then run the end-to-end demo on SQLite (var/)
#   make test   run the test suite on SQLite, PostgreSQL and MariaDB (those that answer)
#   make test-scale  the failure cases at their full sizes (BR-25: 200k and 400k rows; minutes)
#   make bench  run the benchmarks (python -m benchmarks) and rewrite docs/benchmarks.md
#   make venv   create .venv and install the project with its extras
#   make clean  remove var/, caches and build files (keeps .venv); distclean also removes .venv
#
# Overrides (environment or make variables): PYTHON, DBS, PG_URL, MYSQL_URL,
# CELERY_TEST_BROKER, PYTEST_ARGS, TEST_TIMEOUT; see scripts/testmatrix.sh.
# BENCH_ARGS is passed to `python -m benchmarks` (e.g. "--only erase --sizes 10000").

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
EXTRAS := test,postgres,mysql,redis

# Make variables given on the command line reach the scripts.
export DBS PG_URL MYSQL_URL CELERY_TEST_BROKER PYTEST_ARGS TEST_TIMEOUT

.PHONY: venv test test-scale bench demo clean distclean help

help:
	@sed -n '3,12p' Makefile | sed 's/^# \{0,1\}//'

venv: $(VENV)/.installed

# Re-installs only when pyproject.toml changed (or the venv is missing).
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "error: $(PYTHON) is Python %d.%d; gestore-retention needs 3.11+ (make PYTHON=python3.12 ...)" % sys.version_info[:2])'
	@if [ ! -x $(PY) ]; then \
		echo "creating $(VENV) with $$($(PYTHON) --version)"; \
		$(PYTHON) -m venv $(VENV) && $(PY) -m pip install --quiet --upgrade pip; \
	fi
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $@

test: venv
	@PY=$(PY) bash scripts/testmatrix.sh

test-scale: venv
	@PY=$(PY) GESTORE_BR25_N=200000 TEST_TIMEOUT=$${TEST_TIMEOUT:-3600} \
		PYTEST_ARGS="tests/test_case_br25.py $(PYTEST_ARGS)" bash scripts/testmatrix.sh

bench: venv
	$(PY) -m benchmarks $(BENCH_ARGS)

demo: venv
	@PY=$(PY) bash scripts/demo.sh

clean:
	rm -rf var/ .pytest_cache/ .hypothesis/ .tox/ build/ dist/ *.egg-info/
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
