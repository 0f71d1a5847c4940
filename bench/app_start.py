"""Cold and warm start of the demo page, and text-query latency through its API.

Cold: `python app.py` with an empty cache (the synthetic demo gallery is generated and the default model's index
built); warm: the same again, cache kept. Start = process launch until the page answers and /search_text returns
results. Query latency: gradio_client round trips on loopback (median and p95). Writes the "app-start" section of
docs/BENCHMARKS.md: `python bench/app_start.py [--queries N] [--runs N]`.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import machine, write_section  # noqa: E402

QUERIES = ["two white planes parked beside the runway", "a red ship next to a pier", "many green trees",
           "three storage tanks near a road", "a baseball field surrounded by trees"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cache: str, extra=(), timeout: float = 300):
    """-> (process, url, seconds until the page answers and a text query returns results)."""
    port = free_port()
    env = {**os.environ, "RSDEMO_CACHE": cache, "GRADIO_ANALYTICS_ENABLED": "False"}
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), *extra], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    from gradio_client import Client

    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        if time.perf_counter() - t > timeout:
            proc.kill()
            raise TimeoutError(f"app.py did not answer within {timeout} s")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            break
        except OSError:
            time.sleep(0.1)
    client = Client(url, verbose=False)
    assert client.predict(QUERIES[0], "", 10, api_name="/search_text")
    return proc, client, time.perf_counter() - t


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def measure(queries: int = 50, runs: int = 3, extra=()) -> dict:
    cold, warm, lat = [], [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as cache:
            proc, _, s = start(cache, extra)
            cold.append(s)
            stop(proc)
            proc, client, s = start(cache, extra)
            warm.append(s)
            for i in range(queries):
                t = time.perf_counter()
                client.predict(QUERIES[i % len(QUERIES)], "", 10, api_name="/search_text")
                lat.append(time.perf_counter() - t)
            stop(proc)
    lat.sort()
    return {"cold_s": statistics.median(cold), "warm_s": statistics.median(warm),
            "query_p50_ms": 1000 * statistics.median(lat), "query_p95_ms": 1000 * lat[int(0.95 * (len(lat) - 1))],
            "runs": runs, "queries": len(lat)}


def report(r: dict) -> str:
    return (f"## Demo page start and text-query latency\n\n`python bench/app_start.py`: `python app.py` on the "
            f"synthetic demo gallery, started {r['runs']} times with an empty cache (cold: the gallery is generated "
            f"and the default model's index built) and again with the cache kept (warm). Start = launch until the "
            f"page answers and a text query returns results. Latency: {r['queries']} text queries through "
            f"gradio_client on loopback (top 10, one client). Medians. Machine: {machine()}.\n\n"
            f"| cold start | warm start | text query p50 | p95 |\n|---|---|---|---|\n"
            f"| {r['cold_s']:.1f} s | {r['warm_s']:.1f} s | {r['query_p50_ms']:.0f} ms | {r['query_p95_ms']:.0f} ms |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--no-write", action="store_true", help="print only")
    a = p.parse_args(argv)
    r = measure(a.queries, a.runs)
    text = report(r)
    print(text)
    if not a.no_write:
        write_section("app-start", text)
    return r


if __name__ == "__main__":
    main()
