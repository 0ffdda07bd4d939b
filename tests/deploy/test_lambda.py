"""The function binaries on (emulated) AWS Lambda: `cargo lambda watch` serves callbacks-create
and callbacks-retrieve built with the `lambda` feature; they are invoked with API Gateway HTTP
API v2 events (`cargo lambda invoke --data-file`) and Function URL requests, create and
retrieve real callbacks in the local PostgreSQL and Redis, and take part of their
configuration from a Secrets Manager secret served by moto (through aws-config and
AWS_ENDPOINT_URL). The PostgreSQL schema and Redis prefix exist only in that secret, so a
function that did not read it would not find the tenant's API key."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from conftest import REPO

FUNCTIONS = ["callbacks-create", "callbacks-retrieve"]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
AWS_ENV = {
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deps_env() -> dict[str, str]:
    out = subprocess.run(
        ["bash", str(REPO / "infra/local/deps.sh"), "up"], check=True, capture_output=True, text=True
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def secrets_endpoint():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def deployment(secrets_endpoint, tmp_path_factory):
    """Schema + tenant + service + key provisioned with the `engage` CLI, the secret in
    moto, and `cargo lambda watch` serving both functions. Yields what tests need."""
    tmp = tmp_path_factory.mktemp("lambda")
    deps = deps_env()
    ident = "l" + uuid.uuid4().hex[:12]
    base_env = {
        "DATABASE_URL": deps["DATABASE_URL"],
        "REDIS_URL": deps["REDIS_URL"],
        "VOICE_REDIS_URL": deps["VOICE_REDIS_URL"],
        "VOICE_STREAM": f"{ident}:NewCallbackStream",
        "CONTROL_STREAM": f"{ident}:CallbackControlStream",
        "LOG_LEVEL": "INFO",
        "DB_POOL_SIZE": "2",
    }

    # Provision with the CLI, in the schema only the secret will name.
    engage = TARGET / "debug" / "engage"
    assert engage.exists(), "build first: tests/deploy/run.sh does"
    cli_env = {"PATH": os.environ["PATH"], **base_env, "DB_SCHEMA": ident, "REDIS_PREFIX": ident}

    def cli(*args: str) -> str:
        return subprocess.run([str(engage), *args], env=cli_env, check=True, capture_output=True, text=True).stdout

    cli("migrate")
    cli("tenant", "create", "--id", "acme", "--name", "Acme")
    settings = tmp / "sales.json"
    settings.write_text(json.dumps({"route_point": "5000", "reject_out_of_hours": False}))
    cli("service", "put", "--tenant", "acme", "--name", "sales", "--file", str(settings))
    key = json.loads(cli("apikey", "create", "--tenant", "acme", "--label", "lambda"))["key"]

    secret_id = f"engage/{ident}"
    sm = boto3.client("secretsmanager", endpoint_url=secrets_endpoint, region_name=AWS_ENV["AWS_REGION"],
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    sm.create_secret(
        Name=secret_id,
        SecretString=json.dumps({
            "DB_SCHEMA": ident,
            "REDIS_PREFIX": ident,
            "ADMIN-TOKEN": "lambda-admin-token-0123456789",
            # Trust auth locally: accepted and unused, but must parse as config.
            "DB-PASSWORD": "not-needed-locally",
        }),
    )

    env_file = tmp / "lambda.env"
    fn_env = {**base_env, **AWS_ENV, "AWS_SECRETS_ID": secret_id, "AWS_ENDPOINT_URL": secrets_endpoint}
    env_file.write_text("".join(f"{k}={v}\n" for k, v in fn_env.items()))

    port = free_port()
    log = tmp / "watch.log"
    # The watch process gets no engage variables itself: only --env-file reaches the functions.
    watch_env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "REDIS_", "AWS_", "DATABASE_"))}
    watch = subprocess.Popen(
        ["cargo", "lambda", "watch", "--ignore-changes", "--quiet",
         "-p", "engage-functions", "--features", "lambda",
         "--invoke-address", "127.0.0.1", "--invoke-port", str(port),
         "--env-file", str(env_file)],
        cwd=REPO, env=watch_env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert watch.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"cargo lambda watch not listening:\n{log.read_text()}"
                time.sleep(0.2)
        yield {"port": port, "key": key, "schema": ident, "cli": cli, "log": log, "tmp": tmp,
               "base_env": base_env}
    finally:
        os.killpg(watch.pid, signal.SIGTERM)
        try:
            watch.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(watch.pid, signal.SIGKILL)
            watch.wait()


def apigw_v2_event(path: str, body: dict, key: str) -> dict:
    """An API Gateway HTTP API (payload format 2.0) event, as API Gateway sends it."""
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "x-api-key": key, "host": "api.example.com"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "engage",
            "domainName": "api.example.com",
            "domainPrefix": "api",
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "192.0.2.10", "userAgent": "pytest"},
            "requestId": uuid.uuid4().hex,
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def invoke(d, function: str, path: str, body: dict) -> tuple[int, dict]:
    """`cargo lambda invoke` with an API Gateway v2 event; returns (statusCode, body JSON)."""
    event = d["tmp"] / f"{uuid.uuid4().hex}.json"
    event.write_text(json.dumps(apigw_v2_event(path, body, d["key"])))
    out = subprocess.run(
        ["cargo", "lambda", "invoke", function, "--data-file", str(event),
         "--invoke-address", "127.0.0.1", "--invoke-port", str(d["port"])],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}\n{d['log'].read_text()[-4000:]}"
    resp = json.loads(out.stdout)
    payload = resp["body"]
    return resp["statusCode"], json.loads(payload)


def function_url(d, function: str, path: str, body: dict) -> tuple[int, dict, dict]:
    """A Function URL request through the emulator (`/lambda-url/<function>/<path>`)."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{d['port']}/lambda-url/{function}{path}",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "x-api-key": d["key"]},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), dict(e.headers)


