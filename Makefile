# Consentry: the README's two commands are `make run` and `make test`.
# Every target honours CONSENTRY_BOOTSTRAP and CONSENTRY_SCHEMA_REGISTRY.

SHELL := /bin/bash
export CONSENTRY_BOOTSTRAP ?= 127.0.0.1:9092
export CONSENTRY_SCHEMA_REGISTRY ?= http://127.0.0.1:8081
export CONSENTRY_TEST_ASSETS ?= $(HOME)/.cache/consentry-test-assets
CARGO ?= cargo
CONSENTRY := target/debug/consentry

.PHONY: tools stack-up stack-down build run observe test test-assets postgres alert-rules unit-test lint fmt bench fuzz clean-stack

tools:
	@scripts/tools.sh

stack-up: tools
	@scripts/stack.sh up

stack-down:
	@scripts/stack.sh down

build:
	$(CARGO) build --bins

## The whole pipeline on the local stack with a synthetic feed, then a summary.
run: stack-up build
	@scripts/run-demo.sh

## A run under a real Prometheus with the shipped alert rules, for the
## dashboards (deploy/grafana/): a new feed every minute until Ctrl-C.
observe: stack-up build
	@scripts/observe.sh

## External test assets (npm: simple-hl7's sample ADT, the FHIR R4 JSON
## Schema), pinned by version and integrity; skipped when present.
test-assets:
	@scripts/test-assets.sh >/dev/null

## PostgreSQL on 127.0.0.1:5432 for the vault store suite: installed if
## absent, started if not answering.
postgres:
	@scripts/postgres.sh

## The alert rules: promtool's check and unit tests (installed if absent).
alert-rules:
	@scripts/alert-rules.sh

## Unit, property, golden and integration tests (the integration tests need
## the stack, the golden and schema tests the assets, the vault suite
## PostgreSQL).
test: stack-up test-assets postgres alert-rules
	$(CARGO) test --workspace --all-targets --no-fail-fast
	# Kafka over TLS needs librdkafka with OpenSSL (the `kafka-tls` build).
	$(CARGO) test --features kafka-tls --test it -- network_clients::

unit-test:
	$(CARGO) test --workspace --lib --bins

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Every parser under libFuzzer for FUZZ_SECONDS each (default 60).
fuzz:
	@scripts/fuzz.sh

## Throughput figures: in-process stages, and a stage against a raw
## consume-produce pass-through on the same broker.
bench: stack-up postgres
	@scripts/bench.sh
