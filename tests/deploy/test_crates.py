"""The crate graph keeps its promises in every build, workspace builds included (cargo unifies
the features of a crate over everything built together): the dispatcher links no web
framework (invariant 15), and the function binaries do not carry the dispatcher."""

from __future__ import annotations

import subprocess

from conftest import REPO

# The server frameworks. (tower-http and hyper come in with reqwest, the worker's FCM client,
# on their client side; hyper's server feature is checked below.)
WEB = ("axum", "lambda_http")


def tree(*args: str) -> str:
    return subprocess.run(["cargo", "tree", "--offline", *args], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout


def dependents(crate: str) -> set[str]:
    """Workspace packages that reach `crate` through normal dependencies, in a workspace build."""
    out = subprocess.run(["cargo", "tree", "--offline", "--workspace", "-e", "normal", "-i", crate,
                          "--prefix", "none", "--format", "{p}"], cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:  # not in the graph at all
        return set()
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def test_worker_links_no_web_framework_even_in_workspace_builds():
    for crate in WEB:
        assert "engage-worker" not in dependents(crate), f"engage-worker links {crate}"
    # engage-shared makes no HTTP call at all; the worker's one client (reqwest, for FCM)
    # uses hyper's client side only.
    assert "engage-shared" not in dependents("hyper"), "engage-shared links hyper"
    features = tree("-p", "engage-worker", "-e", "features")
    for crate in WEB:
        assert f"{crate} v" not in features, f"cargo tree -p engage-worker shows {crate}"
    hyper = tree("-p", "engage-worker", "-e", "features", "-i", "hyper")
    assert 'hyper feature "server"' not in hyper, "the worker's build enables hyper's server"


def test_functions_do_not_depend_on_the_worker():
    assert "engage-functions" not in dependents("engage-worker")
    assert dependents("engage-worker") >= {"engage"}, "the all-in-one binary runs the dispatcher"


def test_only_the_configuration_reads_the_environment():
    """Invariant 14: `Config::load` reads the environment once; nothing else does (the Lambda
    runtime's variable included: `HttpConfig::on_lambda`)."""
    allowed = {REPO / "shared/src/config.rs", REPO / "shared/src/aws_secrets.rs"}
    readers = [
        str(f.relative_to(REPO))
        for crate in ("shared", "functions", "worker", "engage")
        for f in sorted((REPO / crate / "src").rglob("*.rs"))
        if f not in allowed and ("env::var" in f.read_text() or "env::vars" in f.read_text())
    ]
    assert not readers, f"read the environment outside Config::load: {readers}"
