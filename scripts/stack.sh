#!/usr/bin/env bash
# The local stack: `up` (broker + every service in the background, then .hookline/stack.env),
# `down` (stop all, keep data), `clean` (down, then remove the data), `run` (up, the guided
# demo, and down on exit or Ctrl-C).
#
# BROKERS=3 (`make up BROKERS=3`) runs the stack on a three-node Kafka cluster: topics then get
# replication factor 3 and min.insync.replicas 2, as in production. The default is one broker.
# Each shape keeps its own data (.hookline/kafka, .hookline/kafka-cluster); the shape that is up
# is remembered in .hookline/brokers so `down` stops it.
# Setting HOOKLINE_KAFKA_BOOTSTRAP points the stack at an existing Kafka instead of starting one;
# an address that is this stack's own local Kafka (left in a shell that sourced stack.env before
# a `make down`) is not taken for one. KAFKA_SECURITY=sasl_ssl (`make up KAFKA_SECURITY=sasl_ssl`)
# runs the local broker with a SASL_SSL listener and ACLs enforced (.hookline/kafka-sasl-ssl; see
# scripts/kafka.sh): each service connects as its own user (hookline-{service}) with exactly the
# ACLs of the table (`hookline acls`; `make acls` applies them again), and stack.env carries the
# settings an outside client needs, the outside producer's user and password included. HOOKLINE_STATE_DIR (default .hookline) holds the stack's
# data, so a second stack (the conformance run's) can run beside the developer's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
STATE=${HOOKLINE_STATE_DIR:-$ROOT/.hookline}
KAFKA_DIR=$STATE/kafka
CLUSTER_DIR=$STATE/kafka-cluster
SECURE_DIR=$STATE/kafka-sasl-ssl
SHAPE_FILE=$STATE/brokers
BIN=$ROOT/target/debug/hookline
PIDFILE=$STATE/hookline.pid
LOG=$STATE/hookline.log

say() { printf '\033[1m[hookline]\033[0m %s\n' "$*"; }
die() { say "error: $*" >&2; exit 1; }

free_ports() {
  python3 -c 'import socket,sys
ss=[socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}

random_token() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }

# Tokens and the master key are made once and kept with the data, so they survive down/up.
dev_secrets() {
  [[ -f $STATE/dev.env ]] && return
  umask 077
  cat >"$STATE/dev.env" <<ENV
HOOKLINE_ADMIN_TOKEN=$(random_token)
HOOKLINE_TENANT_A=tenant_a
HOOKLINE_TENANT_A_TOKEN=$(random_token)
HOOKLINE_TENANT_B=tenant_b
HOOKLINE_TENANT_B_TOKEN=$(random_token)
HOOKLINE_MASTER_KEY=$(python3 -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())')
ENV
}

# Whether $1 is the bootstrap list a local Kafka of this stack had (each folder remembers it).
local_bootstrap() {
  local dir
  for dir in "$KAFKA_DIR" "$CLUSTER_DIR" "$SECURE_DIR"; do
    [[ -f $dir/bootstrap && "$(cat "$dir/bootstrap")" == "$1" ]] && return 0
  done
  return 1
}

# Whether some broker of the bootstrap list $1 accepts a TCP connection within 5 s.
reachable() {
  python3 -c 'import socket,sys
for hp in sys.argv[1].split(","):
    host, _, port = hp.strip().rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
        sys.exit(0)
    except (OSError, ValueError):
        pass
sys.exit(1)' "$1"
}

hookline_running() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  kill -0 "$pid" 2>/dev/null
}

wait_ready() {
  local url=$1 deadline=$((SECONDS + 90))
  until curl -fsS --noproxy '*' -o /dev/null "$url/readyz" 2>/dev/null; do
    hookline_running || { tail -n 30 "$LOG" >&2; die "hookline exited during start (log: $LOG)"; }
    ((SECONDS < deadline)) || { tail -n 30 "$LOG" >&2; die "$url not ready after 90 s (log: $LOG)"; }
    sleep 0.3
  done
}

