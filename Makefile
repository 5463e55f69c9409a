# Entry points: `make demo` (offline lab end to end) and `make test` (everything CI runs).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
BIN   := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: cloudflared-check setup host-deps real-clients venv collection-link sanity-venvs lint test test-unit test-lab bench demo lab-up lab-down clean release

setup: host-deps venv collection-link sanity-venvs real-clients

# The checkout is the collection llm_relay.homelab: ansible.cfg's collections_path finds it through this link.
COLLECTION_LINK := .ansible/collections/ansible_collections/llm_relay/homelab
collection-link:
	@test -L $(COLLECTION_LINK) || { mkdir -p $(dir $(COLLECTION_LINK)) && ln -sfnT ../../../.. $(COLLECTION_LINK); }

# ansible-test sanity's own pinned venvs, built once from PyPI so lint runs offline (tools/run_ansible_test.py).
SANITY_STAMP := .ansible/ansible-test/home/.primed
sanity-venvs: $(SANITY_STAMP)
$(SANITY_STAMP): $(VENV)/.stamp tools/run_ansible_test.py tools/get_pip_standin.py
	$(PY) tools/run_ansible_test.py prime
	@touch $@

# Debian packages the lab and tests need; installs only what is missing.
host-deps:
	@bash lab/host-deps.sh

# The coding-agent CLIs the real-client tests run through serve-local (tests/client/test_real_cli.py):
# Claude Code and Codex, pinned with their integrity hashes in tests/real_clients/package-lock.json. Each
# npm package carries its native binary (nothing is downloaded at install or run time). Reinstalled when
# the lock changes. Without npm (Node.js) this says so and the tests skip, naming why.
REAL_CLIENTS := tests/real_clients
real-clients: $(REAL_CLIENTS)/node_modules/.installed
$(REAL_CLIENTS)/node_modules/.installed: $(REAL_CLIENTS)/package-lock.json $(REAL_CLIENTS)/package.json
	@if command -v npm >/dev/null; then \
	  npm ci --prefix $(REAL_CLIENTS) --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "real-clients: npm (Node.js) not found: the Claude Code and Codex tests will skip" >&2; fi

# The venv is rebuilt when requirements change (stamp holds their hash).
venv: $(VENV)/.stamp
$(VENV)/.stamp: requirements.txt relay/pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(BIN)/pip install -q -U pip wheel
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q -e relay/
	@touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint --profile production
	$(PY) tools/run_ansible_test.py sanity --python 3.11

test: setup lint
	$(PY) tools/run_ansible_test.py units --python 3.11
	$(PY) -m pytest tests/ $(PYTEST_ARGS)

test-unit: setup
	$(PY) tools/run_ansible_test.py units --python 3.11
	$(PY) -m pytest tests/ -m "not lab" $(PYTEST_ARGS)

bench: setup
	$(PY) -m bench

lab-up: setup
	$(PY) -m lab up

lab-down: setup
	$(PY) -m lab down

demo: cloudflared-check setup
	$(PY) -m lab demo

# The lab runs the real cloudflared (lab/edge/binary.py pins its version and sha256): checked before
# `make demo` installs or starts anything. Where it is looked for, in this order:
CLOUDFLARED_NAME := cloudflared-2026.8.2-linux-amd64
cloudflared-check:
	@for f in "$${LAB_CLOUDFLARED:-}" "$${LLM_RELAY_SHARED:+$$LLM_RELAY_SHARED/cloudflared/$(CLOUDFLARED_NAME)}" \
	  "$${LAB_CACHE_DIR:-/var/cache/llm-relay-lab}/cloudflared/$(CLOUDFLARED_NAME)"; do \
	  if [ -n "$$f" ] && [ -f "$$f" ]; then exit 0; fi; done; \
	echo "make demo: the real cloudflared 2026.8.2 was not found. Set LAB_CLOUDFLARED=/path/to/$(CLOUDFLARED_NAME)," >&2; \
	echo "or LLM_RELAY_SHARED to the project's shared directory (its cloudflared/ holds the pinned build," >&2; \
	echo "see its README.md); a copy is then cached in the lab cache dir for later runs." >&2; exit 2

# The collection tarball a user installs (dist/llm_relay-homelab-<version>.tar.gz): the collection plus the
# relay's wheel, which the relay role deploys by default (tools/build_collection.py).
release: venv
	$(PY) tools/build_collection.py --output-path dist

clean:
	-$(PY) -m lab down
	rm -rf $(VENV) .pytest_cache .ruff_cache
