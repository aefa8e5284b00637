# corral — see README.md. Every target that needs system packages installs the
# missing ones itself through hack/install-deps.sh.

GO        ?= go
BIN       := bin
PREFIX    ?= /usr/local
BINARIES  := corrald corralctl containerd-shim-corral-v2
GOFLAGS   ?= -trimpath
LDFLAGS   ?= -s -w
# grpcnotrace drops grpc's x/net/trace (and html/template with it);
# nri_no_wasm drops NRI's WebAssembly plugin runtime (wazero): corrald runs
# NRI plugins as processes and over its socket only. Together they take
# 2.9 MB off corrald, most of which would be resident (make bench).
BUILDTAGS ?= grpcnotrace,nri_no_wasm
TEST_TIMEOUT ?= 25m
export PATH := $(shell $(GO) env GOPATH)/bin:/usr/local/go/bin:$(PATH)

.PHONY: all build deps test unit integration run lint protos install uninstall clean bench bench-go bench-shim bench-pull

all: build

deps:
	bash hack/install-deps.sh

build: $(BIN)/corral-pause
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build $(GOFLAGS) -tags '$(BUILDTAGS)' -ldflags '$(LDFLAGS)' -o $(BIN)/ $(addprefix ./cmd/,$(BINARIES))

# corral-pause: every pod's infra process, static so that it runs from an
# empty rootfs. gcc prints a bare "libc.a" when the static libc is missing.
$(BIN)/corral-pause: hack/pause/pause.c
	@mkdir -p $(BIN)
	@command -v gcc >/dev/null && case "$$(gcc -print-file-name=libc.a)" in /*) ;; *) false ;; esac || bash hack/install-deps.sh
	gcc -Os -static -s -o $@ hack/pause/pause.c

# test: unit tests, critest, then integration tests against real runc, CNI,
# registry and containerd (last, so the run closes on go test's verdict).
# Needs root.
test: deps build lint unit fuzz-short critest integration

unit:
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(shell $(GO) list ./... | grep -v /integration)

integration: build $(BIN)/crictl
	CORRAL_BIN_DIR=$(CURDIR)/$(BIN) $(GO) test -count=1 -p 1 -timeout $(TEST_TIMEOUT) -v ./integration/...

# Every fuzz target, as package:Name. Each has a seed corpus under the
# package's testdata/fuzz/<Name>/, which `make unit` runs as plain tests.
FUZZ_TARGETS := \
	./cri/snapshot:FuzzUnpack \
	./cri/image:FuzzPull \
	./cri/image:FuzzArchive \
	./cri/registry:FuzzHostsFile \
	./cri/registry:FuzzNormalize \
	./cri/spec:FuzzContainerSpec \
	./cri/netns:FuzzParseNetDev \
	./shim:FuzzCRILog \
	./shim:FuzzCRILogTerminal \
	./metadata:FuzzDecode \
	./metadata:FuzzStoredRecord \
	./metadata:FuzzOpen \
	./cri/imagevolume:FuzzSubPath
# A count, not a duration: go1.26's fuzz coordinator can fail a run with a bare
# "context deadline exceeded" when a -fuzztime duration ends on a loaded
# machine (golang/go#75804, fixed in go1.27); a count has no deadline.
FUZZTIME ?= 2000x
FUZZTIME_LONG ?= 5m

# fuzz-short: each target for FUZZTIME (2000 inputs) in turn, as part of test.
# fuzz: each for FUZZTIME_LONG (5m), or only FUZZ=FuzzX; run it alone, since
# a fuzzer takes every core. A crash lands in testdata/fuzz/<Name>/: commit
# it with the fix. The short run does not minimize new inputs, which would
# take all of its time.
.PHONY: fuzz fuzz-short
fuzz-short:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$name ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 0 $$pkg; \
	done

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		if [ -n "$(FUZZ)" ] && [ "$(FUZZ)" != "$$name" ]; then continue; fi; \
		echo "fuzz $$name ($$pkg) for $(FUZZTIME_LONG)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME_LONG) $$pkg; \
	done

# run: builds, installs what is missing (a default pod network in
# /etc/cni/net.d if it holds none) and starts corrald with the built-in
# defaults, in the foreground.
run: deps build
	bash hack/cni-default.sh
	exec $(BIN)/corrald

lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...
	bash hack/protos.sh --check

# protos regenerates proto/**.pb.go with google.golang.org/protobuf and
# protoc-gen-go-ttrpc, the generators containerd uses, at pinned versions
# (hack/protos.sh); lint fails when the committed files differ from what
# this target makes.
protos: deps
	bash hack/protos.sh

# crictl, the kubelet maintainers' CRI client, from the Go module proxy at a
# pinned cri-tools version; the integration tests use it as a user would.
CRI_TOOLS_VERSION ?= v1.37.0
$(BIN)/crictl:
	GOBIN=$(CURDIR)/$(BIN) CGO_ENABLED=0 $(GO) install -ldflags '-X sigs.k8s.io/cri-tools/pkg/version.Version=$(CRI_TOOLS_VERSION)' sigs.k8s.io/cri-tools/cmd/crictl@$(CRI_TOOLS_VERSION)

# critest, the kubelet maintainers' CRI conformance suite, at the same pinned
# cri-tools version. It is a Ginkgo test binary: go test -c in a writable copy
# of the module (the module cache is read-only), outside corral's module so
# that corral's go.mod is not touched.
$(BIN)/critest:
	@mkdir -p $(BIN)
	set -e; src=$$(mktemp -d); trap 'chmod -R u+w "$$src"; rm -rf "$$src"' EXIT; \
	dir=$$(cd "$$src" && GOWORK=off $(GO) mod download -json sigs.k8s.io/cri-tools@$(CRI_TOOLS_VERSION) | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p'); \
	test -n "$$dir"; cp -R "$$dir/." "$$src/cri-tools"; chmod -R u+w "$$src/cri-tools"; \
	cd "$$src/cri-tools" && GOWORK=off CGO_ENABLED=0 $(GO) test -c $(GOFLAGS) -ldflags '-X sigs.k8s.io/cri-tools/pkg/version.Version=$(CRI_TOOLS_VERSION)' -o $(CURDIR)/$(BIN)/critest ./cmd/critest

# critest: runs critest against corrald and compares with
# hack/critest-expected.txt (hack/critest.sh --help for the options); fails
# when a spec outside the list fails or a listed one passes. Needs root.
# Part of test: regenerate the list (hack/critest.sh --update-expected)
# when a change makes specs pass.
.PHONY: critest
critest: build $(BIN)/crictl $(BIN)/critest
	bash hack/critest.sh $(CRITEST_FLAGS)

# bench: corrald next to Debian's containerd in the same run (hack/bench.sh):
# pod start, stop and remove, 100 pods from 10 clients, daemon and shim
# memory, critest -benchmark; the table to stdout, JSON to bin/bench/.
# Needs root; run it under flock /tmp/corral-heavy.lock on a shared machine.
bench: build $(BIN)/crictl $(BIN)/critest
	bash hack/bench.sh $(BENCH_FLAGS)

# bench-go: the Go benchmarks of the hot paths: OCI spec generation,
# bbolt record writes, CNI setup and its result cache, CRI log records.
# Benchmarks run only with -bench, never in make unit.
bench-go:
	$(GO) test -count=1 -run '^$$' -bench . -benchmem ./cri/spec/ ./metadata/ ./cri/network/ ./shim/

# chaos: the chaos suite (integration/chaos) on its own: a seeded workload
# from CLIENTS clients with faults injected, ROUNDS rounds, invariants
# checked against the host after each. `make integration` runs a short
# version (3 rounds, seed 1). Needs root; run it alone.
SEED    ?= $(shell date +%s)
ROUNDS  ?= 20
CLIENTS ?= 3
.PHONY: chaos
chaos: build
	CORRAL_BIN_DIR=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 0 -v -run '^TestChaos$$' ./integration/chaos/ \
		-args -seed $(SEED) -rounds $(ROUNDS) -clients $(CLIENTS)

bench-shim: build
	CORRAL_BIN_DIR=$(CURDIR)/$(BIN) $(GO) test -count=1 -run '^$$' -bench ShimFootprint -benchtime 1x ./integration/

bench-pull: build
	CORRAL_BIN_DIR=$(CURDIR)/$(BIN) $(GO) test -count=1 -run '^$$' -bench 'Pull$$' -benchtime 3x -timeout 20m ./integration/

# install: the binaries to $(PREFIX)/bin, corral-pause to
# $(PREFIX)/lib/corral (where corrald looks, see cri/pause), the systemd unit
# to $(UNITDIR), and the default config (`corrald config default`, every key
# commented) to $(SYSCONFDIR)/corral/config.toml unless a config is there
# already. DESTDIR stages it all under another root, as packagers do.
# uninstall reverses it; it removes the config only while it is still the
# default corrald prints, so an edited config stays.
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
CONFIG     := $(DESTDIR)$(SYSCONFDIR)/corral/config.toml
UNIT       := $(DESTDIR)$(UNITDIR)/corrald.service

install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(addprefix $(BIN)/,$(BINARIES)) $(DESTDIR)$(PREFIX)/bin/
	install -d $(DESTDIR)$(PREFIX)/lib/corral
	install -m 0755 $(BIN)/corral-pause $(DESTDIR)$(PREFIX)/lib/corral/corral-pause
	install -d $(DESTDIR)$(UNITDIR)
	sed -e 's|/usr/local/bin/|$(PREFIX)/bin/|g' -e 's|/etc/corral/|$(SYSCONFDIR)/corral/|g' \
		cmd/corrald/corrald.service >$(UNIT).tmp
	chmod 0644 $(UNIT).tmp && mv $(UNIT).tmp $(UNIT)
	@if [ -e $(CONFIG) ]; then \
		echo "install: keeping the existing $(CONFIG)"; \
	else \
		install -d $(dir $(CONFIG)) && \
		$(BIN)/corrald config default >$(CONFIG).tmp && chmod 0644 $(CONFIG).tmp && mv $(CONFIG).tmp $(CONFIG) && \
		echo "install: wrote the default config to $(CONFIG)"; \
	fi
	@echo "install: done; start corrald with: systemctl daemon-reload && systemctl enable --now corrald"

uninstall:
	@if [ -e $(CONFIG) ]; then \
		if [ -x $(DESTDIR)$(PREFIX)/bin/corrald ] && $(DESTDIR)$(PREFIX)/bin/corrald config default | cmp -s - $(CONFIG); then \
			rm -f $(CONFIG) && echo "uninstall: removed the default $(CONFIG)"; \
		else \
			echo "uninstall: keeping $(CONFIG): it is not the default config (edited?)"; \
		fi; \
	fi
	@-rmdir $(dir $(CONFIG)) 2>/dev/null
	rm -f $(UNIT) $(DESTDIR)$(SYSCONFDIR)/systemd/system/multi-user.target.wants/corrald.service
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/bin/,$(BINARIES))
	rm -f $(DESTDIR)$(PREFIX)/lib/corral/corral-pause
	@-rmdir $(DESTDIR)$(PREFIX)/lib/corral 2>/dev/null
	@echo "uninstall: done; a running corrald and its pods keep running until stopped"

clean:
	rm -rf $(BIN) .integration.log