up() {
  mkdir -p "$STATE"
  if hookline_running && [[ -f $STATE/stack.env ]]; then
    say "the stack is already up: $STATE/stack.env"
    return
  fi
  say "building Hookline (cargo build; the first build compiles librdkafka and takes several minutes)"
  cargo build --locked -p hookline
  local bootstrap brokers=${BROKERS:-1} security=${KAFKA_SECURITY:-plaintext}
  [[ $brokers =~ ^[1-9]$ ]] || die "BROKERS must be a number of brokers (1-9), not '$brokers'"
  case $security in plaintext | sasl_ssl) ;; *) die "KAFKA_SECURITY takes plaintext or sasl_ssl, not '$security'" ;; esac
  [[ $security == plaintext || $brokers == 1 ]] || die "KAFKA_SECURITY=sasl_ssl runs one broker (BROKERS=1) for now"
  if [[ -n ${HOOKLINE_KAFKA_BOOTSTRAP:-} ]] && local_bootstrap "$HOOKLINE_KAFKA_BOOTSTRAP"; then
    say "HOOKLINE_KAFKA_BOOTSTRAP=$HOOKLINE_KAFKA_BOOTSTRAP is this stack's own local Kafka (from an earlier stack.env): starting it, not taking it for an external Kafka"
    unset HOOKLINE_KAFKA_BOOTSTRAP
  fi
  if [[ -n ${HOOKLINE_KAFKA_BOOTSTRAP:-} ]]; then
    bootstrap=$HOOKLINE_KAFKA_BOOTSTRAP
    reachable "$bootstrap" \
      || die "no Kafka broker answers at $bootstrap (HOOKLINE_KAFKA_BOOTSTRAP): start it, or unset HOOKLINE_KAFKA_BOOTSTRAP for a local one"
    say "using the Kafka at $bootstrap (HOOKLINE_KAFKA_BOOTSTRAP)"
  elif [[ $security == sasl_ssl ]]; then
    stop_other_shape secure
    say "starting Apache Kafka (KRaft, one node, SASL_SSL with ACLs; the first run downloads its jars and makes a CA)"
    bootstrap=$(scripts/kafka.sh start --dir "$SECURE_DIR" --security sasl_ssl)
    echo secure >"$SHAPE_FILE"
    # Each service connects as its own user (hookline-{service}); stack.env passes the same
    # keys on, and the outside producer's HOOKLINE_PRODUCER_USERNAME and _PASSWORD.
    # shellcheck disable=SC1091
    set -a; source "$SECURE_DIR/client.env"; set +a
    say "Kafka is up at $bootstrap (SASL_SSL, SCRAM-SHA-512, CA $HOOKLINE_KAFKA_SSL_CA_FILE)"
  elif [[ $brokers == 1 ]]; then
    stop_other_shape 1
    say "starting Apache Kafka (KRaft, one node; the first run downloads its jars from Maven Central)"
    bootstrap=$(scripts/kafka.sh start --dir "$KAFKA_DIR")
    echo 1 >"$SHAPE_FILE"
    say "Kafka is up at $bootstrap"
  else
    stop_other_shape "$brokers"
    if [[ -f $CLUSTER_DIR/brokers && "$(cat "$CLUSTER_DIR/brokers")" != "$brokers" ]]; then
      die "$CLUSTER_DIR holds a $(cat "$CLUSTER_DIR/brokers")-node cluster: \`make clean\` first to start $brokers"
    fi
    say "starting Apache Kafka (KRaft, $brokers nodes on 127.0.0.1; the first run downloads its jars from Maven Central)"
    bootstrap=$(scripts/kafka.sh start --dir "$CLUSTER_DIR" --brokers "$brokers")
    echo "$brokers" >"$SHAPE_FILE"
    # Production's durability: each record on 3 brokers, acknowledged once 2 have it.
    local rf=$((brokers < 3 ? brokers : 3))
    export HOOKLINE_TOPIC_REPLICATION=${HOOKLINE_TOPIC_REPLICATION:-$rf}
    export HOOKLINE_TOPIC_MIN_INSYNC_REPLICAS=${HOOKLINE_TOPIC_MIN_INSYNC_REPLICAS:-$((rf > 1 ? rf - 1 : 1))}
    say "Kafka is up at $bootstrap (topics: replication $HOOKLINE_TOPIC_REPLICATION, min.insync.replicas $HOOKLINE_TOPIC_MIN_INSYNC_REPLICAS)"
  fi
  dev_secrets
  # shellcheck disable=SC1091
  set -a; source "$STATE/dev.env"; set +a
  local ports
  read -r -a ports <<<"$(free_ports 5)"
  export HOOKLINE_KAFKA_BOOTSTRAP=$bootstrap
  export HOOKLINE_API_LISTEN=127.0.0.1:${ports[0]}
  export HOOKLINE_EXTRACTS_LISTEN=127.0.0.1:${ports[1]}
  export HOOKLINE_DEAD_LETTERS_LISTEN=127.0.0.1:${ports[2]}
  export HOOKLINE_ROUTER_LISTEN=127.0.0.1:${ports[3]}
  export HOOKLINE_WORKER_LISTEN=127.0.0.1:${ports[4]}
  export HOOKLINE_TOKENS="$HOOKLINE_ADMIN_TOKEN=ops:admin;$HOOKLINE_TENANT_A_TOKEN=$HOOKLINE_TENANT_A:editor;$HOOKLINE_TENANT_B_TOKEN=$HOOKLINE_TENANT_B:editor"
  export HOOKLINE_LOG_FORMAT=${HOOKLINE_LOG_FORMAT:-pretty}
  # The operations index lives with the stack's data (a derived view of its topics).
  export HOOKLINE_OPS_INDEX_DIR=${HOOKLINE_OPS_INDEX_DIR:-$STATE/ops-index}
  # Development profile: retries come quickly so the demo shows them.
  export HOOKLINE_RETRY_SCHEDULE=${HOOKLINE_RETRY_SCHEDULE:-0s,1s,5s,30s}
  # The demo receiver listens on 127.0.0.1, which the egress guard refuses unless allowed.
  export HOOKLINE_EGRESS_ALLOW=${HOOKLINE_EGRESS_ALLOW:-127.0.0.1/32}
  if [[ $security == sasl_ssl && $(cat "$SHAPE_FILE" 2>/dev/null) == secure ]]; then acls; fi
  say "creating topics"
  "$BIN" topics >>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; die "could not create topics (log: $LOG)"; }
  say "starting the five services (log: $LOG)"
  setsid nohup "$BIN" all </dev/null >>"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  for p in "${ports[@]}"; do wait_ready "http://127.0.0.1:$p"; done
  cat >"$STATE/stack.env" <<ENV
