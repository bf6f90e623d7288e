#!/usr/bin/env bash
# Is CPU per command flat as nodes are added? `loadtest/cluster.sh 1` and `loadtest/cluster.sh
# NODES` alternated PAIRS times (one-node runs vary by a quarter from one run to the next on a
# shared 2-core machine, more than a single pair can tell apart), each run's line printed as it
# ends, then the medians and the verdict against the bar: CPU per command at NODES nodes within
# 20 % of one node's.
#
#   loadtest/cluster-flatness.sh [NODES] [CLIENTS] [PAIRS]     # defaults: 4 256 3
#
# Every run is `local` (each node serves the users its harness drives: nothing is forwarded),
# so the bar's "apart from forwarding" needs no correction. Each run's full output is kept in
# loadtest-results/cluster-flatness/.
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${1:-4}
CLIENTS=${2:-256}
PAIRS=${3:-3}
OUT=loadtest-results/cluster-flatness
mkdir -p "$OUT"
# One run's figures: commands/s, µs of CPU per command (all processes), the probes' medians.
figures() {
  awk '/durable commands\/s/ { for (i = 1; i <= NF; i++) if ($i == "durable") c = $(i - 1) }
    /all processes:/ { u = $3 }
    /the cores over the window/ { core = $9; mem = $13 }
    END { if (u == "") exit 1; printf "%s %s %s %s\n", c, u, core, mem }' "$1"
}
median() { sort -g | awk '{ v[NR] = $1 } END { printf "%.1f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
: >"$OUT/one.txt"
: >"$OUT/many.txt"
for pair in $(seq 1 "$PAIRS"); do
  for n in 1 "$NODES"; do
    run="$OUT/pair$pair-n$n.txt"
    loadtest/cluster.sh "$n" "$CLIENTS" local >"$run" 2>&1 || { echo "run failed, see $run" >&2; exit 1; }
    read -r commands us core memory < <(figures "$run") || { echo "no figures in $run" >&2; exit 1; }
    echo "pair $pair, $n node(s): $commands durable commands/s, $us µs of CPU per command; probes $core / $memory ms (core / memory)"
    if [ "$n" = 1 ]; then echo "$us" >>"$OUT/one.txt"; else echo "$us" >>"$OUT/many.txt"; fi
  done
done
one=$(median <"$OUT/one.txt")
many=$(median <"$OUT/many.txt")
awk -v one="$one" -v many="$many" -v n="$NODES" 'BEGIN {
  growth = (many / one - 1) * 100
  printf "medians: 1 node %.1f µs, %d nodes %.1f µs per command: %+.0f %% (bar: within 20 %%): %s\n",
    one, n, many, growth, (growth <= 20 && growth >= -20) ? "met" : "missed"
}'
