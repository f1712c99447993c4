# The two commands of the README are `make demo` and `make test`; both install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS ?= --quiet --disable-pip-version-check
PYTEST_ARGS ?=
# test processes side by side: every test has its own databases, ports and files; 2 fits CI's two cores
PYTEST_WORKERS ?= 2

.PHONY: install demo test check format bench clean

$(VENV)/.installed: pyproject.toml setup.py src/contactsync/wire/_phpform_c.c
	python3 -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install $(PIP_FLAGS) -e '.[test,dev]' 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import contactsync, pytest, xdist, ruff, mypy, importlinter"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/contactsync demo

test: install
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

check: install
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-logo

format: install
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

bench: install
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .grimp_cache
