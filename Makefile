# Two commands do all the set-up on a fresh Debian/Ubuntu machine (as root):
#   make demo   boots 3 sandbox hosts, creates the cluster on them, shows its status
#   make test   lint, type-check, unit tests and end-to-end tests on sandbox hosts
PYTHON ?= python3
SANDBOX_INVENTORY = /var/lib/etcdsop/sandbox/inventory.yml

.PHONY: setup demo demo-down test lint unit bench clean

setup:
	@if ! command -v systemd-nspawn >/dev/null || ! command -v debootstrap >/dev/null \
	    || ! command -v ssh >/dev/null || ! command -v nft >/dev/null \
	    || ! test -e /usr/share/keyrings/debian-archive-keyring.gpg; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	    systemd-container debootstrap iproute2 openssh-client nftables \
	    debian-archive-keyring gpgv; fi
	$(PYTHON) -m pip install -q -e '.[dev]'

demo: setup
	etcdsop sandbox up 3
	etcdsop create -i $(SANDBOX_INVENTORY)
	etcdsop status -i $(SANDBOX_INVENTORY)

demo-down:
	etcdsop sandbox down

lint:
	ruff check src tests bench
	ruff format --check src tests bench
	mypy

unit:
	$(PYTHON) -m pytest -m 'not e2e' -q

# The whole suite on etcd 3.4 (Debian bookworm's), then the tests marked etcd_matrix
# (create, add, rm, reload with Patroni, restore) on etcd 3.5 hosts.
test: setup lint
	$(PYTHON) -m pytest -q --durations=20 -n 2 --dist loadfile
	ETCDSOP_TEST_ETCD=3.5 $(PYTHON) -m pytest -q --durations=10 -n 2 --dist loadfile -m etcd_matrix

bench: setup
	$(PYTHON) bench/run.py

clean:
	rm -rf build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
