# pgops — see README.md. `make test` and `make demo` install what they need.
SHELL := /usr/bin/env bash
GO ?= go
BIN_DIR ?= bin
# Integration and end-to-end tests start a real control plane and PostgreSQL servers.
TEST_TIMEOUT ?= 45m
TEST_FLAGS ?=
PKGS ?= ./...

.PHONY: all build generate verify verify-codegen fmt vet tools test unit-test bench demo clean

all: build

build: ## Build both operators into bin/
	$(GO) build -o $(BIN_DIR)/ ./cmd/...

generate: ## Regenerate clients, listers, informers, deepcopy and CRDs from pkg/apis
	hack/update-codegen.sh

verify: verify-codegen vet ## Check generated code, formatting and vet
	@unformatted="$$(gofmt -l $$(git ls-files '*.go'))"; \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi

verify-codegen:
	hack/verify-codegen.sh

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

tools: ## Install PostgreSQL server binaries and build the control-plane binaries into the cache
	hack/install-postgres.sh
	hack/install-k8s-bins.sh

test: tools ## Unit, PostgreSQL and control-plane integration tests
	@# A missing control-plane binary must fail the run, never skip tests.
	export PGOPS_REQUIRE_LOCALCLUSTER=1; \
	$(GO) vet ./... && \
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) $(PKGS)

unit-test: ## Only tests that need neither PostgreSQL nor a control plane
	$(GO) test -count=1 -short $(PKGS)

bench: tools ## Benchmarks: speed and memory (pkg/); on real pods, client-visible outage per restart mode and rotations of 1, 20 and 200 databases at once
	$(GO) test -run '^$$' -bench . -benchmem ./pkg/...
	PGOPS_REQUIRE_LOCALCLUSTER=1 $(GO) test -run '^$$' -bench 'RotationOutage|RotationAtScale' -benchtime 1x -timeout 45m ./test/e2e

demo: ## Run the whole system on a local control plane; Ctrl-C tears it down
	hack/demo.sh $(DEMO_FLAGS)

clean:
	rm -rf $(BIN_DIR)
