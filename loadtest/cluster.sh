#!/usr/bin/env bash
# Cluster throughput and CPU per command of every process, on this one machine: three pinned NATS
# servers (R3, started by `latchkey-nats testbed 3`) and N Latchkey nodes (16 partitions, the
# default), with one harness process per node.
#
#   loadtest/cluster.sh [NODES] [CLIENTS] [local|forward|follow]
#
# Each harness drives its own node with CLIENTS/NODES closed-loop clients (`uniform`, lock and
# unlock) on 2000/NODES users, 20 s after a 5-s warm-up. `local`: the users are created through
# the node that is driven, so it serves them and nothing is forwarded. `forward`: they are
# created through the next node, so every command is forwarded to it. `follow`: only n1 is
# driven (all CLIENTS on 2000 users), so the other nodes' CPU is what following its writes into
# their views costs. CPU is the difference of
# utime + stime in /proc/<pid>/stat over a 14-s window inside the measured 20 s, divided by the
# commands of that window (the harnesses' req/s × 14), per process: each node, each NATS server,
# the harnesses together, with each process's context switches per command (all its threads);
# and the machine's busy, idle and stolen share over the same window
# (steal: the host ran something else while a vCPU wanted to run), and how long a fixed piece of
# work took on its cores meanwhile (`latchkey-loadtest cpu-check`). At the end: the NATS server
# each node is connected to and how many streams each NATS server leads (an append from a node
# whose server does not lead the stream takes one more hop), and each node's mean wait for the
# stream's acknowledgement of a write and then for its own view to apply it
# (`latchkey_cluster_append_seconds`, `_view_wait_seconds`).
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${1:-1}
CLIENTS=${2:-256}
MODE=${3:-local}
cargo build --release -q -p latchkey-api --bin latchkey -p latchkey-cluster --bin latchkey-nats \
  -p latchkey-loadtest
R=${CARGO_TARGET_DIR:-$PWD/target}/release
D=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  exec 3>&- 2>/dev/null || true
  kill "${NP:-}" "${PROBE:-}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT
mkfifo "$D/hold"
"$R/latchkey-nats" testbed 3 <"$D/hold" >"$D/nats.out" 2>"$D/nats.log" &
NP=$!
exec 3>"$D/hold"
for _ in $(seq 1 600); do grep -q '^urls ' "$D/nats.out" 2>/dev/null && break; sleep 0.1; done
urls=$(sed -n 's/^urls //p' "$D/nats.out")
for i in $(seq 1 "$NODES"); do
  "$R/latchkey" --listen "127.0.0.1:$((18180 + i))" --data-dir "$D/n$i" --cluster "$urls" \
    --node-id "n$i" >"$D/n$i.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do grep -q 'listening on' "$D/n$i.log" && break; sleep 0.1; done
