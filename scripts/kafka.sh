#!/usr/bin/env bash
# Apache Kafka 4.1 in KRaft mode for dev and tests, without Docker: the jars come from Maven
# Central via scripts/kafka/pom.xml. Two shapes:
#   - one node (the default): broker+controller in one JVM, its state directly in DIR;
#   - a cluster of N nodes (`--brokers N`): N JVMs on 127.0.0.1, each broker+controller, a
#     static controller quorum of all N, node.id 1..N, node N's state in DIR/node-N;
#     internal topics with replication factor min(N, 3) and min.insync.replicas one less.
# The shape and every node's ports are remembered in DIR, so a node killed with SIGKILL comes
# back on the same address. Messages go to stderr; stdout of `start` and `start-node` is only
# the bootstrap list, so `BOOT=$(scripts/kafka.sh start --dir X)` works.
# KAFKA_SECURITY=sasl_ssl (or --security sasl_ssl; one node): the client listener speaks
# SASL_SSL (SCRAM-SHA-512, SCRAM-SHA-256, PLAIN) with a CA and broker certificate made at the
# first start, ACLs enforced (StandardAuthorizer, nothing allowed without an ACL), super user
# `admin`, one user per Hookline principal (those of deploy/kafka/acls.txt, rendered by
# `hookline acls` from the table in crates/hookline-kafka/src/acl.rs) with exactly the
# file's ACLs. DIR/client.env and DIR/client.properties tell an outside client how to connect.
set -euo pipefail

KAFKA_VERSION=4.1.1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
POM="$HERE/kafka/pom.xml"
CACHE="${HOOKLINE_KAFKA_CACHE:-$REPO/.hookline/cache/kafka-$KAFKA_VERSION}"
LIBS="$CACHE/libs"
QUIET="${HOOKLINE_KAFKA_QUIET:-0}"
# When set, every broker started by this call is SIGKILLed once that process is gone (tests
# pass their own pid, so brokers die with a test run that is itself killed).
OWNER="${HOOKLINE_KAFKA_OWNER_PID:-}"

usage() {
  cat <<EOF
usage: scripts/kafka.sh [-q] COMMAND [options]

  fetch                              resolve the broker jars into the cache
  start --dir DIR [--brokers N] [--port P] [--controller-port P] [--heap SIZE]
        [--security plaintext|sasl_ssl]
                                     start a broker (or, with --brokers N > 1, a cluster of
                                     N nodes) whose state lives in DIR; starts only what is
                                     stopped; prints the bootstrap list 127.0.0.1:P[,...]
                                     (also in DIR/bootstrap). --port and --controller-port:
                                     one node only. Heap per JVM: 512m for one node, 384m
                                     per node of a cluster (remembered in DIR).
                                     --security (default \$KAFKA_SECURITY, else
                                     plaintext; remembered in DIR): sasl_ssl, one node
                                     only, writes DIR/client.env (HOOKLINE_KAFKA_* with the
                                     hookline-{service} users, the outside
                                     producer's HOOKLINE_PRODUCER_*),
                                     DIR/client.properties and DIR/admin.properties
                                     (Java clients, hookline-producer / admin)
  acls --dir DIR [--file F]          make the running secured broker's ACLs exactly those
                                     of F (default deploy/kafka/acls.txt; format of
                                     `hookline acls`), as admin
  scram-user --dir DIR --user NAME (--password PW | --password-file F) [--mechanism M]
                                     (re)set a SCRAM user's password (default both
                                     SCRAM-SHA-512 and SCRAM-SHA-256) on a running
                                     secured broker, as admin
  stop --dir DIR                     stop every node (SIGTERM, SIGKILL after 30 s)
  kill --dir DIR                     SIGKILL every node
  status --dir DIR                   "running ADDRS[ (down: N ...)]" (exit 0) or "stopped" (exit 1)
  start-node --dir DIR --node N      start node N on its remembered ports (one node: N=1);
                                     prints the bootstrap list
  stop-node --dir DIR --node N       stop node N (SIGTERM, SIGKILL after 30 s)
  kill-node --dir DIR --node N       SIGKILL node N and wait until it is gone
  pause-node --dir DIR --node N      SIGSTOP node N (it stays a process, answering nothing)
  resume-node --dir DIR --node N     SIGCONT node N

  -q, --quiet    hide Maven output (also HOOKLINE_KAFKA_QUIET=1)
Cache: \$HOOKLINE_KAFKA_CACHE (default $REPO/.hookline/cache/kafka-$KAFKA_VERSION)
Owner: \$HOOKLINE_KAFKA_OWNER_PID: brokers started are SIGKILLed when that process is gone.
Logs: DIR/kafka.log (one node) or DIR/node-N/kafka.log; the previous run's in kafka.log.1.
Tools share the classpath, e.g.
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

# --- shape and nodes ---------------------------------------------------------------------

# The number of nodes DIR holds: DIR/brokers for a cluster; a single node keeps its state
# directly in DIR (and has no such file).
shape() {
  if [[ -s "$DIR/brokers" ]]; then cat "$DIR/brokers"; else echo 1; fi
}
# A node's folder: DIR itself for the single node, DIR/node-N in a cluster.
node_dir() { if [[ $SHAPE == 1 ]]; then echo "$DIR"; else echo "$DIR/node-$1"; fi; }
nodes() { seq 1 "$SHAPE"; }

# Whether process $1 exists and is not a zombie (a killed JVM whose parent was the shell of
# an earlier call may wait to be reaped).
alive() {
  local state
  state=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n "$state" && "$state" != Z ]]
}

