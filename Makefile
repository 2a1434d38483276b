# Hookline developer commands. `make help` lists them.
.PHONY: help run up acls down clean test conformance check lint fmt build kafka-fetch bench bench-index profile deploy-check deploy-render chaos

help: ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

run: ## Start everything and run the guided demo; Ctrl-C stops it all (KAFKA_SECURITY=sasl_ssl)
	@KAFKA_SECURITY=$(KAFKA_SECURITY) scripts/stack.sh run $(DEMO_ARGS)

up: ## Start the stack in the background; writes .hookline/stack.env (BROKERS=3: a 3-node Kafka; KAFKA_SECURITY=sasl_ssl)
	@BROKERS=$(BROKERS) KAFKA_SECURITY=$(KAFKA_SECURITY) scripts/stack.sh up

acls: ## The secured local broker's ACLs become exactly the table's again (hookline acls)
	@scripts/stack.sh acls

down: ## Stop the stack, keep its data
	@scripts/stack.sh down

clean: ## Stop the stack and remove its data
	@scripts/stack.sh clean

test: ## Unit tests plus the end-to-end suite against a real Kafka broker
	@scripts/test.sh

conformance: ## Schemathesis (all checks) against every service's /openapi.json on a stack of its own
	@scripts/conformance.sh

bench: ## Throughput, latency, memory: bench/results/<time>/report.md (BENCH_QUICK=1: ~2 min)
	@scripts/bench.sh

profile: ## Profile one service during a bench scenario: PROFILE=router TOOL=perf|callgrind SCENARIO=2
	@BENCH_PROFILE=$(or $(PROFILE),delivery-worker):$(or $(TOOL),perf) BENCH_QUICK=$(or $(BENCH_QUICK),1) \
	  BENCH_SCENARIOS=$(or $(SCENARIO),2) scripts/bench.sh

bench-index: ## The operations index: ingest rate, RSS, query p99 with 10M attempts (OPS_BENCH_ATTEMPTS=...)
	cargo run --release --locked -p hookline-ops-index --example ops_index_bench

chaos: ## Nemesis: faults combined under load, then a checker (CHAOS_MINUTES=10, CHAOS_SEED); report in .hookline/chaos/
	cargo build --workspace --all-targets --locked
	@scripts/kafka.sh -q fetch
	CHAOS_MINUTES=$(or $(CHAOS_MINUTES),10) cargo test -p hookline-tests --test faults --locked -- \
	  --ignored --exact nemesis::nemesis_long --nocapture

lint: ## Formatting and clippy, warnings as errors
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

check: lint test conformance deploy-check ## What CI runs

fmt: ## Format the code
	cargo fmt --all

build: ## Build every binary
	cargo build --workspace --locked

kafka-fetch: ## Download Kafka's jars into the cache
	@scripts/kafka.sh fetch

deploy-check: ## Render the Kubernetes overlays, validate them offline, lint the Dockerfile, test
	@deploy/check.sh check

deploy-render: ## Print the production overlay's Kubernetes YAML
	@deploy/check.sh render overlays/production
