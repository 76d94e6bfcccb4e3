# `make run`: the demo (daemon with the test profile, page on http://127.0.0.1:8080).
# `make test`: every test. Both install the Debian packages they need first.

CARGO ?= cargo
LISTEN ?= 127.0.0.1:8080

.PHONY: run test bench lint deps-run deps-test

run: deps-run
	$(CARGO) build --release --bin webrtcd
	./target/release/webrtcd run --listen $(LISTEN) --profile pipelines/test.toml --id webrtcd

test: deps-test
	$(CARGO) test --all-targets

# The numbers of BENCHMARKS.md (about 10 minutes; pass options with BENCH_ARGS="--quick").
bench: deps-test
	$(CARGO) build --release --bins
	./target/release/webrtcd-bench --plot docs/benchmarks.png $(BENCH_ARGS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

deps-run:
	@scripts/install-deps.sh run

deps-test:
	@scripts/install-deps.sh test