# Sets PID and returns 0 if the JVM of node folder $1 is alive. Checks the command line too,
# so a recycled pid of some other process is not mistaken for it.
running_at() {
  PID=$(cat "$1/kafka.pid" 2>/dev/null) || return 1
  [[ -n "$PID" ]] && alive "$PID" &&
    tr '\0' ' ' <"/proc/$PID/cmdline" 2>/dev/null | grep -qF "$1/server.properties"
}
running_node() { running_at "$(node_dir "$1")"; }
# The nodes that are up, space-separated.
up_nodes() {
  local n out=()
  for n in $(nodes); do if running_node "$n"; then out+=("$n"); fi; done
  echo "${out[*]:-}"
}

# Prints N free TCP ports on 127.0.0.1, held open together so they differ. They are taken
# below the kernel's ephemeral range (ip_local_port_range), where neither a bind to port 0
# nor an outgoing connection of any process lands: a node killed and restarted gets its port
# back even while other tests open thousands of connections.
free_ports() {
  python3 -c 'import random,socket,sys
try:
    low=int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except OSError:
    low=32768
lo=max(1024,low-12000)
ss=[]
while len(ss)<int(sys.argv[1]):
    s=socket.socket()
    try:
        s.bind(("127.0.0.1",random.randrange(lo,low) if lo<low else 0))
        ss.append(s)
    except OSError:
        s.close()
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}
# Whether a listener could bind the port now. SO_REUSEADDR as the JVM's listeners have it:
# connections of a just-killed broker linger in TIME_WAIT on its port, which does not keep a
# new listener from binding it.
port_free() {
  python3 -c 'import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1",int(sys.argv[1])))' "$1" 2>/dev/null
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Property $2 of node folder $1's server.properties (empty when absent).
prop_at() { [[ ! -f "$1/server.properties" ]] || sed -n "s/^$2=//p" "$1/server.properties" | tail -n1; }
# The remembered client and controller ports of node folder $1.
port_at() { prop_at "$1" listeners | sed -n 's/^\(PLAINTEXT\|SASL_SSL\):\/\/127.0.0.1:\([0-9]*\).*/\2/p'; }
cport_at() { prop_at "$1" listeners | sed -n 's/.*CONTROLLER:\/\/127.0.0.1:\([0-9]*\).*/\1/p'; }

bootstrap_list() {
  local n out=()
  for n in $(nodes); do out+=("127.0.0.1:$(port_at "$(node_dir "$n")")"); done
  (IFS=,; echo "${out[*]}")
}

# write_config NODE FOLDER PORT CPORT VOTERS
write_config() {
  local node=$1 ndir=$2 port=$3 cport=$4 voters=$5
  local rf=1 isr=1
  if ((SHAPE > 1)); then
    rf=$((SHAPE < 3 ? SHAPE : 3)); isr=$((rf - 1))
  fi
  # Static voters (not --standalone's dynamic quorum): the controller ports are then read
  # from this file on every start, so a restart of the whole cluster may change ports.
  local listener=PLAINTEXT
  [[ $SECURITY == sasl_ssl ]] && listener=SASL_SSL
  cat >"$ndir/server.properties" <<EOF
process.roles=broker,controller
node.id=$node
controller.quorum.voters=$voters
listeners=$listener://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=$listener://127.0.0.1:$port
listener.security.protocol.map=$listener:$listener,CONTROLLER:PLAINTEXT
inter.broker.listener.name=$listener
controller.listener.names=CONTROLLER
log.dirs=$ndir/data
num.partitions=4
default.replication.factor=$rf
min.insync.replicas=$isr
auto.create.topics.enable=false
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
# Tests may use short consumer session timeouts.
group.min.session.timeout.ms=1000
# The delivery workers' group uses the consumer protocol (KIP-848), whose session timeout
# and heartbeat interval are set here: a worker killed is replaced within 10 s.
group.consumer.session.timeout.ms=10000
group.consumer.min.session.timeout.ms=1000
group.consumer.heartbeat.interval.ms=1000
group.consumer.min.heartbeat.interval.ms=500
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
  if [[ $SECURITY == sasl_ssl ]]; then secure_config >>"$ndir/server.properties"; fi
  # Everything to stdout (= kafka.log); the per-request/state-change
  # loggers are far too chatty at INFO for a dev broker.
  cat >"$ndir/log4j2.properties" <<'EOF'
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

# --- security (KAFKA_SECURITY=sasl_ssl) -----------------------------------------------------

# The default ACL file: the table's rendering for the default names (`hookline acls --write`).
ACL_FILE="$REPO/deploy/kafka/acls.txt"
# The users of the Hookline principals: those the ACL file names.
principals() { sed -n 's/^User:\([^ ]*\) .*/\1/p' "$ACL_FILE" | awk '!seen[$0]++'; }

# Makes DIR/tls (a CA, the broker's key and certificate for 127.0.0.1 and localhost, PEM),
# DIR/secrets (random passwords of admin and every principal), once; and the client files.
make_security() {
  local tls=$DIR/tls sec=$DIR/secrets
  if [[ ! -s $tls/broker.pem ]]; then
    command -v openssl >/dev/null || die "KAFKA_SECURITY=sasl_ssl needs openssl"
    mkdir -p "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Hookline dev Kafka CA" \
      -keyout "$tls/ca.key" -out "$tls/ca.pem" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
      >/dev/null 2>&1 || die "openssl: making the CA failed"
    # Kafka's PEM key store takes an unencrypted PKCS#8 key followed by the certificate.
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout "$tls/broker.key" -out "$tls/broker.csr" >/dev/null 2>&1 ||
      die "openssl: making the broker key failed"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' \
      >"$tls/broker.ext"
    openssl x509 -req -in "$tls/broker.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
      -CAcreateserial -days 3650 -extfile "$tls/broker.ext" -out "$tls/broker.pem" \
      >/dev/null 2>&1 || die "openssl: signing the broker certificate failed"
    cat "$tls/broker.key" "$tls/broker.pem" >"$tls/broker-keystore.pem"
    chmod 600 "$tls"/*.key "$tls/broker-keystore.pem"
  fi
  mkdir -p "$sec" && chmod 700 "$sec"
  local user
  for user in admin $(principals); do
    [[ -s $sec/$user.password ]] || (umask 077; openssl rand -hex 16 >"$sec/$user.password")
  done
  # For Hookline: each service as its own user (`{service}` expanded per service); for an
  # outside producer: its user and password. Java clients' properties.
  (umask 077; cat >"$DIR/client.env" <<EOF
HOOKLINE_KAFKA_SECURITY_PROTOCOL=SASL_SSL
HOOKLINE_KAFKA_SASL_MECHANISM=SCRAM-SHA-512
HOOKLINE_KAFKA_SASL_USERNAME=hookline-{service}
HOOKLINE_KAFKA_SASL_PASSWORD_FILE=$sec/hookline-{service}.password
HOOKLINE_KAFKA_SSL_CA_FILE=$tls/ca.pem
HOOKLINE_PRODUCER_USERNAME=hookline-producer
HOOKLINE_PRODUCER_PASSWORD=$(password_of hookline-producer)
EOF
)
  (umask 077
    java_client_properties hookline-producer >"$DIR/client.properties"
    java_client_properties admin >"$DIR/admin.properties")
}

password_of() { cat "$DIR/secrets/$1.password"; }

java_client_properties() {
  cat <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$1" password="$(password_of "$1")";
ssl.truststore.type=PEM
ssl.truststore.location=$DIR/tls/ca.pem
EOF
}

# The SASL_SSL part of server.properties.
secure_config() {
  local admin user plain=""
  admin=$(password_of admin)
  for user in $(principals); do plain+=" user_$user=\"$(password_of "$user")\""; done
  cat <<EOF
# SASL_SSL (KAFKA_SECURITY=sasl_ssl): PEM key store and trust store made by kafka.sh.
ssl.keystore.type=PEM
ssl.keystore.location=$DIR/tls/broker-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$DIR/tls/ca.pem
ssl.client.auth=none
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN
# The broker talks to itself (transaction markers) as admin over SCRAM-SHA-512. SCRAM users
# are made when the storage is formatted (--add-scram); PLAIN users are listed here.
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$admin" user_admin="$admin"$plain;
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
# admin is the only client super user. User:ANONYMOUS is the node's own KRaft traffic on
# the plaintext controller listener, which listens on loopback only.
super.users=User:admin;User:ANONYMOUS
EOF
}

# The --add-scram arguments of the storage format, one a line: admin and every principal,
# both SCRAM mechanisms.
scram_format_args() {
  local user mech
  for user in admin $(principals); do
    for mech in SCRAM-SHA-512 SCRAM-SHA-256; do
      printf -- '--add-scram\n%s=[name=%s,password=%s]\n' "$mech" "$user" "$(password_of "$user")"
    done
  done
}

tools_log_config() {
  [[ -s $DIR/log4j2-tools.properties ]] || cat >"$DIR/log4j2-tools.properties" <<'EOF'
status = warn
appender.err.type = Console
appender.err.name = ERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %p %m%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = ERR
EOF
}

# Runs Kafka CLI class $1 as admin against the running secured broker, with arguments $2...
as_admin() {
  local class=$1; shift
  tools_log_config
  java -Xmx128m -XX:TieredStopAtLevel=1 -XX:-UsePerfData -cp "$LIBS/*" \
    "-Dlog4j2.configurationFile=$DIR/log4j2-tools.properties" "$class" \
    --bootstrap-server "$(cat "$DIR/bootstrap" 2>/dev/null || bootstrap_list)" \
    --command-config "$DIR/admin.properties" "$@"
}

# Makes the broker's ACLs exactly those of file $1, as admin, in one JVM
# (scripts/kafka/Acls.java: a single-file source program on Kafka's class path).
apply_acls() {
  local file=$1
  [[ -s $file ]] || die "acls: no ACL file $file"
  tools_log_config
  java -Xmx128m -XX:TieredStopAtLevel=1 -XX:-UsePerfData -cp "$LIBS/*" \
    "-Dlog4j2.configurationFile=$DIR/log4j2-tools.properties" "$HERE/kafka/Acls.java" \
    "$DIR/admin.properties" "$(cat "$DIR/bootstrap" 2>/dev/null || bootstrap_list)" "$file" \
    >"$DIR/acls.log" 2>&1 || { cat "$DIR/acls.log" >&2; die "applying the ACLs of $file failed"; }
  [[ $QUIET == 1 ]] || cat "$DIR/acls.log" >&2
  cp "$file" "$DIR/acls.applied"
}

# The ACLs of the principals, once at the first start: those of the default file.
grant_acls() {
  [[ -f $DIR/acls.applied ]] && return 0
  apply_acls "$ACL_FILE"
}

# acls: the running secured broker's ACLs become exactly those of --file (default: the
# default file).
acls_cmd() {
  local file=$ACL_FILE
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --dir) DIR=$(cd "$2" && pwd) || die "acls: no folder $2"; shift 2 ;;
      --file) file=$2; shift 2 ;;
      *) die "acls: unknown option $1" ;;
    esac
  done
  [[ -n "${DIR:-}" ]] || die "acls: --dir is required"
  [[ $(cat "$DIR/security" 2>/dev/null) == sasl_ssl ]] || die "acls: $DIR is not a secured broker"
  SHAPE=$(shape)
  running_node 1 || die "acls: the broker of $DIR is not running"
  apply_acls "$file"
}

# scram-user: (re)sets a SCRAM user's password on the running secured broker.
scram_user() {
  local user="" password="" mechs=(SCRAM-SHA-512 SCRAM-SHA-256) m
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --dir) DIR=$(cd "$2" && pwd) || die "scram-user: no folder $2"; shift 2 ;;
      --user) user=$2; shift 2 ;;
      --password) password=$2; shift 2 ;;
      --password-file) password=$(cat "$2") || die "scram-user: cannot read $2"; shift 2 ;;
      --mechanism) mechs=("$2"); shift 2 ;;
      *) die "scram-user: unknown option $1" ;;
    esac
  done
  [[ -n "${DIR:-}" && -n "$user" && -n "$password" ]] ||
    die "scram-user: --dir, --user and --password or --password-file are required"
  [[ $(cat "$DIR/security" 2>/dev/null) == sasl_ssl ]] || die "scram-user: $DIR is not a secured broker"
  [[ "$password" != *[],=[]* ]] || die "scram-user: the password may not hold , = [ or ]"
  SHAPE=$(shape)
  running_node 1 || die "scram-user: the broker of $DIR is not running"
  # One request per mechanism: the broker refuses two changes of a user's credentials in one.
  for m in "${mechs[@]}"; do
    as_admin kafka.admin.ConfigCommand --alter --entity-type users --entity-name "$user" \
      --add-config "$m=[password=$password]" >"$DIR/scram-user.log" 2>&1 ||
      { cat "$DIR/scram-user.log" >&2; die "scram-user: setting the $m password of $user failed"; }
  done
  say "SCRAM password of $user set (${mechs[*]})"
}

# The JIT stops at C1 by default: brokers of tests start faster and burn less CPU compiling.
# HOOKLINE_KAFKA_FULL_JIT=1 (e.g. for `make bench`) keeps the JVM's default tiers, as a production
# broker runs, so its CPU per request is the steady state's.
jvm() {
  local tiers=(-XX:TieredStopAtLevel=1)
  [[ ${HOOKLINE_KAFKA_FULL_JIT:-0} == 1 ]] && tiers=()
  JVM=(java -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
    "${tiers[@]}" -XX:-UsePerfData -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$1/log4j2.properties" -cp "$LIBS/*")
}

# Formats the storage of every listed node folder that has none, in parallel.
format_storage() {
  local ndir pids=() failed=0 p
  # Cluster id = Kafka's Uuid format (22-char url-safe base64, not starting
  # with '-'); made here because `StorageTool random-uuid` costs a JVM start.
  [[ -s "$DIR/cluster.id" ]] || python3 -c 'import base64,os
s="-"
while s[0]=="-": s=base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
print(s)' >"$DIR/cluster.id"
  for ndir in "$@"; do
    [[ -f "$ndir/data/meta.properties" ]] && continue
    jvm "$ndir"
    local scram=()
    if [[ $SECURITY == sasl_ssl ]]; then mapfile -t scram < <(scram_format_args); fi
    "${JVM[@]}" -Xmx256m kafka.tools.StorageTool format -t "$(cat "$DIR/cluster.id")" \
      -c "$ndir/server.properties" "${scram[@]}" >"$ndir/format.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
  if [[ $failed == 1 ]]; then
    for ndir in "$@"; do [[ -f "$ndir/format.log" ]] && tail -n 30 "$ndir/format.log" >&2; done
    die "storage format failed"
  fi
}

# Launches the JVM of node folder $1 in the background (no waiting).
launch() {
  local ndir=$1 heap=$2
  jvm "$ndir"
  rm -f "$ndir/kafka.pid"
  [[ -f "$ndir/kafka.log" ]] && mv -f "$ndir/kafka.log" "$ndir/kafka.log.1"
  # New session + all fds redirected: survives the caller's shell and never
  # holds the caller's pipes (so $(kafka.sh start) returns).
  setsid nohup bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$ndir/kafka.pid" \
    "${JVM[@]}" "-Xmx$heap" "-Xms$heap" kafka.Kafka "$ndir/server.properties" \
    </dev/null >"$ndir/kafka.log" 2>&1 9>&- &
}

# Once the JVM of node folder $1 wrote its pid: SIGKILL it when $OWNER is gone.
watch_owner() {
  [[ -n "$OWNER" ]] || return 0
  local ndir=$1 pid
  pid=$(cat "$ndir/kafka.pid" 2>/dev/null) || return 0
  # The JVM counts as gone once it is a zombie (its parent may never reap it).
  setsid nohup bash -c 'jvm_alive() { local s; s=$(cut -d" " -f3 "/proc/$1/stat" 2>/dev/null) && [[ $s != Z ]]; }
    while kill -0 "$1" 2>/dev/null && jvm_alive "$2"; do sleep 2; done
    if tr "\0" " " <"/proc/$2/cmdline" 2>/dev/null | grep -qF "$3/server.properties"; then kill -KILL "$2"; fi' \
    _ "$OWNER" "$pid" "$ndir" </dev/null >/dev/null 2>&1 9>&- &
}

# Waits until every listed node folder's broker serves, or dies after $WAIT_SECS.
wait_started() {
  local deadline=$((SECONDS + WAIT_SECS)) ndir pending watched=() port
  while :; do
    sleep 0.2
    pending=0
    for ndir in "$@"; do
      port=$(port_at "$ndir")
      if running_at "$ndir"; then
        if [[ " ${watched[*]:-} " != *" $ndir "* ]]; then watch_owner "$ndir"; watched+=("$ndir"); fi
        port_open "$port" && grep -q 'Kafka Server started' "$ndir/kafka.log" || pending=1
      elif [[ -s "$ndir/kafka.pid" ]]; then
        rm -f "$ndir/kafka.pid"; tail -n 40 "$ndir/kafka.log" >&2
        stop_at "$@"
        die "broker exited during startup (log: $ndir/kafka.log)"
      else
        pending=1
      fi
    done
    [[ $pending == 0 ]] && break
    if ((SECONDS >= deadline)); then
      for ndir in "$@"; do
        if ! grep -q 'Kafka Server started' "$ndir/kafka.log" 2>/dev/null; then
          say "$ndir/kafka.log:"; tail -n 40 "$ndir/kafka.log" >&2 || true
        fi
      done
      stop_at "$@"
      die "broker not ready after $WAIT_SECS s"
    fi
  done
}

# Waits until port $1 can be bound again (a killed node's port), up to 30 s.
await_port() {
  local deadline=$((SECONDS + 30))
  until port_free "$1"; do
    ((SECONDS < deadline)) || die "port $1 is still in use after 30 s"
    sleep 0.2
  done
}

heap_for() {
  if [[ -s "$DIR/heap" ]]; then cat "$DIR/heap"; elif [[ $SHAPE == 1 ]]; then echo 512m; else echo 384m; fi
}

start() {
  local heap="" port_arg="" cport_arg="" brokers="" security=${KAFKA_SECURITY:-}
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --dir) DIR=$2; shift 2 ;;
      --port) port_arg=$2; shift 2 ;;
      --controller-port) cport_arg=$2; shift 2 ;;
      --heap) heap=$2; shift 2 ;;
      --brokers) brokers=$2; shift 2 ;;
      --security) security=$2; shift 2 ;;
      *) die "start: unknown option $1" ;;
    esac
  done
  [[ -n "${DIR:-}" ]] || die "start: --dir is required"
  [[ -z "$brokers" || "$brokers" =~ ^[1-9]$ ]] || die "start: --brokers takes 1-9"
  mkdir -p "$DIR" && DIR=$(cd "$DIR" && pwd)
  # The shape: what DIR holds, else --brokers (default 1).
  if [[ -s "$DIR/brokers" || -f "$DIR/server.properties" ]]; then
    SHAPE=$(shape)
    [[ -z "$brokers" || "$brokers" == "$SHAPE" ]] ||
      die "$DIR holds a $SHAPE-node Kafka; stop it and remove the folder to start $brokers"
  else
    SHAPE=${brokers:-1}
  fi
  if ((SHAPE > 1)); then
    [[ -z "$port_arg$cport_arg" ]] || die "start: --port and --controller-port are for one node only"
    echo "$SHAPE" >"$DIR/brokers"
  fi
  [[ -z "$heap" ]] || echo "$heap" >"$DIR/heap"
  heap=$(heap_for)
  # The security mode: what DIR was made with, else --security / $KAFKA_SECURITY.
  SECURITY=$(cat "$DIR/security" 2>/dev/null || echo "${security:-plaintext}")
  case "$SECURITY" in plaintext | sasl_ssl) ;; *) die "start: --security takes plaintext or sasl_ssl" ;; esac
  [[ -z "$security" || "$security" == "$SECURITY" ]] ||
    die "$DIR holds a $SECURITY Kafka; stop it and remove the folder to start it $security"
  if [[ $SECURITY == sasl_ssl ]]; then
    ((SHAPE == 1)) || die "start: KAFKA_SECURITY=sasl_ssl runs one node only (for now)"
    echo sasl_ssl >"$DIR/security"
    make_security
  fi
  local up; up=$(up_nodes)
  if [[ -n "$up" && "$up" == "$(nodes | xargs)" ]]; then
    say "Kafka for $DIR already running ($SHAPE node(s))"
    cat "$DIR/bootstrap" 2>/dev/null || bootstrap_list; return 0
  fi
  fetch
  local n ndir todo=()
  if [[ -n "$up" ]]; then
    # Part of a cluster is up: the others come back on their remembered ports, which the
    # running nodes know as controller voters.
    for n in $(nodes); do
      running_node "$n" && continue
      ndir=$(node_dir "$n")
      await_port "$(port_at "$ndir")"; await_port "$(cport_at "$ndir")"
      todo+=("$ndir")
    done
  else
    # Ports: explicit > the ones each node used last time (if still free) > new. Every
    # node's config is (re)written, so a changed controller port reaches all voters.
    local picked ports=() cports=() p c voters=()
    read -r -a picked <<<"$(free_ports $((2 * SHAPE)))"
    for n in $(nodes); do
      ndir=$(node_dir "$n"); mkdir -p "$ndir"
      p=$(port_at "$ndir"); c=$(cport_at "$ndir")
      if [[ $SHAPE == 1 ]]; then p=${port_arg:-$p}; c=${cport_arg:-$c}; fi
      if [[ -z "$port_arg" && -n "$p" ]] && ! port_free "$p"; then p=""; fi
      if [[ -z "$cport_arg" && -n "$c" ]] && ! port_free "$c"; then c=""; fi
      p=${p:-${picked[$((2 * n - 2))]}}; c=${c:-${picked[$((2 * n - 1))]}}
      [[ "$p" != "$c" ]] || c=${picked[$((2 * n - 1))]}
      ports+=("$p"); cports+=("$c"); voters+=("$n@127.0.0.1:$c")
    done
    for n in $(nodes); do
      ndir=$(node_dir "$n")
      write_config "$n" "$ndir" "${ports[$((n - 1))]}" "${cports[$((n - 1))]}" "$(IFS=,; echo "${voters[*]}")"
      todo+=("$ndir")
    done
    rm -f "$DIR/bootstrap"
  fi
  format_storage "${todo[@]}"
  for ndir in "${todo[@]}"; do launch "$ndir" "$heap"; done
  WAIT_SECS=$((SHAPE == 1 ? 90 : 120))
  wait_started "${todo[@]}"
  bootstrap_list >"$DIR/bootstrap"
  if [[ $SECURITY == sasl_ssl ]]; then grant_acls; fi
  if [[ $SHAPE == 1 ]]; then
    running_node 1; say "broker running (pid $PID, log $DIR/kafka.log)"
  else
    say "$SHAPE-node cluster running (logs $DIR/node-*/kafka.log)"
  fi
  cat "$DIR/bootstrap"
}

# start-node: node N on its remembered ports, waiting for them to be free.
start_node() {
  local ndir heap
  [[ "$NODE" =~ ^[1-9]$ ]] && ((NODE <= SHAPE)) || die "start-node: --node takes 1-$SHAPE"
  ndir=$(node_dir "$NODE")
  [[ -f "$ndir/server.properties" ]] || die "start-node: $DIR has no node $NODE (run start first)"
  if running_at "$ndir"; then
    say "node $NODE of $DIR already running (pid $PID)"
    bootstrap_list; return 0
  fi
  fetch
  await_port "$(port_at "$ndir")"; await_port "$(cport_at "$ndir")"
  heap=$(heap_for)
  SECURITY=$(cat "$DIR/security" 2>/dev/null || echo plaintext)
  format_storage "$ndir"
  launch "$ndir" "$heap"
  WAIT_SECS=$((SHAPE == 1 ? 90 : 120))
  wait_started "$ndir"
  bootstrap_list >"$DIR/bootstrap"
  say "node $NODE running (pid $PID, log $ndir/kafka.log)"
  cat "$DIR/bootstrap"
}

# SIGTERM, then SIGKILL after 30 s, every listed node folder's JVM at once.
stop_at() {
  local ndir pids=() pid i left
  for ndir in "$@"; do running_at "$ndir" && pids+=("$PID"); rm -f "$ndir/kafka.pid"; done
  [[ ${#pids[@]} -gt 0 ]] || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  # A paused node (pause-node) handles the SIGTERM only once it runs again.
  kill -CONT "${pids[@]}" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do
    left=0
    for pid in "${pids[@]}"; do if alive "$pid"; then left=1; fi; done
    [[ $left == 0 ]] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if alive "$pid"; then say "pid $pid: no exit after 30 s, SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  done
  say "stopped broker(s) (pid ${pids[*]})"
}

# SIGSTOP or SIGCONT ($1) the JVM of node folder $2.
signal_at() {
  running_at "$2" || die "node folder $2 is not running"
  kill "-$1" "$PID"
  say "$1 broker (pid $PID, $2)"
}

# SIGKILL every listed node folder's JVM and wait until each is gone.
kill_at() {
  local ndir pid
  for ndir in "$@"; do
    if running_at "$ndir"; then
      pid=$PID
      kill -KILL "$pid" 2>/dev/null || true
      while alive "$pid"; do sleep 0.05; done
      say "killed broker (pid $pid, $ndir)"
    fi
    rm -f "$ndir/kafka.pid"
  done
}

all_node_dirs() { local n; for n in $(nodes); do node_dir "$n"; done; }

# Parses --dir DIR [--node N] [--heap H] for the commands other than start.
dir_opts() {
  NODE=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --dir) [[ -n "${2:-}" ]] || die "$CMD: --dir DIR is required"
        DIR=$(cd "$2" 2>/dev/null && pwd) || DIR=$2; shift 2 ;;
      --node) NODE=${2:-}; shift 2 ;;
      --heap) [[ -d "${DIR:-}" ]] && echo "$2" >"$DIR/heap"; shift 2 ;;
      *) die "$CMD: unknown option $1" ;;
    esac
  done
  [[ -n "${DIR:-}" ]] || die "$CMD: --dir DIR is required"
  SHAPE=$(shape)
  if [[ "$CMD" == *-node ]]; then
    [[ "$NODE" =~ ^[1-9]$ ]] && ((NODE <= SHAPE)) || die "$CMD: --node takes 1-$SHAPE"
  fi
}

