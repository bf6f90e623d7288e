#!/usr/bin/env bash
# Runs every scenario of docs/performance.md, each with its same-run baseline, and writes
# JSON + HTML reports to $OUT (default ./loadtest-results). Takes about 30 minutes: every row with a
# ratio runs 3 times (--repeat 3, each on a fresh target) and reports the run with the median ratio;
# the open loop likewise, by its p99.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-loadtest-results}
mkdir -p "$OUT"
cargo build --release -q -p latchkey-loadtest
LT=target/release/latchkey-loadtest
# First: is the harness's HTTP client fast enough to measure with (≥ 0.9 × wrk on the baseline)?
if command -v wrk > /dev/null; then "$LT" client-check --rounds 3 --duration 10s | tee "$OUT/client-check.txt" || true; fi
run() { name=$1; shift; echo "== $name: latchkey-loadtest $*"; "$LT" "$@" --json "$OUT/$name.json" --report "$OUT/$name.html" || true; }

run embedded-uniform-sync --target embedded --scenario uniform --concurrency 64 --duration 10s --baseline --repeat 3
run embedded-hot-user     --target embedded --scenario hot --concurrency 256 --duration 10s --baseline --repeat 3
# 30 s: the steady state. A fresh server appends to new log files until its first checkpoints
# retire segments for reuse (≈ 5–10 s at this load); overwriting recycled segments makes each
# fdatasync cheaper (no journal commit), so 10 s runs read 2–4 % lower.
run http-uniform-sync     --spawn --scenario uniform --concurrency 64 --duration 30s --baseline --repeat 3
run http-uniform-async    --spawn --scenario uniform --durability async --concurrency 64 --duration 30s --baseline --repeat 3
run http-unlock-storm     --spawn --scenario unlock-storm --hot-users 1 --concurrency 256 --duration 10s --baseline --repeat 3
# GetUserByID alone: every request a read.
run http-get-user         --spawn --scenario mixed --read-ratio 1.0 --concurrency 64 --duration 10s --baseline --repeat 3
run http-mixed            --spawn --scenario mixed --read-ratio 0.9 --concurrency 64 --duration 10s --baseline --repeat 3
# The same commands as gRPC clients send them (h2c, the generated client), against tonic alone.
run grpc-uniform-sync     --spawn --protocol grpc --scenario uniform --concurrency 64 --duration 30s --baseline --repeat 3
peak=$(python3 -c "import json;print(int(json.load(open('$OUT/http-uniform-sync.json'))['latchkey']['per_second']))")
# The open loop's p99 rides on rare stalls of a shared host (a 20-50 ms cache flush, a busy
# neighbour): 5 s at the same rate first (past the fresh store's spare zero-filling), and the
# median of 3 runs' p99, every run's listed.
run http-open-loop-half-peak --spawn --scenario uniform --rate $((peak / 2)) --duration 10s --warmup 5s --baseline --repeat 3
run embedded-create-1m    --target embedded --scenario create --count 1000000 --concurrency 64 --duration 120s
run embedded-cold         --target embedded --scenario cold --users 20000 --concurrency 4
# The login section: three runs in a row, each with its own raw Argon2id rate, HTTP ceiling and
# idle p99 (about 2 minutes each).
for i in 1 2 3; do
  echo "== login-$i: latchkey-loadtest --spawn --scenario login --duration 10s --concurrency 16 --users 200"
  "$LT" --spawn --scenario login --duration 10s --concurrency 16 --users 200 --json "$OUT/login-$i.json" || true
done
