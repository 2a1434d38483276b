#!/usr/bin/env bash
# Instructions the subscription API spends per Svix message (issue 25), counted by
# valgrind's callgrind, which repeats on a busy machine where CPU times do not. Starts a
# broker of its own (own data folder, free ports) and the API alone under callgrind with
# topics created, makes an application, sends a warm-up, zeroes the counters, sends
# MESSAGES (default 2,000) `POST /api/v1/app/{app}/msg` of 1 KB over 8 keep-alive
# connections (no eventId), dumps the counters and prints the total and the count per
# message (the idle work of those seconds included). Stops everything it started.
#
#   scripts/ingest-callgrind.sh [API binary, default target/release/hookline-subscription-api] [MESSAGES]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=${1:-target/release/hookline-subscription-api}
messages=${2:-2000}
out=$(mktemp -d "${TMPDIR:-/tmp}/ingest-callgrind.XXXXXX")
mkdir -p .hookline
dir=$(mktemp -d "$PWD/.hookline/callgrind-kafka.XXXXXX")
api=""
cleanup() {
  [[ -n $api ]] && kill "$api" 2>/dev/null && wait "$api" 2>/dev/null
  scripts/kafka.sh stop --dir "$dir" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
bootstrap=$(HOOKLINE_KAFKA_QUIET=1 scripts/kafka.sh start --dir "$dir" --heap 1g)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base=http://127.0.0.1:$port
token=callgrind-$(head -c 12 /dev/urandom | base64 | tr -dc a-zA-Z0-9)
HOOKLINE_KAFKA_BOOTSTRAP=$bootstrap HOOKLINE_API_LISTEN=127.0.0.1:$port \
  HOOKLINE_TOKENS="$token=callgrind:editor" HOOKLINE_MASTER_KEY=$(head -c 32 /dev/urandom | base64) \
  HOOKLINE_LOG_LEVEL=warn HOOKLINE_CREATE_TOPICS=true \
  valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" "$bin" >"$out/api.log" 2>&1 &
api=$!
for _ in $(seq 1 300); do curl -sf "$base/readyz" >/dev/null && break; sleep 1; done
app=$(curl -sf -H "Authorization: Bearer $token" -H 'content-type: application/json' \
  -d '{"name": "callgrind"}' "$base/api/v1/app" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
send() {
  python3 - "$base" "$token" "$app" "$1" <<'PY'
import http.client, json, sys, threading
base, token, app, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
host, port = base.split("//")[1].split(":")
def connection(k, count):
    c = http.client.HTTPConnection(host, int(port), timeout=60)
    for i in range(count):
        body = json.dumps({"eventType": "bench.ingest", "orderingKey": f"k{k}",
                           "payload": {"seq": i, "pad": "x" * 900}})
        c.request("POST", f"/api/v1/app/{app}/msg?with_content=false", body,
                  {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        assert r.status == 202, r.status
threads = [threading.Thread(target=connection, args=(k, n // 8)) for k in range(8)]
for t in threads: t.start()
for t in threads: t.join()
PY
}
send 80
sleep 2
callgrind_control -z "$api" >/dev/null 2>&1
started=$(date +%s.%N)
send "$messages"
ended=$(date +%s.%N)
callgrind_control -d "$api" >/dev/null 2>&1
sleep 2
dump=$(ls -t "$out"/callgrind.out.* | head -1)
total=$(callgrind_annotate "$dump" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
python3 -c "print(f'{$messages} messages in {$ended - $started:.1f} s: {$total:,} instructions, {$total / $messages:,.0f} a message ($dump)')"
