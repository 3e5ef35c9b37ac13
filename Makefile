# usernet — one command per job. Every target is idempotent and safe on a fresh Debian 12 (root).
#   make test   install everything, build, run the unit, integration and VM tests
#   make demo   install everything, boot the test guest on usernet, measure NAT next to bridged
#   make bench  the micro benchmarks and the system matrix against the anchors
SHELL := /bin/bash
.DEFAULT_GOAL := build

NODE      ?= node
NODE_DIR  := $(shell $(NODE) -p 'require("path").resolve(process.execPath, "../..")' 2>/dev/null)
STAMPS    := .stamps
NATIVE    := native/build/Release/usernet.node
TS_SRC    := $(shell find src bench test -name '*.ts' 2>/dev/null)

# Debian packages the tests, the demo and the benchmarks use (real peers and anchors).
APT_PACKAGES := build-essential python3 iproute2 iptables iperf3 tcpdump tshark curl dnsmasq-base \
  busybox-static traceroute tcptraceroute iputils-ping netcat-openbsd qemu-system-x86 qemu-utils \
  ethtool slirp4netns passt nfs-ganesha nfs-ganesha-vfs rpcbind debootstrap cpio kmod procps psmisc

.PHONY: setup setup-apt build native test test-unit test-integration test-vm bench demo docs guest qemu11 clean

setup: setup-apt $(STAMPS)/npm native build guest qemu11

setup-apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing $$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	fi

# The test guest (Debian kernel + initramfs) and QEMU 11 for vfio-user, both under build/.
GUEST_IMAGE := build/guest/initramfs.cpio.gz
guest: $(GUEST_IMAGE)
$(GUEST_IMAGE): guest-images/build-guest.sh guest-images/init guest-images/udhcpc.script | setup-apt
	guest-images/build-guest.sh build/guest
qemu11: build/qemu11/.stamp
build/qemu11/.stamp: guest-images/provision-qemu11.sh | setup-apt
	guest-images/provision-qemu11.sh build/qemu11

$(STAMPS)/npm: package.json package-lock.json
	npm ci --no-audit --no-fund
	@mkdir -p $(STAMPS) && touch $@

native: $(NATIVE)
$(NATIVE): $(STAMPS)/npm native/binding.gyp $(wildcard native/src/*.c native/src/*.h)
	cd native && ../node_modules/.bin/node-gyp rebuild --nodedir="$(NODE_DIR)"

build: $(STAMPS)/npm $(STAMPS)/tsc
$(STAMPS)/tsc: $(TS_SRC) tsconfig.json package.json
	./node_modules/.bin/tsc -p tsconfig.json
	@chmod +x dist/src/cli/main.js 2>/dev/null || true
	@mkdir -p $(STAMPS) && touch $@

test: setup
	$(NODE) test/run.js

test-unit: setup
	$(NODE) test/run.js unit
test-integration: setup
	$(NODE) test/run.js integration
test-vm: setup
	$(NODE) test/run.js vm

bench: setup
	$(NODE) dist/bench/micro.js
	$(NODE) dist/bench/netns-matrix.js
	USERNET_LOG=warn $(NODE) dist/bench/vm-matrix.js
	USERNET_LOG=warn $(NODE) dist/bench/rtl8139.js
	$(NODE) dist/bench/faithful-nat.js

# The test guest on usernet (NAT and bridged; virtio, RTL8139 and RTL8139C+), QEMU -netdev user and
# QEMU's rtl8139: fetch + iperf3 both ways + NFS read; table and plot in bench/results/demo.{md,svg}.
# ~5 min after setup.
demo: setup
	USERNET_LOG=warn $(NODE) dist/bench/demo.js

# docs/nat-code-path.md from a real run: usernet trace and the ledger, netns guest and VMs
docs: setup
	$(NODE) dist/bench/docs-nat-code-path.js

clean:
	rm -rf dist native/build $(STAMPS) bench/results
