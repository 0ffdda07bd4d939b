"""Measures one function binary's start-up: see startup.sh. Prints, never asserts."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_ok(port: int, path: str) -> bool:
    """One raw HTTP/1.1 GET; True on a 200. Connection refused → False."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n".encode())
            return s.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def wait_ok(port: int, path: str, t0: float, deadline_s: float = 10.0) -> float:
    while time.perf_counter() - t0 < deadline_s:
        if get_ok(port, path):
            return (time.perf_counter() - t0) * 1e3
        time.sleep(0.0002)
    raise SystemExit(f"{path} not answering 200 after {deadline_s} s")


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


def one_run(binary: str) -> tuple[float, float, int]:
    port, metrics = free_port(), free_port()
    env = dict(os.environ, PORT=str(port), METRICS_PORT=str(metrics))
    t0 = time.perf_counter()
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        live = wait_ok(port, "/ges/v1/health/live", t0)
        ready = wait_ok(port, "/ges/v1/health/ready", t0)
        time.sleep(0.3)
        rss = rss_kb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    return live, ready, rss


def summary(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.1f}  min {min(xs):.1f}  max {max(xs):.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--runs", type=int, default=20)
    a = ap.parse_args()
    one_run(a.binary)  # warm the page cache; not counted
    runs = [one_run(a.binary) for _ in range(a.runs)]
    live, ready, rss = zip(*runs)
    size = os.path.getsize(a.binary)
    with tempfile.TemporaryDirectory() as d:
        stripped = os.path.join(d, "bin")
        shutil.copy(a.binary, stripped)
        subprocess.run(["strip", stripped], check=True)
        stripped_size = os.path.getsize(stripped)
    name = os.path.basename(a.binary)
    print(f"{name}: n={a.runs}")
    print(f"  start -> first 200 /ges/v1/health/live  (ms): {summary(live)}")
    print(f"  start -> first 200 /ges/v1/health/ready (ms): {summary(ready)}")
    print(f"  idle RSS 0.3 s after first answer (KB):      {summary([float(r) for r in rss])}")
    print(f"  release binary: {size} bytes ({size / 1e6:.2f} MB); after strip: {stripped_size} bytes ({stripped_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