while [[ "${1:-}" == -q || "${1:-}" == --quiet ]]; do QUIET=1; shift; done
CMD=${1:-}; shift || true
case "$CMD" in
  fetch) fetch ;;
  start) start "$@" ;;
  stop) dir_opts "$@"; mapfile -t dirs < <(all_node_dirs); stop_at "${dirs[@]}"; rm -f "$DIR/bootstrap" ;;
  kill) dir_opts "$@"; mapfile -t dirs < <(all_node_dirs); kill_at "${dirs[@]}"; rm -f "$DIR/bootstrap" ;;
  status) dir_opts "$@"
    up=$(up_nodes)
    if [[ -z "$up" ]]; then echo "stopped"; exit 1; fi
    down=()
    for n in $(nodes); do [[ " $up " == *" $n "* ]] || down+=("$n"); done
    echo "running $(cat "$DIR/bootstrap" 2>/dev/null || bootstrap_list)${down[*]:+ (down: ${down[*]})}" ;;
  start-node) dir_opts "$@"; start_node ;;
  scram-user) scram_user "$@" ;;
  acls) acls_cmd "$@" ;;
  stop-node) dir_opts "$@"; stop_at "$(node_dir "$NODE")" ;;
  kill-node) dir_opts "$@"; kill_at "$(node_dir "$NODE")" ;;
  pause-node) dir_opts "$@"; signal_at STOP "$(node_dir "$NODE")" ;;
  resume-node) dir_opts "$@"; signal_at CONT "$(node_dir "$NODE")" ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
