# The entry points: `make run` and `make test` install what is missing,
# build, then run harkd or every test suite. `make build` only builds.
BUILD ?= build
LISTEN ?= 127.0.0.1:4000
JOBS ?= 2

FUZZ_SECONDS ?= 300
SOAK_SECONDS ?= 600

.PHONY: all build run test bench fuzz soak clean

all: build

build:
	scripts/install-deps.sh build
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHARK_TESTS=ON
	cmake --build $(BUILD) -j $(JOBS)

run:
	scripts/install-deps.sh run
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHARK_TESTS=ON
	cmake --build $(BUILD) -j $(JOBS)
	@echo "harkd: open http://$(LISTEN)/ for the demo chat; Ctrl-C stops it"
	$(BUILD)/harkd --listen $(LISTEN)

test:
	scripts/install-deps.sh test
	tests/run-all.sh

# Benchmarks are programs, built with optimizations; see docs/benchmarks.md.
bench:
	scripts/install-deps.sh build
	cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release
	cmake --build build-release -j $(JOBS)
	build-release/bench_pubsub

# Runs every fuzz target for FUZZ_SECONDS (default 300) each.
fuzz:
	scripts/install-deps.sh test
	scripts/fuzz.sh $(FUZZ_SECONDS)

# Runs random simulator seeds for SOAK_SECONDS (default 600); see
# docs/simulation.md for replaying a failing seed.
soak:
	scripts/install-deps.sh build
	cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DHARK_TESTS=OFF
	cmake --build build-release -j $(JOBS) --target hark-sim
	build-release/hark-sim --soak $(SOAK_SECONDS) --keep-going

clean:
	rm -rf $(BUILD) build-asan build-release build-fuzz
