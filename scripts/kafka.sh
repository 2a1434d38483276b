#!/usr/bin/env bash
# Single-node Apache Kafka 4.1 (KRaft, broker+controller in one JVM) for dev
# and tests, without Docker: the jars come from Maven Central via
# scripts/kafka/pom.xml. Messages go to stderr; stdout of `start` is only the
# bootstrap address, so `BOOT=$(scripts/kafka.sh start --dir X)` works.
set -euo pipefail

KAFKA_VERSION=4.1.1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
POM="$HERE/kafka/pom.xml"
CACHE="${HOOKLINE_KAFKA_CACHE:-$REPO/.hookline/cache/kafka-$KAFKA_VERSION}"
LIBS="$CACHE/libs"
QUIET="${HOOKLINE_KAFKA_QUIET:-0}"

usage() {
  cat <<EOF
usage: scripts/kafka.sh [-q] COMMAND [options]

  fetch                              resolve the broker jars into the cache
  start --dir DIR [--port P] [--controller-port P] [--heap 512m]
                                     start a broker whose state lives in DIR;
                                     prints 127.0.0.1:PORT (also in DIR/bootstrap)
  stop --dir DIR                     stop it (SIGTERM, SIGKILL after 30 s)
  status --dir DIR                   "running ADDR" (exit 0) or "stopped" (exit 1)

  -q, --quiet    hide Maven output (also HOOKLINE_KAFKA_QUIET=1)
Cache: \$HOOKLINE_KAFKA_CACHE (default $REPO/.hookline/cache/kafka-$KAFKA_VERSION)
Logs: DIR/kafka.log. Tools share the classpath, e.g.
  java -cp "$LIBS/*" org.apache.kafka.tools.TopicCommand --bootstrap-server ADDR --list
EOF
}