HOOKLINE_KAFKA_BOOTSTRAP=$bootstrap
HOOKLINE_TOPIC_EVENTS=${HOOKLINE_TOPIC_EVENTS:-hookline.events}
HOOKLINE_TOPIC_BALANCES=${HOOKLINE_TOPIC_BALANCES:-hookline.balances}
HOOKLINE_TOPIC_DELIVERIES=${HOOKLINE_TOPIC_DELIVERIES:-hookline.deliveries}
HOOKLINE_TOPIC_DEAD_LETTERS=${HOOKLINE_TOPIC_DEAD_LETTERS:-hookline.dead-letters}
HOOKLINE_TOPIC_ATTEMPTS=${HOOKLINE_TOPIC_ATTEMPTS:-hookline.attempts}
HOOKLINE_TOPIC_REPLAYS=${HOOKLINE_TOPIC_REPLAYS:-hookline.replays}
HOOKLINE_API_URL=http://$HOOKLINE_API_LISTEN
HOOKLINE_EXTRACTS_URL=http://$HOOKLINE_EXTRACTS_LISTEN
HOOKLINE_DEAD_LETTERS_URL=http://$HOOKLINE_DEAD_LETTERS_LISTEN
HOOKLINE_ROUTER_URL=http://$HOOKLINE_ROUTER_LISTEN
HOOKLINE_WORKER_URL=http://$HOOKLINE_WORKER_LISTEN
HOOKLINE_ADMIN_TOKEN=$HOOKLINE_ADMIN_TOKEN
HOOKLINE_TENANT_A=$HOOKLINE_TENANT_A
HOOKLINE_TENANT_A_TOKEN=$HOOKLINE_TENANT_A_TOKEN
HOOKLINE_TENANT_B=$HOOKLINE_TENANT_B
HOOKLINE_TENANT_B_TOKEN=$HOOKLINE_TENANT_B_TOKEN
ENV
  if [[ $security == sasl_ssl ]]; then cat "$SECURE_DIR/client.env" >>"$STATE/stack.env"; fi
  prometheus_config
  say "the stack is up; addresses and tokens: $STATE/stack.env"
  say "metrics (Prometheus text) on every service's port: http://$HOOKLINE_API_LISTEN/metrics (API), http://$HOOKLINE_EXTRACTS_LISTEN/metrics (extracts), http://$HOOKLINE_DEAD_LETTERS_LISTEN/metrics (operations), http://$HOOKLINE_ROUTER_LISTEN/metrics (router), http://$HOOKLINE_WORKER_LISTEN/metrics (worker)"
  say "a Prometheus scrape configuration for them: $STATE/prometheus.yml (prometheus --config.file=$STATE/prometheus.yml)"
}

