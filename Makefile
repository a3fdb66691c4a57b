# Keel: `make demo` starts a lab cluster with the engine; `make test` runs
# every test. Both do their own set-up on a fresh Debian 12 machine (root).
PY := .venv/bin/python
PYTEST := $(PY) -m pytest -p no:cacheprovider

.PHONY: setup demo demo-down test test-fast test-slow bench clean

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/keel-lab up --engine installed
	@echo
	@echo "keel-lab and hosted-engine live in .venv/bin (e.g. .venv/bin/keel-lab status)."
	@echo "The oVirt SDK against the engine: see README, 'The demo'. Stop with: make demo-down"

demo-down:
	.venv/bin/keel-lab down

# Fast tests first (pure logic, scenarios, CLI), then the slow ones (real
# daemons, real VMs), then the multi-host lab in a pytest run of its own, so
# that no other test's daemons are still up beside it. All of them run in CI.
test: setup
	$(PYTEST) -q -m "not slow"
	$(PYTEST) -q -m "slow and not lab" --durations=10
	$(PYTEST) -q -m "lab" --durations=10

test-fast: setup
	$(PYTEST) -q -m "not slow"

test-slow: setup
	$(PYTEST) -q -m "slow and not lab" --durations=10
	$(PYTEST) -q -m "lab" --durations=10

bench: setup
	$(PY) bench/api.py
	$(PY) bench/fuzz.py
	$(PY) bench/access.py
	$(PY) bench/webui.py
	$(PY) bench/appliance_boot.py
	$(PY) bench/failover.py
	$(PY) bench/nemesis.py
	$(PY) bench/ha_vm_failover.py

clean:
	-.venv/bin/keel-lab down 2>/dev/null
	rm -rf .venv build *.egg-info
