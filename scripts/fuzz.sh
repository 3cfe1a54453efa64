#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for a while.
#
# Usage: scripts/fuzz.sh SECONDS [TARGET...]
# Each target starts from its committed seeds in fuzz/corpus/NAME and keeps
# what it finds in build-fuzz/corpus/NAME, so later runs go on from there.
# A crash stops the run with the path of the input that caused it; turn that
# input into a regression test before fixing the bug.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
shift || true

cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DHARK_FUZZ=ON -DHARK_TESTS=OFF >/dev/null || exit 1
cmake --build build-fuzz -j "${JOBS:-2}" || exit 1

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for source in fuzz/*_fuzz.c; do targets+=("$(basename "$source" .c)"); done
fi

failed=0
for target in "${targets[@]}"; do
  name=${target%_fuzz}
  work=build-fuzz/corpus/$name
  artifacts=build-fuzz/crashes/$name/
  mkdir -p "$work" "$artifacts"
  echo "==> fuzz $target for ${seconds}s"
  if ! build-fuzz/"$target" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
      -print_final_stats=1 -artifact_prefix="$artifacts" "$work" "fuzz/corpus/$name" \
      >"build-fuzz/$target.log" 2>&1; then
    echo "fuzz: $target failed; the input is in $artifacts, the log in build-fuzz/$target.log"
    tail -n 30 "build-fuzz/$target.log"
    failed=1
  else
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "build-fuzz/$target.log" | tr '\n' ' '
    echo
  fi
done
exit $failed
