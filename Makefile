# The project's interface: CI (.ci/run) calls these same targets.
# Every target installs what it needs and skips optional tools with a message.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: help dev dev-cluster run volunteer setup wasm web test test-rust test-kernel test-e2e test-api test-web test-release bench bench-kernel bench-page bench-verify bench-grid bench-storage bench-bigjob bench-credit check fmt clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

setup: ## Install toolchain pieces the build needs (wasm target, wasm-bindgen-cli, wasm-pack)
	@scripts/setup.sh

wasm: setup ## Build the worker-wasm module(s) with wasm-pack
	@scripts/build-wasm.sh

web: wasm ## Build web/dist (the volunteer page and the dashboard)
	@scripts/build-web.sh

dev: web ## Run the local stack: server on :3000 with data/brain.db, rebuilt on change
	@scripts/dev.sh

dev-cluster: web ## Three instances on one grid: private PostgreSQL and Redis, servers on :3001-3003 (docs/deploy.md); Ctrl-C stops all
	@scripts/dev-cluster.sh

run: ## Run the server once (no watching)
	cargo run -p server --bin brain-server

volunteer: ## Two command-line volunteers (tools/volunteer) for the server at BRAIN_SERVER, default http://localhost:3000
	cd tools/volunteer && ( [ -d node_modules ] || npm ci --no-audit --no-fund )
	node tools/volunteer/worker.mjs

test: test-rust test-kernel test-e2e test-api test-web test-release ## Run every test

test-rust: ## Native Rust tests (server unit and policy tests, kernel property tests)
	cargo test --workspace

test-kernel: setup ## Kernel tests compiled to wasm and run in Node
	@scripts/test-kernel.sh

test-release: ## The release build script (as the Dockerfile runs it), then its dist/ served
	@scripts/test-release.sh

test-e2e: ## Orchestrator end-to-end tests with the official socket.io-client in Node
	@scripts/test-e2e.sh

test-api: ## Fuzz the HTTP API from its OpenAPI document with schemathesis
	@scripts/test-api.sh

test-web: web ## Page unit tests and browser tests in headless Chromium
	@scripts/test-web.sh

bench: bench-kernel bench-page bench-verify bench-grid bench-storage bench-bigjob bench-credit ## Print the benchmark figures recorded in docs/benchmarks.md

bench-kernel: setup ## Kernel GFLOP/s in Node (wasm) and natively
	@scripts/bench-kernel.sh

bench-page: setup ## The volunteer page (web/dist) in headless Chromium against a release server: end-to-end GFLOP/s beside the page's own kernel speed and the same build in Node, 1 and 2 threads, three job shapes (#17); ARGS="--quick", "--trace", "--cases 2048,wide,thin", "--threads 1,2"
	cargo build --release -p server --bin brain-server
	scripts/build-wasm.sh
	scripts/build-web.sh
	node web/bench/page.mjs $(ARGS)

bench-grid: setup ## The grid's figures: throughput, connections, efficiency, bytes (load harness); then throughput on SQLite against PostgreSQL with 1 and 2 instances, connections over 2 instances; then figure 5, GFLOP/s over shaped links (campus, home, mobile; #14), and the server's egress shared among mixed links (root: a network namespace)
	cargo build --release -p server --bin brain-server -p shaper --bin brain-shaper
	[ -f worker-wasm/pkg-simd/worker_wasm_bg.wasm ] || scripts/build-wasm.sh
	scripts/services.sh >/dev/null
	cd tests/e2e && ( [ -d node_modules ] || npm ci --no-audit --no-fund ) && \
	  BRAIN_SERVER_BIN=$(CURDIR)/target/release/brain-server node load.mjs all scaleout network egress

bench-storage: ## Jobs bigger than memory: submission MB/s against cp, server peak RSS, disk per input byte, download MB/s (4096², 8192²)
	cargo build --release -p server --bin brain-server
	cd tests/e2e && ( [ -d node_modules ] || npm ci --no-audit --no-fund ) && \
	  BRAIN_SERVER_BIN=$${BRAIN_SERVER_BIN:-$(CURDIR)/target/release/brain-server} node bench-storage.mjs

bench-bigjob: setup ## Under a 512 MB memory cgroup (root): a 16384² f32 job (2 GiB) accepted, served, cancelled, space freed; an 8192² job computed (wasm) and downloaded
	cargo build --release -p server --bin brain-server
	[ -f worker-wasm/pkg-simd/worker_wasm_bg.wasm ] || scripts/build-wasm.sh
	cd tests/e2e && ( [ -d node_modules ] || npm ci --no-audit --no-fund ) && \
	  BRAIN_SERVER_BIN=$${BRAIN_SERVER_BIN:-$(CURDIR)/target/release/brain-server} node bench-storage.mjs --bigjob

bench-credit: ## The credit boards and profiles at 100,000 volunteers and 10 million credited tiles (seeded with python3's sqlite3), beside summing the tiles per request (#15)
	cargo build --release -p server --bin brain-server
	cd tests/e2e && ( [ -d node_modules ] || npm ci --no-audit --no-fund ) && \
	  BRAIN_SERVER_BIN=$${BRAIN_SERVER_BIN:-$(CURDIR)/target/release/brain-server} node bench-credit.mjs

bench-verify: setup ## Verification: cost per tile, smallest refused error against k, 100,000-tile honest corpus from every kernel
	@scripts/verify-corpus.sh

check: ## fmt --check and clippy -D warnings
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

clean:
	cargo clean
	rm -rf web/dist worker-wasm/pkg*
