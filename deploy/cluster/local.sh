#!/usr/bin/env bash
# A Latchkey cluster on this machine: three pinned NATS servers (nats-server 2.15.1, installed on
# first use) clustered on loopback, and N Latchkey nodes (default 3) on ports 8081.., each with
# its own data directory under ./latchkey-cluster/. The first node bootstraps the cluster; its
# admin token is in ./latchkey-cluster/n1/admin.pat. Ctrl-C stops everything.
#
#   deploy/cluster/local.sh [NODES]
#
# For machines of their own, run nats-server with nats-{1,2,3}.conf (one per machine) and
# `latchkey serve --cluster nats://a:4222,nats://b:4222,nats://c:4222 --node-id <name>` on each
# Latchkey machine (README, "Cluster mode").
set -euo pipefail
nodes="${1:-3}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
state="$PWD/latchkey-cluster"
mkdir -p "$state"
pids=()
cleanup() {
  # The nodes first (they leave the cluster gracefully), then the NATS servers.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

echo "-- building (release)"
(cd "$root" && cargo build -q --release -p latchkey-api --bin latchkey -p latchkey-cluster --bin latchkey-nats)
bin="${CARGO_TARGET_DIR:-$root/target}/release"

echo "-- starting three NATS servers"
rm -f "$state/hold" && mkfifo "$state/hold"
# The testbed lives while this script holds the FIFO open (fd 3), and stops when it exits.
"$bin/latchkey-nats" testbed 3 <"$state/hold" >"$state/nats.out" 2>"$state/nats.log" &
pids+=($!)
exec 3>"$state/hold"
for _ in $(seq 1 600); do
  grep -q '^urls ' "$state/nats.out" 2>/dev/null && break
  sleep 0.1
done
urls="$(sed -n 's/^urls //p' "$state/nats.out")"
[[ -n "$urls" ]] || { cat "$state/nats.log"; echo "NATS did not start"; exit 1; }
echo "   $urls"

for i in $(seq 1 "$nodes"); do
  port=$((8080 + i))
  "$bin/latchkey" --listen "127.0.0.1:$port" --data-dir "$state/n$i" \
    --cluster "$urls" --node-id "n$i" >"$state/n$i.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do
    grep -q 'listening on' "$state/n$i.log" && break
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$state/n$i.log"; exit 1; }
    sleep 0.1
  done
  echo "-- node n$i: http://127.0.0.1:$port (log $state/n$i.log)"
done
echo "-- admin token: $state/n1/admin.pat; Ctrl-C stops the cluster"
wait
