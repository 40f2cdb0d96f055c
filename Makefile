# mpath build, test and demo. Run as root on Debian: `make demo`, `make test`.
# Both install the Debian packages they need first (apt-get), so a fresh machine works.

GO      ?= go
BIN     := bin/mpath
# Real peers and tools the tests, the demo and `mpath bench --lab` use: mptcpize (its own
# package; mptcpd does not contain it) for the kernel MPTCP side of the sweeps, prometheus
# for promtool, systemd for systemd-analyze (the units' check), util-linux for setpriv.
DEBS    := nftables iproute2 ethtool tcpdump tshark apache2 apache2-utils curl ncat iperf3 mptcpize prometheus procps ca-certificates chromium systemd util-linux
# make install: PREFIX for the binary and docs, DESTDIR for staging (packaging).
PREFIX  ?= /usr/local
DESTDIR ?=
UNITDIR ?= /lib/systemd/system
CONFDIR ?= /etc/mpath
GOFILES := $(shell git ls-files '*.go' 2>/dev/null)

export PATH := /usr/local/go/bin:$(PATH)

.PHONY: all build build-slim deps print-debs test unit fmt-check vet demo clean install uninstall check-units

all: build

build:
	$(GO) build -o $(BIN) ./cmd/mpath

# build-slim: the binary relays and routers run: client, exit, relay, status, genkey and
# version, without bench, lab and demo (build tag slim) and without symbols.
build-slim:
	$(GO) build -tags slim -ldflags='-s -w' -o bin/mpath-slim ./cmd/mpath

# deps installs whatever Debian packages are missing (needs root and apt).
deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

print-debs:
	@echo $(DEBS)

fmt-check:
	@out=$$(gofmt -l $(GOFILES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# test: formatting, vet, then every test with the race detector. Tests that need root
# and network namespaces run too when this is run as root (they skip, saying so, otherwise).
test: deps fmt-check vet build
	$(GO) test -race -count=1 -p 1 -timeout 80m ./...

# install: the binary, the systemd units (ExecStart pointed at $(PREFIX)/bin), example
# configurations in $(CONFDIR) (an existing file is never overwritten) and the docs.
# Then: mpath genkey $(CONFDIR)/psk; edit $(CONFDIR)/ROLE.conf; systemctl enable --now mpath-ROLE.
# make install SLIM=1 installs the slim binary (no bench, lab, demo) instead.
INSTALL_BIN = $(if $(SLIM),bin/mpath-slim,$(BIN))
install: $(if $(SLIM),build-slim,build)
	install -D -m 0755 $(INSTALL_BIN) $(DESTDIR)$(PREFIX)/bin/mpath
	install -d -m 0755 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(PREFIX)/share/doc/mpath
	for u in contrib/systemd/*.service; do \
		sed -e 's|/usr/local/bin/mpath|$(PREFIX)/bin/mpath|g' \
		    -e 's|/usr/local/share/doc/mpath|$(PREFIX)/share/doc/mpath|g' \
		    -e 's|/etc/mpath/|$(CONFDIR)/|g' $$u > $(DESTDIR)$(UNITDIR)/$$(basename $$u); \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$(basename $$u); \
	done
	install -d -m 0755 $(DESTDIR)$(CONFDIR)
	for c in contrib/config/*.conf; do \
		d=$(DESTDIR)$(CONFDIR)/$$(basename $$c); \
		if [ -e $$d ]; then echo "keeping $$d"; else install -m 0644 $$c $$d; fi; \
	done
	install -m 0644 README.md LICENSE $(DESTDIR)$(PREFIX)/share/doc/mpath/
	if [ -d docs ]; then cp -r docs $(DESTDIR)$(PREFIX)/share/doc/mpath/; fi
	@if [ -z "$(DESTDIR)" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/mpath
	rm -f $(addprefix $(DESTDIR)$(UNITDIR)/,$(notdir $(wildcard contrib/systemd/*.service)))
	rm -rf $(DESTDIR)$(PREFIX)/share/doc/mpath
	@echo "left $(DESTDIR)$(CONFDIR) (configuration and keys) in place"

# check-units: systemd-analyze verify on each unit, pointed at the freshly built binary.
# verify exits 0 on unknown keys and bad values (it only warns), so any output fails.
check-units: build
	@d=$$(mktemp -d); trap 'rm -rf $$d' EXIT; \
	for u in contrib/systemd/*.service; do \
		sed 's|/usr/local/bin/mpath|$(CURDIR)/$(BIN)|g' $$u > $$d/$$(basename $$u); \
	done; \
	out=$$(systemd-analyze verify $$d/*.service 2>&1); rc=$$?; \
	if [ $$rc -ne 0 ] || [ -n "$$out" ]; then echo "$$out"; exit 1; fi; echo "units ok"

demo: deps build
	./$(BIN) demo

clean:
	rm -rf bin
