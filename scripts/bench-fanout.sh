#!/usr/bin/env bash
# Builds a Release harkd and hark-bench, runs the standard load set against
# a fresh harkd per run, and prints the medians.
#
# Usage: scripts/bench-fanout.sh [--quick] [--runs N] [--churn-seconds S]
#                                [--workers "1 2"] [--build-dir DIR] [--out DIR]
#                                [--plots DIR]
#   --quick           one run of each case, churn for 10 s
#   --runs N          runs per case (3)
#   --workers LIST    harkd worker counts to compare ("1 2"); the runs of the
#                     counts alternate, so each count runs under the same load
#   --churn-seconds S length of the presence churn phase (60)
#   --build-dir DIR   CMake build folder (build-release)
#   --out DIR         CSV, logs and medians (build-release/bench-results)
#   --plots DIR       also draw PNG plots there with gnuplot (e.g. docs/img)
#
# The set has three parts. Idle: 18,000 connections. Fan-out: 10,000
# subscribers at 10, 100 and 1,000 broadcasts/s for 10 s each. Presence
# churn: 1,000 joins/s on one topic with 1,000 members. Each run starts its
# own harkd on a free loopback port and stops it afterwards.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=3
churn_seconds=60
workers_list="1 2"
build=build-release
out=
plots=
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) runs=1; churn_seconds=10 ;;
    --runs) runs=$2; shift ;;
    --churn-seconds) churn_seconds=$2; shift ;;
    --workers) workers_list=$2; shift ;;
    --build-dir) build=$2; shift ;;
    --out) out=$2; shift ;;
    --plots) plots=$2; shift ;;
    *) echo "bench-fanout: unknown argument $1 (see the usage at the top of $0)" >&2; exit 2 ;;
  esac
  shift
done
out=${out:-$build/bench-results}
mkdir -p "$out"
csv=$out/results.csv
rm -f "$csv"

