# mpath build, test and demo. Run as root on Debian: `make demo`, `make test`.
# Both install the Debian packages they need first (apt-get), so a fresh machine works.

GO      ?= go
BIN     := bin/mpath
# Real peers and tools the tests and the demo use.
DEBS    := nftables iproute2 ethtool tcpdump tshark apache2 apache2-utils curl ncat iperf3 mptcpize prometheus procps ca-certificates chromium
GOFILES := $(shell git ls-files '*.go' 2>/dev/null)

export PATH := /usr/local/go/bin:$(PATH)

.PHONY: all build deps test unit fmt-check vet demo clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/mpath

# deps installs whatever Debian packages are missing (needs root and apt).
deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

fmt-check:
	@out=$$(gofmt -l $(GOFILES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# test: formatting, vet, then every test with the race detector. Tests that need root
# and network namespaces run too when this is run as root (they skip, saying so, otherwise).
test: deps fmt-check vet build
	$(GO) test -race -count=1 -p 1 -timeout 80m ./...

demo: deps build
	./$(BIN) demo

clean:
	rm -rf bin
