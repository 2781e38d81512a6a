# Compleat — build, test and demo. See README.md.
GO       ?= go
BIN      := $(CURDIR)/bin
BUILD    := $(CURDIR)/build
TOOLS    := $(BUILD)/tools
export COMPLEAT_BIN := $(BIN)

# Pinned code generators for `make proto`.
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1

ROOT_CMDS := ./director ./agent
# Every package of every module in go.work (the import-path pattern crosses
# module boundaries, where ./... stops at them): a module added to go.work is
# built, vetted and tested without touching this file.
ALL       := github.com/compleat/compleat/...
# Each module on its own (GOWORK=off), as someone who depends on it builds it.
MODULES   = $(shell $(GO) list -m -f '{{.Dir}}')
STATICCHECK_VERSION := v0.8.2
PLUGINS   := local aws azure openstack

.PHONY: all build stemcell test test-example test-short bench lint proto demo demo-down zdt torture clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $(ROOT_CMDS)
	$(GO) build -o $(BIN)/cloudsim ./sim/cmd/cloudsim
	@for p in $(PLUGINS); do \
	  if [ -d cpi/$$p/cmd/cpi-$$p ]; then \
	    echo "$(GO) build -o $(BIN)/cpi-$$p ./cpi/$$p/cmd/cpi-$$p"; \
	    $(GO) build -o $(BIN)/cpi-$$p ./cpi/$$p/cmd/cpi-$$p || exit 1; \
	  fi; \
	done

stemcell: build
	@mkdir -p $(BUILD)/stemcells
	$(BIN)/director create-stemcell --agent $(BIN)/agent --tarball $(BUILD)/stemcells/local.tgz

# Every test: unit, conformance of every plugin, end to end on the local CPI.
test: build
	$(GO) vet $(ALL)
	$(GO) test -count=1 -timeout 20m $(ALL)
	$(MAKE) test-example

# The example CPI plugin, a module outside go.work, built and certified the
# way an outside author's plugin is: GOWORK=off, the SDK through its replace.
test-example:
	cd examples/cpi-memory && GOWORK=off $(GO) vet ./... && GOWORK=off $(GO) test -count=1 ./...

test-short:
	$(GO) test -short $(ALL)

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 2s $(ALL) | tee $(BUILD)/bench.txt

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(ALL)
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(TOOLS)/staticcheck $(ALL)
	@for m in $(MODULES); do echo "GOWORK=off go build ($$m)"; (cd $$m && GOWORK=off $(GO) build ./...) || exit 1; done

# Regenerates cpi/v1 from cpi/v1/cpi.proto with pinned generators.
# Needs protoc (Debian: protobuf-compiler).
proto:
	@command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler"; exit 1; }
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	PATH=$(TOOLS):$$PATH protoc -I cpi/v1 \
	  --go_out=cpi/v1 --go_opt=paths=source_relative \
	  --go-grpc_out=cpi/v1 --go-grpc_opt=paths=source_relative \
	  cpi/v1/cpi.proto

# CLOUD=aws, CLOUD=azure or CLOUD=openstack: the same demo through cpi-aws,
# cpi-azure or cpi-openstack on the simulated cloud (docs/clouds.md).
demo: build stemcell
	CLOUD="$(CLOUD)" ./scripts/demo.sh up

demo-down:
	CLOUD="$(CLOUD)" ./scripts/demo.sh down

zdt: build stemcell
	$(GO) run ./test/zdt

# Not part of test (minutes): at random points of deploys on the local CPI,
# SIGKILLs the director (every other trial), the CPI plugin alone, an agent
# or a whole VM, or freezes the director and its bus; then deploys until it
# converges, checks for orphaned VMs, lost disks and changed persistent
# data, and prints one `torture: trials=N converged=N orphans=0 lost=0 ...`
# line (docs/reliability.md). TORTURE_TRIALS=N (default 40), TORTURE_FAULTS.
# With moto_server the director runs in production mode with S3 blobs and a
# blobstore fault joins; then the same on the simulated OpenStack
# (`torture(openstack): ...`, TORTURE_CLOUD_TRIALS, default 6).
torture: build
	@mkdir -p $(BUILD)
	@$(GO) test -tags torture -count=1 -timeout 80m -run '^TestTorture' -v ./test/e2e > $(BUILD)/torture.log 2>&1; rc=$$?; \
	  grep -E '^torture' $(BUILD)/torture.log; \
	  if [ $$rc -ne 0 ]; then tail -60 $(BUILD)/torture.log; echo "torture failed: $(BUILD)/torture.log"; exit $$rc; fi

clean:
	rm -rf $(BIN) $(BUILD)
