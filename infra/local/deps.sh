#!/usr/bin/env bash
# Local infrastructure without Docker: installs (apt) and starts PostgreSQL and Redis as plain
# processes with their data under $ENGAGE_DATA (default: <repo>/.local). Idempotent: running it
# again with everything up only prints the environment.
#
#   infra/local/deps.sh up       install if needed, start, create the database; print env
#   infra/local/deps.sh down     stop what this script started
#   infra/local/deps.sh env      print the environment variables for the local services
#   infra/local/deps.sh cluster  also start a Redis cluster: 3 primaries (ports 7101-7103) and
#                                one replica each (7104-7106), node timeout 2 s
#   infra/local/deps.sh browser  install Chromium and chromedriver for the admin-UI browser
#                                tests (only `just test` asks for it: `just up` stays fast)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
data=${ENGAGE_DATA:-$repo/.local}
pg_port=${ENGAGE_PG_PORT:-55432}
redis_port=${ENGAGE_REDIS_PORT:-6390}
voice_port=${ENGAGE_VOICE_REDIS_PORT:-6391}
cluster_base=${ENGAGE_CLUSTER_BASE_PORT:-7101}
cluster_ports=("$cluster_base" $((cluster_base + 1)) $((cluster_base + 2)))
# Replicas of the three primaries (`--cluster-replicas 1`): a killed primary fails over.
replica_ports=($((cluster_base + 3)) $((cluster_base + 4)) $((cluster_base + 5)))

log() { echo "deps: $*" >&2; }

# Debian's Chromium and its WebDriver (docs/admin-ui.md#browser-tests), when missing.
install_browser() {
  if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then return; fi
  log "installing chromium chromium-driver"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
}

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return; }; done
  return 1
}

install() {
  local need=()
  command -v redis-server >/dev/null || need+=(redis-server redis-tools)
  pg_bin >/dev/null || need+=(postgresql postgresql-contrib)
  command -v promtool >/dev/null || need+=(prometheus)   # promtool: metrics and rules checks
  command -v faketime >/dev/null || need+=(faketime)     # libfaketime: skewed-clock tests, chaos
  command -v openssl >/dev/null || need+=(openssl)       # fresh RSA keys for the push tests
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

as_pg() {
  # From / : the postgres user may not be allowed into the caller's folder.
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

start_pg() {
  local bin; bin=$(pg_bin)
  # Already served on this port (e.g. by another checkout's data folder): just use it.
  if "$bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port"; then
    ensure_db; return
  fi
  # Outside the checkout: the postgres user must reach it whatever the checkout's permissions.
  local dir=${ENGAGE_PG_DIR:-/var/tmp/engage-pg-$pg_port}
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    log "initdb $dir/data"
    as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$dir'
max_connections = 400
shared_buffers = 256MB
synchronous_commit = on
fsync = on
CONF
  fi
  if ! as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    log "starting PostgreSQL on $pg_port"
    # A data folder left by a killed server first replays its WAL (crash recovery), which on a
    # large one takes minutes: wait for it, and show the server's log if it still fails.
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 900 start >/dev/null || {
      tail -20 "$dir/server.log" >&2; return 1; }
  fi
  ensure_db
}

ensure_db() {
  [ "$(psql -h 127.0.0.1 -p "$pg_port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='engage'")" = 1 ] \
    || psql -h 127.0.0.1 -p "$pg_port" -U postgres -qc "CREATE DATABASE engage" >/dev/null
}

start_redis() { # port dir
  local port=$1 dir=$data/redis-$1
  mkdir -p "$dir"
  if ! redis-cli -p "$port" ping >/dev/null 2>&1; then
    log "starting Redis on $port"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize yes \
      --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --save '' --appendonly no "${@:2}"
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  fi
}

start_cluster() {
  local p
  # A cluster already served on these ports (e.g. started by another checkout, maybe of the
  # former 3-node shape) is used as it is: never reshaped.
  if redis-cli -p "${cluster_ports[0]}" ping >/dev/null 2>&1; then
    wait_cluster_ok; return
  fi
  for p in "${cluster_ports[@]}" "${replica_ports[@]}"; do
    # No snapshot delay for a replica's first sync: the cluster is ready in about a second.
    start_redis "$p" --cluster-enabled yes --cluster-config-file "$data/redis-$p/nodes.conf" \
      --cluster-node-timeout 2000 --repl-diskless-sync-delay 0
  done
  # Nodes restarted with their nodes.conf re-form by themselves; only fresh nodes need create.
  if [ "$(redis-cli -p "${cluster_ports[0]}" cluster info | awk -F: '/cluster_known_nodes/{print $2+0}')" = 1 ]; then
    log "forming the Redis cluster (3 primaries, 3 replicas)"
    # --cluster-yes, not `yes | …`: under pipefail `yes` dies of SIGPIPE (exit 141).
    redis-cli --cluster create "${cluster_ports[@]/#/127.0.0.1:}" "${replica_ports[@]/#/127.0.0.1:}" \
      --cluster-replicas 1 --cluster-yes </dev/null >/dev/null
  fi
  wait_cluster_ok
}

wait_cluster_ok() {
  for _ in $(seq 100); do
    [[ $(redis-cli -p "${cluster_ports[0]}" cluster info) == *cluster_state:ok* ]] && return
    sleep 0.1
  done
  log "the Redis cluster did not reach state ok"; return 1
}

# Every running node of the cluster, as comma-separated URLs (after a failover a client still
# finds the slots from any of them).
cluster_urls() {
  local p urls=()
  for p in "${cluster_ports[@]}" "${replica_ports[@]}"; do
    if [ "$p" = "${cluster_ports[0]}" ] || redis-cli -p "$p" ping >/dev/null 2>&1; then
      urls+=("redis://127.0.0.1:$p")
    fi
  done
  local IFS=,; echo "${urls[*]}"
}

env_out() {
  cat <<ENV
DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/engage
REDIS_URL=redis://127.0.0.1:$redis_port
VOICE_REDIS_URL=redis://127.0.0.1:$voice_port
ENGAGE_CLUSTER_URLS=$(cluster_urls)
ENV
}

stop_all() {
  local bin; bin=$(pg_bin) || true
  local pgdir=${ENGAGE_PG_DIR:-/var/tmp/engage-pg-$pg_port}
  [ -n "${bin:-}" ] && [ -f "$pgdir/data/PG_VERSION" ] && as_pg "$bin/pg_ctl" -D "$pgdir/data" -m fast stop >/dev/null 2>&1 || true
  local p
  for p in "$redis_port" "$voice_port" "${cluster_ports[@]}" "${replica_ports[@]}"; do
    redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true
  done
}

case "${1:-up}" in
  up) install; start_pg; start_redis "$redis_port"; start_redis "$voice_port"; env_out ;;
  cluster) install; start_cluster; env_out ;;
  browser) install_browser ;;
  down) stop_all ;;
  env) env_out ;;
  *) echo "usage: $0 up|down|env|cluster|browser" >&2; exit 2 ;;
esac