say() { echo "kafka.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

# The marker holds the pom's hash so editing the pom triggers a re-fetch.
pom_hash() { sha256sum "$POM" | cut -d' ' -f1; }

# Maven output goes to stderr (stdout is reserved) and to CACHE/fetch.log;
# when quiet it is shown only if Maven fails.
mvn_fetch() {
  local cmd=(mvn -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies
    -DincludeScope=runtime "-DoutputDirectory=$CACHE/libs.tmp")
  if [[ "$QUIET" == 1 ]]; then
    "${cmd[@]}" -q >"$CACHE/fetch.log" 2>&1 || { cat "$CACHE/fetch.log" >&2; return 1; }
  else
    "${cmd[@]}" 2>&1 | tee "$CACHE/fetch.log" >&2
  fi
}

fetch() {
  mkdir -p "$CACHE"
  [[ "$(cat "$CACHE/.complete" 2>/dev/null)" == "$(pom_hash)" ]] && return 0
  # Concurrent `start`s (dev broker + test broker) must not fetch twice at once.
  exec 9>"$CACHE/.lock"
  flock 9
  if [[ "$(cat "$CACHE/.complete" 2>/dev/null)" != "$(pom_hash)" ]]; then
    say "downloading Kafka $KAFKA_VERSION jars from Maven Central into $CACHE (first time only, takes a while)"
    local ok=0 try
    for try in 1 2; do  # one retry: first runs on a fresh machine hit flaky downloads
      rm -rf "$CACHE/libs.tmp"
      if mvn_fetch; then ok=1; break; fi
      say "maven failed (attempt $try)"
    done
    [[ $ok == 1 ]] || die "could not fetch Kafka jars (see $CACHE/fetch.log)"
    rm -rf "$LIBS" && mv "$CACHE/libs.tmp" "$LIBS"
    pom_hash >"$CACHE/.complete"
  fi
  exec 9>&-
}

# Sets PID and returns 0 if the broker of $DIR is alive. Checks the command
# line too, so a recycled pid of some other process is not mistaken for it.
running() {
  PID=$(cat "$DIR/kafka.pid" 2>/dev/null) || return 1
  [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$PID/cmdline" 2>/dev/null | grep -qF "$DIR/server.properties"
}

# Prints N free TCP ports on 127.0.0.1, held open together so they differ.
free_ports() {
  python3 -c 'import socket,sys
ss=[socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}
port_free() { python3 -c 'import socket,sys; socket.socket().bind(("127.0.0.1",int(sys.argv[1])))' "$1" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
prop() { [[ ! -f "$DIR/server.properties" ]] || sed -n "s/^$1=//p" "$DIR/server.properties" | tail -n1; }

write_config() {
  # Static voters (not --standalone's dynamic quorum): the controller port is
  # then read from this file on every start, so a restart may change ports.
  cat >"$DIR/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$DIR/data
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Tests may use short consumer session timeouts.
group.min.session.timeout.ms=1000
# Small and fast: 4 instead of 50 partitions makes the first consumer group /
# transaction not create 50 partitions; fewer threads and buffers for 2 cores.
offsets.topic.num.partitions=4
transaction.state.log.num.partitions=4
share.coordinator.state.topic.num.partitions=4
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
num.replica.fetchers=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=8388608
log.index.size.max.bytes=1048576
log.segment.bytes=67108864
log.retention.hours=24
EOF
  # Everything to stdout (= DIR/kafka.log); the per-request/state-change
  # loggers are far too chatty at INFO for a dev broker.
  cat >"$DIR/log4j2.properties" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
EOF
}

start() {
  local heap=512m port_arg="" cport_arg=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --dir) DIR=$2; shift 2 ;;
      --port) port_arg=$2; shift 2 ;;
      --controller-port) cport_arg=$2; shift 2 ;;
      --heap) heap=$2; shift 2 ;;
      *) die "start: unknown option $1" ;;
    esac
  done
  [[ -n "${DIR:-}" ]] || die "start: --dir is required"
  mkdir -p "$DIR" && DIR=$(cd "$DIR" && pwd)
  if running; then
    say "broker for $DIR already running (pid $PID)"
    cat "$DIR/bootstrap" 2>/dev/null || true; return 0
  fi
  fetch
  # Ports: explicit > the ones this DIR used last time (if still free) > new.
  PORT=${port_arg:-$(prop 'listeners' | sed -n 's/.*PLAINTEXT:\/\/127.0.0.1:\([0-9]*\).*/\1/p')}
  CPORT=${cport_arg:-$(prop 'controller.quorum.voters' | sed -n 's/.*:\([0-9]*\)$/\1/p')}
  if [[ -z "$port_arg" && -n "$PORT" ]] && ! port_free "$PORT"; then PORT=""; fi
  if [[ -z "$cport_arg" && -n "$CPORT" ]] && ! port_free "$CPORT"; then CPORT=""; fi
  local picked; picked=($(free_ports 2))
  PORT=${PORT:-${picked[0]}}; CPORT=${CPORT:-${picked[1]}}
  [[ "$PORT" != "$CPORT" ]] || CPORT=${picked[1]}
  write_config
  rm -f "$DIR/bootstrap" "$DIR/kafka.pid"
  local jvm=(java -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
    -XX:TieredStopAtLevel=1 -XX:-UsePerfData -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$DIR/log4j2.properties" -cp "$LIBS/*")
  if [[ ! -f "$DIR/data/meta.properties" ]]; then
    # Cluster id = Kafka's Uuid format (22-char url-safe base64, not starting
    # with '-'); made here because `StorageTool random-uuid` costs a JVM start.
    [[ -s "$DIR/cluster.id" ]] || python3 -c 'import base64,os
s="-"
while s[0]=="-": s=base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
print(s)' >"$DIR/cluster.id"
    "${jvm[@]}" -Xmx256m kafka.tools.StorageTool format -t "$(cat "$DIR/cluster.id")" \
      -c "$DIR/server.properties" >"$DIR/format.log" 2>&1 \
      || { tail -n 30 "$DIR/format.log" >&2; die "storage format failed"; }
  fi
  # New session + all fds redirected: survives the caller's shell and never
  # holds the caller's pipes (so $(kafka.sh start) returns).
  setsid nohup bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$DIR/kafka.pid" \
    "${jvm[@]}" "-Xmx$heap" "-Xms$heap" kafka.Kafka "$DIR/server.properties" \
    </dev/null >"$DIR/kafka.log" 2>&1 9>&- &
  local deadline=$((SECONDS + 90))
  while :; do
    sleep 0.2
    if running; then
      port_open "$PORT" && grep -q 'Kafka Server started' "$DIR/kafka.log" && break
    elif [[ -s "$DIR/kafka.pid" ]]; then
      rm -f "$DIR/kafka.pid"; tail -n 40 "$DIR/kafka.log" >&2; die "broker exited during startup (log: $DIR/kafka.log)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 40 "$DIR/kafka.log" >&2; stop_dir
      die "broker not ready after 90 s (log: $DIR/kafka.log)"
    fi
  done
  echo "127.0.0.1:$PORT" >"$DIR/bootstrap"
  say "broker running (pid $PID, log $DIR/kafka.log)"
  echo "127.0.0.1:$PORT"
}

stop_dir() {
  if running; then
    kill -TERM "$PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 300; i++)); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$PID" 2>/dev/null; then say "no exit after 30 s, SIGKILL"; kill -KILL "$PID" || true; fi
    say "stopped broker (pid $PID)"
  fi
  rm -f "$DIR/kafka.pid" "$DIR/bootstrap"
}

dir_opt() {
  [[ "${1:-}" == --dir && -n "${2:-}" ]] || die "$CMD: --dir DIR is required"
  DIR=$(cd "$2" 2>/dev/null && pwd) || DIR=$2
}

while [[ "${1:-}" == -q || "${1:-}" == --quiet ]]; do QUIET=1; shift; done
CMD=${1:-}; shift || true
case "$CMD" in
  fetch) fetch ;;
  start) start "$@" ;;
  stop) dir_opt "$@"; stop_dir ;;
  status) dir_opt "$@"
    if running; then echo "running $(cat "$DIR/bootstrap" 2>/dev/null)"; else echo "stopped"; exit 1; fi ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
