# The two commands: `make demo` and `make test`. Each installs what it needs on
# a fresh Debian 12 machine (as root) and is quiet on a second run.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON := /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
# The real programs jobs run in tests/integration/realprograms.py (issue 13), and
# Open MPI through Slurm: Slurm's mpi/pmix (in slurm-wlm-basic-plugins) dlopens
# pmix2/lib/libpmix.so, which only libpmix-dev ships; javac compiles the Java test
# class, mpicc the MPI one; psql is a Perl wrapper.
REAL_PROGRAMS := openmpi-bin libopenmpi-dev libpmix-dev python3-numpy default-jdk-headless \
	cmake perl gdb file git openssl ca-certificates tzdata tar gzip
# Debian packages the code and the tests use. Later parts add theirs here.
# gcc-multilib: the closure tests' 32-bit decoy library; curl: the cache-fill baseline;
# slurm-wlm, munge: the virtual cluster's real Slurm 22.05 (started by beoctl, no systemd);
# dnsmasq-base (the binary, no system service), busybox-static, cpio: boot (DHCP,
# the stage-2 initramfs and its checks); kmod (depmod: a kernel .deb has no module
# index), qemu-system-x86, ipxe-qemu (the virtual nodes and their NIC's iPXE ROM),
# ipxe (undionly.kpxe and ipxe.efi the master's TFTP serves to real PXE firmware),
# squashfs-tools (mksquashfs: stage 3 is a squashfs image stage 2 mounts);
# chromium, chromium-driver (the status page's browser test, headless, via selenium);
# nfs-ganesha, nfs-ganesha-vfs (the master's userspace NFS server: `beoctl nfs apply`
# where the kernel has no nfsd; no service of its own starts), libnfs-utils (nfs-cp,
# nfs-ls, nfs-cat: the NFS test's client, in userspace like the server).
APT_PACKAGES := python3 python3-venv python3-dev gcc gcc-multilib make libfuse2 fuse3 \
	curl postgresql postgresql-client iproute2 procps util-linux slurm-wlm munge \
	dnsmasq-base busybox-static cpio kmod qemu-system-x86 ipxe-qemu ipxe squashfs-tools \
	chromium chromium-driver nfs-ganesha nfs-ganesha-vfs libnfs-utils $(REAL_PROGRAMS)
PG_TEST_URL := postgresql+psycopg://beolaunch:beolaunch@127.0.0.1:5432/beolaunch_test
PYTEST := $(VENV)/bin/pytest -q -p no:cacheprovider
TEST_ENV := BEOLAUNCH_TEST_PG_URL=$(PG_TEST_URL) BEOLAUNCH_REQUIRE_PG=1

.PHONY: help deps apt kernel services lint test test-quick bench demo clean

help:
	@echo "make demo        run a real job on a virtual cluster (installs what it needs)"
	@echo "make test        lint, type-check and run the whole test suite"
	@echo "make test-quick  the suite without tests marked slow (under 3 minutes)"
	@echo "make bench       run the benchmarks, writing bench/results.json"

apt:
	@.ci/apt-ensure $(APT_PACKAGES)

# The stamp is remade when pyproject.toml changes; pip runs only then.
$(VENV)/.installed: pyproject.toml | apt
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	@echo "venv: installing Beolaunch and its dependencies into $(VENV)"
	@{ $(PY) -m pip install --disable-pip-version-check --upgrade pip && \
	   $(PY) -m pip install --disable-pip-version-check -e '.[dev]'; } \
	   > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@# Jobs' users run `beonode step` from this tree and cannot write __pycache__.
	@$(PY) -m compileall -q launcher cachefs bootsvc > /dev/null
	@touch $@

deps: apt $(VENV)/.installed

# The benchmarks' extra, only for `make bench` (empty since matplotlib, for bench/scale.png,
# became a main dependency: kept for extras the benchmarks may need again).
$(VENV)/.bench-installed: $(VENV)/.installed
	@$(PY) -m pip install --disable-pip-version-check -e '.[bench]' > $(VENV)/pip-bench.log 2>&1 \
	   || { cat $(VENV)/pip-bench.log; exit 1; }
	@touch $@

# The virtual nodes' kernel (unpacked, not installed): .ci/kernel-fetch says where.
kernel: apt
	@.ci/kernel-fetch

services: apt
	@.ci/postgres-up

lint: deps
	@$(VENV)/bin/ruff check -q launcher bootsvc cachefs migrations tests bench
	@$(VENV)/bin/ruff format -q --check launcher bootsvc cachefs migrations tests bench
	@$(VENV)/bin/mypy --no-error-summary

test: deps kernel services lint
	@$(TEST_ENV) $(PYTEST)

test-quick: deps kernel services
	@$(TEST_ENV) $(PYTEST) -m 'not slow'

# PostgreSQL too: bench/scale.py measures the master on both databases.
bench: deps kernel services $(VENV)/.bench-installed
	@BEOLAUNCH_TEST_PG_URL=$(PG_TEST_URL) $(PY) -m bench

demo: deps kernel
	@.ci/demo

clean:
	rm -rf $(VENV) bench/results.json