done
sleep 5 # every node holds its partitions
T=$(cat "$D/n1/admin.pat")
nats=$(pgrep -P "$NP" | tr '\n' ' ')
ticks() { for p in "$@"; do awk '{printf "%d ", $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo -n "0 "; done; }
# Context switches of every thread of each process, voluntary and not: a thread that sleeps
# and is woken for each small piece of work switches once per piece.
switches() {
  for p in "$@"; do
    cat /proc/"$p"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { s += $2 } END { printf "%d ", s }'
  done
}
DRIVEN=$NODES
[ "$MODE" = follow ] && DRIVEN=1
harnesses=()
for i in $(seq 1 "$DRIVEN"); do
  create=()
  [ "$MODE" = forward ] && create=(--create-on "http://127.0.0.1:$((18180 + i % NODES + 1))")
  "$R/latchkey-loadtest" --target "http://127.0.0.1:$((18180 + i))" "${create[@]}" --token "$T" \
    --scenario uniform --users $((2000 / DRIVEN)) --concurrency $((CLIENTS / DRIVEN)) \
    --duration 20s --warmup 5s >"$D/run$i.txt" 2>&1 &
  harnesses+=($!)
done
sleep 10 # users prepared, warm-up done
# The machine's own line of /proc/stat: busy, idle and stolen ticks (time the host ran something
# else while a vCPU of this guest wanted to run).
machine() { awk '/^cpu / { printf "%d %d %d", $2 + $3 + $4 + $7 + $8, $5 + $6, $9 }' /proc/stat; }
# shellcheck disable=SC2086
before=($(ticks "${pids[@]}" $nats "${harnesses[@]}"))
# shellcheck disable=SC2086
s_before=($(switches "${pids[@]}" $nats "${harnesses[@]}"))
m_before=($(machine))
# How fast the cores run over the window (`latchkey-loadtest cpu-check`: fixed work every
# 500 ms, ≈ 2 % of one core): a run on slow moments of the machine costs more CPU per command
# for the same work, whatever runs.
"$R/latchkey-loadtest" cpu-check --every 500ms --duration 14s >"$D/cpu.txt" 2>&1 &
PROBE=$!
sleep 14
# shellcheck disable=SC2086
after=($(ticks "${pids[@]}" $nats "${harnesses[@]}"))
# shellcheck disable=SC2086
s_after=($(switches "${pids[@]}" $nats "${harnesses[@]}"))
m_after=($(machine))
wait "${harnesses[@]}"
rps=0
for i in $(seq 1 "$DRIVEN"); do
  line=$(grep '^latchkey ' "$D/run$i.txt")
  echo "n$i: req/s, ok/s, p50, p90, p99, p99.9, max ms: ${line#latchkey }"
  rps=$((rps + $(echo "$line" | awk '{print $2}')))
done
commands=$((rps * 14))
echo "$NODES node(s), $CLIENTS clients, $MODE: $rps durable commands/s"
names=()
for i in $(seq 1 "$NODES"); do names+=("node n$i"); done
for i in 1 2 3; do names+=("NATS $i"); done
for i in $(seq 1 "$DRIVEN"); do names+=("harness $i"); done
total=0
switched=0
for k in "${!names[@]}"; do
  t=$((after[k] - before[k]))
  total=$((total + t))
  # ticks are 10 ms: µs per command = ticks × 10,000 / commands
  w=$((s_after[k] - s_before[k]))
  switched=$((switched + w))
  echo "  ${names[k]}: $(awk -v t="$t" -v w="$w" -v c="$commands" 'BEGIN { printf "%.1f µs of CPU, %.2f context switches", t * 10000 / c, w / c }') per command"
done
echo "  all processes: $(awk -v t="$total" -v w="$switched" -v c="$commands" 'BEGIN { printf "%.1f µs of CPU, %.2f context switches", t * 10000 / c, w / c }') per command"
busy=$((m_after[0] - m_before[0])); idle=$((m_after[1] - m_before[1])); steal=$((m_after[2] - m_before[2]))
echo "  the machine over the window: $(awk -v b="$busy" -v i="$idle" -v s="$steal" 'BEGIN { t = b + i + s; printf "%.0f %% busy, %.0f %% idle, %.0f %% stolen by the host", b * 100 / t, i * 100 / t, s * 100 / t }')"
wait "$PROBE" || true
# cpu-check's own summary lines: "# core: N probes, fastest …, median M, …".
awk '/^# (core|memory):/ { for (i = 1; i <= NF; i++) if ($i == "median") { v = $(i + 1); sub(",", "", v); m[$2] = v } n = $3 }
  END { if (n > 0) printf "  the cores over the window: fixed work took %s ms (core) and %s ms (memory), medians of %d probes\n", m["core:"], m["memory:"], n }' "$D/cpu.txt"
curl -s "http://127.0.0.1:18181/metrics" | grep '^latchkey_cluster_forwards_total' || true
# A write's two waits on each node over the whole run: the stream's acknowledgement, then the
# node's own view applying it.
for i in $(seq 1 "$NODES"); do
  curl -s "http://127.0.0.1:$((18180 + i))/metrics" | awk -v n="n$i" '
    /^latchkey_cluster_append_seconds_sum/ { as = $NF } /^latchkey_cluster_append_seconds_count/ { ac = $NF }
    /^latchkey_cluster_view_wait_seconds_sum/ { vs = $NF } /^latchkey_cluster_view_wait_seconds_count/ { vc = $NF }
    END { if (ac > 0 && vc > 0) printf "%s: %d writes, mean append %.2f ms, then the view %.2f ms\n", n, ac, as * 1000 / ac, vs * 1000 / vc }'
done
"$R/latchkey-nats" leaders "$urls" >"$D/leaders.txt"
for i in $(seq 1 "$NODES"); do
  server=$(sed -n 's/.*connected to NATS server="\([^"]*\)".*/\1/p' "$D/n$i.log" | head -1)
  awk -v n="n$i" -v s="$server" '$3 == n { p++; if ($2 == s) l++ }
    END { printf "n%s on NATS %s, which leads %d of the %d partition streams it owns\n", substr(n, 2), s, l, p }' \
    "$D/leaders.txt"
done
tail -1 "$D/leaders.txt"
