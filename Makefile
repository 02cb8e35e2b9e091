# Entry points for developers and CI. The logic lives in scripts/; these targets are thin.
.DEFAULT_GOAL := help
.PHONY: help run build test lint fmt bench fuzz services-start services-stop services-status services-env

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

run: ## build (release) and run vmrd in the foreground with local defaults (./.vmr)
	bash scripts/run-local.sh

build: ## debug build of every binary
	cargo build --workspace --bins

test: ## install deps, start test services, build, run all tests, fmt check, clippy
	bash scripts/test.sh

lint: ## rustfmt check and clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt: ## format the code
	cargo fmt --all

bench: ## release build, start what the benchmarks need, run them all, write docs/benchmarks.md
	bash scripts/bench.sh

fuzz: ## run each fuzz target ~15 s (scripts/fuzz.sh short; `long N` for longer runs)
	bash scripts/fuzz.sh short

services-start: ## start libvirtd, S3 and the OCI registries on loopback
	bash scripts/test-services.sh start

services-stop: ## stop the services services-start started
	bash scripts/test-services.sh stop

services-status: ## one line per test service
	bash scripts/test-services.sh status

services-env: ## print the VMR_TEST_* exports (eval "$(make -s services-env)")
	@bash scripts/test-services.sh env
