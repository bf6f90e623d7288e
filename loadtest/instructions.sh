#!/usr/bin/env bash
# Userland instructions per request of a server, counted by callgrind: deterministic where
# throughput on a shared 2-core machine moves ±10 % from run to run, so a change worth 1-2 % of
# the server's CPU shows. Needs valgrind (not part of the build; `apt install valgrind`).
#
#   loadtest/instructions.sh [latchkey|baseline] [OUT_DIR]
#   LT=/path/to/other/latchkey-loadtest loadtest/instructions.sh   # another build (A/B)
#   SERVER_LT=/path/to/old/latchkey-loadtest loadtest/instructions.sh   # another build's server,
#                                                        # driven by this build's client
#   PROTOCOL=grpc loadtest/instructions.sh              # the same load over gRPC (Latchkey only)
#   SCENARIO="mixed --read-ratio 1.0" loadtest/instructions.sh   # another load (GetUserByID here)
#
# valgrind runs one thread at a time; `--fair-sched=yes` hands the turn over fairly. Without it,
# sled's start-up (threads spinning on a lazily built thread pool while the thread building it
# waits for its turn) sometimes took minutes, past the wait for /healthz below.
#
# Starts `latchkey-loadtest serve-latchkey` (or `serve-baseline`) under callgrind, drives it with
# the closed-loop `uniform` scenario (16 clients, 40 s; the server runs ≈ 50 times slower) over
# REST or gRPC, counts from 5 s into the run for 15 s, and prints instructions per request.
# Latchkey's requests in that window are its own count (`latchkey_http_requests_total`, read
# from /metrics as the count starts and ends); the baseline has no metrics, so its requests are
# its vectored socket writes (hyper writes each HTTP/1.1 answer with one; this matched Latchkey's
# own count to 0.2 %), counted once: valgrind 3.19's caller tree lists the same calls again on a
# `=>` line, which would halve the figure. Kernel time (TCP, syscalls) is not counted; under valgrind
# SHA-256 runs without the CPU's SHA extensions, so hashing a token counts ≈ 3,600 instructions
# that the real CPU does in a few hundred (a token is hashed on a caller-cache miss only).
# `callgrind_annotate OUT_DIR/out.1` shows where they go (add `--inclusive=yes` for totals per
# function).
set -euo pipefail
cd "$(dirname "$0")/.."
KIND=${1:-latchkey}
OUT=${2:-loadtest-results/instructions-$KIND}
PORT=${PORT:-18097}
rm -rf "$OUT"
mkdir -p "$OUT"
if [ -z "${LT:-}" ]; then
  cargo build --release -q -p latchkey-loadtest
  LT=target/release/latchkey-loadtest
fi
SERVER_LT=${SERVER_LT:-$LT}
PROTOCOL=${PROTOCOL:-rest}
TOKEN=loadtest-admin-token

if [ "$KIND" = baseline ]; then
  valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$OUT/out" \
    "$SERVER_LT" serve-baseline --listen "127.0.0.1:$PORT" > "$OUT/server.log" 2>&1 &
else
  LATCHKEY_BOOTSTRAP_TOKEN=$TOKEN valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$OUT/out" \
    "$SERVER_LT" serve-latchkey --listen "127.0.0.1:$PORT" --data-dir "$OUT/data" --log warn \
    > "$OUT/server.log" 2>&1 &
fi
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
healthy=
for _ in $(seq 120); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" && healthy=1 && break
  sleep 1
done
if [ -z "$healthy" ]; then
  echo "the server under callgrind did not answer /healthz within 120 s (see $OUT/server.log)" >&2
  exit 1
fi

# shellcheck disable=SC2086 # the scenario's name and its flags, split
LATCHKEY_TOKEN=$TOKEN "$LT" --target "http://127.0.0.1:$PORT" --scenario ${SCENARIO:-uniform} \
  --protocol "$PROTOCOL" --concurrency 16 --duration 40s > "$OUT/client.log" 2>&1 &
CLIENT=$!
for _ in $(seq 120); do
  grep -q "running" "$OUT/client.log" && break
  sleep 1
done
sleep 5

# Latchkey's own request count, summed over routes, protocols and statuses.
served() {
  curl -s "http://127.0.0.1:$PORT/metrics" \
    | awk '/^latchkey_http_requests_total/ {s += $NF} END {printf "%d", s}'
}
# Read before the count starts: rendering /metrics costs ≈ 20 million instructions, which
# inside the window would add ≈ 1,300 to every request's figure.
first=$(served)
callgrind_control -z "$SERVER" > /dev/null
sleep 15
callgrind_control -d "$SERVER" > /dev/null
last=$(served)
wait "$CLIENT" || true

total=$(callgrind_annotate "$OUT/out.1" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
if [ "$KIND" = baseline ]; then
  requests=$(callgrind_annotate --inclusive=yes --tree=calling "$OUT/out.1" \
    | grep -E '[^=]> .*TcpStream as tokio::io::async_write::AsyncWrite>::poll_write_vectored \(' \
    | sed -E 's/.*\(([0-9,]+)x\).*/\1/; s/,//g' | awk '{s += $1} END {print s + 0}')
else
  requests=$((last - first))
fi
echo "$KIND ($PROTOCOL): $total instructions over $requests requests = $((total / requests)) per request"
