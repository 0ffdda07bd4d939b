#!/usr/bin/env bash
# Starts `engage serve` from the `local` build (`just up`: release without LTO) in the background with the local deps, provisions
# the demo tenant (two services and a fresh API key) and prints the URL, the key and a curl.
#   infra/local/up.sh <admin-token>   start (restarts a running instance)
#   infra/local/up.sh --stop          stop
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
data=${ENGAGE_DATA:-$repo/.local}
mkdir -p "$data"
pidfile=$data/engage.pid

simpid=$data/ors-sim.pid

stop_pid() {
  local f=$1
  if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
    kill -TERM "$(cat "$f")"
    for _ in $(seq 100); do kill -0 "$(cat "$f")" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$f"
}

stop() {
  stop_pid "$simpid"
  stop_pid "$pidfile"
}

if [ "${1:-}" = "--stop" ]; then stop; exit 0; fi
token=${1:?admin token}

set -a
# shellcheck disable=SC1090
source <(bash "$repo/infra/local/deps.sh" env)
ADMIN_TOKEN=$token
# The voice platform's events token: engage refuses to start without one; ors-sim sends it.
ORS_EVENTS_TOKEN=${ORS_EVENTS_TOKEN:-local-ors-events-token-change-me}
GES_URL=http://127.0.0.1:3050
# The per-tenant credentials key (docs/credentials.md): generated once into the data folder
# (git-ignored), never committed.
if [ ! -s "$data/credentials-key" ]; then
  (umask 077; python3 -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())" >"$data/credentials-key")
fi
CREDENTIALS_KEY=$(cat "$data/credentials-key")
set +a

bin=$repo/target/local
stop
for port in 3050 3005; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "port $port is already in use by another process; stop it first" >&2
    exit 1
  fi
done
"$bin/engage" migrate
demo=$("$bin/engage" demo)
key=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["apiKey"])' <<<"$demo")
nohup "$bin/engage" serve --with-worker >"$data/engage.log" 2>&1 &
echo $! >"$pidfile"
for _ in $(seq 100); do
  curl -fsS http://127.0.0.1:3050/ges/v1/health/ready >/dev/null 2>&1 && break
  sleep 0.1
done
if ! kill -0 "$(cat "$pidfile")" 2>/dev/null || ! curl -fsS http://127.0.0.1:3050/ges/v1/health/ready >/dev/null; then
  echo "engage did not start; see $data/engage.log" >&2
  exit 1
fi
# The voice-platform simulator: 5 agents, ~20 s calls, so callbacks move QUEUED → COMPLETED.
if [ -x "$bin/ors-sim" ]; then
  nohup "$bin/ors-sim" --agents 5 --handle-ms 20000 >"$data/ors-sim.log" 2>&1 &
  echo $! >"$simpid"
fi

cat <<MSG

Engage is up (logs: $data/engage.log, stop: just down).
  Public API   http://127.0.0.1:3005/engagement/v3
  Internal     http://127.0.0.1:3050  (admin API: Authorization: Bearer $token)
  Tenant       demo   services: demo-immediate, demo-scheduled
  API key      $key

The dispatcher runs in-process and a voice-platform simulator (ors-sim, 5 agents) takes the
calls, so a booked callback goes QUEUED → ROUTING → PROCESSING → COMPLETED within seconds.

Book an immediate callback, then retrieve it with the id it returns:
  curl -s -X POST http://127.0.0.1:3005/engagement/v3/callbacks/create \\
    -H 'x-api-key: $key' -H 'content-type: application/json' \\
    -d '{"serviceName":"demo-immediate","phoneNumber":"+12125550100"}'
  curl -s -X POST http://127.0.0.1:3005/engagement/v3/callbacks/retrieve \
    -H 'x-api-key: $key' -d '{"id":"<id>"}'
MSG
