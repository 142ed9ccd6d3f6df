# nhi-operator: the two commands are `make demo` and `make test`; see README.md.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

# Go, cargo and pip's scripts where the set-up puts them (e2e/env.sh), for every recipe.
export PATH := $(shell . $(CURDIR)/e2e/env.sh && printf '%s' "$$PATH")
# The control plane `make test` starts for itself and stops at the end; the demo's (and
# cluster-up's, e2e-test's) is e2e/.cluster.
TEST_CLUSTER_DIR := e2e/.cluster-test
CARGO ?= cargo

.PHONY: help prereqs build binaries cluster-up cluster-down cluster-status crds crds-check fmt lint \
        unit-test static-binary-test e2e-test test chaos demo bench bench-revocation clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

prereqs: ## Install what `make test` needs and the machine lacks (apt-get, rustup, pip).
	@e2e/prereqs.sh test

build: ## Build the operator (debug).
	$(CARGO) build --workspace --bins

binaries: ## Build and cache the control-plane binaries (etcd, kube-apiserver, ...).
	@e2e/build-binaries.sh

cluster-up: ## Start the local control plane on 127.0.0.1 (idempotent).
	@e2e/cluster.sh up

cluster-down: ## Stop the local control plane and remove its state.
	@e2e/cluster.sh down

cluster-status: ## Show the local control plane's state and kubeconfig path.
	@e2e/cluster.sh status

crds: ## Regenerate crds/ from the Rust types, and the chart's and kustomize's copies.
	$(CARGO) run --quiet --bin nhi-operator -- crd --out-dir crds
	cp crds/*.yaml charts/nhi-operator/crds/
	cp crds/*.yaml config/crd/

fmt: ## Format the code.
	$(CARGO) fmt --all

lint: ## rustfmt, clippy with warnings as errors, no import cycle, short controller functions, a workload crate without kube.
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p nhi-identity --all-targets -- -D warnings
	e2e/tools/module-cycles.py
	e2e/tools/long-functions.py
	e2e/check-workload-deps.sh

unit-test: ## Unit tests, doc examples and the CRD freshness test (no cluster needed).
	$(CARGO) test --workspace --exclude nhi-operator --lib --bins --tests
	$(CARGO) test -p nhi-identity --lib --features metrics
	$(CARGO) test -p nhi-operator --lib --bins --test crd_fresh
	$(CARGO) test -p nhi-operator --example bench
	$(CARGO) test --workspace --doc

static-binary-test: ## The container's binary: a static musl build that runs.
	@e2e/test-static-binary.sh

e2e-test: ## End-to-end tests against the local control plane (starts it when needed).
	@e2e/run-e2e.sh

test: ## Every test: set-up, lint, unit, then end-to-end on a control plane of its own, stopped at the end.
	@e2e/prereqs.sh test
	$(MAKE) lint
	$(MAKE) unit-test
	$(MAKE) static-binary-test
	@NHI_CLUSTER_DIR=$(TEST_CLUSTER_DIR) NHI_REQUIRE_TOOLS=1 e2e/run-e2e.sh --own-cluster

chaos: ## The chaos suite at full size (1,000 identities, 20 SIGKILLs; the paused leader; etcd and apiserver restarts) on a control plane of its own; make test runs part of it small.
	@e2e/prereqs.sh test
	@NHI_CLUSTER_DIR=e2e/.cluster-chaos NHI_CHAOS=full NHI_E2E_ONLY="chaos:: leader::a_paused" \
		e2e/run-e2e.sh --own-cluster

demo: ## Start the control plane and node (unless KUBECONFIG is set), install the chart, apply the samples, show a workload across rotations.
	@e2e/prereqs.sh demo
	@e2e/demo.sh

bench: ## Issue N identities at once (default 1000) and compare with a bare-client baseline; MODE=steady, delegation, pod-certificates, or scale (the mode from N=50000: restart, 20,000 revoked; a control plane of its own).
	@e2e/bench.sh $(or $(N),1000) $(MODE)

bench-revocation: ## A revoke loop (LOOP=10000, CONCURRENCY=64 at once) and N=20000 identities deleted at once: quotas, latency, sizes, writes.
	@e2e/bench-revocation.sh $(or $(N),20000) $(or $(LOOP),10000) $(or $(CONCURRENCY),64)

clean: ## Remove build output and the local clusters' state (the demo's and the tests').
	-e2e/cluster.sh down
	-NHI_CLUSTER_DIR=$(TEST_CLUSTER_DIR) e2e/cluster.sh down
	-NHI_CLUSTER_DIR=e2e/.cluster-chaos e2e/cluster.sh down
	-NHI_CLUSTER_DIR=e2e/.cluster-scale e2e/cluster.sh down
	$(CARGO) clean