def pg_state(d, callback_id: str) -> str:
    env = {**os.environ, "PGOPTIONS": f"-c search_path={d['schema']}"}
    out = subprocess.run(
        ["psql", d["base_env"]["DATABASE_URL"], "-tAc", f"SELECT state FROM callbacks WHERE id = '{callback_id}'"],
        env=env, check=True, capture_output=True, text=True,
    )
    return out.stdout.strip()


def test_create_and_retrieve_through_apigw_v2_events(deployment):
    d = deployment
    code, body = invoke(d, "callbacks-create", "/engagement/v3/callbacks/create",
                        {"serviceName": "sales", "phoneNumber": "5550100"})
    assert code == 200, body
    assert body["status"]["code"] == 200
    cb_id = body["data"]["id"]
    assert pg_state(d, cb_id) == "QUEUED", "committed in the schema named only by the secret"

    code, body = invoke(d, "callbacks-retrieve", "/engagement/v3/callbacks/retrieve", {"id": cb_id})
    assert code == 200, body
    assert body["data"]["id"] == cb_id
    assert body["data"]["serviceName"] == "sales"
    assert body["data"]["callbackState"] == "QUEUED"


def test_create_and_retrieve_through_function_urls(deployment):
    d = deployment
    code, body, headers = function_url(d, "callbacks-create", "/engagement/v3/callbacks/create",
                                       {"serviceName": "sales", "phoneNumber": "5550101"})
    assert code == 200, body
    cb_id = body["data"]["id"]
    assert body["status"]["corrId"] == {k.lower(): v for k, v in headers.items()}["x-correlation-id"]

    code, body, _ = function_url(d, "callbacks-retrieve", "/engagement/v3/callbacks/retrieve", {"id": cb_id})
    assert code == 200, body
    assert body["data"]["id"] == cb_id
    assert pg_state(d, cb_id) == "QUEUED"


def test_errors_keep_the_envelope_on_lambda(deployment):
    d = deployment
    code, body = invoke(d, "callbacks-retrieve", "/engagement/v3/callbacks/retrieve",
                        {"id": str(uuid.uuid4())})
    assert code == 404 and body["status"]["code"] == 404, body
    bad = dict(d, key="not-a-key")
    code, body = invoke(bad, "callbacks-create", "/engagement/v3/callbacks/create",
                        {"serviceName": "sales", "phoneNumber": "5550102"})
    assert code == 401, body
