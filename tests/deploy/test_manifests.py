"""Every rendered manifest (base and each overlay) is valid, and the manifests agree with the
code: one Knative Service per function binary, each naming a real binary, probes on routes
and ports the binaries really serve, concurrency consistent with the PostgreSQL pool."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from conftest import REPO, TARGETS, fn_body, function_binaries, render, worker_binary

K8S_VERSION = "1.31.0"
SCHEMA = json.loads((Path(__file__).parent / "schemas/knative-serving-v1-service.schema.json").read_text())
BIN_DIR = "/usr/local/bin/"
OPS = REPO / "functions/src/ops.rs"
RUNTIME = REPO / "functions/src/runtime.rs"
# PostgreSQL connections every function may open at full scale, summed (max-scale x pool).
# Size the server's max_connections above this plus the worker's and admin sessions.
PG_CONNECTION_BUDGET = 1000


def knative_services(docs):
    return [d for d in docs if d["apiVersion"] == "serving.knative.dev/v1" and d["kind"] == "Service"]


def of_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def config_map(docs) -> dict[str, str]:
    (cm,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == "engage-config"]
    return cm["data"]


def binary_of(container) -> str:
    cmd = container["command"][0]
    assert cmd.startswith(BIN_DIR), f"command {cmd!r} is not a binary of the image ({BIN_DIR})"
    return cmd.removeprefix(BIN_DIR)


def effective_env(container, docs) -> dict[str, str]:
    env = {}
    for src in container.get("envFrom", []):
        name = src["configMapRef"]["name"]
        (cm,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == name]
        env.update(cm["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def test_every_target_renders_something():
    for t in TARGETS:
        assert knative_services(render(t)), f"{t}: no Knative Service rendered"


def test_manifests_are_valid(manifests):
    for doc in manifests:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["apiVersion"] == "serving.knative.dev/v1":
            jsonschema.validate(doc, SCHEMA)
        else:
            # Raises on any schema violation; strict rejects unknown fields too.
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{where}: {e}")


def test_secret_templates_are_valid():
    for path in sorted((REPO / "knative/secrets").glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert docs, path
        for doc in docs:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        names = {d["metadata"]["name"] for d in docs}
        mounted = {
            v["secret"]["secretName"]
            for d in render("base")
            for v in pod_spec(d).get("volumes", [])
            if "secret" in v
        }
        assert mounted <= names, f"mounted secrets without a template: {mounted - names}"


def test_ors_events_token_reaches_the_events_function(manifests):
    """`ors-events` refuses to start without ORS_EVENTS_TOKEN: the secret it mounts provides it."""
    docs = yaml.safe_load_all((REPO / "knative/secrets/secrets.example.yaml").read_text())
    keys_of = {d["metadata"]["name"]: set(d["stringData"]) for d in docs if d}
    (svc,) = [d for d in knative_services(manifests) if d["metadata"]["name"] == "ors-events"]
    spec = pod_spec(svc)
    (container,) = spec["containers"]
    env = effective_env(container, manifests)
    secrets = {v["name"]: v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    mounted = {m["mountPath"]: secrets.get(m["name"]) for m in container.get("volumeMounts", [])}
    provided = set().union(*(keys_of.get(mounted.get(f), set()) for f in env["CONFIG_FOLDERS"].split(",")))
    assert "ORS-EVENTS-TOKEN" in provided, f"no ORS-EVENTS-TOKEN in the secrets mounted by ors-events: {provided}"


def test_schema_rejects_what_knative_rejects():
    """The schema is not a rubber stamp: known-bad Services fail it."""
    (svc,) = [s for s in knative_services(render("base")) if s["metadata"]["name"] == "callbacks-create"]
    bad = [
        ("two ports", lambda s: s["spec"]["template"]["spec"]["containers"][0]["ports"].append({"containerPort": 9090})),
        ("concurrency", lambda s: s["spec"]["template"]["spec"].update(containerConcurrency=5000)),
        ("nodeSelector", lambda s: s["spec"]["template"]["spec"].update(nodeSelector={"a": "b"})),
        ("no image", lambda s: s["spec"]["template"]["spec"]["containers"][0].pop("image")),
        ("scale", lambda s: s["spec"]["template"]["metadata"]["annotations"].update({"autoscaling.knative.dev/max-scale": "ten"})),
        ("visibility", lambda s: s["metadata"]["labels"].update({"networking.knative.dev/visibility": "public"})),
    ]
    for what, mutate in bad:
        doc = json.loads(json.dumps(svc))
        mutate(doc)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(doc, SCHEMA)
            pytest.fail(f"schema accepted a Service with a bad {what}")


def pod_spec(doc) -> dict:
    if doc["kind"] in ("Service", "Deployment", "Job") and "template" in doc.get("spec", {}):
        return doc["spec"]["template"]["spec"]
    return {}


def test_every_function_binary_has_a_service_and_back(manifests):
    functions = function_binaries()
    assert {"callbacks-create", "callbacks-retrieve", "callbacks-cancel", "admin"} <= set(functions)
    services = {}
    for svc in knative_services(manifests):
        (container,) = svc["spec"]["template"]["spec"]["containers"]
        name = binary_of(container)
        assert name in functions, f"Service {svc['metadata']['name']} runs {name!r}, which is no function binary"
        assert svc["metadata"]["name"] == name, "a function's Service is named after its binary"
        services[name] = svc
    missing = set(functions) - set(services)
    assert not missing, f"function binaries without a Knative Service in knative/base/functions/: {sorted(missing)}"


def test_function_files_are_all_listed():
    kustomization = yaml.safe_load((REPO / "knative/base/kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    for f in (REPO / "knative/base/functions").glob("*.yaml"):
        assert f"functions/{f.name}" in listed, f"{f.name} is not in knative/base/kustomization.yaml resources"


def test_exposure_matches_visibility(manifests):
    functions = function_binaries()
    for svc in knative_services(manifests):
        name = svc["metadata"]["name"]
        local = svc["metadata"].get("labels", {}).get("networking.knative.dev/visibility") == "cluster-local"
        want_local = functions[name].exposure == "Internal"
        assert local == want_local, f"{name}: Exposure::{functions[name].exposure} but cluster-local={local}"


def test_autoscaling_and_concurrency(manifests):
    total_connections = 0
    for svc in knative_services(manifests):
        name = svc["metadata"]["name"]
        tmpl = svc["spec"]["template"]
        ann = tmpl["metadata"]["annotations"]
        spec = tmpl["spec"]
        (container,) = spec["containers"]
        pool = int(effective_env(container, manifests)["DB_POOL_SIZE"])
        cc = spec["containerConcurrency"]
        # The rule (knative/README.md): hard limit = pool size, soft target below it.
        assert cc == pool, f"{name}: containerConcurrency {cc} != DB_POOL_SIZE {pool}"
        target = float(ann["autoscaling.knative.dev/target"])
        assert 0 < target <= cc, f"{name}: target {target} must be in (0, containerConcurrency]"
        max_scale = int(ann["autoscaling.knative.dev/max-scale"])
        assert max_scale >= 1
        assert int(ann["autoscaling.knative.dev/initial-scale"]) <= max_scale
        if function_binaries()[name].exposure == "External":
            assert ann["autoscaling.knative.dev/min-scale"] == "0", f"{name}: public functions scale to zero"
        total_connections += max_scale * pool
    assert total_connections <= PG_CONNECTION_BUDGET, f"functions may open {total_connections} PostgreSQL connections"


def test_function_probes_hit_routes_the_binary_serves(manifests):
    probe_routes = routes_in_fn(OPS, "probe_router")
    side_routes = routes_in_fn(OPS, "health_router") | routes_in_fn(OPS, "metrics_router")
    run = fn_body(RUNTIME, "run")
    assert "ops::probe_router()" in run, "function binaries merge the probes on $PORT"
    assert "ops::health_router()" in run and "ops::metrics_router()" in run, "side port serves health + metrics"
    for svc in knative_services(manifests):
        name = svc["metadata"]["name"]
        spec = svc["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        (port,) = container["ports"]
        env = effective_env(container, manifests)
        assert "PORT" not in env, f"{name}: Knative sets PORT from containerPort; do not set it"
        for kind in ("readinessProbe", "livenessProbe"):
            probe = container[kind]["httpGet"]
            assert probe["path"] in probe_routes, f"{name} {kind}: {probe['path']} is not served on $PORT"
            assert probe.get("port", port["containerPort"]) == port["containerPort"], f"{name} {kind}: port"
        assert container["readinessProbe"]["httpGet"]["path"] == "/ges/v1/health/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/ges/v1/health/live"
        ann = svc["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/path"] in side_routes
        assert ann["prometheus.io/port"] == env["METRICS_PORT"] != str(port["containerPort"])


def routes_in_fn(path: Path, fn: str) -> set[str]:
    body = fn_body(path, fn)
    found = set(routes_in_text(body))
    # `health_router` extends `probe_router()`.
    if fn != "probe_router" and "probe_router()" in body.split("{", 1)[1]:
        found |= routes_in_fn(path, "probe_router")
    return found


def routes_in_text(text: str) -> set[str]:
    return set(re.findall(r'\.route\(\s*"([^"]+)"', text))


def test_secrets_mounted_where_config_folders_look(manifests):
    for doc in manifests:
        spec = pod_spec(doc)
        for container in spec.get("containers", []):
            env = effective_env(container, manifests)
            folders = [f for f in env["CONFIG_FOLDERS"].split(",") if f]
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            for folder in folders:
                if folder not in mounts:
                    # Only the optional GWS secret may be left out (the migration needs none).
                    assert folder == "/secrets-gws" and doc["kind"] == "Job", f"{doc['metadata']['name']}: {folder} not mounted"
                    continue
                assert "secret" in volumes[mounts[folder]], f"{folder} is not a Secret volume"
            assert container["command"][0].startswith(BIN_DIR)
            sc = container.get("securityContext", {}) | spec.get("securityContext", {})
            assert sc.get("runAsNonRoot") is True and sc.get("runAsUser", 0) != 0
            assert sc.get("readOnlyRootFilesystem") is True


def test_worker_is_a_deployment_never_scaled_to_zero(manifests):
    (dep,) = [d for d in of_kind(manifests, "Deployment") if d["metadata"]["name"] == "engage-worker"]
    assert dep["spec"]["replicas"] >= 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (pdb,) = of_kind(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert pdb["spec"]["minAvailable"] >= 1
    assert not of_kind(manifests, "HorizontalPodAutoscaler")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    env = effective_env(container, manifests)
    (port,) = container["ports"]
    assert str(port["containerPort"]) == env["WORKER_PORT"]
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/port"] == env["WORKER_PORT"]
    for kind in ("readinessProbe", "livenessProbe"):
        assert container[kind]["httpGet"]["port"] in (port["name"], port["containerPort"])
    worker = worker_binary()
    if worker is None:
        pytest.skip("worker/ crate not in this tree yet: binary name and routes not checked")
    assert binary_of(container) == worker.name
    # The worker serves its paths without a router: take every "/..." string literal.
    served = {
        lit
        for f in sorted(worker.crate_dir.rglob("*.rs"))
        for lit in re.findall(r'"(/[^"\s]*)"', f.read_text())
    }
    for path in (container["readinessProbe"]["httpGet"]["path"], ann["prometheus.io/path"]):
        assert path in served, f"worker does not serve {path}"


def test_migration_job_runs_engage_migrate(manifests):
    (job,) = of_kind(manifests, "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == [BIN_DIR + "engage", "migrate"]
    cli = (REPO / "engage/src/cli.rs").read_text()
    assert "Command::Migrate" in cli


def test_overlays_set_namespace_and_image():
    base_images = {c["image"] for d in render("base") for c in pod_spec(d).get("containers", [])}
    assert len(base_images) == 1, "one image carries every binary"
    for t in TARGETS:
        if t == "base":
            continue
        docs = render(t)
        images = {c["image"] for d in docs for c in pod_spec(d).get("containers", [])}
        assert len(images) == 1 and images != base_images, f"{t}: image not set by the overlay"
        namespaced = [d for d in docs if d["kind"] != "Namespace"]
        assert {d["metadata"].get("namespace") for d in namespaced} == {"engage"}, t
        assert config_map(docs)["DATABASE_URL"] != config_map(render("base"))["DATABASE_URL"], t


def test_render_all_is_one_valid_stream():
    import subprocess

    out = subprocess.run([str(REPO / "infra/k8s-render.sh"), "all"], check=True, capture_output=True, text=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert len(docs) == sum(len(render(t)) for t in TARGETS)
    bad = subprocess.run([str(REPO / "infra/k8s-render.sh"), "no-such-overlay"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no overlay" in bad.stderr
