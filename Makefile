# Everything installs into .venv on first use; later runs reuse it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-postgres test-django6 lint format check clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "eventsite needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $(VENV)/.runtime $@

run: $(VENV)/.runtime  ## serve at http://127.0.0.1:8000 with broker and workers
	$(BIN)/python manage.py runstack

# tests/clients/ run kafkajs with the machine's Node.js: where npm is installed,
# node_modules/ is installed from package-lock.json (again whenever it changes).
NODE_MODULES := $(if $(shell command -v npm 2>/dev/null),node_modules/.installed)
node_modules/.installed: package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# The suite runs in TEST_WORKERS processes (pytest-xdist; each has its own
# test database, broker and ports; a module's tests stay in one process, so
# a module's servers start once). Most tests wait on servers, not on the CPU.
# TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 3
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: $(VENV)/.dev $(NODE_MODULES)  ## the whole test suite
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

# The suite again on PostgreSQL, every test that reaches the test database
# (the others cannot tell the databases apart; tests/conftest.py picks them);
# it fails at once when the server cannot be reached. The tests run in
# test_<database>, or in EVENTSITE_TEST_DB if set.
POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/test
test-postgres: $(VENV)/.dev $(NODE_MODULES)  ## the test suite's database tests on PostgreSQL
	DATABASE_URL=$(POSTGRES_URL) EVENTSITE_DATABASE_TESTS_ONLY=1 $(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

# The same code on Django 6 (which needs Python 3.12+): PYTHON312=python3.12 make test-django6
DJANGO6_VENV := .venv-django6
DJANGO6_TESTS := tests/events/test_schema.py tests/views/test_post_view.py tests/workers/test_analytics.py \
	tests/admin/test_admin.py tests/views/test_healthz.py tests/live/test_event_socket.py tests/system/test_end_to_end.py \
	tests/events/test_outbox.py tests/workers/test_base.py tests/eventsite/test_serving.py tests/live/test_replay.py \
	tests/dashboard/test_overview.py tests/feed/test_images.py tests/feed/test_services.py tests/workers/test_notifications.py \
	tests/admin/test_admin_analytics.py tests/workers/test_prune.py tests/security/test_tokens.py tests/live/test_socket_auth.py \
	tests/live/test_socket_security.py tests/live/test_message_rate.py tests/security/test_http_security.py \
	tests/live/test_delivery.py tests/live/test_reader_watch.py tests/live/test_reader_keeper.py \
	tests/security/test_ratelimit.py tests/security/test_client_address.py tests/kafka/test_clients.py tests/live/test_tail.py \
	tests/deploy/test_compose.py tests/deploy/test_compose_kafka.py tests/deploy/test_dockerfile.py \
	tests/deploy/test_nginx.py tests/deploy/test_healthcheck.py tests/system/test_scale_out.py \
	tests/events/test_epochs.py tests/live/test_stored_history.py tests/management/test_rolling.py
test-django6:
	@test -n "$(PYTHON312)" || { echo "set PYTHON312 to a Python 3.12+ interpreter"; exit 2; }
	test -x $(DJANGO6_VENV)/bin/python || $(PYTHON312) -m venv $(DJANGO6_VENV)
	$(DJANGO6_VENV)/bin/python -m pip install --disable-pip-version-check -q "Django>=6,<7" -r requirements-dev.txt
	$(DJANGO6_VENV)/bin/python -m pytest $(XDIST) -q -W error::DeprecationWarning $(DJANGO6_TESTS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict monitor eventsite
	$(BIN)/lint-imports --no-cache

format: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

check: lint test  ## every check CI runs

# Front-end libraries, committed under static/vendor/ so that running the
# product needs no npm; after changing package.json run `make vendor` and commit.
UPLOT_DIST := node_modules/uplot/dist
.PHONY: vendor
vendor:
	npm ci --no-audit --no-fund
	mkdir -p static/vendor/uplot
	cp $(UPLOT_DIST)/uPlot.iife.min.js $(UPLOT_DIST)/uPlot.min.css node_modules/uplot/LICENSE static/vendor/uplot/

.PHONY: bench
bench: $(VENV)/.dev  ## measure fan-out, posts and analytics on this machine (under 10 minutes)
	$(BIN)/python -m bench

# The embedded default under a long load, then idle (docs/PERFORMANCE.md, "Soak");
# smaller: make soak SOAK_ARGS="--events 60000".
.PHONY: soak
soak: $(VENV)/.dev  ## 300,000 events into the make run stack, then an idle minute (under 15 minutes)
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) $(DJANGO6_VENV) var .pytest_cache .ruff_cache
