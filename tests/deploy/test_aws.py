"""The generated SAM template covers every function binary: public ones behind the HTTP API
(v2) on their own routes, internal ones only behind an IAM Function URL, all reading
Secrets Manager through AWS_SECRETS_ID with a policy scoped to that secret."""

from __future__ import annotations

import json
import subprocess

from conftest import REPO, function_binaries, routes_in

GEN = REPO / "infra/aws/gen-template.py"


def template() -> dict:
    return json.loads(subprocess.run(["python3", str(GEN)], check=True, capture_output=True, text=True).stdout)


def test_every_function_is_deployed_with_its_routes():
    t = template()
    fns = {r["Properties"]["CodeUri"].rstrip("/").split("/")[-1]: r["Properties"]
           for r in t["Resources"].values() if r["Type"] == "AWS::Serverless::Function"}
    assert set(fns) == set(function_binaries())
    all_routes = routes_in(sorted((REPO / "functions/src").rglob("*.rs")))
    for name, b in function_binaries().items():
        props = fns[name]
        assert props["CodeUri"] == f"../../target/lambda/{name}/"
        if b.exposure == "External":
            paths = [e["Properties"]["Path"] for e in props["Events"].values()]
            assert paths and set(paths) <= all_routes, (name, paths)
            assert all(e["Type"] == "HttpApi" for e in props["Events"].values())
        else:
            assert "Events" not in props
            assert props["FunctionUrlConfig"] == {"AuthType": "AWS_IAM"}


def test_globals_wire_secrets_manager():
    g = template()["Globals"]["Function"]
    assert g["Runtime"] == "provided.al2023" and g["Handler"] == "bootstrap"
    env = g["Environment"]["Variables"]
    assert env["AWS_SECRETS_ID"] == {"Ref": "SecretArn"}
    assert {"AWSSecretsManagerGetSecretValuePolicy": {"SecretArn": {"Ref": "SecretArn"}}} in g["Policies"]
    # One request per execution environment: a small pool.
    assert int(env["DB_POOL_SIZE"]) <= 2
    assert "lambda" in (REPO / "functions/Cargo.toml").read_text()
