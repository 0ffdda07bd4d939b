#!/usr/bin/env bash
# Contract test (docs/api-contract.md): runs schemathesis against a live `engage serve
# --with-worker` (the debug build) on free ports, in a fresh PostgreSQL schema and Redis
# prefix, with a seeded tenant, an immediate and a scheduled service (business hours and a
# capacity rule), a real API key and the voice-platform simulator taking the calls.
#   tests/contract/run.sh   the CI run: CONTRACT_MAX_TIME (default 120) seconds of testing;
#                           CONTRACT_SEED=<seed> replays the inputs of a run (it prints its seed)
# Needs the local PostgreSQL and Redis (`just deps`) and target/debug/{engage,ors-sim}.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
here=$repo/tests/contract
bin=$repo/target/debug
venv=$repo/.local/schemathesis
max_time=${CONTRACT_MAX_TIME:-120}
work=$(mktemp -d)

# schemathesis, pinned, installed once per requirements file: in a venv in .local/, or, where
# Python has no venv module (Debian without python3-venv), into a folder on PYTHONPATH.
install_schemathesis() {
  local stamp=$venv/.requirements
  if [ -f "$stamp" ] && cmp -s "$here/requirements.txt" "$stamp"; then return; fi
  rm -rf "$venv"
  if [ -z "${CONTRACT_NO_VENV:-}" ] && python3 -m venv "$venv" 2>/dev/null; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --root-user-action=ignore -r "$here/requirements.txt"
  else
    rm -rf "$venv"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --target "$venv/site" \
      -r "$here/requirements.txt"
  fi
  cp "$here/requirements.txt" "$stamp"
}

