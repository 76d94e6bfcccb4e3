# `make run`: the demo (daemon with the test profile, page on http://127.0.0.1:8080).
# `make test`: every test. Both install the Debian packages they need first.

CARGO ?= cargo
LISTEN ?= 127.0.0.1:8080

.PHONY: run test bench bench-compare soak fuzz lint deps-run deps-test

run: deps-run
	$(CARGO) build --release --bin webrtcd
	./target/release/webrtcd run --listen $(LISTEN) --profile pipelines/test.toml --id webrtcd

test: deps-test
	$(CARGO) test --all-targets

# The numbers of BENCHMARKS.md (about 10 minutes; pass options with BENCH_ARGS="--quick").
bench: deps-test
	$(CARGO) build --release --bins
	./target/release/webrtcd-bench --plot docs/benchmarks.png $(BENCH_ARGS)

# webrtcd beside GStreamer's webrtcsink, same scenario, same run (BENCHMARKS.md). webrtcsink
# is built in a cargo project of its own (bench/webrtcsink), never a dependency of webrtcd.
bench-compare: deps-test
	$(CARGO) build --release --bins
	$(CARGO) build --release --manifest-path bench/webrtcsink/Cargo.toml --target-dir target/webrtcsink
	./target/release/webrtcd-bench --compare --viewers 1,5,10,15,20,30,50 --plot docs/compare.png $(BENCH_ARGS)

# The soak of RELIABILITY.md: 10 000 calls one after another, then 1 000 ten at a time, each
# checked on both sides (about 75 minutes; fewer with SOAK_ARGS="--soak-calls 1000").
soak: deps-test
	$(CARGO) build --release --bins
	WEBRTCD_BENCH_LOG="webrtcd=info,warn" ./target/release/webrtcd-bench --soak --plot docs/soak.png $(SOAK_ARGS)

# Coverage-guided fuzzing (nightly toolchain + cargo-fuzz); FUZZ_SECONDS per target. New
# corpus entries land in fuzz/corpus/, which `make test` replays on stable.
FUZZ_SECONDS ?= 120
fuzz:
	cd fuzz && for t in protocol relay sdp; do \
		cargo +nightly fuzz run --sanitizer none $$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

deps-run:
	@scripts/install-deps.sh run

deps-test:
	@scripts/install-deps.sh test