build_tools() {
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DHARK_TESTS=OFF >/dev/null || return 1
  cmake --build "$build" -j 2 --target harkd hark_server >/dev/null || return 1
  if cmake --build "$build" -j 2 --target hark-bench >/dev/null 2>&1; then
    bench=$build/hark-bench
    return 0
  fi
  # Until CMakeLists.txt has a hark-bench target, compile it against the
  # libraries that the build above produced.
  bench=$build/hark-bench-standalone
  cc -std=c17 -O2 -g -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE \
    -Isrc -Iinclude bench/hark-bench/*.c \
    "$build/libhark_server.a" "$build/libhark.a" "$build/libhark_llhttp.a" \
    $(pkg-config --libs libuv jansson hiredis openssl) -o "$bench"
}

# Starts harkd on a free port; sets harkd_pid and harkd_port.
start_harkd() {
  local log=$1 workers=$2
  : >"$log"
  "$build/harkd" --listen 127.0.0.1:0 --workers "$workers" --max-connections-per-ip 100000 \
    --max-messages-per-second 1000000 --handshake-timeout-ms 600000 \
    --presence 'presence:*' 2>"$log" &
  harkd_pid=$!
  harkd_port=
  for _ in $(seq 50); do
    harkd_port=$(sed -n 's/.*msg=listening addr=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
    [ -n "$harkd_port" ] && return 0
    sleep 0.1
  done
  echo "bench-fanout: harkd did not start; see $log" >&2
  kill "$harkd_pid" 2>/dev/null
  return 1
}

stop_harkd() {
  kill -TERM "$harkd_pid" 2>/dev/null
  wait "$harkd_pid"
  local status=$?
  [ "$status" -eq 0 ] || echo "bench-fanout: harkd exited with status $status" >&2
}

# run_case LABEL HARK-BENCH-ARGS...: runs one case $runs times for each
# worker count, alternating the counts; labels get a -wN suffix.
run_case() {
  local label=$1
  shift
  for run in $(seq "$runs"); do
    for workers in $workers_list; do
      local name=$label-w$workers
      local log=$out/harkd-$name-$run.log
      start_harkd "$log" "$workers" || return 1
      echo "==> $name run $run/$runs"
      "$bench" --port "$harkd_port" --harkd-pid "$harkd_pid" --csv "$csv" --label "$name" "$@" \
        || echo "bench-fanout: hark-bench failed for $name run $run" >&2
      stop_harkd
      local warnings
      warnings=$(grep -c 'level=\(warn\|error\)' "$log")
      [ "$warnings" -eq 0 ] || echo "bench-fanout: harkd logged $warnings warnings; see $log" >&2
    done
  done
}

build_tools || { echo "bench-fanout: build failed" >&2; exit 1; }

run_case idle-18000 --scenario idle --connections 18000
for rate in 10 100 1000; do
  run_case "fanout-10000-r$rate" --scenario fanout --connections 10000 --rate "$rate" --duration 10
done
run_case churn-1000 --scenario churn --connections 1100 --churners 100 --rate 1000 \
  --duration "$churn_seconds"

python3 - "$csv" "$out" <<'EOF'
import csv, statistics, sys
from collections import OrderedDict

path, out = sys.argv[1], sys.argv[2]
groups = OrderedDict()
with open(path) as f:
    for row in csv.DictReader(f):
        groups.setdefault(row["label"], []).append(row)

def median(rows, key):
    values = [float(r[key]) for r in rows if r[key] not in ("", "-")]
    return statistics.median(values) if values else None

keys = ["rss_per_conn", "rss_loaded", "rss_after", "rss_growth", "publish_rate",
        "deliveries_per_s", "missing", "p50_ms", "p99_ms", "max_ms",
        "churn_joins_ok", "presence_diffs", "closed_by_server", "connect_failed"]
lines = ["| case | runs | " + " | ".join(keys) + " |",
         "|---|---:|" + "---:|" * len(keys)]
for label, rows in groups.items():
    cells = []
    for key in keys:
        value = median(rows, key)
        cells.append("-" if value is None else f"{value:,.3f}".rstrip("0").rstrip("."))
    lines.append(f"| {label} | {len(rows)} | " + " | ".join(cells) + " |")
table = "\n".join(lines)
print(table)
open(f"{out}/medians.md", "w").write(table + "\n")

# Fan-out medians per rate and worker count, one file per count, for the
# plots.
files = {}
for label, rows in groups.items():
    if not label.startswith("fanout-"):
        continue
    case, workers = label.rsplit("-w", 1)
    rate = case.rsplit("-r", 1)[1]
    if workers not in files:
        files[workers] = open(f"{out}/fanout-w{workers}.dat", "w")
        files[workers].write("# rate deliveries_per_s p50_ms p99_ms\n")
    files[workers].write(f"{rate} {median(rows, 'deliveries_per_s')} {median(rows, 'p50_ms')} "
                         f"{median(rows, 'p99_ms')}\n")
for f in files.values():
    f.close()
EOF

if [ -n "$plots" ]; then
  if ! command -v gnuplot >/dev/null; then
    echo "bench-fanout: gnuplot is not installed; no plots" >&2
    exit 0
  fi
  mkdir -p "$plots"
  gnuplot <<EOF
set terminal pngcairo size 800,450 font "sans,10"
set output "$plots/fanout-deliveries.png"
set title "Fan-out to 10,000 subscribers: deliveries per second (medians of $runs runs)"
set logscale x
set xlabel "broadcasts per second offered"
set ylabel "deliveries per second"
set format y "%.1s%c"
set key top left
set xrange [5:2000]
set yrange [0:*]
plot for [w in "$workers_list"] "$out/fanout-w".w.".dat" using 1:2 with linespoints lw 2 pt 7 \
       title "harkd --workers ".w, \
     "-" using 1:2 with linespoints lw 2 pt 5 dt 2 title "uWebSockets (reference)"
100 978000
1000 87000
e
set output "$plots/fanout-latency.png"
set title "Fan-out to 10,000 subscribers: latency from publish to receipt (medians of $runs runs)"
set ylabel "milliseconds"
set format y "%g"
set key bottom right
plot for [w in "$workers_list"] "$out/fanout-w".w.".dat" using 1:3 with linespoints lw 2 pt 7 \
       title "harkd --workers ".w." p50", \
     for [w in "$workers_list"] "$out/fanout-w".w.".dat" using 1:4 with linespoints lw 2 pt 9 \
       title "harkd --workers ".w." p99", \
     "-" using 1:2 with linespoints lw 2 pt 5 dt 2 title "uWebSockets p99 (reference)"
10 351
100 421
e
EOF
  echo "plots: $plots/fanout-deliveries.png $plots/fanout-latency.png"
fi
