# CrossEdge: `make run` (dashboard + local agent; DEMO=1 adds the demo workload),
# `make test` (everything CI runs). Both install what is missing first; run as root.
# Debian's own interpreter where there is one: the dashboard runs unprivileged and must reach it
PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
VENV   := .venv
PY     := $(VENV)/bin/python
APT_PACKAGES := bpftrace bpftool clang llvm libbpf-dev iproute2 python3-venv
TEST_APT_PACKAGES := postgresql redis-server redis-tools chromium docker.io podman runc busybox-static libc6-dev \
                     prometheus-alertmanager
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test setup apt venv lock mounts bpf lint check pytest clean

run: setup
	$(PY) manage.py migrate --noinput
	$(PY) manage.py ensureadmin
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" exec $(PY) manage.py up --host $(HOST) --port $(PORT) $(if $(DEMO),--demo)

test: EXTRA_APT = $(TEST_APT_PACKAGES)
test: setup lint check pytest

setup: apt venv mounts bpf

# The enforcement programs, compiled CO-RE against this kernel's BTF.
BPF_OBJECTS := bpfscripts/enforce_connect.bpf.o bpfscripts/unix_connect.bpf.o
bpf: $(BPF_OBJECTS)

bpfscripts/vmlinux.h:
	@test -r /sys/kernel/btf/vmlinux || { echo "this kernel has no BTF (/sys/kernel/btf/vmlinux): CONFIG_DEBUG_INFO_BTF=y is needed"; exit 1; }
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

bpfscripts/%.bpf.o: bpfscripts/%.bpf.c bpfscripts/%.h $(wildcard bpfscripts/*.bpf.h) bpfscripts/vmlinux.h
	clang -g -O2 -Wall -Werror -target bpf -D__TARGET_ARCH_x86 -Ibpfscripts -c $< -o $@

# (loaded apart, with libbpf itself: monitor/kernel/unix_hook.py)
bpfscripts/unix_connect.bpf.o: bpfscripts/unix_connect.bpf.c bpfscripts/enforce_connect.h bpfscripts/shared_maps.bpf.h bpfscripts/vmlinux.h
	clang -g -O2 -Wall -Werror -target bpf -D__TARGET_ARCH_x86 -Ibpfscripts -c $< -o $@

apt:
	@missing=""; for p in $(APT_PACKAGES) $(EXTRA_APT); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  DEBIAN_FRONTEND=noninteractive dpkg --configure -a; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The lock: requirements.txt pins every package the product and its tests install, transitive
# ones included, with the hashes of its files; pip refuses anything else.
$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes -r requirements.txt
	touch $@

venv: $(VENV)/.installed

# requirements.in (edited by hand) -> requirements.txt, by pip-tools in a venv of its own,
# against the public index alone (PIP_CONFIG_FILE=/dev/null: no local mirror or constraint
# file of this machine's pip config), so the hashes are those of the files pip installs
# anywhere. Pins stay where they are unless UPGRADE=1 (every one, as far as requirements.in
# allows) or UPGRADE=NAME (that package) says otherwise.
PIP_TOOLS := pip-tools==7.7.0
LOCK_VENV := .venv-lock
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_VENV) && \
	  PIP_CONFIG_FILE=/dev/null $(LOCK_VENV)/bin/pip install -q --disable-pip-version-check $(PIP_TOOLS); }
	PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet \
	  --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
	  $(if $(filter 1,$(UPGRADE)),--upgrade,$(if $(UPGRADE),--upgrade-package $(UPGRADE))) \
	  --output-file requirements.txt requirements.in

# tracefs for tracepoints, bpffs for pinned programs and maps, securityfs for BPF LSM.
mounts:
	@mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
	@mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
	@mountpoint -q /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

check:
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run

# The scale-path tests also run against PostgreSQL and Redis (scripts/test-services.sh).
pytest:
	@set -a; eval "$$(scripts/test-services.sh)"; set +a; $(VENV)/bin/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(LOCK_VENV) .pytest_cache .ruff_cache bpfscripts/*.bpf.o bpfscripts/vmlinux.h
