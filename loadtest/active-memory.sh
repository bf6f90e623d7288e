#!/usr/bin/env bash
# Memory of a server with many users active: the server on an existing data directory (one
# `latchkey-loadtest scale --data-dir DIR` left behind), then N users made active at once by one
# GET each, and its resident set size before and after. Where a scale run's rounds passivate
# users while they are read (its idle timeout is short, to check passivation), this keeps them
# all active (idle timeout 10 min), so "N users active" is what is measured. Needs curl, python3
# and wrk (`apt install wrk`).
#
#   loadtest/active-memory.sh DATA_DIR [STORE] [CACHE_MB] [N]    # defaults: redb 1024 100000
#   BROAD=1 loadtest/active-memory.sh ...   # first three rounds of the scale run's broad lists
#                                           # (deep offsets, LOCKED, broad username prefixes,
#                                           # a contains), which fill the store's cache
#
# The users are the first N by username (spread over the whole store: load-scale-1,
# load-scale-10, load-scale-100, ...), listed over HTTP before any is read.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:?data directory of a scale run}
STORE=${2:-redb}
CACHE=${3:-1024}
N=${4:-100000}
PORT=${PORT:-18181}
BASE=http://127.0.0.1:$PORT
TOKEN=loadtest-admin-token
LT=${LT:-target/release/latchkey-loadtest}
[ -x "$LT" ] || cargo build --release -q -p latchkey-loadtest
WORK=$(mktemp -d)
trap 'kill $PID 2>/dev/null && wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
"$LT" serve-latchkey --listen 127.0.0.1:$PORT --data-dir "$DIR" --store "$STORE" \
  --cache-mb "$CACHE" --idle-timeout 10m --log warn &
PID=$!
for _ in $(seq 1 400); do curl -sf $BASE/readyz >/dev/null && break; sleep 0.05; done
rss() { awk '/VmRSS/ {printf "%.0f MiB", $2 / 1024}' /proc/$PID/status; }
metric() { curl -s $BASE/metrics | awk -v m="$1" '$1 == m {print $2}'; }
echo "store $STORE, cache $CACHE MiB: RSS when ready $(rss)"
python3 - "$BASE" "$TOKEN" "$N" "$WORK/ids" <<'PY'
import json, sys, urllib.request
base, token, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ids = []
while len(ids) < n:
    body = {"query": {"offset": str(len(ids)), "limit": 1000, "asc": True},
            "sortingColumn": "USER_FIELD_NAME_USER_NAME"}
    request = urllib.request.Request(base + "/v2/users", data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    page = json.load(urllib.request.urlopen(request)).get("result", [])
    if not page:
        break
    ids += [user["userId"] for user in page]
open(out, "w").write("\n".join(ids[:n]) + "\n")
PY
echo "after listing $(wc -l < "$WORK/ids") ids: RSS $(rss)"
if [ -n "${BROAD:-}" ]; then
  python3 - "$BASE" "$TOKEN" <<'PY'
import json, sys, urllib.request
base, token = sys.argv[1], sys.argv[2]
def names(name, method):
    return [{"userNameQuery": {"userName": name, "method": "TEXT_QUERY_METHOD_" + method}}]
locked = [{"stateQuery": {"state": "USER_STATE_LOCKED"}}]
bodies = [
    {"query": {"limit": 100}},
    {"query": {"limit": 100, "offset": 5000000}},
    {"query": {"limit": 100, "asc": True}, "sortingColumn": "USER_FIELD_NAME_USER_NAME"},
    {"query": {"limit": 100}, "queries": locked},
    {"query": {"limit": 100, "offset": 50000}, "queries": locked},
    {"query": {"limit": 100}, "queries": names("LOAD-SCALE-1", "STARTS_WITH_IGNORE_CASE")},
    {"query": {"limit": 100}, "queries": names("load-scale-1", "STARTS_WITH")},
    {"query": {"limit": 100}, "queries": names("-scale-77777", "CONTAINS")},
]
for _ in range(3):
    for body in bodies:
        request = urllib.request.Request(base + "/v2/users", data=json.dumps(body).encode(),
            headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request).read()
        except urllib.error.HTTPError as refused:  # LIST-TOO-BROAD is an answer too
            refused.read()
PY
  echo "after three rounds of the scale run's broad lists: RSS $(rss)"
fi
cat > "$WORK/get.lua" <<LUA
local ids = {}
for line in io.lines("$WORK/ids") do ids[#ids + 1] = line end
local i = 0
request = function()
  i = i % #ids + 1
  return wrk.format("GET", "/v2/users/" .. ids[i], {["Authorization"] = "Bearer $TOKEN"})
end
LUA
# One connection set walking the list: 8 s covers it at least once at ≥ 12,500 reads/s.
wrk -t1 -c32 -d8s -s "$WORK/get.lua" $BASE | grep -E "requests in|Requests/sec"
echo "$(metric latchkey_actors_active) users active: RSS $(rss)"