schemathesis() {
  if [ -x "$venv/bin/python" ]; then
    "$venv/bin/python" -c "$cli" "$@"
  else
    PYTHONPATH=$venv/site python3 -c "$cli" "$@"
  fi
}
cli='import sys; from schemathesis.cli import schemathesis; sys.argv[0] = "schemathesis"; sys.exit(schemathesis())'

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  psql -q "$DATABASE_URL" -c "DROP SCHEMA IF EXISTS $id CASCADE" >/dev/null 2>&1 || true
  for url in "$REDIS_URL" "$VOICE_REDIS_URL"; do
    redis-cli -u "$url" --scan --pattern "$id*" 2>/dev/null | xargs -r redis-cli -u "$url" DEL >/dev/null 2>&1 || true
  done
  cp "$work"/*.log "$repo/.local/" 2>/dev/null || true
  rm -rf "$work"
}

install_schemathesis
for b in engage ors-sim; do
  [ -x "$bin/$b" ] || { echo "contract: $bin/$b missing; build it first" >&2; exit 1; }
done

set -a
# shellcheck disable=SC1090
source <(bash "$repo/infra/local/deps.sh" env)
id=contract$(python3 -c 'import uuid; print(uuid.uuid4().hex[:10])')
DB_SCHEMA=$id
REDIS_PREFIX=$id
VOICE_STREAM=$id:NewCallbackStream
CONTROL_STREAM=$id:CallbackControlStream
ADMIN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
ORS_EVENTS_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
INTERNAL_PORT=$(free_port)
EXTERNAL_PORT=$(free_port)
GES_URL=http://127.0.0.1:$INTERNAL_PORT
LOG_LEVEL=${CONTRACT_LOG_LEVEL:-WARN}
# Every request comes from 127.0.0.1, and the keyless ones of the ignored-auth check are
# authentication failures: with the per-client limiter on, most answers would be its 429 and
# the other checks would see less of the API. The limiter has its own tests (abuse::).
AUTH_FAILURE_LIMIT=0
set +a
trap cleanup EXIT

"$bin/engage" migrate >"$work/contract-migrate.log" 2>&1
key=$("$bin/engage" demo 2>"$work/contract-demo.log" | python3 -c 'import json,sys; print(json.load(sys.stdin)["apiKey"])')
"$bin/engage" serve --with-worker >"$work/contract-engage.log" 2>&1 &
pids+=($!)
internal=http://127.0.0.1:$INTERNAL_PORT
for _ in $(seq 200); do
  curl -fsS "$internal/ges/v1/health/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$internal/ges/v1/health/ready" >/dev/null || { cat "$work/contract-engage.log" >&2; exit 1; }
# Callbacks stay QUEUED a while (retrieve shows positions, cancel finds them cancellable), then
# the simulated agents complete them (retrieve shows reasons).
"$bin/ors-sim" --agents 2 --queue-ms 3000 --handle-ms 1000 >"$work/contract-ors-sim.log" 2>&1 &
pids+=($!)

# The scheduled service gets business hours (so out-of-hours refusals and open-for have
# something to say) and a small capacity rule (so full slots answer 429 with proposals).
admin() {
  curl -fsS -X PUT "$internal/ges/v1/tenants/demo/$1" -H "Authorization: Bearer $ADMIN_TOKEN" \
    -H 'content-type: application/json' -d "$2" >/dev/null
}
day='[["08:00", "20:00"]]'
admin business-hours/contract-hours "{\"timezone\": \"America/New_York\", \"weekly\": {\"mon\": $day,
  \"tue\": $day, \"wed\": $day, \"thu\": $day, \"fri\": $day, \"sat\": [[\"10:00\", \"14:00\"]]}}"
slots=$(python3 -c 'import json; print(json.dumps({f"{h:02d}{m:02d}": 2 for h in range(8, 20) for m in (0, 30)}))')
admin capacity-rules/contract-capacity "{\"slot_minutes\": 30, \"weekly\": {\"1\": $slots, \"2\": $slots,
  \"3\": $slots, \"4\": $slots, \"5\": $slots}}"
# The immediate service drops the per-number limits, so the fuzzer's repeated numbers reach
# the store; the scheduled one keeps the defaults, so 429s and their Retry-After are checked too.
admin services/demo-immediate '{"scheduled_enabled": false, "route_point": "5000",
  "reject_out_of_hours": false, "throttle_per_number_24h": 0, "in_queue_checking": false}'
admin services/demo-scheduled '{"immediate_enabled": false, "route_point": "5001",
  "business_hours": "contract-hours", "capacity_rule": "contract-capacity", "max_days_ahead": 30}'
admin call-in-groups/demo-call-in '{"numbers": ["+16505550190", "+16505550191", "+16505550192",
  "+16505550193", "+16505550194"], "access_codes": true, "code_length": 6, "lifetime_seconds": 30}'

# Desired times the fuzzer draws often (schemathesis.toml): the next weekdays inside the
# scheduled service's hours (14:00 to 22:00 UTC is 09:00 to 17:00 or 10:00 to 18:00 in New York).
python3 - "$repo/.local/contract-times.dict" <<'PY'
import datetime as d, sys
now = d.datetime.now(d.timezone.utc)
days = [now.date() + d.timedelta(days=i) for i in range(1, 12)]
times = [d.datetime(x.year, x.month, x.day, h, m, tzinfo=d.timezone.utc)
         for x in days if x.weekday() < 5 for h in (14, 16, 19) for m in (0, 30)]
with open(sys.argv[1], "w") as f:
    f.writelines(f'"{t.strftime("%Y-%m-%dT%H:%M:%S.000Z")}"\n' for t in times)
PY

# The first of those slots is booked full, so creates drawing its time get the full-slot 429
# with proposals (data.slots), which the document describes too.
full=$(head -n1 "$repo/.local/contract-times.dict" | tr -d '"')
for n in 1 2; do
  curl -fsS -X POST "http://127.0.0.1:$EXTERNAL_PORT/engagement/v3/callbacks/create" -H "x-api-key: $key" \
    -d "{\"serviceName\": \"demo-scheduled\", \"phoneNumber\": \"+1212555010$n\", \"desiredTime\": \"$full\"}" >/dev/null
done

echo "contract: engage on 127.0.0.1:$EXTERNAL_PORT (schema $id); schemathesis for ${max_time}s"
status=0
# Run from .local/: schemathesis and hypothesis keep their state (and replay past failures)
# in the working folder. One worker: with several, CPython 3.11 fails in hypothesis ("AST constructor recursion depth
# mismatch": ast.parse is not thread-safe there), and the CI machine has 2 cores anyway.
(cd "$repo/.local" && schemathesis --config-file "$here/schemathesis.toml" run \
  "http://127.0.0.1:$EXTERNAL_PORT/engagement/v3/openapi.json" \
  --header "x-api-key:$key" --checks all --max-time "$max_time" --workers 1 \
  --report junit --report-dir "$repo/.local/contract-report" \
  ${CONTRACT_SEED:+--seed "$CONTRACT_SEED"}) || status=$?
if grep -q '"level":"ERROR"' "$work/contract-engage.log"; then
  echo "contract: engage logged errors during the run:" >&2
  grep '"level":"ERROR"' "$work/contract-engage.log" | head -20 >&2
  status=1
fi
exit $status
