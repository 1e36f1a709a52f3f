# reminderd: make install | demo | db | test | lint | typecheck | bench | clean
PY := .venv/bin/python

.PHONY: install demo db test lint typecheck bench clean

install: ## PostgreSQL binaries (apt, when missing) and the project in .venv
	@bash .ci/setup

demo: install ## a throwaway database, the daemon and a receiver: watch callbacks fire
	@$(PY) -m reminderd.cli demo

db: install ## a PostgreSQL for the CLI, kept across runs (reminderd dev-db start): prints its URL
	@$(PY) -m reminderd.cli dev-db start

test: ## the whole suite against real PostgreSQL and a real browser (installs PgBouncer, chromium, … once)
	@bash .ci/setup --test
	@$(PY) -m pytest -q --durations=25 -n auto --maxprocesses 4 --dist loadfile

lint: install ## ruff, then mypy --strict
	@.venv/bin/ruff check .
	@.venv/bin/mypy

typecheck: install
	@.venv/bin/mypy

bench: install ## throughput, timer precision, burst lateness, claim cost, memory
	@$(PY) bench/run.py

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
