# imagekit — two commands set everything up on a fresh machine:
#   make demo    the whole story (key, appliance, data disk, sign, publish, launch)
#   make test    the whole test suite
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
PYTEST_ARGS ?=

# Debian packages imagekit and its tests use (installed only when missing).
APT_PACKAGES := sudo qemu-system-x86 qemu-utils debootstrap fdisk xorriso cpio kmod xmlsec1 \
	squashfs-tools dosfstools mtools syslinux syslinux-common extlinux e2fsprogs \
	cloud-image-utils genisoimage busybox-static linux-image-cloud-amd64 curl \
	postgresql nginx-light wrk chromium python3-venv openssh-client procps

.PHONY: deps install test test-fast demo bench lint serve testcloud testcloud-down clean

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:" $$missing; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,build]'
	touch $@

install: deps $(VENV)/.installed

test: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: install
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/python -m imagekit.devtools.demo

bench: install
	$(PY) -m bench

lint: install
	$(VENV)/bin/ruff check imagekit marketplace_server tests bench
	$(VENV)/bin/ruff format --check imagekit marketplace_server tests bench
	$(VENV)/bin/mypy imagekit marketplace_server

serve: install
	$(VENV)/bin/imagekit serve

# The single-node OpenStack the cloud tests use (the openstack_cloud fixture starts it too).
# Its Debian packages are installed by `up` itself, not by deps: they need a policy-rc.d and
# pre-seeded debconf answers, and only runs that use the cloud should pay for 379 packages.
testcloud: install
	$(PY) -m imagekit.devtools.testcloud up

testcloud-down: install
	$(PY) -m imagekit.devtools.testcloud down

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
