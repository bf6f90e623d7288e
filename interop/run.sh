#!/usr/bin/env bash
# Interoperability suite: the official ZITADEL SDKs, installed from their registries at pinned
# versions into a temp dir, drive a real Latchkey server (the debug binary, on port 0 and a temp
# data dir):
#   - Python zitadel-client (Connect JSON)                      python/scenario.py
#   - Node @zitadel/client over gRPC (h2c) and gRPC-web, and
#     @connectrpc/connect-node over Connect JSON and binary      node/scenario.mjs
# Each scenario: create a human user, lock, unlock, unlock again (FailedPrecondition), get
# (ACTIVE, sequence), unlock a missing user (NotFound), a bad token (Unauthenticated); then the
# login loop: an organization with its own lockout policy (management v1, x-zitadel-orgid),
# GetLockoutSettings, wrong passwords through CreateSession read back as CredentialsCheckError
# with the count, the lock at the limit, the lock refused, an administrator's unlock, a login,
# GetSession with the token, SetSession (a new token), DeleteSession.
# Then /openapi.json is checked by openapi-spec-validator (PyPI, pinned, a venv of its own).
# Then both scenarios run again against a cluster node: three pinned NATS servers
# (`latchkey-nats testbed`), two Latchkey nodes (`--cluster`), the SDKs talking to the second
# node, so calls for the first node's users are forwarded.
# Needs python3 (with venv) and node/npm, and the PyPI and npm registries. Run by .ci/run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
work="$(mktemp -d)"
server_pid=""
cluster_pids=()
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  for pid in "${cluster_pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "-- building latchkey (debug)"
(cd "$root" && cargo build -q -p latchkey-api --bin latchkey -p latchkey-cluster --bin latchkey-nats)
binary="${CARGO_TARGET_DIR:-$root/target}/debug/latchkey"

echo "-- installing the SDKs into $work"
python3 -m venv "$work/py"
"$work/py/bin/pip" install -q --disable-pip-version-check -r "$here/python/requirements.txt"
python3 -m venv "$work/oas"
"$work/oas/bin/pip" install -q --disable-pip-version-check -r "$here/python/openapi-requirements.txt"
mkdir -p "$work/node"
cp "$here/node/package.json" "$here/node/package-lock.json" "$here/node/scenario.mjs" "$work/node/"
(cd "$work/node" && npm ci --silent --no-audit --no-fund)

echo "-- starting latchkey"
"$binary" --listen 127.0.0.1:0 --data-dir "$work/data" >"$work/server.log" 2>&1 &
server_pid=$!
base_url=""
for _ in $(seq 1 300); do
  base_url="$(grep -o 'listening on http://[0-9.:]*' "$work/server.log" | head -1 | sed 's/listening on //' || true)"
  [[ -n "$base_url" ]] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; echo "latchkey exited early"; exit 1; }
  sleep 0.1
done
[[ -n "$base_url" ]] || { cat "$work/server.log"; echo "latchkey did not start"; exit 1; }
token="$(cat "$work/data/admin.pat")"
echo "   $base_url"

status=0
"$work/py/bin/python" "$here/python/scenario.py" "$base_url" "$token" || status=1
(cd "$work/node" && node scenario.mjs "$base_url" "$token") || status=1
echo "-- validating $base_url/openapi.json"
"$work/py/bin/python" -c 'import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1]).read())' \
  "$base_url/openapi.json" >"$work/openapi.json" || status=1
"$work/oas/bin/openapi-spec-validator" "$work/openapi.json" || status=1

kill -TERM "$server_pid"
wait "$server_pid" || { echo "latchkey did not shut down cleanly"; status=1; }
server_pid=""
if [[ $status -ne 0 ]]; then
  echo "-- server log"; cat "$work/server.log"
  exit 1
fi

# Waits for "listening on http://…" in a server's log; prints the URL.
listening() {
  local log="$1" pid="$2" url=""
  for _ in $(seq 1 600); do
    url="$(grep -o 'listening on http://[0-9.:]*' "$log" | head -1 | sed 's/listening on //' || true)"
    [[ -n "$url" ]] && { echo "$url"; return 0; }
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "exited early" >&2; return 1; }
    sleep 0.1
  done
  cat "$log" >&2; return 1
}

echo "-- the same scenarios against a cluster node (3 NATS servers, 2 Latchkey nodes)"
mkfifo "$work/hold"
# The testbed lives while fd 3 holds the FIFO open.
"${binary%/*}/latchkey-nats" testbed 3 <"$work/hold" >"$work/nats.out" 2>"$work/nats.log" &
cluster_pids+=($!)
exec 3>"$work/hold"
for _ in $(seq 1 600); do
  grep -q '^urls ' "$work/nats.out" 2>/dev/null && break
  sleep 0.1
done
urls="$(sed -n 's/^urls //p' "$work/nats.out")"
[[ -n "$urls" ]] || { cat "$work/nats.log"; echo "NATS did not start"; exit 1; }
for node in n1 n2; do
  "$binary" --listen 127.0.0.1:0 --data-dir "$work/$node" --cluster "$urls" --node-id "$node" \
    >"$work/$node.log" 2>&1 &
  cluster_pids+=($!)
  node_url="$(listening "$work/$node.log" "${cluster_pids[-1]}")"
  echo "   $node: $node_url"
done
token="$(cat "$work/n1/admin.pat")"
"$work/py/bin/python" "$here/python/scenario.py" "$node_url" "$token" || status=1
(cd "$work/node" && node scenario.mjs "$node_url" "$token") || status=1
for pid in "${cluster_pids[@]:1}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${cluster_pids[@]:1}"; do wait "$pid" || { echo "a node did not shut down cleanly"; status=1; }; done
exec 3>&-
wait "${cluster_pids[0]}" 2>/dev/null || true
cluster_pids=()
if [[ $status -ne 0 ]]; then
  for node in n1 n2; do echo "-- $node log"; cat "$work/$node.log"; done
  exit 1
fi
echo "-- interop: all SDK scenarios passed (embedded and on a cluster node); the OpenAPI document is valid"