# A prometheus.yml scraping the five services, with the alert rules of deploy/prometheus.
prometheus_config() {
  {
    printf 'global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\nrule_files:\n  - %s\nscrape_configs:\n' \
      "$ROOT/deploy/prometheus/alerts.yaml"
    local job addr
    for job in subscription-api:$HOOKLINE_API_LISTEN extract-producer:$HOOKLINE_EXTRACTS_LISTEN \
      dead-letter:$HOOKLINE_DEAD_LETTERS_LISTEN router:$HOOKLINE_ROUTER_LISTEN \
      delivery-worker:$HOOKLINE_WORKER_LISTEN; do
      addr=${job#*:}
      printf '  - job_name: hookline-%s\n    static_configs:\n      - targets: ["%s"]\n        labels: {namespace: local}\n' \
        "${job%%:*}" "$addr"
    done
  } >"$STATE/prometheus.yml"
}

down() {
  if hookline_running; then
    local pid i
    pid=$(cat "$PIDFILE")
    say "stopping the services (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { say "no exit after 30 s; SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
  fi
  rm -f "$PIDFILE" "$STATE/stack.env" "$STATE/prometheus.yml"
  local dir
  for dir in $(kafka_dirs); do
    say "stopping Kafka ($dir)"
    scripts/kafka.sh stop --dir "$dir"
  done
  rm -f "$SHAPE_FILE"
}

# The local Kafka folders that exist, the remembered shape's first (the other one may be left
# from an interrupted `up` or a stack started before the shape was remembered).
kafka_dirs() {
  local first=$KAFKA_DIR second=$CLUSTER_DIR
  case $(cat "$SHAPE_FILE" 2>/dev/null || echo 1) in
    1) ;;
    secure) first=$SECURE_DIR second=$KAFKA_DIR ;;
    *) first=$CLUSTER_DIR second=$KAFKA_DIR ;;
  esac
  local dir seen=""
  for dir in "$first" "$second" "$KAFKA_DIR" "$CLUSTER_DIR" "$SECURE_DIR"; do
    [[ -d $dir && " $seen " != *" $dir "* ]] || continue
    seen="$seen $dir"; echo "$dir"
  done
}

# Before starting one shape: the other one, if still up, is stopped (their ports and memory
# would only compete).
stop_other_shape() {
  local others=() other
  case $1 in
    1) others=("$CLUSTER_DIR" "$SECURE_DIR") ;;
    secure) others=("$KAFKA_DIR" "$CLUSTER_DIR") ;;
    *) others=("$KAFKA_DIR" "$SECURE_DIR") ;;
  esac
  for other in "${others[@]}"; do
    if [[ -d $other ]] && scripts/kafka.sh status --dir "$other" >/dev/null 2>&1; then
      say "stopping the other local Kafka ($other)"
      scripts/kafka.sh stop --dir "$other"
    fi
  done
}

clean() {
  down
  say "removing the stack's data (Kafka's jar cache is kept)"
  rm -rf "$KAFKA_DIR" "$CLUSTER_DIR" "$SECURE_DIR" "$STATE/dev.env" "$LOG" "$STATE/ops-index"
}

run() {
  trap 'echo; down' EXIT
  trap 'exit 130' INT TERM
  up
  # From here Ctrl-C is the way to finish the demo, not a failure.
  trap 'exit 0' INT
  say "the demo: a secret, a subscription, balance rows, an extract, a verifying receiver"
  "$BIN" demo --env "$STATE/stack.env" "$@"
}

# The secured broker's ACLs become exactly the table's for the topic names and group prefix of
# this environment (`hookline acls`): `make acls`, and `up` with KAFKA_SECURITY=sasl_ssl.
acls() {
  [[ -f $SECURE_DIR/security ]] || die "no secured local Kafka: \`make up KAFKA_SECURITY=sasl_ssl\` first"
  [[ -x $BIN ]] || cargo build --locked -p hookline
  HOOKLINE_KAFKA_BOOTSTRAP=$(cat "$SECURE_DIR/bootstrap" 2>/dev/null || echo 127.0.0.1:9092) \
    "$BIN" acls --format kafka >"$SECURE_DIR/acls.txt" || die "hookline acls failed"
  if cmp -s "$SECURE_DIR/acls.txt" "$SECURE_DIR/acls.applied"; then
    say "Kafka ACLs: those of the table already (hookline acls)"
  else
    scripts/kafka.sh -q acls --dir "$SECURE_DIR" --file "$SECURE_DIR/acls.txt"
    say "Kafka ACLs: exactly the table's now ($SECURE_DIR/acls.txt)"
  fi
}

case "${1:-}" in
  up) up ;;
  acls) acls ;;
  down) down ;;
  clean) clean ;;
  run) shift; run "$@" ;;
  *) echo "usage: scripts/stack.sh up|down|clean|run|acls" >&2; exit 2 ;;
esac
