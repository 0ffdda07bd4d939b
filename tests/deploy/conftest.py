"""Shared helpers of the deployment tests: the repository, its binaries (discovered from the
sources, never listed by hand), the routes the Rust code declares, and rendered manifests."""

from __future__ import annotations

import functools
import re
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RENDER = REPO / "infra" / "k8s-render.sh"
TARGETS = ["base"] + sorted(p.name for p in (REPO / "knative" / "overlays").iterdir() if p.is_dir())


@dataclass(frozen=True)
class Binary:
    """One binary of the workspace."""

    name: str
    package: str
    crate_dir: Path
    source: Path
    # For function binaries (`run_function[_checked]("name", Exposure::X, ...)`): "External"/"Internal".
    exposure: str | None = None


def _members() -> list[Path]:
    root = tomllib.loads((REPO / "Cargo.toml").read_text())
    out = []
    for pattern in root["workspace"]["members"]:
        out.extend(sorted(p for p in REPO.glob(pattern) if (p / "Cargo.toml").is_file()))
    return out


_RUN_FUNCTION = re.compile(
    r'run_function(?:_checked)?\(\s*"(?P<name>[^"]+)"\s*,\s*[\w:]*Exposure::(?P<exposure>External|Internal)'
)


@functools.cache
def binaries() -> dict[str, Binary]:
    """Every binary target of every workspace member, as cargo would discover it."""
    found: dict[str, Binary] = {}
    for crate in _members():
        manifest = tomllib.loads((crate / "Cargo.toml").read_text())
        package = manifest["package"]["name"]
        autobins = manifest["package"].get("autobins", True)
        candidates: list[tuple[str, Path]] = []
        for b in manifest.get("bin", []):
            path = crate / b.get("path", f"src/bin/{b['name']}.rs")
            candidates.append((b["name"], path))
        if autobins:
            if (crate / "src/main.rs").is_file():
                candidates.append((package, crate / "src/main.rs"))
            bin_dir = crate / "src/bin"
            if bin_dir.is_dir():
                for p in sorted(bin_dir.iterdir()):
                    if p.suffix == ".rs":
                        candidates.append((p.stem, p))
                    elif (p / "main.rs").is_file():
                        candidates.append((p.name, p / "main.rs"))
        for name, path in candidates:
            if name in found:
                continue
            m = _RUN_FUNCTION.search(path.read_text()) if path.is_file() else None
            found[name] = Binary(name, package, crate, path, m.group("exposure") if m else None)
            if m:
                assert m.group("name") == name, f"{path}: run_function names {m.group('name')!r}, the binary is {name!r}"
    return found


def function_binaries() -> dict[str, Binary]:
    """Binaries that are one function (`functions::runtime::run_function`)."""
    return {n: b for n, b in binaries().items() if b.exposure is not None}


def worker_binary() -> Binary | None:
    """The dispatcher binary, once the worker crate exists."""
    return next((b for b in binaries().values() if b.crate_dir.name == "worker"), None)


_ROUTE = re.compile(r'\.route\(\s*"([^"]+)"')


def routes_in(paths: list[Path]) -> set[str]:
    """Route paths declared with `.route("...")` in these Rust files."""
    out: set[str] = set()
    for p in paths:
        out.update(_ROUTE.findall(p.read_text()))
    return out


def fn_body(path: Path, fn_name: str) -> str:
    """The text of `fn <fn_name>` in a Rust file (up to the next top-level item)."""
    text = path.read_text()
    m = re.search(rf"\bfn {re.escape(fn_name)}\b.*?\n}}\n", text, re.S)
    assert m, f"no fn {fn_name} in {path}"
    return m.group(0)


@functools.cache
def render(target: str) -> list[dict]:
    """Rendered manifests of `base` or an overlay (infra/k8s-render.sh)."""
    out = subprocess.run([str(RENDER), target], check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(params=TARGETS)
def manifests(request) -> list[dict]:
    return render(request.param)
