#!/usr/bin/env bash
# Runs every test suite, prints one summary line per suite, and exits
# non-zero when any suite failed. Called by `make test`.
#
# Suites: unit (ctest), unit-asan (the same tests built with AddressSanitizer
# and UndefinedBehaviorSanitizer), e2e (Node.js with the phoenix client
# against build/harkd, which runs one worker thread per core), e2e-asan (the
# same against a sanitized harkd), e2e-one-worker (build/harkd with
# --workers 1), browser (Chromium driven by playwright-core) and fuzz (each
# libFuzzer target for FUZZ_SECONDS, 10 by default).
set -uo pipefail
cd "$(dirname "$0")/.."
jobs=${JOBS:-2}
results=()
failed=0

run_suite() {
  local name=$1; shift
  local start=$SECONDS
  echo "==> suite $name: $*"
  if "$@"; then
    results+=("suite=$name result=pass seconds=$((SECONDS - start))")
  else
    results+=("suite=$name result=FAIL seconds=$((SECONDS - start))")
    failed=1
  fi
}

build_tree() {
  local dir=$1; shift
  cmake -S . -B "$dir" "$@" >/dev/null && cmake --build "$dir" -j "$jobs"
}

unit() {
  build_tree build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHARK_TESTS=ON &&
    ctest --test-dir build --output-on-failure -j "$jobs"
}

unit_asan() {
  build_tree build-asan -DCMAKE_BUILD_TYPE=Debug -DHARK_SANITIZE=ON -DHARK_TESTS=ON &&
    ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan --output-on-failure -j "$jobs"
}

e2e() {
  HARKD="$PWD/$1/harkd" node --test --test-concurrency=2 tests/e2e/*.test.mjs
}

browser() {
  HARKD="$PWD/build/harkd" node --test tests/browser/*.test.mjs
}

fuzz() {
  scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
}

run_suite unit unit
run_suite unit-asan unit_asan
run_suite e2e e2e build
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 run_suite e2e-asan e2e build-asan
# harkd defaults to one worker per core; this pass keeps the single-threaded
# server covered whatever the machine.
HARK_E2E_ARGS="--workers 1" run_suite e2e-one-worker e2e build
run_suite browser browser
run_suite fuzz fuzz

echo
echo "Summary:"
printf '%s\n' "${results[@]}"
exit $failed
