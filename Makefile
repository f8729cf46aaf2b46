# pgops — see README.md. `make test` and `make demo` install what they need.
SHELL := /usr/bin/env bash
GO ?= go
BIN_DIR ?= bin
# Integration and end-to-end tests start a real control plane and PostgreSQL servers.
TEST_TIMEOUT ?= 45m
# Parallel tests per package. The e2e tests mostly wait for pods on the real nodes: four at
# once use the 2 cores, two leave them idle.
TEST_PARALLEL ?= 4
TEST_FLAGS ?=
PKGS ?= ./...
# The operator image; the tag is pinned in hack/image-tag and used by manifests/operators.
IMAGE_REPO ?= ghcr.io/pgops/pgops
IMAGE_TAG ?= $(shell cat hack/image-tag)
IMAGE ?= $(IMAGE_REPO):$(IMAGE_TAG)
IMAGE_ARCHIVE ?= $(BIN_DIR)/pgops-image.tar
# docker or podman; empty means the first whose daemon answers.
CONTAINER_TOOL ?=

.PHONY: all build dist image image-archive generate verify verify-codegen fmt vet tools test unit-test bench demo clean

all: build

build: ## Build both operators, the pgops agent and the kubectl-pgops plugin into bin/
	$(GO) build -o $(BIN_DIR)/ ./cmd/...

dist: ## Write dist/install.yaml, the single-file install, from manifests/ (commit the result)
	$(GO) run ./hack/dist --out dist/install.yaml

image: ## Build the operator image $(IMAGE) with docker or podman; without a daemon, build $(IMAGE_ARCHIVE) instead
	@tool="$(CONTAINER_TOOL)"; \
	if [ -z "$$tool" ]; then \
	  for t in docker podman; do \
	    if command -v $$t >/dev/null 2>&1 && $$t info >/dev/null 2>&1; then tool=$$t; break; fi; \
	  done; \
	fi; \
	if [ -z "$$tool" ]; then \
	  echo "make image: no docker or podman daemon answers; building the offline archive $(IMAGE_ARCHIVE) (make image-archive)"; \
	  exec $(MAKE) --no-print-directory image-archive; \
	fi; \
	set -x; $$tool build --build-arg VERSION=$(IMAGE_TAG) -t $(IMAGE) .

image-archive: ## Build the operator image offline (no daemon, no registry) into $(IMAGE_ARCHIVE), for docker load or kind load image-archive
	$(GO) run ./hack/image --ref $(IMAGE) --out $(IMAGE_ARCHIVE)

generate: ## Regenerate clients, listers, informers, deepcopy and CRDs from pkg/apis, and the chart's CRDs and dist/install.yaml from them
	hack/update-codegen.sh
	@# The chart and the single-file install carry the same CRDs (test/distribution checks).
	cp manifests/crds/*.yaml charts/pgops/crds/
	$(MAKE) --no-print-directory dist

verify: verify-codegen vet ## Check generated code, formatting and vet
	@unformatted="$$(gofmt -l $$(git ls-files '*.go'))"; \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi

verify-codegen:
	hack/verify-codegen.sh

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

tools: ## Install PostgreSQL server binaries and the nodes' packages, and build the control plane, the nodes' binaries and images, and helm into the cache
	hack/install-postgres.sh
	hack/install-k8s-bins.sh
	hack/install-node.sh
	hack/install-helm.sh

test: tools ## Unit, PostgreSQL and control-plane integration tests
	@# A missing control-plane binary must fail the run, never skip tests.
	export PGOPS_REQUIRE_LOCALCLUSTER=1; \
	$(GO) vet ./... && \
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -parallel $(TEST_PARALLEL) $(TEST_FLAGS) $(PKGS)

unit-test: ## Only tests that need neither PostgreSQL nor a control plane
	$(GO) test -count=1 -short $(PKGS)

bench: tools ## Benchmarks: speed and memory (pkg/); on real pods, the idle cost of 50 databases, client-visible outage per restart mode and rotations of 1, 20 and 200 databases at once
	$(GO) test -run '^$$' -bench . -benchmem ./pkg/...
	PGOPS_REQUIRE_LOCALCLUSTER=1 $(GO) test -run '^$$' -bench 'IdleCost|RotationOutage|RotationAtScale' -benchtime 1x -timeout 90m ./test/e2e

demo: ## Run the whole system on a local control plane; Ctrl-C tears it down
	hack/demo.sh $(DEMO_FLAGS)

clean:
	rm -rf $(BIN_DIR)
